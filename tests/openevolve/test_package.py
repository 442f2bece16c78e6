"""A problem package: what an upload or a folder may hold, and what is refused, skipped, stored.

Each archive here is built the way an attacker would build it (raw zip attributes, tar member
types, forged sizes), and each refusal is checked to be whole: `read_upload` /
`package_from_files` raise, so nothing can be stored. The same content read as a zip, a tar.gz,
JSON or a folder must give the same digest.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from evoforge.evaluators.openevolve.package import (
    MAX_DEPTH, MAX_FILE_BYTES, MAX_FILES, MAX_TOTAL_BYTES, MAX_UPLOAD_BYTES, PackageError,
    package_from_dir, package_from_files, read_upload)

EXAMPLES = Path("/work/oe/examples")
needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="OpenEvolve's examples absent")

EVALUATOR = ("import importlib.util\nfrom utils.io import load\n\n\n"
             "def evaluate(program_path):\n    return {'combined_score': float(len(load()))}\n")
PROBLEM = {
    "initial_program.py": "# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n",
    "evaluator.py": EVALUATOR,
    "utils/io.py": "def load():\n    return open('data/points.csv').read().split()\n",
    "utils/__init__.py": "",
    "data/points.csv": "1\n2\n3\n",
    "config.yaml": "max_iterations: 5\nllm:\n  api_key: sk-SECRET-config-1234567890\n"
                   "  temperature: 0.3\n  models: [{name: m, note: sk-SECRET-value-1234567890}]\n"
                   "evaluator:\n  timeout: 30\n",
    "requirements.txt": "numpy>=1.22  # arrays\n\n--extra-index-url https://u:tok@example.com\n"
                        "scipy\n",
}


def zipped(files: dict[str, str | bytes], *, mode: int | None = None, name: str | None = None,
           data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            zf.writestr(path, text)
        if name is not None:  # one member with raw Unix mode bits (a link, a FIFO...)
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (mode or 0) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def tarred(files: dict[str, str | bytes], *, extra: list[tarfile.TarInfo] = (),
           gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for path, text in files.items():
            raw = text.encode() if isinstance(text, str) else text
            info = tarfile.TarInfo(path)
            if not path.isprintable():  # a ustar name ends at NUL: a pax header carries it
                info.pax_headers = {"path": path}
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
        for info in extra:
            tf.addfile(info)
    return buf.getvalue()


def write_dir(root: Path, files: dict[str, str | bytes]) -> Path:
    for path, text in files.items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode() if isinstance(text, str) else text)
    return root


def refused(body: bytes, ctype: str = "") -> str:
    with pytest.raises(PackageError) as err:
        package_from_files(read_upload(body, ctype))
    msg = str(err.value)
    assert "\n" not in msg and "SECRET" not in msg
    return msg


# -- the OpenEvolve layout ------------------------------------------------------------------

def test_openevolve_layout_keeps_subdirectories_and_drops_secrets_and_metadata():
    pkg = package_from_files(read_upload(zipped(PROBLEM), "application/zip"))
    assert pkg.layout == "openevolve" and pkg.name == ""
    assert pkg.seed_path == "initial_program.py" and pkg.evaluator_path == "evaluator.py"
    assert sorted(pkg.files) == ["data/points.csv", "evaluator.py", "initial_program.py",
                                 "utils/__init__.py", "utils/io.py"]
    assert pkg.config == {"max_iterations": 5, "evaluator": {"timeout": 30},
                          "llm": {"temperature": 0.3, "models": [{"name": "m"}]}}
    assert pkg.ignored_secrets == ["llm.api_key", "llm.models[0].note"]
    assert pkg.requirements == ["numpy>=1.22", "scipy"]
    assert "requirements.txt line 3 (a pip option, not read)" in pkg.skipped
    assert pkg.stages is None and len(pkg.digest) == 64
    assert "SECRET" not in json.dumps(pkg.__dict__) and "tok@" not in json.dumps(pkg.__dict__)


def test_same_content_same_digest_whatever_the_container(tmp_path):
    texts = {k: v for k, v in PROBLEM.items()}
    as_zip = package_from_files(read_upload(zipped(texts)))
    as_tgz = package_from_files(read_upload(tarred(texts), "application/gzip"))
    as_tar = package_from_files(read_upload(tarred(texts, gz=False), "application/x-tar"))
    as_json = package_from_files(read_upload(json.dumps(texts).encode(), "application/json"))
    as_dir = package_from_dir(write_dir(tmp_path / "p", texts))
    nested = package_from_files(read_upload(zipped({f"mine/{k}": v for k, v in texts.items()})))
    digests = {p.digest for p in (as_zip, as_tgz, as_tar, as_json, as_dir, nested)}
    assert len(digests) == 1, "the same files must be the same version"
    assert nested.files == as_zip.files  # the single top-level directory is stripped

    for change in ({"data/points.csv": "1\n2\n"}, {"config.yaml": "max_iterations: 6\n"},
                   {"requirements.txt": "numpy\n"}, {"data/extra.csv": "9\n"}):
        other = package_from_files(read_upload(zipped({**texts, **change})))
        assert other.digest != as_zip.digest, change
    # Hidden, secret-looking and binary files are left out, so they do not change the version.
    noise = {".env": "KEY=1\n", "sub/.hidden": "x", "blob.bin": b"\xff\xfe\x00",
             "credentials.json": "{}", "__MACOSX/._evaluator.py": b"\x00\x05"}
    noisy = package_from_files(read_upload(zipped({**texts, **noise})))
    assert noisy.digest == as_zip.digest
    assert {s.split(" (")[0] for s in noisy.skipped} >= {
        ".env", "sub/.hidden", "blob.bin", "credentials.json", "__MACOSX"}


def test_seed_by_any_suffix_and_by_config_file_suffix():
    base = {"evaluator.py": EVALUATOR, "initial_program.rs": "fn main() {}\n"}
    one = package_from_files({k: v.encode() for k, v in base.items()})
    assert one.seed_path == "initial_program.rs"
    two = {**base, "initial_program.py": "x = 1\n"}
    with pytest.raises(PackageError, match="several seeds"):
        package_from_files({k: v.encode() for k, v in two.items()})
    chosen = package_from_files({**{k: v.encode() for k, v in two.items()},
                                 "config.yaml": b"file_suffix: .rs\n"})
    assert chosen.seed_path == "initial_program.rs" and chosen.config == {"file_suffix": ".rs"}
    with pytest.raises(PackageError, match=r"^no initial_program\.\* file"):
        package_from_files({"evaluator.py": EVALUATOR.encode()})
    with pytest.raises(PackageError, match="evaluator.py: no such file"):
        package_from_files({"initial_program.py": b"x = 1\n"})
    with pytest.raises(PackageError, match="initial_program.py: not UTF-8 text; the seed"):
        package_from_files({"initial_program.py": b"\xff\xfe", "evaluator.py": EVALUATOR.encode()})
    with pytest.raises(PackageError, match="evaluator.py: secret-looking content"):
        package_from_files({"initial_program.py": b"x = 1\n",
                            "evaluator.py": b"KEY = 'sk-abcdefghijklmnopqrstuvwxyz'\n"})


@pytest.mark.parametrize("text,match", [
    ("llm: [unclosed\n", "config.yaml: not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
    ("a: &a [*a, *a]\n" + "".join(f"l{i}: &l{i} [*l{i - 1 if i else 0}, *l{i - 1 if i else 0}]\n"
                                  for i in range(1, 30)).replace("*l0", "*a"), "too large"),
    ("evaluator: {timeout: .nan}\n", "evaluator.timeout is not a finite number"),
])
def test_bad_configs_are_refused(text, match):
    with pytest.raises(PackageError, match=match):
        package_from_files({"initial_program.py": b"x\n", "evaluator.py": EVALUATOR.encode(),
                            "config.yaml": text.encode()})


# -- the native layout ----------------------------------------------------------------------

NATIVE_TOML = """\
[problem]
name = "sorting"
seed = "src/seed.py"
evaluator = "score.py"
requires = ["numpy>=1.22"]
language = "python"

