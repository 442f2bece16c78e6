"""Compact storage of program code, prompts and responses: the only door to those texts.

A long campaign keeps every program, its prompt and its reply. Stored in full that is ~20 KB a
program (issue 14), almost all of it repeats: a prompt quotes the parent and a few other
programs verbatim, a SEARCH/REPLACE reply quotes lines of the parent, and every prompt of a
campaign shares the same template and task context. So:

- **Code** is stored once per distinct text in `code_blob`, keyed by `evolution.hashing
  .code_hash` (sha256 of the exact UTF-8), as a zstd frame. A cache hit, or the same program in
  another campaign or project, adds no code bytes. Reads always go through a program row of the
  reader's own scope, so sharing the bytes reveals nothing.
- **Prompts and responses** (`program.prompt_z` / `response_z`) are a list of segments,
  literal text or "characters [start, start+length) of the code whose hash is H", then zstd.
  Every stretch of at least `MIN_MATCH` characters that occurs verbatim in a referenced code
  (the parent's, the programs quoted in the prompt, the child's own for a full rewrite) becomes
  a reference. The encoder checks its output by decoding it before returning it; should that
  ever differ, the text is stored as plain zstd instead. Byte-exact by construction.
- **Dictionaries**: once a campaign has `TRAIN_AT` programs, a zstd dictionary is trained on its
  code and on its texts' segment lists (`zstd_dict`, one per campaign and kind), and later
  frames are compressed with it. The frame header names the dictionary's id, so a frame decodes
  without knowing which campaign wrote it. What it pays (bench/storage_bytes.py, circle packing
  with the stand-in LLM): the literal parts of a prompt shrink from ~1.5 KB to ~0.15 KB and a
  new program's code from ~0.9 KB to ~0.2 KB. Dictionaries are never deleted: a shared code blob
  may need one after its campaign is gone.

Blob layouts (the first byte says which; a reader refuses a layout it does not know):

    text:  0x00 | zstd(utf-8 text)                                  plain (fallback, short texts)
           0x01 | n | n x 32-byte sha256 | zstd(segments)           segments over n codes
    segments: varint v; v even: v/2 bytes of UTF-8 literal follow; v odd: reference to code
              number v//2, then varint start, varint length (in characters)
    code:  zstd(utf-8 code)

Strings are encoded with `surrogatepass`, so even a text the sanitizer never saw round-trips.
"""
from __future__ import annotations

import random
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import zstandard as zstd
from sqlalchemy import bindparam, delete, exists, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from evoforge.db.models import CodeBlob, Program, ZstdDict
from evoforge.evolution.hashing import code_hash

LEVEL = 3                 # zstd level: 9 or 12 save 3-4% on prompts at 6-20x the time
MIN_MATCH = 64            # shortest stretch of code replaced by a reference (characters)
ANCHOR = 16               # references start at line starts; indexed by their first characters
MAX_CANDIDATES = 8        # positions tried per anchor and code
MAX_REFS = 255
PLAIN, SEGMENTS = 0, 1
TRAIN_AT = 200            # programs a campaign has before its dictionaries are trained
DICT_SIZE = 16 * 1024
CODE, TEXT = "code", "text"

Reader = Session | Connection


@dataclass(frozen=True)
class ProgramTexts:
    code: str | None
    prompt: str | None
    response: str | None


class Dictionary:
    """A trained zstd dictionary and its row id (which is also the id written in its frames)."""

    def __init__(self, dict_id: int, data: bytes):
        self.id = dict_id
        self.data = data
        self.zdict = zstd.ZstdCompressionDict(data)


# -- low level --------------------------------------------------------------------------------

def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


_local = threading.local()


def _per_thread(kind: str, dictionary: Dictionary | None, make) -> Any:
    """One (de)compressor per thread, kind and dictionary: they are not thread-safe, and
    building one with a dictionary costs more than compressing or decompressing a prompt."""
    cache = getattr(_local, kind, None)
    if cache is None:
        cache = {}
        setattr(_local, kind, cache)
    key = dictionary.id if dictionary is not None else 0
    codec = cache.get(key)
    if codec is None:
        if len(cache) > 32:
            cache.clear()
        codec = cache[key] = make(dictionary.zdict if dictionary is not None else None)
    return codec


