"""The cheap paths of the compact storage's encoder and commit (db/blobs.py, db/store.py) choose
exactly what the plain ones choose.

- `_find_spots` (str.find over a code) against the code's line-start index, for every key.
- `segments` with its shortcuts (no index for a code when few line starts are looked up, one set
  lookup to reject a line, no look-ups in a gap's last MIN_MATCH characters) against the plain
  search written out here, on hostile texts: NUL, lone surrogates, the layout's own marker bytes,
  CRLF, a code repeated beyond MAX_CANDIDATES, a periodic code in a huge text.
- The encoder's check reuses a decompressor per thread and dictionary: still byte-exact.
- The commit asks the database nothing it already has in memory (no connection to encode a
  prompt whose programs `select` loaded), and still finds references it does not have.
"""
from __future__ import annotations

import random
import threading

import pytest
from sqlalchemy import event, select

from evoforge.db import blobs
from evoforge.db.engine import session_factory, upgrade
from evoforge.db.models import CodeBlob
from evoforge.evolution.hashing import code_hash

CODE_A = "".join(f"def f{i}(x):\n    return x * {i} + {i * 7} - 3.25  # line {i}\n" for i in range(40))
REPEATED = "    return compute_the_value(x)  # same line\n" * 30      # > MAX_CANDIDATES spots a key
HOSTILE = ("header \x00\x01\x01" + "\udcff\ud800"
           + "\r\n".join(f"line {i} é ✓ 𝔼 \x00" for i in range(30)) + "\n")


def plain_segments(text: str, codes: list[str]) -> list[blobs.Segment]:
    """The search without shortcuts: whole codes, then every line start of every gap looked up in
    every code's full index."""
    spans: list[tuple[int, int, int]] = []
    for k, code in enumerate(codes):
        body = code.rstrip("\n")
        if len(body) < blobs.MIN_MATCH:
            continue
        pos = text.find(body)
        while pos >= 0:
            end = pos + len(body)
            if all(end <= s0 or pos >= e0 for s0, e0, _ in spans):
                spans.append((pos, end, k))
            pos = text.find(body, end)
    spans.sort()
    indexes = [blobs._build_index(c) for c in codes]
    out: list[blobs.Segment] = []
    last = 0
    for lo, hi, k in spans + [(len(text), len(text), None)]:
        lit = pos = last
        while pos < lo:
            best = (0, 0, 0)
            if pos == last or text[pos - 1] == "\n":
                for j, idx in enumerate(indexes):
                    for spot in idx.get(text[pos:pos + blobs.ANCHOR], ()):
                        n = blobs._common(text, pos, codes[j], spot, lo - pos)
                        if n > best[0]:
                            best = (n, j, spot)
            if best[0] >= blobs.MIN_MATCH:
                out += [text[lit:pos]] if lit < pos else []
                out.append((best[1], best[2], best[0]))
                pos = lit = pos + best[0]
                continue
            nl = text.find("\n", pos, lo)
            pos = lo if nl < 0 else nl + 1
        out += [text[lit:lo]] if lit < lo else []
        if k is not None:
            out.append((k, 0, hi - lo))
        last = hi
    return out


def reconstruct(segs: list[blobs.Segment], codes: list[str]) -> str:
    return "".join(s if isinstance(s, str) else codes[s[0]][s[1]:s[1] + s[2]] for s in segs)


# -- _find_spots --------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [CODE_A, REPEATED, HOSTILE, CODE_A.rstrip("\n"), "x" * 200,
                                  "\n" * 40 + CODE_A, REPEATED + CODE_A + REPEATED])
def test_find_spots_is_the_index(code):
    idx = blobs._build_index(code)
    keys = {k for k in idx if len(k) == blobs.ANCHOR}
    keys |= {code[i:i + blobs.ANCHOR] for i in range(0, max(1, len(code) - blobs.ANCHOR), 7)}
    keys |= {"\n" + code[:blobs.ANCHOR - 1], "x" * blobs.ANCHOR}
    for key in keys:
        if len(key) == blobs.ANCHOR:
            assert blobs._find_spots(code, key) == idx.get(key, []), repr(key)
    assert len(blobs._find_spots(REPEATED, REPEATED[:blobs.ANCHOR])) == blobs.MAX_CANDIDATES


# -- segments -----------------------------------------------------------------------------------

def _texts(rng: random.Random, codes: list[str]) -> list[str]:
    """Prompts and replies cut from the codes: whole, truncated, from mid-line, between hostile
    literals, SEARCH/REPLACE-like pieces."""
    out = []
    for _ in range(40):
        parts = []
        for _ in range(rng.randint(1, 6)):
            code = rng.choice(codes)
            a = rng.randrange(len(code))
            b = rng.randrange(a, len(code) + 1)
            parts.append(rng.choice([code.rstrip("\n"), code[a:b], code[a:], HOSTILE[a % 50:],
                                     "\n```python\n", "<<<<<<< SEARCH\n", "\x01" + "\x00" * 33]))
        out.append(rng.choice(["", "\n", "\r\n"]).join(parts))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("paths", ["cached indexes", "no index", "fresh indexes"])
def test_segments_choose_what_the_plain_search_chooses(seed, paths, monkeypatch):
    rng = random.Random(seed)
    codes = [CODE_A, REPEATED, HOSTILE * 3, CODE_A[300:1700], REPEATED + CODE_A]
    blobs._indexes.clear()
    if paths == "cached indexes":
        for c in codes:
            blobs._index(c)
    monkeypatch.setattr(blobs, "INDEX_AT", 10**9 if paths == "no index" else 0)
    for text in _texts(rng, codes):
        got = blobs.segments(text, codes)
        assert got == plain_segments(text, codes)
        assert reconstruct(got, codes) == text
    if paths == "no index":
        assert not blobs._indexes   # nothing was indexed: every look-up went through find


