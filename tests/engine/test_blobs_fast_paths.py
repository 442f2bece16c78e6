"""The cheap paths of the compact storage's encoder and commit (db/blobs.py, db/store.py) choose
exactly what the plain ones would.

- `_find_spots` (str.find over a code) against the code's line-start index, for every key.
- `segments` with its shortcuts (no index for a code when few line starts are looked up, one set
  lookup to reject a line, no look-ups in a gap's last MIN_MATCH characters) against a brute-force
  oracle written out here, which shares no code with the search (it checks each output against
  the contract, trying every position of every code), on hostile texts: NUL, lone surrogates,
  the layout's own marker bytes, CRLF, a code repeated beyond MAX_CANDIDATES, a periodic code in
  a huge text.
- The encoder's check reuses a decompressor per thread and dictionary: still byte-exact.
- The commit asks the database nothing it already has in memory (no connection to encode a
  prompt whose programs `select` loaded), and still finds references it does not have.
"""
from __future__ import annotations

import functools
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


# -- the oracle ---------------------------------------------------------------------------------
#
# What segments() must return, checked by brute force rather than computed by a second copy of
# its search: no index, no str.find, no `_common`, none of db/blobs.py's helpers. Every position
# of every code is tried character by character. The contract, from segments()'s docstring:
#
# 1. Whole codes first: each code in order (its body: without trailing newlines, when at least
#    MIN_MATCH long), every occurrence left to right after its own previous one, kept unless it
#    overlaps a kept earlier one. Each becomes (k, 0, len(body)).
# 2. Between them (a "gap"), left to right: at each line start of the text (or the gap's start)
#    at least MIN_MATCH characters before the gap's end, the longest common prefix (within the
#    gap) of the text there and a code at one of the code's first MAX_CANDIDATES line starts
#    that begin with the same ANCHOR characters; the first code, then the first spot, on a tie.
#    Taken as a reference if at least MIN_MATCH long; the search goes on where it ends.
# 3. Everything else is literal, merged: no empty literal, never two in a row.
#
# Checking an output against 2 takes no search of the oracle's own: every reference must be the
# best match at its position, and no probe inside a literal may have one of MIN_MATCH or more.
# That pins the output down to one list, the greedy one, so a fast path that finds a shorter
# match, misses a spot, skips a probe or breaks a tie the other way fails here.

@functools.lru_cache(maxsize=64)
def _line_starts(code: str) -> tuple[int, ...]:
    return tuple(i for i in range(len(code)) if i == 0 or code[i - 1] == "\n")


def _prefix(text: str, i: int, code: str, j: int, limit: int) -> int:
    n = 0
    while n < limit and j + n < len(code) and text[i + n] == code[j + n]:
        n += 1
    return n


def whole_spans(text: str, codes: list[str]) -> list[tuple[int, int, int]]:
    """(start, end, code number) of the whole codes segments() must refer to, sorted."""
    spans: list[tuple[int, int, int]] = []
    for k, code in enumerate(codes):
        body = code.rstrip("\n")
        if len(body) < blobs.MIN_MATCH:
            continue
        i = 0
        while i + len(body) <= len(text):
            if not text.startswith(body, i):
                i += 1
                continue
            if not any(i < e and s < i + len(body) for s, e, _ in spans):
                spans.append((i, i + len(body), k))
            i += len(body)
    return sorted(spans)


def best_match(text: str, pos: int, hi: int, codes: list[str]) -> tuple[int, int, int]:
    """(length, code number, spot) of the longest match at `pos`, by trying every line start
    of every code (the first MAX_CANDIDATES with the text's ANCHOR characters count)."""
    key = text[pos:pos + blobs.ANCHOR]
    best = (0, 0, 0)
    for k, code in enumerate(codes):
        spots = [j for j in _line_starts(code) if code[j:j + blobs.ANCHOR] == key]
        for j in spots[:blobs.MAX_CANDIDATES]:
            n = _prefix(text, pos, code, j, hi - pos)
            if n > best[0]:
                best = (n, k, j)
    return best