def _compressor(dictionary: Dictionary | None) -> zstd.ZstdCompressor:
    return _per_thread("compressors", dictionary,
                       lambda zdict: zstd.ZstdCompressor(level=LEVEL, dict_data=zdict))


def _compress(data: bytes, dictionary: Dictionary | None) -> bytes:
    return _compressor(dictionary).compress(data)


def _decompressor(dictionary: Dictionary | None) -> zstd.ZstdDecompressor:
    return _per_thread("decompressors", dictionary,
                       lambda zdict: zstd.ZstdDecompressor(dict_data=zdict))


# Dictionaries by id, process-wide: immutable once written.
_dicts: OrderedDict[int, Dictionary] = OrderedDict()
_dicts_lock = threading.Lock()


def _dictionaries(s: Reader, ids: set[int]) -> dict[int, Dictionary]:
    with _dicts_lock:
        found = {i: _dicts[i] for i in ids if i in _dicts}
    missing = ids - found.keys()
    if missing:
        for did, data in s.execute(select(ZstdDict.id, ZstdDict.data)
                                   .where(ZstdDict.id.in_(missing))):
            found[did] = Dictionary(did, data)
            with _dicts_lock:
                _dicts[did] = found[did]
                while len(_dicts) > 256:
                    _dicts.popitem(last=False)
    if missing - found.keys():
        raise ValueError(f"zstd dictionaries {sorted(missing - found.keys())} are missing")
    return found


def _decompress_all(s: Reader, frames: Sequence[bytes]) -> list[bytes]:
    """Many zstd frames, each with whatever dictionary its header names."""
    ids = {zstd.get_frame_parameters(f).dict_id for f in frames} - {0}
    dicts = _dictionaries(s, ids) if ids else {}
    out = []
    for f in frames:
        did = zstd.get_frame_parameters(f).dict_id
        out.append(_decompressor(dicts[did] if did else None).decompressobj().decompress(f))
    return out


def _varint(n: int, out: bytearray) -> None:
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7


# -- segments ---------------------------------------------------------------------------------

_indexes: OrderedDict[str, dict[str, list[int]]] = OrderedDict()
_indexes_lock = threading.Lock()


def _index(code: str) -> dict[str, list[int]]:
    """Line starts of `code` by their first ANCHOR characters; the same codes (a parent, the
    island's elites) are quoted by prompt after prompt, so the last few hundred are kept."""
    idx = _cached_index(code)
    if idx is not None:
        return idx
    idx = _build_index(code)
    with _indexes_lock:
        _indexes[code] = idx
        while len(_indexes) > 256:
            _indexes.popitem(last=False)
    return idx


def _cached_index(code: str) -> dict[str, list[int]] | None:
    with _indexes_lock:
        idx = _indexes.get(code)
        if idx is not None:
            _indexes.move_to_end(code)
        return idx


def _build_index(code: str) -> dict[str, list[int]]:
    idx: dict[str, list[int]] = {}
    pos = 0
    while pos < len(code):
        key = code[pos:pos + ANCHOR]
        spots = idx.setdefault(key, [])
        if len(spots) < MAX_CANDIDATES:
            spots.append(pos)
        nl = code.find("\n", pos)
        if nl < 0:
            break
        pos = nl + 1
    return idx


def _find_spots(code: str, key: str) -> list[int]:
    """What `_index(code).get(key, [])` holds for a key of ANCHOR characters, found with
    `str.find` instead: the first MAX_CANDIDATES line starts where `code` begins with `key`, in
    order. Cheaper than building the index when only a few keys are looked up (a short reply
    against the child's new code). Searching for newline + key finds line starts only, so the
    loop runs at most MAX_CANDIDATES times whatever the code repeats."""
    out = [0] if code.startswith(key) else []
    needle = "\n" + key
    pos = code.find(needle)
    while pos >= 0 and len(out) < MAX_CANDIDATES:
        out.append(pos + 1)
        pos = code.find(needle, pos + 1)
    return out


INDEX_AT = 8   # line starts to look up from which a code not indexed yet is indexed, not searched