def test_a_huge_periodic_text_is_linear():
    """A code of one repeated line and a text of thousands of copies of it: every line start of
    the text has the same key. Each look-up stops at MAX_CANDIDATES spots and a reference ends
    each probe, so this takes milliseconds, not the hours a quadratic search would."""
    code = "a = a + 1\n" * 500
    text = ("a = a + 1\n" * 997 + "b\n") * 200          # 2 MB
    refs = {code_hash(code): code}
    blob = blobs.encode_text(text, refs)
    assert blob[0] == blobs.SEGMENTS
    assert blobs._unpack(blobs.payload(blob), [code]) == text


@pytest.mark.parametrize("text", [
    "\x01\x01" + "\x00" * 32 + CODE_A,                     # the layout's own first bytes
    "\x00" + CODE_A + "\x00",
    "\udcff" + CODE_A[:-1] + "\ud800",                     # lone surrogates around a reference
    CODE_A.replace("\n", "\r\n"),                          # no line start of the code matches
    CODE_A[:100] + "\n" + CODE_A[:100] + "\n",
    "\n".join([CODE_A[i:i + 70] for i in range(0, 1200, 70)]),
])
@pytest.mark.parametrize("with_dict", [False, True])
def test_hostile_texts_round_trip_with_the_reused_decompressor(text, with_dict):
    dictionary = None
    if with_dict:
        samples = [f"sample {i}: {CODE_A[i:i + 400]}".encode() for i in range(0, 1600, 10)]
        dictionary = blobs.Dictionary(7, blobs.train(samples, 7))
    refs = {code_hash(CODE_A): CODE_A, code_hash(REPEATED): REPEATED}
    blob = blobs.encode_text(text, refs, dictionary=dictionary)
    codes = [refs[h] for h in blobs.ref_hashes(blob)]
    raw = blobs._decompressor(dictionary).decompressobj().decompress(blobs._header(blob)[2])
    back = blobs._text(raw) if blob[0] == blobs.PLAIN else blobs._unpack(raw, codes)
    assert back == text
    assert blobs.segments(text, [CODE_A, REPEATED]) == plain_segments(text, [CODE_A, REPEATED])


def test_decompressors_are_per_thread():
    """A ZstdDecompressor is not thread-safe: each thread gets its own."""
    mine = blobs._decompressor(None)
    assert blobs._decompressor(None) is mine
    theirs = []
    t = threading.Thread(target=lambda: theirs.append(blobs._decompressor(None)))
    t.start()
    t.join()
    assert theirs[0] is not mine


# -- the commit ---------------------------------------------------------------------------------

def _store(tmp_path):
    from evoforge.db.campaign_config import CampaignSpec
    from evoforge.db.store import CampaignStore
    from evoforge.worker.campaign_service import create_campaign

    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    sessions = session_factory(url)
    spec = CampaignSpec(task="circle_packing", seed=0, budget={"max_evaluations": 100},
                        mutator={"kind": "llm", "base_url": "http://127.0.0.1:9/v1",
                                 "models": [{"name": "m"}]})
    cid = create_campaign(sessions, spec, status="running").id
    return sessions, cid, lambda: CampaignStore(sessions, cid)


def _child(iteration, parent_id, code, prompt=None, response=None):
    from evoforge.evolution.step import Child
    from evoforge.evolution.types import EvalResult, Mutation

    return Child(iteration=iteration, island=0, parent_id=parent_id, generation=iteration,
                 code=code, code_hash=code_hash(code),
                 mutation=Mutation(code=code, kind="llm", prompt=prompt, response=response),
                 result=EvalResult(status="ok", score=float(iteration), metrics={}, features={}))


def test_a_warm_commit_opens_no_connection_to_encode_and_a_cold_one_still_refers(tmp_path):
    sessions, cid, make = _store(tmp_path)
    child = CODE_A.replace("3.25", "4.5")
    prompt = f"# Current Program\n```python\n{CODE_A.rstrip()}\n```\nimprove it"
    store = make()
    seed_id = store.commit(_child(0, None, CODE_A)).program_id
    with store.engine.connect() as conn:   # what select() does when it picks the parent
        store._refs_for(conn, [seed_id])

    checkouts = []

    def count(*_):
        checkouts.append(1)

    event.listen(store.engine, "checkout", count)
    try:
        prompt_z, response_z = store._encode_texts(_child(1, seed_id, child, prompt, child))
    finally:
        event.remove(store.engine, "checkout", count)
    assert checkouts == []   # the parent's row and code: in memory since select()

    cold = make()                # a new process: nothing in memory, read from the database
    cold_prompt, cold_response = cold._encode_texts(_child(1, seed_id, child, prompt, child))
    assert (cold_prompt, cold_response) == (prompt_z, response_z)
    assert blobs.ref_hashes(prompt_z) == [code_hash(CODE_A)]
    with sessions() as s:
        assert blobs.decode_texts(s, [prompt_z]) == [prompt]


def test_a_cache_hit_of_a_code_this_process_never_saw_adds_no_row(tmp_path):
    sessions, cid, make = _store(tmp_path)
    make().commit(_child(0, None, CODE_A))
    other = make()               # does not know CODE_A is stored: compresses it, inserts nothing
    assert not other._stored(code_hash(CODE_A))
    other.commit(_child(1, 1, CODE_A))
    with sessions() as s:
        assert s.scalars(select(CodeBlob.hash)).all() == [code_hash(CODE_A)]
    assert other._stored(code_hash(CODE_A))
