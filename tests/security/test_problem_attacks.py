"""A hostile key holder uploading a problem, and a hostile candidate or LLM reply.

Each test is one attack on the upload path (`read_upload` -> `package_from_files`), the config
mapping (`map_problem`), the sandbox driver's file writing, or the program text helpers
(EVOLVE-BLOCK markers, the text mutator). An upload is either refused whole with a one-line
`PackageError` (nothing stored) or stored with the attack neutralised; a config the campaign
could never run is refused with a ValueError (the API's 422), never an OverflowError, TypeError
or RecursionError (a 500). Inputs within the limits are timed: any parse over a second is a bug.
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import random
import struct
import tarfile
import time
import tracemalloc
import unicodedata
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from evoforge.evaluators.openevolve import driver
from evoforge.evaluators.openevolve.config import map_problem
from evoforge.evaluators.openevolve.files import (
    CONFIG_NAME, SECRET_ASSIGNMENT, SECRET_NAME, SECRET_TEXT, refusal)
from evoforge.evaluators.openevolve.package import (
    MAX_FILE_BYTES, MAX_UPLOAD_BYTES, PackageError, package_from_files, read_upload)
from evoforge.evolution.program import evolvable_regions, outside_edit_reason
from evoforge.evolution.text_mutator import _NUMBER, literal_sites, perturb_literal

SEED = "# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n"
EVALUATOR = "def evaluate(program_path):\n    return {'combined_score': 1.0}\n"
GOOD = {"initial_program.py": SEED, "evaluator.py": EVALUATOR}


@contextmanager
def fast(limit: float = 1.0):
    """The block must take under `limit` seconds of CPU (no super-linear parse). CPU time, not
    wall time: other tests may load the machine."""
    t0 = time.process_time()
    yield
    took = time.process_time() - t0
    assert took < limit, f"took {took:.2f} s"


def linear(fn, make, small: int = 1 << 18, big: int = 2 << 20) -> None:
    """fn(make(n)) grows at most about linearly from `small` to `big` (8x): a quadratic
    regex grows 64x. Best of three, so a loaded machine does not decide."""
    def best(n):
        text = make(n)
        times = []
        for _ in range(3):
            t0 = time.process_time()
            fn(text)
            times.append(time.process_time() - t0)
        return min(times)
    a, b = best(small), best(big)
    assert b < max(24 * a, 0.05), f"{a:.4f} s -> {b:.4f} s for 8x the input"


def pkg(files: dict[str, str | bytes], **kw):
    return package_from_files({k: v.encode() if isinstance(v, str) else v
                               for k, v in files.items()}, **kw)


def refused(body: bytes, ctype: str = "") -> str:
    with pytest.raises(PackageError) as err:
        package_from_files(read_upload(body, ctype))
    assert "\n" not in str(err.value)
    return str(err.value)


def zipped(files: dict[str, str | bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return buf.getvalue()


def tarred(members: list[tarfile.TarInfo | tuple[str, bytes]], *,
           fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for m in members:
            if isinstance(m, tuple):
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
            else:
                tf.addfile(m, io.BytesIO(b"x" * m.size) if m.size else None)
    return buf.getvalue()


def good_members() -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in GOOD.items()]


def with_config(text: str, **extra: str):
    return pkg({**GOOD, "config.yaml": text, **extra})


def mapped_error(config: str, evaluator: str = EVALUATOR) -> str:
    """The config is stored (or refused at upload); mapping it must be a ValueError."""
    try:
        p = pkg({"initial_program.py": SEED, "evaluator.py": evaluator, "config.yaml": config})
    except PackageError as exc:
        return str(exc)
    with pytest.raises((ValueError, SyntaxError)) as err:
        map_problem(p)
    return str(err.value)


# -- paths ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["a//b.py", "a/./b.py", "a/", "a/b/", "./", ".", "//x.py",
                                  "a/../b.py", "..", "x/..", "a\\b.py", "a\tb.py"])
def test_path_spellings_refuse_the_upload(path):
    body = json.dumps({**GOOD, path: "x"}).encode()
    with pytest.raises(PackageError):
        package_from_files(read_upload(body, "application/json"))


def test_other_controls_and_format_characters_are_skipped_and_shown_escaped():
    p = pkg({**GOOD, "a\u0085.py": "x", "evil\u202etxt.py": "x", "a\u200b.py": "x"})
    assert set(p.files) == set(GOOD) and len(p.skipped) == 3
    assert all(s.isascii() and s.isprintable() for s in p.skipped)


def test_dot_slash_is_the_same_file_and_cannot_double_it():
    p = package_from_files(read_upload(json.dumps({"./initial_program.py": SEED,
                                                   "././evaluator.py": EVALUATOR}).encode(),
                                       "application/json"))
    assert set(p.files) == set(GOOD) and p.digest == pkg(GOOD).digest
    assert "twice" in refused(tarred(good_members() + [("./evaluator.py", b"y")]))


def test_tar_file_with_a_trailing_slash_is_no_second_name():
    msg = refused(tarred(good_members() + [("evaluator.py/", b"def evaluate(p): pass\n")]))
    assert "a file named as a directory" in msg


def test_unicode_lookalikes_are_skipped_never_confused_with_the_real_files():
    nfd = unicodedata.normalize("NFD", "café.py")
    p = pkg({**GOOD, "café.py": "a", nfd: "b", "ｅvaluator.py": "evil",
             "ｕtils/io.py": "evil", "evaluator.py\u200b": "evil"})
    assert set(p.files) == set(GOOD) and p.files["evaluator.py"] == EVALUATOR
    assert len(p.skipped) == 5 and all("not a plain file name" in s for s in p.skipped)


def test_case_variants_are_distinct_files_on_the_linux_sandbox():
    # ext4 (and the sandbox's tmpfs) are case-sensitive: both are written, neither replaces
    # the other; the evaluator is the exact name only.
    p = pkg({**GOOD, "Evaluator.py": "evil", "DATA.csv": "1", "data.csv": "2"})
    assert p.evaluator_path == "evaluator.py" and p.files["evaluator.py"] == EVALUATOR
    assert p.files["DATA.csv"] == "1" and p.files["data.csv"] == "2"


def test_names_too_long_for_ext4_are_skipped_not_written():
    long = "a" * 300 + ".py"
    p = pkg({**GOOD, long: "x", f"{'d' * 256}/x.py": "y"})
    assert set(p.files) == set(GOOD)
    # every kept component is SAFE_NAME: ASCII, at most 100 bytes, under ext4's 255
    deep = "/".join(["d" * 100] * 7) + "/x.py"
    assert deep in pkg({**GOOD, deep: "z"}).files


def test_names_that_shadow_the_stdlib_are_kept_and_harm_only_their_uploader(tmp_path):
    """A shipped json.py / os.py is imported by the problem's own evaluator only (the harness
    and driver imported theirs before): the uploader can only break their own problem, which
    runs their code anyway."""
    p = pkg({**GOOD, "json.py": "raise ImportError('shadowed')\n", "os.py": "X = 1\n"})
    assert {"json.py", "os.py"} <= set(p.files)


def test_driver_writes_nothing_outside_its_scratch_directory(tmp_path):
    home = tmp_path / "eval"
    home.mkdir()
    driver._write_files(str(home), {"../escape.py": "x", "/tmp/abs.py": "x", "a/../../e.py": "x",
                                    ".hidden": "x", "a/.b/c.py": "x", "a\\..\\e.py": "x",
                                    "a\x00b": "x", "/".join("d" * 9): "x", "": "x",
                                    "ok/fine.py": "y"})
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["eval/ok/fine.py"]
    for bad in ("../evaluator.py", "/etc/passwd", ".evaluator.py", "a//b.py"):
        assert driver._safe_parts(bad) is None


def test_driver_refuses_a_suffix_that_is_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(driver, "_candidate_source", lambda m: "x = 1\n")
    for suffix in ("/../../x", "../x", ".a/b", ".a\\b", "py"):
        with pytest.raises(ValueError, match="bad file suffix"):
            driver.drive(None, [{"call": "evaluate", "evaluator": "evaluator.py",
                                 "files": {}, "suffix": suffix}], 0)
    assert not list(tmp_path.iterdir())


# -- archives -------------------------------------------------------------------------------

def test_zip_data_descriptor_lying_about_sizes_is_refused():
    """Bit 3: the local header says 0, the data descriptor and the central directory say
    100 bytes for 1 MiB of data. zipfile reads by the central directory; the CRC fails."""
    body = bytearray(zipped({**GOOD, "zeros.txt": b"0" * (1 << 20)}))
    name = body.index(b"zeros.txt")
    local = body.rindex(b"PK\x03\x04", 0, name)
    central = body.index(b"PK\x01\x02", name + 9)
    central = body.index(b"PK\x01\x02" + body[central + 4:central + 8], body.rindex(b"zeros.txt") - 46)
    struct.pack_into("<H", body, local + 6, struct.unpack_from("<H", body, local + 6)[0] | 8)
    struct.pack_into("<II", body, local + 18, 0, 0)
    struct.pack_into("<I", body, central + 24, 100)
    assert "not a valid zip" in refused(bytes(body))


def test_zip64_declaring_a_huge_member_is_refused_before_reading():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for k, v in GOOD.items():
            zf.writestr(k, v)
        with zf.open(zipfile.ZipInfo("big.txt"), "w", force_zip64=True) as f:
            f.write(b"0" * 1000)
    body = bytearray(buf.getvalue())
    central = body.rindex(b"PK\x01\x02")
    assert body[central + 46:central + 53] == b"big.txt"
    # the central directory says "see the zip64 extra field", which claims 1 TiB
    struct.pack_into("<I", body, central + 24, 0xFFFFFFFF)
    extra_len = struct.unpack_from("<H", body, central + 30)[0]
    zip64 = struct.pack("<HHQ", 1, 8, 1 << 40)
    at = central + 46 + 7 + extra_len
    body[at:at] = zip64
    struct.pack_into("<H", body, central + 30, extra_len + len(zip64))
    end = body.rindex(b"PK\x05\x06")
    struct.pack_into("<I", body, end + 12, struct.unpack_from("<I", body, end + 12)[0] + len(zip64))
    with fast():
        msg = refused(bytes(body))
    assert "over 2 MiB" in msg


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_bzip2_and_lzma_bombs_are_never_inflated(method):
    """zipfile inflates bzip2 and lzma members with no output limit (deflate has one): 4 KiB
    of bzip2 is gigabytes. Members may only be stored or deflated."""
    payload = b"\0" * (48 << 20)
    body = zipped({**GOOD, "zeros.txt": payload}, method)
    body = body.replace(struct.pack("<I", len(payload)), struct.pack("<I", 10))  # declared: 10 B
    assert len(body) < 64 << 10
    tracemalloc.start()
    try:
        msg = refused(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MiB inflated"
    assert "compressed with method" in msg


def test_zip_with_a_huge_central_directory_is_refused_fast():
    entry = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0,
                        0, 0) + b"a"
    count = (MAX_UPLOAD_BYTES - 100) // len(entry)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(entry) * count, 4, 0)
    body = b"PK\x03\x04" + entry * count + end
    with fast(3.0):
        refused(body)


def test_tar_pax_header_cannot_rename_a_member_out_of_the_problem():
    info = tarfile.TarInfo("innocent.txt")
    info.pax_headers = {"path": "../../etc/cron.d/x"}
    info.size = 3
    assert "'..' is not a plain file name" in refused(tarred([*good_members(), info]))
    info = tarfile.TarInfo("innocent.txt")
    info.pax_headers = {"path": "/etc/passwd"}
    info.size = 3
    assert "an absolute path" in refused(tarred([*good_members(), info]))


def test_tar_pax_size_override_is_checked_like_any_size():
    info = tarfile.TarInfo("data.txt")
    info.size = MAX_FILE_BYTES + 1  # carried by the pax header in PAX_FORMAT
    info.pax_headers = {"size": str(MAX_FILE_BYTES + 1)}
    assert "over 2 MiB" in refused(tarred([*good_members(), info]))
    # a pax size that lies (bigger than the data there) ends as a malformed archive
    header = tarfile.TarInfo("data.txt")
    header.size = 3
    header.pax_headers = {"size": "999999"}
    blocks = b"".join(_member(k, v) for k, v in good_members())
    lying = blocks + header.tobuf(tarfile.PAX_FORMAT) + b"abc".ljust(512, b"\0") + b"\0" * 1024
    assert "not a valid tar" in refused(lying, "application/x-tar")


def _member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    pad = -len(data) % 512
    return info.tobuf(tarfile.PAX_FORMAT) + data + b"\0" * pad


def test_gnu_longname_members_are_checked_like_short_ones():
    long_evil = "a/" * 60 + "../" * 70 + "x.py"
    assert "'..' is not a plain file name" in refused(
        tarred([*good_members(), (long_evil, b"x")], fmt=tarfile.GNU_FORMAT))
    long_ok = "d" * 150 + ".txt"  # a component over SAFE_NAME's 100: skipped
    p = package_from_files(read_upload(tarred([*good_members(), (long_ok, b"x")],
                                              fmt=tarfile.GNU_FORMAT)))
    assert long_ok not in p.files and any(long_ok in s for s in p.skipped)


def test_setuid_mode_bits_are_not_carried():
    info = tarfile.TarInfo("tool.py")
    info.mode = 0o6777
    info.size = 1
    p = package_from_files(read_upload(tarred([*good_members(), info])))
    assert p.files["tool.py"] == "x"  # text only: modes are never stored nor written


def test_gzip_of_gzip_and_truncated_gzip_are_one_line_errors():
    inner = tarred(good_members())
    twice = gzip.compress(gzip.compress(inner))
    assert "not a valid tar" in refused(twice)
    with fast():
        refused(gzip.compress(inner)[:50])


def test_tar_member_with_a_negative_size_cannot_loop_the_reader():
    """CVE-2025-8194: a negative size (base-256) makes Python 3.11.7's tarfile seek
    backwards and read the same members forever."""
    body = bytearray(tarred([*good_members(), ("data.txt", b"abc")], fmt=tarfile.USTAR_FORMAT))
    at = body.index(b"data.txt")
    body[at + 124:at + 136] = b"\xff" * 4 + (-2048).to_bytes(8, "big", signed=True)
    header = body[at:at + 512]
    header[148:156] = b" " * 8
    body[at + 148:at + 156] = f"{sum(header):06o}\0 ".encode()
    with fast(2.0):
        assert "not a valid tar" in refused(bytes(body))
    body[at + 156:at + 157] = b"5"  # as a directory: tarfile does not move by its size
    header = body[at:at + 512]
    header[148:156] = b" " * 8
    body[at + 148:at + 156] = f"{sum(header):06o}\0 ".encode()
    with fast(2.0):
        assert sorted(read_upload(bytes(body))) == sorted(GOOD)


@pytest.mark.parametrize("body,ctype", [
    (zipped({}), ""), (tarred([]), "application/x-tar"), (b"{}", "application/json"),
    (b"", "application/json"), (b"", "application/zip"),
])
def test_empty_uploads_are_refused(body, ctype):
    with pytest.raises(PackageError):
        package_from_files(read_upload(body, ctype))


def test_an_archive_of_only_directories_is_refused():
    d = tarfile.TarInfo("problem/")
    d.type = tarfile.DIRTYPE
    sub = tarfile.TarInfo("problem/sub/")
    sub.type = tarfile.DIRTYPE
    assert "no initial_program" in refused(tarred([d, sub]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("problem/", b"")
    assert "no initial_program" in refused(buf.getvalue())


# -- JSON -----------------------------------------------------------------------------------

def test_json_with_a_million_keys_is_refused_fast():
    body = ("{" + ",".join(f'"{i:x}":""' for i in range(700_000)) + "}").encode()
    assert len(body) <= MAX_UPLOAD_BYTES
    with fast(3.0):
        assert "more than" in refused(body, "application/json")


@pytest.mark.parametrize("body", [b'{"a": ' * 200_000 + b"1" + b"}" * 200_000,
                                  b'{"a.py": ' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}"])
def test_deep_json_is_refused(body):
    with fast():
        refused(body[:MAX_UPLOAD_BYTES], "application/json")


@pytest.mark.parametrize("value", ["1", "1e999", "NaN", "null", "true", "[\"x\"]", "{\"x\": \"y\"}"])
def test_json_values_must_be_text(value):
    assert "the value must be the file's text" in refused(
        f'{{"initial_program.py": {value}}}'.encode(), "application/json")


# -- YAML and TOML configs ------------------------------------------------------------------

def test_yaml_tags_never_construct_objects(tmp_path):
    flag = tmp_path / "pwned"
    for text in (f"x: !!python/object/apply:os.system ['touch {flag}']\n",
                 "x: !!python/name:os.system\n", "x: !!python/object/new:list [[1]]\n"):
        with pytest.raises(PackageError, match="not valid YAML"):
            with_config(text)
    assert not flag.exists()
    with pytest.raises(PackageError, match="holds a bytes"):
        with_config("x: !!binary aGVsbG8=\n")


def test_yaml_alias_bomb_and_recursion_are_refused_fast():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(9))
    with fast():
        with pytest.raises(PackageError, match="too large"):
            with_config(bomb)
    for text in ("a: &a [*a]\n", "a: &a {b: *a}\n"):
        with fast():
            with pytest.raises(PackageError, match="too large or too deeply nested"):
                with_config(text)


def test_deep_yaml_is_refused():
    for text in ("a: " + "[" * 5000 + "]" * 5000 + "\n", "a: " + "{a: " * 5000 + "1" + "}" * 5000,
                 "".join(" " * i + "- \n" for i in range(0, 1000, 2)) + " " * 1000 + "x\n"):
        with fast():
            with pytest.raises(PackageError):
                with_config(text)


@pytest.mark.parametrize("text", ["max_iterations: 1" + "0" * 5000 + "\n",
                                  "x: 0x" + "f" * 5000 + "\n", "? 1" + "0" * 5000 + "\n: 1\n"])
def test_enormous_yaml_ints_are_a_package_error(text):
    with fast():
        with pytest.raises(PackageError):
            with_config(text)


@pytest.mark.parametrize("text", ["evaluator: {timeout: .nan}\n", "evaluator: {timeout: .inf}\n",
                                  "llm: {temperature: -.inf}\n", "x: [1.0e+400]\n"])
def test_yaml_nan_and_inf_are_refused(text):
    with pytest.raises(PackageError, match="not a finite number"):
        with_config(text)


@pytest.mark.parametrize("text", ['prompt: {system_message: "\\ud800"}\n', '"\\udcff": 1\n',
                                  'llm: {models: [{name: "m\\ud800"}]}\n'])
def test_lone_surrogates_in_a_config_are_a_package_error(text):
    with pytest.raises(PackageError):
        with_config(text)


def test_toml_nan_inf_huge_and_surrogates_are_refused():
    base = {**GOOD}
    for toml in ("[resources]\ntimeout_s = nan\n", "[resources]\ntimeout_s = inf\n",
                 "[llm]\ntemperature = -inf\n", '[llm]\nsystem_message = "\\ud800"\n',
                 "[evolution]\nrandom_seed = 1" + "0" * 5000 + "\n"):
        with fast():
            with pytest.raises(PackageError):
                pkg({**base, "evoforge.toml": toml})


# -- the config mapping ---------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["../../x", "/x", ".py\n", ".r/../../x", ".\x00", "." + "a" * 40,
                                    ".py ", ".p y"])
def test_a_file_suffix_that_is_no_suffix_is_refused(suffix):
    assert "file_suffix" in mapped_error(f"file_suffix: {json.dumps(suffix)}\n")
    toml = f"[problem]\nfile_suffix = {json.dumps(suffix)}\n"
    with pytest.raises((PackageError, ValueError), match="file_suffix"):
        map_problem(pkg({**GOOD, "evoforge.toml": toml}))


@pytest.mark.parametrize("language", ["rust\x1b[31m", "c\x00", "a b", "x" * 100])
def test_a_language_with_control_characters_is_refused(language):
    assert "language" in mapped_error(f"language: {json.dumps(language)}\n")


@pytest.mark.parametrize("config", [
    "llm: {api_base: 'http://x', models: 5}\n", "database: {feature_dimensions: 3}\n",
    "evaluator: {cascade_thresholds: 7}\n",
    "llm: {api_base: 'http://x', models: [{name: m, weight: [1]}]}\n",
    "llm: {api_base: 'http://x', models: [{name: m, weight: x}]}\n",
    "database: {feature_bins: {a: x, b: 1}}\n", "evaluator: {timeout: [1]}\n",
    "evaluator: {timeout: 1" + "0" * 400 + "}\n",
    "database: {population_size: 1" + "0" * 400 + "}\n",
    "llm: {api_base: 'http://x', temperature: 1" + "0" * 400 + "}\n",
    "llm: {api_base: 'http://x', models: [{name: m, weight: 1" + "0" * 400 + "}]}\n",
    "llm: {api_base: 'http://x', primary_model: m, primary_model_weight: [2]}\n",
    "llm: 5\n", "database: [1]\n",
])
def test_wrong_types_and_huge_numbers_in_a_config_are_value_errors(config):
    try:  # refused as a ValueError (422), or clamped: never a TypeError or OverflowError (500)
        p = with_config(config)
        map_problem(p)
    except (ValueError, SyntaxError):
        pass


@pytest.mark.parametrize("evaluator", [
    "x = " + "-" * 200_000 + "1\n" + EVALUATOR,
    "x = " + "not " * 100_000 + "1\n" + EVALUATOR,
    "x = " + "(" * 1000 + ")" * 1000 + "\n" + EVALUATOR,
    "x = 1" + "+1" * 200_000 + "\n" + EVALUATOR,
])
def test_a_pathological_evaluator_is_a_value_or_syntax_error(evaluator):
    with fast(3.0):
        try:
            map_problem(pkg({**GOOD, "evaluator.py": evaluator}))
        except (ValueError, SyntaxError):
            pass


def test_native_paths_cannot_escape_or_reuse_the_evaluator():
    for toml, match in (('[problem]\nevaluator = "../evaluator.py"\n', "top of the problem"),
                        ('[problem]\nevaluator = "/evaluator.py"\n', "top of the problem"),
                        ('[problem]\nevaluator = "sub/evaluator.py"\n', "top of the problem"),
                        ('[problem]\nseed = "../initial_program.py"\n', "not a plain file"),
                        ('[problem]\nseed = "/etc/passwd"\n', "an absolute path"),
                        ('[problem]\nseed = ".env"\n', "hidden"),
                        ('[problem]\nseed = "evoforge.toml"\n', "no such file"),
                        ('[problem]\nseed = "requirements.txt"\n', "no such file"),
                        ('[problem]\nseed = "evaluator.py"\n', "the evaluator")):
        with pytest.raises(PackageError, match=match):
            pkg({**GOOD, ".env": "K=1", "requirements.txt": "numpy\n", "evoforge.toml": toml})


# -- EVOLVE-BLOCK markers and the text mutator ----------------------------------------------

def test_markers_inside_strings_are_not_markers():
    code = 'x = "# EVOLVE-BLOCK-START"\ny = 1\nz = "// EVOLVE-BLOCK-END"\n'
    assert evolvable_regions(code) == []


@pytest.mark.parametrize("edit", [
    SEED.replace("x = 1\n", "x = 1\n# EVOLVE-BLOCK-END\nimport os\n"),      # closes early
    SEED.replace("x = 1\n", "x = 2\n") + "# EVOLVE-BLOCK-START\ny = 1\n",   # opens another
    SEED.replace("# EVOLVE-BLOCK-END\n", ""),                              # drops the end
    SEED.replace("x = 1\n", "x = 1  # \u2028# EVOLVE-BLOCK-END\nimport os\n"),
    SEED.replace("x = 1\n", "x = 1\n// EVOLVE-BLOCK-END\n"),
    SEED.replace("# EVOLVE-BLOCK-END", "#EVOLVE-BLOCK-END "),
])
def test_edits_that_move_the_markers_are_refused(edit):
    original = "import sys\n" + SEED + "print(x)\n"
    edited = "import sys\n" + edit + "print(x)\n"
    assert outside_edit_reason(original, edited)


def test_a_nested_start_is_content_and_an_unbalanced_end_is_a_line():
    code = "# EVOLVE-BLOCK-START\n# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n# EVOLVE-BLOCK-END\n"
    (r,) = evolvable_regions(code)
    assert code[r.start:r.end] == "# EVOLVE-BLOCK-START\nx = 1\n"
    assert outside_edit_reason(code, code.replace("x = 1", "x = 2")) is None


@pytest.mark.parametrize("make", [
    lambda n: " ".join(["1"] * (n // 2)),                     # one line of numbers
    lambda n: "x = [" + ", ".join(["1.5"] * (n // 5)) + "]",  # one long list
    lambda n: '"' + "\\\"1 " * (n // 4),                      # escaped quotes and numbers
    lambda n: "1\n" * (n // 2),
    lambda n: "1" * n + "x",
    lambda n: "1." * (n // 2), lambda n: ".1" * (n // 2), lambda n: "1e" * (n // 2),
])
def test_the_text_mutator_stays_linear_on_a_megabyte(make):
    def code(n):
        return "// EVOLVE-BLOCK-START\n" + make(n) + "\n// EVOLVE-BLOCK-END\n"
    linear(lambda c: perturb_literal(c, random.Random(0)), code, small=1 << 17, big=1 << 20)
    with fast(5.0):
        literal_sites(code(1 << 20))


def test_the_text_mutator_leaves_quoted_numbers_alone():
    code = 'let s = "a \\" 12"; let n = 7;\n'
    sites = literal_sites(code)
    assert [code[a:b] for a, b in sites] == ["7"]


@pytest.mark.parametrize("make", [
    lambda n: "secret" + " " * n, lambda n: "password:" + " " * n, lambda n: "api_key" + "=" * n,
    lambda n: "-----BEGIN " + "A " * (n // 2), lambda n: "sk-" * (n // 3),
    lambda n: "secret:" + " x" * (n // 2), lambda n: ("ghp_" + "a" * 29 + " ") * (n // 34),
    lambda n: "xoxa-" + "-" * n, lambda n: "AKIA" * (n // 4), lambda n: "secret " * (n // 7),
    lambda n: "password" + " :" * (n // 2),
])
def test_secret_regexes_are_linear(make):
    linear(lambda t: (SECRET_TEXT.search(t), SECRET_ASSIGNMENT.search(t)), make)
    linear(lambda t: refusal("data.txt", t), make)


def test_name_regexes_are_linear():
    for name in ("config" + "a" * 100_000 + ".yam", "token" * 20_000, "a_" * 50_000):
        with fast():
            CONFIG_NAME.match(name)
            SECRET_NAME.search(name)


def test_number_regex_is_linear():
    for text in ("1" * (1 << 20) + "x", "1.1" * (1 << 19) + "x", "1" * (1 << 20) + "e+",
                 "9" * (1 << 20) + ".", "0." + "1" * (1 << 20) + "e" + "1" * 10 + "x"):
        with fast():
            list(_NUMBER.finditer(text))


def test_requirements_parsing_is_linear():
    lines = "\n".join([" " * 1000 + "#" * 1000] * 500 + ["a" + " #" * 400_000])
    with fast():
        pkg({**GOOD, "requirements.txt": lines})


# -- the digest -----------------------------------------------------------------------------

def test_digest_is_stable_across_orders_and_containers():
    files = {**GOOD, "data/a.csv": "1\n", "config.yaml": "llm: {temperature: 0.5, top_p: 0.9}\n"}
    reordered = dict(reversed(list(files.items())))
    reordered["config.yaml"] = "llm:\n  top_p: 0.9\n  temperature: 0.5\n"
    a = pkg(files)
    assert pkg(reordered).digest == a.digest
    assert package_from_files(read_upload(zipped(files))).digest == a.digest
    assert package_from_files(read_upload(json.dumps(files).encode(), "application/json")).digest == a.digest


def test_any_content_change_changes_the_digest_and_the_name_does_not():
    files = {**GOOD, "data/a.csv": "1\n", "config.yaml": "max_iterations: 5\n",
             "requirements.txt": "numpy\n"}
    base = pkg(files).digest
    changes = [
        {"data/a.csv": "1 \n"}, {"data/b.csv": "1\n"}, {"config.yaml": "max_iterations: 6\n"},
        {"config.yaml": "max_iterations: 5.0\n"}, {"requirements.txt": "numpy\nscipy\n"},
        {"initial_program.py": SEED + "\n"}, {"evaluator.py": EVALUATOR + "#\n"},
        {"data/a.csv": None, "data/A.csv": "1\n"}, {"data/a.csv": None, "data2/a.csv": "1\n"},
    ]
    seen = {base}
    for change in changes:
        new = {**files, **change}
        new = {k: v for k, v in new.items() if v is not None}
        d = pkg(new).digest
        assert d not in seen, change
        seen.add(d)
    native = pkg({**GOOD, "evoforge.toml": '[problem]\nname = "one"\n'})
    renamed = pkg({**GOOD, "evoforge.toml": '[problem]\nname = "two"\n'})
    # the name is not content: the same files under another name are the same version
    assert native.digest == renamed.digest and native.name != renamed.name
    assert pkg(files, name="x").digest == pkg(files, name="y").digest == base


def test_an_unread_secret_cannot_change_the_digest_or_be_stored():
    a = with_config("llm: {temperature: 0.5, api_key: sk-AAAAAAAAAAAAAAAAAAAAAAAA}\n")
    b = with_config("llm: {temperature: 0.5, api_key: sk-BBBBBBBBBBBBBBBBBBBBBBBB}\n")
    assert a.digest == b.digest and "sk-" not in json.dumps(a.config)


def test_lzma_and_bz2_are_real_formats_here():
    # guards the bomb test above: the payloads it builds are what zipfile would inflate
    assert bz2.decompress(bz2.compress(b"x")) == b"x" and lzma.decompress(lzma.compress(b"x"))
    assert Path(driver.__file__).name == "driver.py"