def _lookups(codes: Sequence[str], probes: int) -> list[dict[str, list[int]] | str]:
    """Per code, where to look its line starts up: its index when cached or when `probes` keys
    will be looked up, else the code itself (`_find_spots`). Either gives the same positions."""
    out: list[dict[str, list[int]] | str] = []
    for code in codes:
        idx = _cached_index(code)
        if idx is None and probes >= INDEX_AT:
            idx = _index(code)
        out.append(code if idx is None else idx)
    return out


def _common(a: str, i: int, b: str, j: int, limit: int) -> int:
    """Length of the common prefix of a[i:i+limit] and b[j:] (compared in shrinking chunks)."""
    limit = min(limit, len(b) - j)
    n, step = 0, 1024
    while step:
        while n + step <= limit and a[i + n:i + n + step] == b[j + n:j + n + step]:
            n += step
        step //= 4
    return n


Segment = tuple[int, int, int] | str


def segments(text: str, codes: Sequence[str]) -> list[Segment]:
    """`text` as literals and (code number, start, length) references. First every whole code
    (without its trailing newlines, as prompts show them) found verbatim, longest first: one C
    `find` each. Then, between those, at every line start the longest stretch that a code has
    verbatim from one of its line starts (a truncated program, SEARCH lines), if at least
    MIN_MATCH characters long."""
    spans: list[tuple[int, int, int]] = []
    for k, code in enumerate(codes):
        body = code.rstrip("\n")
        if len(body) < MIN_MATCH:
            continue
        pos = text.find(body)
        while pos >= 0:
            end = pos + len(body)
            if all(end <= s0 or pos >= e0 for s0, e0, _ in spans):
                spans.append((pos, end, k))
            pos = text.find(body, end)
    spans.sort()
    gaps = list(zip([0] + [end for _, end, _ in spans],
                    [start for start, _, _ in spans] + [len(text)]))
    # Line starts that may begin a reference: at least MIN_MATCH characters before a gap's end.
    probes = sum(1 + text.count("\n", lo, hi - MIN_MATCH)
                 for lo, hi in gaps if hi - lo >= MIN_MATCH)
    lookups = _lookups(codes, probes) if probes else []
    # Most probes (a prompt's template lines) start no code line: one set lookup rejects them.
    indexed = probes >= INDEX_AT and all(isinstance(w, dict) for w in lookups)
    anchors = set().union(*lookups) if indexed else None
    out: list[Segment] = []
    for (lo, hi), span in zip(gaps, spans + [None]):
        out += _matched(text, lo, hi, codes, lookups, anchors)
        if span is not None:
            out.append((span[2], 0, span[1] - span[0]))
    return out


def _matched(text: str, lo: int, hi: int, codes: Sequence[str],
             lookups: list[dict[str, list[int]] | str], anchors: set[str] | None) -> list[Segment]:
    """segments() of text[lo:hi] by line-start matching alone. Only line starts at least
    MIN_MATCH characters before `hi` are looked up: a reference from a later one would be
    shorter than MIN_MATCH. `anchors`, when given, holds every key that `lookups` have."""
    if hi - lo < MIN_MATCH:
        return [text[lo:hi]] if hi > lo else []
    out: list[Segment] = []
    lit_start = pos = lo
    last = hi - MIN_MATCH
    while pos <= last:
        best = (0, 0, 0)
        if pos == lo or text[pos - 1] == "\n":
            key = text[pos:pos + ANCHOR]
            for k, where in enumerate(lookups) if anchors is None or key in anchors else ():
                for spot in where.get(key, ()) if isinstance(where, dict) else _find_spots(where, key):
                    length = _common(text, pos, codes[k], spot, hi - pos)
                    if length > best[0]:
                        best = (length, k, spot)
        if best[0] >= MIN_MATCH:
            if lit_start < pos:
                out.append(text[lit_start:pos])
            out.append((best[1], best[2], best[0]))
            pos = lit_start = pos + best[0]
            continue
        nl = text.find("\n", pos, last)
        if nl < 0:
            break
        pos = nl + 1
    if lit_start < hi:
        out.append(text[lit_start:hi])
    return out


def _pack(segs: list[tuple[int, int, int] | str]) -> bytes:
    out = bytearray()
    for seg in segs:
        if isinstance(seg, str):
            raw = _utf8(seg)
            _varint(2 * len(raw), out)
            out += raw
        else:
            k, start, length = seg
            _varint(2 * k + 1, out)
            _varint(start, out)
            _varint(length, out)
    return bytes(out)