def check_segments(text: str, codes: list[str], segs: list[blobs.Segment]) -> None:
    """Fail unless `segs` is what segments(text, codes) must return (see above)."""
    assert reconstruct(segs, codes) == text
    spans = whole_spans(text, codes)
    gaps = zip([0] + [e for _, e, _ in spans], [s for s, _, _ in spans] + [len(text)])
    rest = iter(segs)
    for (lo, hi), span in zip(gaps, spans + [None]):
        def probe(p: int) -> bool:
            return p <= hi - blobs.MIN_MATCH and (p == lo or text[p - 1] == "\n")
        at, literal_before = lo, False
        while at < hi:
            seg = next(rest, None)
            assert seg is not None, f"nothing covers {at}..{hi}"
            if isinstance(seg, str):
                assert seg and not literal_before, "an empty literal, or two in a row"
                end = at + len(seg)
                assert end <= hi and text[at:end] == seg, f"literal at {at} crosses a whole code"
                for p in range(at, end):
                    if probe(p):
                        n, k, j = best_match(text, p, hi, codes)
                        assert n < blobs.MIN_MATCH, f"missed {n} chars of code {k}@{j} at {p}"
                literal_before = True
            else:
                k, j, n = seg
                assert probe(at), f"a reference at {at}, not a probed line start"
                assert (n, k, j) == best_match(text, at, hi, codes), f"not the best match at {at}"
                assert n >= blobs.MIN_MATCH
                end, literal_before = at + n, False
            at = end
        if span is not None:
            assert next(rest, None) == (span[2], 0, span[1] - span[0]), f"whole code at {span[0]}"
    assert next(rest, None) is None, "segments past the end of the text"


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
def test_segments_choose_what_the_brute_force_oracle_requires(seed, paths, monkeypatch):
    rng = random.Random(seed)
    codes = [CODE_A, REPEATED, HOSTILE * 3, CODE_A[300:1700], REPEATED + CODE_A]
    blobs._indexes.clear()
    if paths == "cached indexes":
        for c in codes:
            blobs._index(c)
    monkeypatch.setattr(blobs, "INDEX_AT", 10**9 if paths == "no index" else 0)
    for text in _texts(rng, codes):
        check_segments(text, codes, blobs.segments(text, codes))
    if paths == "no index":
        assert not blobs._indexes   # nothing was indexed: every look-up went through find


def boundary_cases() -> list[tuple[str, list[str], list[blobs.Segment]]]:
    """(text, codes, the segments worked out by hand) for what random texts rarely hit."""
    line = CODE_A.index("\n") + 1                       # the code's second line start
    exact = CODE_A[line:line + blobs.MIN_MATCH]
    body = REPEATED.rstrip("\n")
    periodic = "a = a + 1\n" * 10                        # its body occurs at 80, 90, ...
    first = "Q" * 70 + "a = a"                           # a whole code over the 1st occurrence
    return [
        # a reference of exactly MIN_MATCH characters at the last line start a gap probes
        ("intro\n" + exact, [CODE_A], ["intro\n", (0, line, blobs.MIN_MATCH)]),
        ("intro\n" + exact[:-1], [CODE_A], ["intro\n" + exact[:-1]]),
        # ... and where the gap ends at a whole code, not at the text's end
        ("intro\n" + exact + body, [CODE_A, REPEATED],
         ["intro\n", (0, line, blobs.MIN_MATCH), (1, 0, len(body))]),
        ("intro\n" + exact[:-1] + body, [CODE_A, REPEATED],
         ["intro\n" + exact[:-1], (1, 0, len(body))]),
        # a gap's first character is probed even mid-line (right after a whole code)
        (body + CODE_A[line:line + 100], [REPEATED, CODE_A],
         [(0, 0, len(body)), (1, line, 100)]),
        # whole codes: a code's search goes on after the occurrence it found, kept or not (here
        # not: it overlaps an earlier code), so the overlapping one at 80 is matched by lines
        ("Q" * 70 + periodic + "a = a + 1\n", [first, periodic],
         [(0, 0, len(first)), " + 1\n", (1, 0, len(periodic))]),
    ]


@pytest.mark.parametrize("paths", ["no index", "fresh indexes"])
def test_the_search_at_its_boundaries(paths, monkeypatch):
    blobs._indexes.clear()
    monkeypatch.setattr(blobs, "INDEX_AT", 10**9 if paths == "no index" else 0)
    for text, codes, expected in boundary_cases():
        check_segments(text, codes, expected)              # the oracle agrees with the hand
        assert blobs.segments(text, codes) == expected


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
    check_segments(text, [CODE_A, REPEATED], blobs.segments(text, [CODE_A, REPEATED]))


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