[cascade]
stages = ["quick", "full"]
thresholds = [0.5]

[features]
metrics = ["speed"]
bins = 8

[resources]
timeout_s = 60
memory_mb = 4096
parallel = 2

[llm]
system_message = "Sort faster."
temperature = 0.4
api_key = "sk-SECRET-toml-1234567890"

[evolution]
max_iterations = 20
random_seed = 7
"""


def test_native_toml_is_translated_into_the_openevolve_shape():
    files = {"evoforge.toml": NATIVE_TOML, "src/seed.py": "x = 1\n", "score.py": EVALUATOR,
             "requirements.txt": "scipy\nnumpy>=1.22\n"}
    pkg = package_from_files(read_upload(json.dumps(files).encode(), "application/json"))
    assert pkg.layout == "native" and pkg.name == "sorting"
    assert (pkg.seed_path, pkg.evaluator_path) == ("src/seed.py", "score.py")
    assert pkg.stages == ["quick", "full"]
    assert pkg.requirements == ["numpy>=1.22", "scipy"]
    assert pkg.ignored_secrets == ["llm.api_key"]
    assert "evoforge.toml" not in pkg.files and "requirements.txt" not in pkg.files
    assert pkg.config == {
        "language": "python", "max_iterations": 20, "random_seed": 7,
        "evaluator": {"cascade_thresholds": [0.5], "cascade_evaluation": True, "timeout": 60,
                      "memory_limit_mb": 4096, "parallel_evaluations": 2},
        "database": {"feature_dimensions": ["speed"], "feature_bins": 8},
        "prompt": {"system_message": "Sort faster."}, "llm": {"temperature": 0.4}}
    assert package_from_files(read_upload(json.dumps(files).encode()), name="mine").name == "mine"


@pytest.mark.parametrize("toml,match", [
    ("[problem\n", "not valid TOML"),
    ("[problem]\nseeed = 'x.py'\n", r"unknown key\(s\) problem.seeed"),
    ("[surprise]\na = 1\n", "unknown key.*surprise.a"),
    ("[resources]\ntimeout_s = -1\n", "resources.timeout_s must be a positive number"),
    ("[resources]\nmemory_mb = '4G'\n", "memory_mb must be a positive integer"),
    ("[cascade]\nstages = ['a', 'b', 'c']\nthresholds = [0.5]\n", "one threshold per stage"),
    ("[cascade]\nstages = ['os.system']\n", "not a name"),
    ("[problem]\nevaluator = 'sub/ev.py'\n", "a .py file at the top"),
    ("[problem]\nseed = '../x.py'\n", "'..' is not a plain file name"),
    ("[problem]\nrequires = ['-e .']\n", "is not a requirement"),
])
def test_bad_native_toml_is_refused(toml, match):
    with pytest.raises(PackageError, match=match):
        package_from_files({"evoforge.toml": toml.encode(), "initial_program.py": b"x\n",
                            "evaluator.py": EVALUATOR.encode()})


def test_two_configs_are_ambiguous():
    with pytest.raises(PackageError, match="more than one config"):
        package_from_files({"evoforge.toml": b"", "config.yaml": b"a: 1\n",
                            "initial_program.py": b"x\n", "evaluator.py": EVALUATOR.encode()})


# -- what is refused whole ------------------------------------------------------------------

GOOD = {"initial_program.py": "x = 1\n", "evaluator.py": EVALUATOR}


@pytest.mark.parametrize("path,why", [
    ("../x.py", "'..' is not a plain file name"),
    ("a/../../x.py", "'..' is not a plain file name"),
    ("/etc/passwd", "an absolute path"),
    ("a\\..\\x.py", "a backslash"),
    ("a\nb.py", "a control character"),
    ("/".join(["d"] * MAX_DEPTH) + "/x.py", f"deeper than {MAX_DEPTH} levels"),
])
def test_forbidden_paths_refuse_the_whole_upload(path, why):
    for body, ctype in ((zipped({**GOOD, path: "x"}), ""), (tarred({**GOOD, path: "x"}), ""),
                        (json.dumps({**GOOD, path: "x"}).encode(), "application/json")):
        msg = refused(body, ctype)
        assert why in msg


def test_nul_and_non_utf8_names_are_refused():
    # zipfile cuts a name at NUL when it writes one, not when it reads one: forge it
    body = zipped({**GOOD, "a_b.py": "x"}).replace(b"a_b.py", b"a\x00b.py")
    assert "a control character" in refused(body)
    # tarfile reads a non-UTF-8 name as a lone surrogate (surrogateescape)
    assert "lone surrogate" in refused(tarred({**GOOD, "\udcff.py": "x"}))
    assert "lone surrogate" in refused(json.dumps({**GOOD, "\ud800.py": "x"}).encode(),
                                       "application/json")


@pytest.mark.parametrize("mode,why", [
    (stat.S_IFLNK | 0o777, "a link"), (stat.S_IFIFO | 0o644, "a device, FIFO or socket"),
    (stat.S_IFCHR | 0o644, "a device, FIFO or socket"),
])
def test_zip_links_and_devices_are_refused(mode, why):
    msg = refused(zipped(GOOD, name="data.txt", mode=mode, data=b"/etc/passwd"))
    assert "data.txt" in msg and why in msg and "nothing was stored" in msg


def test_zip_directory_entry_with_data_is_refused():
    assert "a directory with data" in refused(zipped(GOOD, name="sub/", mode=stat.S_IFDIR,
                                                     data=b"payload"))


@pytest.mark.parametrize("kind,why", [
    (tarfile.SYMTYPE, "a link"), (tarfile.LNKTYPE, "a link"), (tarfile.CHRTYPE, "a device"),
    (tarfile.BLKTYPE, "a device"), (tarfile.FIFOTYPE, "a device or FIFO"),
])
def test_tar_links_devices_and_fifos_are_refused(kind, why):
    info = tarfile.TarInfo("data.txt")
    info.type = kind
    info.linkname = "/etc/passwd"
    msg = refused(tarred(GOOD, extra=[info]))
    assert "data.txt" in msg and why in msg


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicates_and_file_directory_clashes_are_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for text in ("x = 1\n", "x = 2\n"):
            zf.writestr("initial_program.py", text)
        zf.writestr("evaluator.py", EVALUATOR)
    assert "twice" in refused(buf.getvalue())
    assert "twice" in refused(tarred({**GOOD, "./initial_program.py": "y\n"}))
    assert "twice" in refused(b'{"a.py": "1", "a.py": "2"}', "application/json")
    clash = zipped({**GOOD, "utils": "x", "utils/a.py": "y"})
    assert "both a file and a directory" in refused(clash)


def test_declared_zip_bomb_is_refused_before_it_is_inflated():
    big = zipped({**GOOD, "zeros.txt": b"0" * (MAX_FILE_BYTES + 1)})
    assert len(big) < 100_000
    assert "over 2 MiB" in refused(big)
    many = zipped({**GOOD, **{f"z{i}.txt": b"0" * (MAX_FILE_BYTES - 1) for i in range(5)}})
    assert "over 8 MiB in all" in refused(many)


def test_forged_zip_sizes_are_caught_while_reading():
    """The headers claim 100 bytes for 1 MiB of zeros: reading stops at 100 and the CRC
    check fails, so a lying header cannot smuggle more than it declares."""
    body = bytearray(zipped({**GOOD, "zeros.txt": b"0" * (1 << 20)}))
    local = body.index(b"PK\x03\x04" + body[4:6], body.index(b"zeros.txt") - 40)
    central = body.index(b"PK\x01\x02", body.rindex(b"zeros.txt") - 60)
    struct.pack_into("<I", body, local + 22, 100)
    struct.pack_into("<I", body, central + 24, 100)
    assert "not a valid zip archive" in refused(bytes(body))


def test_gzip_bomb_stops_at_the_inflate_limit():
    raw = tarred({**GOOD, "zeros.txt": b"0" * (MAX_TOTAL_BYTES * 3)}, gz=True)
    assert len(raw) < MAX_UPLOAD_BYTES
    assert "inflates to over" in refused(raw)


def test_tar_member_over_the_limits_is_refused():
    assert "over 2 MiB" in refused(tarred({**GOOD, "big.txt": b"0" * (MAX_FILE_BYTES + 1)}))


def test_too_many_files_and_too_large_uploads_are_refused():
    files = {**GOOD, **{f"d/f{i}.txt": "x" for i in range(MAX_FILES)}}
    assert f"more than {MAX_FILES} files" in refused(zipped(files))
    assert f"more than {MAX_FILES} files" in refused(json.dumps(files).encode(), "application/json")
    with pytest.raises(PackageError, match="over 8 MiB"):
        read_upload(b"PK\x03\x04" + b"0" * MAX_UPLOAD_BYTES)


@pytest.mark.parametrize("body,ctype,match", [
    (b"garbage", "application/octet-stream", "not a zip, tar"),
    (b"PK\x03\x04garbage", "", "not a valid zip"),
    (b"\x1f\x8bgarbage", "", "not a valid gzip"),
    (b"[1, 2]", "application/json", "expected a JSON object"),
    (b'{"a.py": 1}', "application/json", "the value must be the file's text"),
    (b"[" * 100_000, "application/json", "not valid JSON"),
])
def test_malformed_uploads_are_one_line_errors(body, ctype, match):
    with pytest.raises(PackageError, match=match) as err:
        read_upload(body, ctype)
    assert "\n" not in str(err.value)


# -- what is skipped and reported -----------------------------------------------------------

def test_skipped_files_are_reported_and_never_stored():
    files = {**GOOD, "config_phase_2.yaml": "llm: {api_key: sk-SECRET-phase-1234567890}\n",
             "secrets/data.csv": "1\n", "settings.json": '{"api_key": "JSON-SECRET-333"}',
             "my notes.txt": "hello\n", "picture.png": b"\x89PNG\r\n\x1a\n\x00\xff",
             ".git/config": "[core]\n", "sort_test/target/debug/app": b"\x7fELF\x00",
             "__pycache__/x.pyc": b"\x00"}
    pkg = package_from_files(read_upload(zipped(files)))
    assert sorted(pkg.files) == ["evaluator.py", "initial_program.py"]
    reasons = dict(s.split(" (", 1) for s in pkg.skipped)
    assert reasons["config_phase_2.yaml"].startswith("a config file")
    assert reasons["secrets/data.csv"].startswith("secret-looking name")
    assert reasons["settings.json"].startswith("secret-looking content")
    assert reasons["my notes.txt"].startswith("not a plain file name")
    assert reasons["picture.png"].startswith("not UTF-8 text")
    assert reasons[".git"].startswith("directory, hidden")
    assert reasons["sort_test/target"].startswith("directory, build output")
    assert reasons["__pycache__"].startswith("directory, build output")
    assert "SECRET" not in json.dumps(pkg.__dict__)


# -- folders --------------------------------------------------------------------------------

def test_folder_walk_ships_subdirectories_and_never_follows_links(tmp_path):
    root = write_dir(tmp_path / "p", {**PROBLEM, "utils/deep/more.py": "y = 2\n",
                                      ".env": "OPENAI_API_KEY=ENV-SECRET-222\n",
                                      "target/big.bin": b"\x00" * 10,
                                      "/".join(["d"] * (MAX_DEPTH + 1)) + "/x.py": "z\n"})
    (root / "leak.txt").symlink_to("/etc/passwd")
    (root / "linked_dir").symlink_to(tmp_path)
    os.mkfifo(root / "pipe.csv")
    (root / "empty").mkdir()
    pkg = package_from_dir(root)
    assert "utils/deep/more.py" in pkg.files and "data/points.csv" in pkg.files
    reasons = dict(s.split(" (", 1) for s in pkg.skipped)
    assert reasons["leak.txt"].startswith("symlink, never followed")
    assert reasons["linked_dir"].startswith("symlink, never followed")
    assert reasons["pipe.csv"].startswith("not a regular file")
    assert reasons[".env"].startswith("hidden")
    assert reasons["target"].startswith("directory, build output")
    assert reasons["empty"].startswith("directory, empty")
    assert any(k.startswith("d/") and "deeper than" in v for k, v in reasons.items())
    assert "root:" not in json.dumps(pkg.files)
    # --include lets a build-output directory in; --exclude leaves files or folders out
    more = package_from_dir(root, include=["target"], exclude=["data", "*.txt"])
    assert "data/points.csv" not in more.files
    assert "target/big.bin (binary (a NUL byte))" in more.skipped


def test_folder_limits_skip_instead_of_refusing(tmp_path):
    root = write_dir(tmp_path / "p", {**GOOD, "big.txt": "x" * (MAX_FILE_BYTES + 1)})
    pkg = package_from_dir(root)
    assert "big.txt (larger than 2 MiB)" in pkg.skipped and "big.txt" not in pkg.files


def test_an_archive_file_is_read_like_an_upload(tmp_path):
    archive = tmp_path / "p.tar.gz"
    archive.write_bytes(tarred(PROBLEM))
    uploaded = package_from_files(read_upload(zipped(PROBLEM)))
    assert package_from_dir(archive).digest == uploaded.digest


# -- OpenEvolve's own examples --------------------------------------------------------------

@needs_examples
def test_rust_adaptive_sort_ships_its_cargo_project():
    pkg = package_from_dir(EXAMPLES / "rust_adaptive_sort")
    assert pkg.seed_path == "initial_program.rs" and pkg.config["file_suffix"] == ".rs"
    assert {"sort_test/Cargo.toml", "sort_test/Cargo.lock", "sort_test/src/lib.rs",
            "sort_test/src/main.rs"} <= set(pkg.files)
    assert "sort_test/.gitignore (hidden)" in pkg.skipped
    assert pkg.requirements == ["numpy>=1.22.0"]


@needs_examples
def test_tsp_ships_its_utils_package(tmp_path):
    """tsp's seed is a folder that its own script flattens into one file; with such a file
    beside it, the whole problem ships, utils/ and the C++ headers included."""
    with pytest.raises(PackageError, match=r"initial_program/ is a directory"):
        package_from_dir(EXAMPLES / "tsp_tour_minimization")
    copy = Path(shutil.copytree(EXAMPLES / "tsp_tour_minimization", tmp_path / "tsp"))
    (copy / "initial_program.txt").write_text((copy / "initial_program" / "TSP.cpp").read_text())
    pkg = package_from_dir(copy)
    shipped = {"utils/utils.py", "utils/runner.py", "initial_program/include/json.hpp"}
    assert shipped <= set(pkg.files)
    assert any(s.startswith("pictures/") and "not UTF-8" in s for s in pkg.skipped)
    assert pkg.ignored_secrets == ["llm.api_key"]


@needs_examples
@pytest.mark.parametrize("name", ["signal_processing", "function_minimization",
                                  "r_robust_regression", "online_judge_programming"])
def test_examples_zip_the_same_as_their_folder(name, tmp_path):
    folder = package_from_dir(EXAMPLES / name)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((EXAMPLES / name).rglob("*")):
            if path.is_file():
                zf.write(path, f"{name}/{path.relative_to(EXAMPLES / name)}")
    uploaded = package_from_files(read_upload(buf.getvalue(), "application/zip"))
    assert uploaded.digest == folder.digest and uploaded.files == folder.files
    assert "evaluator.py" in folder.files and folder.seed_path.startswith("initial_program.")
    assert "config.yaml" not in folder.files
    assert all(not k.startswith(("api_key", "llm.api_key")) or k in folder.ignored_secrets
               for k in folder.ignored_secrets)
    assert "api_key" not in json.dumps(folder.config)