def _unpack(payload: bytes, codes: Sequence[str]) -> str:
    parts: list[str] = []
    pos, n = 0, len(payload)
    while pos < n:
        v, pos = _read_varint(payload, pos)
        if v % 2 == 0:
            end = pos + v // 2
            if end > n:
                raise ValueError("truncated literal")
            parts.append(_text(payload[pos:end]))
            pos = end
        else:
            start, pos = _read_varint(payload, pos)
            length, pos = _read_varint(payload, pos)
            code = codes[v // 2]
            if start + length > len(code):
                raise ValueError("reference past the end of its code")
            parts.append(code[start:start + length])
    return "".join(parts)


def _header(blob: bytes) -> tuple[int, list[str], bytes]:
    """(layout, referenced hashes, zstd frame) of a text blob."""
    if not blob:
        raise ValueError("empty text blob")
    layout = blob[0]
    if layout == PLAIN:
        return PLAIN, [], blob[1:]
    if layout == SEGMENTS:
        n = blob[1]
        end = 2 + 32 * n
        return SEGMENTS, [blob[2 + 32 * k:2 + 32 * (k + 1)].hex() for k in range(n)], blob[end:]
    raise ValueError(f"unknown text blob layout {layout}")


def ref_hashes(blob: bytes | None) -> list[str]:
    """The code hashes a stored text refers to (what gc must keep)."""
    return _header(blob)[1] if blob else []


def encode_text(text: str, refs: dict[str, str], *, dictionary: Dictionary | None = None) -> bytes:
    """`text` compactly: verbatim stretches of the codes in `refs` ({code hash: code}, all of
    which must be stored in code_blob) as references, the rest literal, then zstd. Decoded
    before it is returned; plain zstd of the text if that ever differs (or nothing matched)."""
    codes = {h: c for h, c in refs.items() if c and len(c) >= MIN_MATCH}
    plain = bytes([PLAIN]) + _compress(_utf8(text), dictionary)
    if not codes or len(text) < MIN_MATCH:
        return plain
    hashes = sorted(codes, key=lambda h: -len(codes[h]))[:MAX_REFS]   # longest first
    segs = segments(text, [codes[h] for h in hashes])
    used = sorted({s[0] for s in segs if not isinstance(s, str)})
    if not used:
        return plain
    renumber = {old: new for new, old in enumerate(used)}
    segs = [s if isinstance(s, str) else (renumber[s[0]], s[1], s[2]) for s in segs]
    kept = [hashes[k] for k in used]
    blob = (bytes([SEGMENTS, len(kept)]) + b"".join(bytes.fromhex(h) for h in kept)
            + _compress(_pack(segs), dictionary))
    try:
        frame = _header(blob)[2]
        same = _unpack(_decompressor(dictionary).decompressobj().decompress(frame),
                       [codes[h] for h in kept]) == text
    except (ValueError, IndexError, UnicodeDecodeError, zstd.ZstdError):
        same = False
    return blob if same and len(blob) < len(plain) else plain


def payload(blob: bytes, dictionary: Dictionary | None = None) -> bytes:
    """The decompressed segment list (or text) of a blob written without a dictionary: what a
    dictionary is trained on."""
    frame = _header(blob)[2]
    d = zstd.ZstdDecompressor(dict_data=dictionary.zdict if dictionary else None)
    return d.decompressobj().decompress(frame)


# -- code -------------------------------------------------------------------------------------

def _insert_ignore(s: Reader, table: Any, rows: list[dict[str, Any]],
                   returning: Any = None) -> list[Any]:
    """INSERT .. ON CONFLICT DO NOTHING; with `returning`, that column of the rows this
    statement created (not of those that were there, or that a concurrent writer's won)."""
    name = s.dialect.name if isinstance(s, Connection) else s.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).on_conflict_do_nothing()
    if returning is None:
        s.execute(stmt, rows)
        return []
    return list(s.execute(stmt.returning(returning), rows).scalars())


