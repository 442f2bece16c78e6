"""A failed import leaves no code blobs behind (worker/transfer.py), on SQLite and PostgreSQL.

Code blobs are content-addressed and shared by every campaign, and an import writes the file's
codes before its programs. Before this was fixed, a file refused at its last line (cut short, a
corrupt end record, a hostile file) left every code it had brought in `code_blob`, referenced by
nothing, until a prune's gc: a key holder could fill the database by uploading imports that fail
at the end. Now nothing of a failed import stays: not the blobs it created, and never a blob that
existed before it or that another campaign or import refers to meanwhile (that one must still be
there and still decode).

Real store commits build the source campaign (prompts quoting the parent, replies quoting it:
references into code blobs), a real export is broken at its end, real databases are imported
into (the PostgreSQL server of tests/integration/services.py).
"""
from __future__ import annotations

import io
import json
import threading

import pytest
import zstandard
from sqlalchemy import func, select

from evoforge.db import blobs
from evoforge.db.campaign_config import CampaignSpec
from evoforge.db.engine import session_factory, upgrade
from evoforge.db.models import Campaign, CodeBlob, Program
from evoforge.db.store import CampaignStore
from evoforge.evolution import hashing
from evoforge.evolution.step import Child
from evoforge.evolution.types import OK, EvalResult, Mutation
from evoforge.worker import transfer
from evoforge.worker.campaign_service import create_campaign
from tests.integration.services import postgres_server  # noqa: F401


