"""The `evoforge` CLI against hostile candidates, campaign names and files (real subprocesses).

What a candidate, an LLM or a caller wrote must reach the terminal escaped: no raw ESC (CSI, OSC 52
clipboard writes), no C1 controls (\\x9b is a one-byte CSI), no bidi overrides. `best --out`
never clobbers a file without --force and never writes through a symlink. `eval` reads regular,
bounded UTF-8 files only, and says so in one line (exit code 2) otherwise.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVOFORGE = [sys.executable, "-m", "evoforge.cli"]
SEED = (ROOT / "examples/circle_packing/seed.py").read_text()

OSC52 = "\x1b]52;c;cm0gLXJmIH4K\x07"          # writes "rm -rf ~" into the clipboard
CSI = "\x1b[2J\x1b[31m"                          # clear screen, red
C1 = "\x9b1;1H"                                  # 8-bit CSI: cursor home
BIDI = "\u202e"                                  # right-to-left override
HOSTILE = OSC52 + CSI + C1 + BIDI + "\r"
# C0 except \n and \t, DEL, C1, the bidi overrides/isolates, line/paragraph separators.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def cli(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`evoforge ARGS` with its database under `home`."""
    env = {"EVOFORGE_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*EVOFORGE, *args], cwd=ROOT, env=env, capture_output=True, timeout=timeout)


def text(p: subprocess.CompletedProcess) -> str:
    return (p.stdout + p.stderr).decode("utf-8", errors="replace")


def assert_clean(p: subprocess.CompletedProcess) -> None:
    raw = p.stdout + p.stderr
    assert b"\x1b" not in raw and b"\x9b" not in raw
    bad = RAW.findall(text(p))
    assert not bad, f"raw control characters reached the terminal: {bad!r}"


def one_line_error(p: subprocess.CompletedProcess, *words: str) -> str:
    err = p.stderr.decode()
    assert p.returncode == 2, (p.returncode, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err.lower(), err
    return err


@pytest.fixture(scope="module")
def hostile_campaign(tmp_path_factory):
    """A completed campaign named with escapes whose best program carries them in its code.
    The name is written straight into the database (as an older version, or a direct write,
    could have stored it): the CLI must escape whatever the database holds."""
    tmp = tmp_path_factory.mktemp("cli")
    home = tmp / "home"
    program = tmp / "evil_seed.py"
    program.write_text(SEED + f"\nBANNER = {HOSTILE!r}\nRAW_BANNER = '{OSC52}{C1}{BIDI}'\n")
    p = cli("run", "circle_packing", "--iterations", "0", "--program", str(program), "--json",
            home=home)
    assert p.returncode == 0, text(p)
    assert_clean(p)
    out = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert out["best_program_id"] is not None
    dbs = list(home.rglob("*.db"))
    assert len(dbs) == 1, dbs
    with sqlite3.connect(dbs[0]) as con:
        con.execute("UPDATE campaign SET name = ? WHERE id = ?",
                    ("evil " + HOSTILE + "\nforged row", out["campaign_id"]))
    return home, out["campaign_id"], program.read_text()


def test_campaigns_listing_escapes_a_hostile_name(hostile_campaign):
    home, cid, _ = hostile_campaign
    p = cli("campaigns", home=home)
    assert p.returncode == 0, text(p)
    assert_clean(p)
    listing = p.stdout.decode()
    assert "\\x1b]52" in listing and "\\x9b" in listing and "\\u202e" in listing
    assert len(listing.strip().splitlines()) == 1  # the newline in the name forges no row
    js = cli("campaigns", "--json", home=home)
    assert_clean(js)
    assert json.loads(js.stdout)[0]["name"].startswith("evil \x1b]52")  # JSON keeps the exact text


def test_best_escapes_on_stdout_and_writes_exact_code_with_out(hostile_campaign, tmp_path):
    home, cid, code = hostile_campaign
    shown = cli("best", str(cid), home=home)
    assert shown.returncode == 0, text(shown)
    assert_clean(shown)
    assert "def pack_circles" in shown.stdout.decode() and "\\x1b]52" in shown.stdout.decode()
    out = tmp_path / "best.py"
    saved = cli("best", str(cid), "--out", str(out), home=home)
    assert saved.returncode == 0, text(saved)
    assert_clean(saved)
    assert out.read_text() == code  # the file gets the exact program


def test_best_out_refuses_to_overwrite_and_never_follows_a_symlink(hostile_campaign, tmp_path):
    home, cid, code = hostile_campaign
    existing = tmp_path / "mine.py"
    existing.write_text("precious\n")
    p = cli("best", str(cid), "--out", str(existing), home=home)
    assert p.returncode != 0 and "exists" in p.stderr.decode() and "--force" in p.stderr.decode()
    assert existing.read_text() == "precious\n"
    forced = cli("best", str(cid), "--out", str(existing), "--force", home=home)
    assert forced.returncode == 0, text(forced)
    assert existing.read_text() == code

    outside = tmp_path / "outside.txt"
    outside.write_text("untouched\n")
    link = tmp_path / "link.py"
    link.symlink_to(outside)
    dangling = tmp_path / "dangling.py"
    dangling.symlink_to(tmp_path / "created-through-link.py")
    for target in (link, dangling):
        for extra in ((), ("--force",)):
            p = cli("best", str(cid), "--out", str(target), *extra, home=home)
            assert p.returncode != 0 and "symlink" in p.stderr.decode(), text(p)
            assert target.is_symlink()
    assert outside.read_text() == "untouched\n"
    assert not (tmp_path / "created-through-link.py").exists()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # no temp file left


def test_eval_escapes_a_hostile_exception_message(tmp_path):
    home = tmp_path / "home"
    prog = tmp_path / "boom.py"
    prog.write_text(f"def pack_circles(n):\n    raise ValueError('boom' + {HOSTILE!r})\n")
    p = cli("eval", "circle_packing", str(prog), home=home)
    assert p.returncode == 0, text(p)
    assert "boom" in text(p)
    assert_clean(p)
    js = cli("eval", "circle_packing", str(prog), "--json", home=home)
    assert_clean(js)  # JSON escaping covers C0 and C1 (\u009b)
    assert "\x1b]52" in json.loads(js.stdout.decode().strip().splitlines()[-1])["reason"]


def test_eval_refuses_what_is_not_a_small_regular_utf8_file(tmp_path):
    home = tmp_path / "home"
    binary = tmp_path / "blob.py"
    binary.write_bytes(b"def pack_circles(n):\n    return '\xff\xfe\x00'\n")
    one_line_error(cli("eval", "circle_packing", str(binary), home=home), "utf-8")

    big = tmp_path / "big.py"
    big.write_text("# " + "x" * (1_000_001) + "\n")
    one_line_error(cli("eval", "circle_packing", str(big), home=home), "too large")

    one_line_error(cli("eval", "circle_packing", "/dev/zero", home=home, timeout=60), "regular file")

    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    one_line_error(cli("eval", "circle_packing", str(fifo), home=home, timeout=60), "regular file")

    p = cli("eval", "circle_packing", str(tmp_path), home=home, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr.decode()


def test_openevolve_refuses_unreadable_problem_files(tmp_path):
    home = tmp_path / "home"
    fifo = tmp_path / "initial_program.py"
    os.mkfifo(fifo)
    evaluator = tmp_path / "evaluator.py"
    evaluator.write_text("def evaluate(program_path):\n    return {'combined_score': 1.0}\n")
    one_line_error(cli("openevolve", str(fifo), str(evaluator), home=home, timeout=60), "regular file")
    program = tmp_path / "prog.py"
    program.write_bytes(b"x = '\xff'\n")
    one_line_error(cli("openevolve", str(program), str(evaluator), home=home, timeout=60), "utf-8")