def put_codes(s: Reader, codes: Iterable[str], *, dictionary: Dictionary | None = None
              ) -> dict[str, str]:
    """Store each distinct code once ({hash: code} returned). Race-safe: INSERT .. ON CONFLICT
    DO NOTHING, so two writers of one text both succeed and one row remains (the first's)."""
    by_hash = {code_hash(c): c for c in codes if c is not None}
    if by_hash:
        insert_code_rows(s, [code_row(c, dictionary) for c in by_hash.values()])
    return by_hash


def code_row(code: str, dictionary: Dictionary | None = None) -> dict[str, Any]:
    """The code_blob row of `code` (compressed here: callers do it outside their transaction)."""
    raw = _utf8(code)
    return {"hash": code_hash(code), "data": _compress(raw, dictionary), "size": len(raw)}


def insert_code_rows(s: Reader, rows: list[dict[str, Any]]) -> None:
    """INSERT .. ON CONFLICT DO NOTHING, with no read first: on SQLite a transaction that reads
    before it writes cannot wait for another writer (SQLITE_BUSY at once), so this writes first."""
    for i in range(0, len(rows), 500):
        _insert_ignore(s, CodeBlob.__table__, rows[i:i + 500])


def insert_new_code_rows(s: Reader, rows: list[dict[str, Any]]) -> list[str]:
    """`insert_code_rows`, returning the hashes of the rows this call created (a failed import
    collects those: worker/transfer.py)."""
    created: list[str] = []
    for i in range(0, len(rows), 500):
        created += _insert_ignore(s, CodeBlob.__table__, rows[i:i + 500],
                                  returning=CodeBlob.__table__.c.hash)
    return created


def put_code(s: Reader, code: str) -> str:
    """Store one code (put_codes) and return its hash: what a program row's `code_hash` holds."""
    return next(iter(put_codes(s, [code])))


def has_code(s: Reader, h: str) -> bool:
    return s.execute(select(CodeBlob.hash).where(CodeBlob.hash == h)).first() is not None


def decode_code(s: Reader, data: bytes | None) -> str | None:
    return None if data is None else _text(_decompress_all(s, [data])[0])


# Built once: a statement built per call cost more CPU than its round trip (its cache key).
_CODES = select(CodeBlob.hash, CodeBlob.data).where(
    CodeBlob.hash.in_(bindparam("hashes", expanding=True)))


def get_codes(s: Reader, hashes: Iterable[str | None]) -> dict[str, str]:
    """{hash: code} for the stored ones among `hashes` (a pruned program's code may be gone)."""
    wanted = sorted({h for h in hashes if h})
    out: dict[str, str] = {}
    for i in range(0, len(wanted), 500):
        rows = s.execute(_CODES, {"hashes": wanted[i:i + 500]}).all()
        for (h, _), raw in zip(rows, _decompress_all(s, [d for _, d in rows])):
            out[h] = _text(raw)
    return out


# -- texts ------------------------------------------------------------------------------------

def decode_texts(s: Reader, blobs: list[bytes | None], *,
                 codes: dict[str, str] | None = None) -> list[str | None]:
    """The exact texts of stored prompt/response blobs (None stays None). `codes`: the codes
    the caller already read (get_codes), so that the ones the texts refer to are not read again."""
    heads = [None if b is None else _header(b) for b in blobs]
    wanted = {h for head in heads if head for h in head[1]}
    if codes is None or not wanted <= codes.keys():
        codes = get_codes(s, wanted)
    frames = [head[2] for head in heads if head]
    raws = iter(_decompress_all(s, frames))
    out: list[str | None] = []
    for head in heads:
        if head is None:
            out.append(None)
            continue
        layout, hashes, _ = head
        raw = next(raws)
        if layout == PLAIN:
            out.append(_text(raw))
            continue
        missing = [h for h in hashes if h not in codes]
        if missing:
            raise ValueError(f"a stored text refers to code {missing[0]} that is not stored")
        out.append(_unpack(raw, [codes[h] for h in hashes]))
    return out


def program_texts(s: Reader, program: Any) -> ProgramTexts:
    """The code, prompt and response of one program row (an ORM Program or a row with
    `code_hash`, `prompt_z`, `response_z`)."""
    code = get_codes(s, [program.code_hash]).get(program.code_hash) if program.code_hash else None
    prompt, response = decode_texts(s, [program.prompt_z, program.response_z])
    return ProgramTexts(code=code, prompt=prompt, response=response)