def _sqlite(tmp_path, name: str):
    url = f"sqlite:///{tmp_path / name}"
    upgrade(url)
    return session_factory(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    """An empty database to import into."""
    if request.param == "sqlite":
        return _sqlite(tmp_path, "target.db")
    url = request.getfixturevalue("postgres_server").createdb()
    upgrade(url)
    return session_factory(url)


def _commit(store: CampaignStore, iteration: int, code: str, parent: int | None,
            parent_code: str | None) -> int:
    prompt = response = None
    if parent_code is not None:
        prompt = f"Improve this program:\n```python\n{parent_code.rstrip()}\n```\nTry {iteration}."
        response = f"<<<<<<< SEARCH\n{parent_code[:300]}=======\n{code[:300]}>>>>>>> REPLACE\n"
    return store.commit(Child(
        iteration=iteration, island=0, parent_id=parent, generation=0 if parent is None else 1,
        code=code, code_hash=hashing.code_hash(code),
        mutation=Mutation(code=code, kind="seed" if parent is None else "llm:diff",
                          prompt=prompt, response=response, model="m"),
        result=EvalResult(status=OK, score=float(iteration), metrics={}, features={},
                          duration_s=0.01),
        run_hash=hashing.run_hash(code, 0))).program_id


def _campaign(sessions, n: int, tag: str) -> tuple[int, str]:
    """A finished campaign: its seed program and `n` children whose prompts and replies quote
    it; (campaign id, the seed's code). The seed's code is the same in every campaign."""
    cid = create_campaign(sessions, CampaignSpec(task="circle_packing"), status="completed").id
    with sessions() as s:
        seed = s.get(Campaign, cid).seed_program
    store = CampaignStore(sessions, cid)
    root = _commit(store, 0, seed, None, None)
    for k in range(1, n + 1):
        _commit(store, k, f"{seed}\n# {tag} variant {k}\n{'#' * 200}\n", root, seed)
    return cid, seed


def _export(sessions, cid: int) -> bytes:
    buf = io.BytesIO()
    transfer.export_campaign(sessions, cid, buf)
    return buf.getvalue()


def _text(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()


def _zst(text: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(text)


def corrupt_end(data: bytes) -> bytes:
    """The end record replaced by a line that is no JSON."""
    lines = _text(data).split(b"\n")
    assert json.loads(lines[-2])["type"] == "end" and lines[-1] == b""
    return _zst(b"\n".join(lines[:-2] + [b'{"type": "end", "records": {"code": 1', b""]))


def cut_short(data: bytes) -> bytes:
    """The file cut in the middle of its last line (an interrupted download)."""
    text = _text(data)
    return _zst(text[:len(text) - 20])


def _blob_count(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(CodeBlob))


def _texts_of(sessions, cid: int) -> list[tuple]:
    with sessions() as s:
        progs = s.scalars(select(Program).where(Program.campaign_id == cid)
                          .order_by(Program.id)).all()
        return [tuple(vars(blobs.program_texts(s, p)).values()) for p in progs]


@pytest.mark.parametrize("damage, message", [
    (corrupt_end, "not a JSON object"),
    (cut_short, "cut short"),
])
def test_a_failed_import_leaves_no_code_blobs(tmp_path, target, damage, message):
    source = _sqlite(tmp_path, "source.db")
    cid, seed = _campaign(source, 8, "source")
    data = _export(source, cid)
    # The target already has a campaign whose programs share the seed's code blob, which the
    # import's programs and prompts refer to as well.
    other, _ = _campaign(target, 2, "other")
    before_texts = _texts_of(target, other)
    assert any(seed in (t[1] or "") for t in before_texts)   # a prompt quoting the shared code
    before = _blob_count(target)

    with pytest.raises(transfer.TransferError, match=message):
        transfer.import_campaign(target, io.BytesIO(damage(data)))

    assert _blob_count(target) == before
    with target() as s:
        assert s.scalar(select(func.count()).select_from(Campaign)) == 1
        assert blobs.get_codes(s, [hashing.code_hash(seed)]) == {hashing.code_hash(seed): seed}
    assert _texts_of(target, other) == before_texts
    # and the whole file still imports, every text intact
    out = transfer.import_campaign(target, io.BytesIO(data))
    assert _texts_of(target, out.campaign_id) == _texts_of(source, cid)


def test_a_refusal_before_the_programs_leaves_nothing_either(tmp_path, target):
    """A file whose codes are all in but whose first program is refused (a hostile file that
    brings many codes and no valid program)."""
    source = _sqlite(tmp_path, "source.db")
    cid, _ = _campaign(source, 5, "source")
    lines = _text(_export(source, cid)).split(b"\n")
    first = next(i for i, line in enumerate(lines) if b'"type":"program"' in line)
    lines[first] = lines[first].replace(b'"type":"program"', b'"type":"program","surprise":1')
    before = _blob_count(target)
    with pytest.raises(transfer.TransferError, match="invalid program record"):
        transfer.import_campaign(target, io.BytesIO(_zst(b"\n".join(lines))))
    assert _blob_count(target) == before


class _Paused:
    """The lines of a file, handed over one by one, stopping before the last `hold` lines until
    `go` is set (`waiting` is set then): an import held at a chosen point, in its thread."""

    def __init__(self, data: bytes, hold: int = 1):
        self.lines = _text(data).split(b"\n")[:-1]
        self.hold = hold
        self.waiting, self.go = threading.Event(), threading.Event()

    def __iter__(self):
        for n, line in enumerate(self.lines, 1):
            if n == len(self.lines) - self.hold + 1:
                self.waiting.set()
                assert self.go.wait(60)
            yield n, line


def _run(sessions, lines, out: dict) -> threading.Thread:
    def body():
        try:
            out["summary"] = transfer._Importer(sessions, project_id=None, admit=None).run(lines)
        except BaseException as exc:   # noqa: BLE001 - handed to the test
            out["error"] = exc
    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


def test_a_concurrent_import_of_the_same_codes_keeps_them(tmp_path, postgres_server):  # noqa: F811
    """PostgreSQL (SQLite serialises the two imports' writes, so they cannot interleave): import
    A creates the code blobs, import B of the same campaign refers to them while both are open,
    then A fails and cleans up. B's codes are not A's to take: B commits, every text decodes."""
    source = _sqlite(tmp_path, "source.db")
    cid, _ = _campaign(source, 8, "source")
    data = _export(source, cid)
    url = postgres_server.createdb()
    upgrade(url)
    target = session_factory(url)
    before = _blob_count(target)

    a_lines, a = _Paused(corrupt_end(data)), {}
    ta = _run(target, a_lines, a)
    assert a_lines.waiting.wait(60)          # A: every code and program written, not committed
    assert _blob_count(target) > before      # its codes are committed blobs already
    b_lines, b = _Paused(data), {}
    tb = _run(target, b_lines, b)
    assert b_lines.waiting.wait(60)          # B: the same codes, its programs written
    a_lines.go.set()
    ta.join(60)
    assert isinstance(a.get("error"), transfer.TransferError), a
    b_lines.go.set()
    tb.join(60)
    assert "summary" in b, b
    assert _texts_of(target, b["summary"].campaign_id) == _texts_of(source, cid)
    with target() as s:
        unneeded = s.scalar(select(func.count()).select_from(CodeBlob).where(
            ~select(Program.id).where(Program.code_hash == CodeBlob.hash).exists()))
    assert unneeded == 0


def test_an_open_import_does_not_hold_up_commits_of_the_same_code(tmp_path,
                                                                  postgres_server):  # noqa: F811
    """PostgreSQL: an import holds the code blobs it brought until it ends (so that a gc cannot
    take them), but a shared hold (FOR KEY SHARE): a running campaign that commits a program with
    one of those codes meanwhile neither waits for the import nor fails."""
    source = _sqlite(tmp_path, "source.db")
    cid, seed = _campaign(source, 4, "source")
    url = postgres_server.createdb()
    upgrade(url)
    target = session_factory(url)
    running = create_campaign(target, CampaignSpec(task="circle_packing"), status="running").id

    lines, out = _Paused(_export(source, cid)), {}
    importer = _run(target, lines, out)
    assert lines.waiting.wait(60)            # the import is open, holding the seed's blob
    done = threading.Event()

    def commit():
        _commit(CampaignStore(target, running), 0, seed, None, None)
        done.set()
    threading.Thread(target=commit, daemon=True).start()
    held_up = not done.wait(10)
    lines.go.set()
    importer.join(60)
    assert not held_up, "a commit of a code the open import holds waited for the import"
    assert "summary" in out, out