# -- dictionaries -----------------------------------------------------------------------------

def campaign_dictionaries(s: Reader, campaign_id: int) -> dict[str, Dictionary]:
    rows = s.execute(select(ZstdDict.kind, ZstdDict.id, ZstdDict.data)
                     .where(ZstdDict.campaign_id == campaign_id)).all()
    return {kind: Dictionary(did, data) for kind, did, data in rows}


def train(samples: list[bytes], dict_id: int) -> bytes | None:
    """A DICT_SIZE dictionary over `samples`, or None when they are too few or too alike."""
    samples = [x for x in samples if x]
    if len(samples) < 20 or sum(map(len, samples)) < 4 * DICT_SIZE:
        return None
    try:
        return zstd.train_dictionary(DICT_SIZE, samples, dict_id=dict_id, level=LEVEL).as_bytes()
    except zstd.ZstdError:
        return None


def train_campaign_dictionaries(sessions: Any, campaign_id: int, *, last: int = TRAIN_AT
                                ) -> dict[str, Dictionary]:
    """Train (once) the campaign's code and text dictionaries on its latest `last` programs.
    Two workers racing both train; the unique (campaign, kind) keeps the first one's."""
    with sessions() as s:
        have = campaign_dictionaries(s, campaign_id)
        if len(have) == 2:
            return have
        rows = s.execute(select(Program.code_hash, Program.prompt_z, Program.response_z)
                         .where(Program.campaign_id == campaign_id)
                         .order_by(Program.id.desc()).limit(last)).all()
        codes = get_codes(s, [r[0] for r in rows])
        texts: list[bytes] = []
        for _, pz, rz in rows:
            for blob in (pz, rz):
                if blob:
                    frame = _header(blob)[2]
                    if zstd.get_frame_parameters(frame).dict_id == 0:
                        texts.append(payload(blob))
    samples = {CODE: [_utf8(c) for c in codes.values()], TEXT: texts}
    for kind, data in samples.items():
        if kind in have:
            continue
        dict_id = random.SystemRandom().randrange(1, 2**31 - 1)
        trained = train(data, dict_id)
        if trained is None:
            continue
        try:
            with sessions.begin() as s:
                s.add(ZstdDict(id=dict_id, campaign_id=campaign_id, kind=kind, data=trained))
        except IntegrityError:
            pass  # another worker's is in (or, 1 in 2**31, the id was taken: next time)
    with sessions() as s:
        return campaign_dictionaries(s, campaign_id)


# -- garbage ----------------------------------------------------------------------------------
#
# A code blob is shared by every program, campaign and project with that text, and writers
# decide "already stored" before their transaction (the store's in-process memory, a read on
# another connection, an import's earlier code batch). So a gc that deleted a blob no unpruned
# program needed *when it looked* could delete one that a commit of any campaign was about to
# refer to, leaving a program (or a prompt's reference) without its code. Two halves close it:
#
# - writers call `hold_codes` inside the transaction that writes the referring rows, after its
#   first write: it re-inserts a blob that is gone (the writer has the text) and, on
#   PostgreSQL, locks the rows it found FOR KEY SHARE until the commit;
# - `gc_code_blobs` takes its locks first and looks second: on PostgreSQL it locks its
#   candidates FOR UPDATE SKIP LOCKED (a blob a writer holds is skipped this time; a writer
#   arriving later waits for the gc and then finds the blob gone and puts it back), and only
#   then, in new statements (READ COMMITTED: each sees every commit made before it started),
#   checks which are still unneeded; on SQLite it runs as one BEGIN IMMEDIATE transaction, so
#   no commit lands between its look and its delete (commits wait on busy_timeout meanwhile).

def hold_codes(conn: Reader, codes: dict[str, str | None]) -> set[str]:
    """Make sure the code blobs of `codes` ({hash: text, or None when the caller has no text})
    are stored when the caller's transaction commits. Call it in the transaction that writes
    rows referring to them, after its first write (SQLite: the write lock is held then).
    Found ones are locked FOR KEY SHARE on PostgreSQL; missing ones with a text are inserted
    (and locked). Returns the hashes that are missing and have no text."""
    wanted = sorted(h for h in codes if h)
    if not wanted:
        return set()
    missing = set(wanted) - _locked(conn, wanted)
    rows = [code_row(codes[h]) for h in sorted(missing) if codes[h] is not None]
    if rows:
        insert_code_rows(conn, rows)
        # ON CONFLICT DO NOTHING locks nothing when another writer's row won: lock it now.
        missing -= _locked(conn, [r["hash"] for r in rows])
    return missing


def _dialect(s: Reader) -> str:
    return s.dialect.name if isinstance(s, Connection) else s.get_bind().dialect.name


def _locked(s: Reader, hashes: list[str], *, for_update: bool = False) -> set[str]:
    """The stored ones among `hashes`; on PostgreSQL locked FOR KEY SHARE (a writer's hold)
    or FOR UPDATE SKIP LOCKED (the gc's: rows a writer holds are left out)."""
    out: set[str] = set()
    for i in range(0, len(hashes), 500):
        q = select(CodeBlob.hash).where(CodeBlob.hash.in_(hashes[i:i + 500]))
        if _dialect(s) == "postgresql":
            q = (q.with_for_update(skip_locked=True) if for_update
                 else q.with_for_update(key_share=True, read=True))   # FOR KEY SHARE
        out.update(s.execute(q).scalars())
    return out


def _unneeded(s: Reader, hashes: Iterable[str] | None) -> set[str]:
    """Code blobs (all, or those among `hashes`) that no unpruned program's code names."""
    live = exists().where(Program.code_hash == CodeBlob.hash, Program.pruned_at.is_(None))
    if hashes is None:
        return set(s.scalars(select(CodeBlob.hash).where(~live)))
    wanted = sorted(set(hashes))
    out: set[str] = set()
    for i in range(0, len(wanted), 500):
        out.update(s.scalars(select(CodeBlob.hash).where(CodeBlob.hash.in_(wanted[i:i + 500]),
                                                         ~live)))
    return out


def gc_code_blobs(s: Session, only: Iterable[str] | None = None) -> int:
    """Delete the code blobs that nothing needs any more: neither an unpruned program's code
    nor a reference in a kept prompt or response (all of them, or those among `only`). Run it
    in a transaction of its own, on SQLite begun with `sqlite_begin_immediate` (worker/prune.py
    does): see above for why it cannot race a commit. Returns how many were deleted."""
    candidates = _unneeded(s, only)
    if candidates and _dialect(s) == "postgresql":
        # Lock first, then look again: a program committed before the lock was taken is seen by
        # the statements below; one that holds a candidate now keeps it (skipped).
        candidates = _locked(s, sorted(candidates), for_update=True)
        candidates &= _unneeded(s, candidates)
    if not candidates:
        return 0
    last = 0
    while candidates:   # keyset over the kept texts: only their headers are read
        rows = s.execute(select(Program.id, Program.prompt_z, Program.response_z)
                         .where(Program.id > last, Program.pruned_at.is_(None),
                                (Program.prompt_z.is_not(None)) | (Program.response_z.is_not(None)))
                         .order_by(Program.id).limit(1000)).all()
        if not rows:
            break
        for pid, pz, rz in rows:
            candidates.difference_update(ref_hashes(pz), ref_hashes(rz))
        last = rows[-1][0]
    gone = sorted(candidates)
    for i in range(0, len(gone), 500):
        s.execute(delete(CodeBlob).where(CodeBlob.hash.in_(gone[i:i + 500])))
    return len(gone)


# -- what a prompt quotes -------------------------------------------------------------------

_FENCE_INFO = re.compile(r"[\w+#.-]*\n")


def quoted_hashes(prompt: str) -> list[str]:
    """Hashes the fenced code blocks of a prompt would have as whole programs (a program is
    shown with its trailing newlines stripped: evolution/prompts.py `_clip_code`), two per
    block: with and without one trailing newline."""
    out: list[str] = []
    text = prompt or ""
    pos = text.find("```")
    while pos >= 0:
        info = _FENCE_INFO.match(text, pos + 3)
        if info is None:
            pos = text.find("```", pos + 3)
            continue
        start = info.end()
        end = text.find("\n```", start - 1)
        if end < 0:
            break
        block = text[start:end] if end >= start else ""
        out += [code_hash(block + "\n"), code_hash(block)]
        pos = text.find("```", end + 4)
    return out
