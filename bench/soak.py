"""Long-run bench: does a campaign keep its rate and its memory over an hour and more?

    .venv/bin/python bench/soak.py --minutes 60 [--db sqlite:///F | postgresql://...] \
        [--parallel 2] [--out soak.jsonl] [--workdir DIR] [--snapshot REV]

Runs `evoforge run circle_packing --llm-base-url <stand-in> --model perturb --iterations 1000000
--seed 0 --parallel 2` against ../shared/tools/perturb_llm.py on a free loopback port (the StandIn
of bench/openevolve_overhead.py) and samples it once a minute, from outside, through the same
things an operator would look at:

- programs committed: `count(*)` of the campaign's program rows, on a short-lived connection
  (a long-lived SQLite reader would pin the WAL and make the file grow by itself);
- programs/s in that minute;
- RSS of every process of the run: the `evoforge` process, its fork-server and the fork-server's
  sandbox children (psutil when installed, else /proc); the stand-in LLM is listed apart, it is not
  part of EvoForge;
- database size: SQLite's file plus its -wal and -shm, PostgreSQL's pg_database_size; and bytes per
  program, (size - size before the run) / programs. Use a fresh database so that this means what it
  says (the default is a fresh SQLite file in the work dir);
- CPU ms per program of the evoforge process and of the fork-server with its sandbox runs, and
  the 1-minute load average: this bench usually shares its machine, and a rate then follows the
  neighbours' load; CPU per program does much less.

Each minute is printed as one line and written as one JSON line to --out, after a first "start"
line with the commit, the number of uncommitted files, the machine and the command. At the end the
run is stopped the way a user stops it, SIGINT (Ctrl-C: in-flight iterations commit, the campaign
becomes paused; SIGTERM and then SIGKILL only if it does not exit), and the campaign is checked: it
must be paused with no reserved iteration left uncommitted, and `--resume ID --iterations 20` must
run it to completed with 20 more programs. The summary (printed and written as the last JSON line)
gives the rate of the last 10 minutes over the first 10 (the first minute, start-up and the seed, is
left out of the first window) and the RSS growth of each process from the end of the first window
to the end of the run. bench/soak_plot.py draws the JSON lines.

`--snapshot REV` runs the code of a commit (`git archive REV`, laid out as the installed `evoforge`
package in the work dir and put first on PYTHONPATH) instead of the checkout: an hour is long, and
a checkout that others edit meanwhile would change what the run imports lazily, or not start.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from statistics import mean
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openevolve_overhead import EVOFORGE, REPO, StandIn  # noqa: E402

try:
    import psutil  # type: ignore[import-not-found]
except ImportError:
    psutil = None

RESUME_MORE = 20
PARTS = ("api", "cli", "worker", "evolution", "evaluators", "sandbox", "db", "migrations")  # setup.py


# ---- processes -------------------------------------------------------------------------------

def _proc_children() -> dict[int, list[int]]:
    """ppid -> pids, from /proc/*/stat (the comm field may hold spaces and parentheses)."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _proc_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return 0  # a zombie has no VmRSS line


def _proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_tree(root: int) -> list[tuple[int, int, str]]:
    """(pid, parent pid, cmdline) of root and all its descendants, root first."""
    if psutil is not None:
        try:
            top = psutil.Process(root)
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in procs:
            try:
                out.append((p.pid, p.ppid(), " ".join(p.cmdline())))
            except psutil.Error:
                continue
        return out
    kids = _proc_children()
    out, queue = [], [(root, os.getppid())]
    while queue:
        pid, ppid = queue.pop(0)
        if not os.path.exists(f"/proc/{pid}"):
            continue
        out.append((pid, ppid, _proc_cmdline(pid)))
        queue.extend((k, pid) for k in kids.get(pid, []))
    return out


def cpu_s(pid: int) -> float | None:
    """CPU seconds of pid and of its children it has waited for (the fork-server's include its
    finished sandbox runs), from /proc/<pid>/stat: less sensitive to a busy machine than a rate."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int | None:
    if psutil is not None:
        try:
            return psutil.Process(pid).memory_info().rss
        except psutil.Error:
            return None
    return _proc_rss(pid)


def sample_processes(root: int, llm_pid: int) -> list[dict]:
    """Every process of the run with its role: evoforge, forkserver, sandbox (a fork-server child),
    child (anything else it started); and the stand-in LLM, role llm."""
    tree = process_tree(root)  # parents before children
    roles: dict[int, str] = {}
    out = []
    for pid, ppid, cmd in tree:
        if pid == root:
            role = "evoforge"
        elif roles.get(ppid) in ("forkserver", "sandbox"):
            role = "sandbox"  # forked from the server: same cmdline, so by ancestry, not by name
        elif ppid == root and "forkserver" in cmd:
            role = "forkserver"
        else:
            role = "child"
        roles[pid] = role
        size = rss(pid)
        if size is not None:
            out.append({"pid": pid, "ppid": ppid, "role": role, "rss": size, "cpu_s": cpu_s(pid)})
    llm = rss(llm_pid)
    if llm is not None:
        out.append({"pid": llm_pid, "role": "llm", "rss": llm})
    return out


def cpu_per_program(procs: list[dict], prev: dict[int, float], programs: int) -> dict[str, float]:
    """CPU ms per program committed since the last sample, of the evoforge process and of the
    fork-server (with its finished sandbox children); updates prev (pid -> cpu_s). A process
    not seen before started during the run: all its CPU counts."""
    out = {}
    for p in procs:
        if p["role"] in ("evoforge", "forkserver") and p.get("cpu_s") is not None:
            if programs > 0:
                out[p["role"]] = round(1000 * (p["cpu_s"] - prev.get(p["pid"], 0.0)) / programs, 2)
            prev[p["pid"]] = p["cpu_s"]
    return out


def by_role(procs: list[dict]) -> dict[str, dict]:
    roles: dict[str, dict] = {}
    for p in procs:
        r = roles.setdefault(p["role"], {"rss": 0, "n": 0})
        r["rss"] += p["rss"]
        r["n"] += 1
    return roles


# ---- database --------------------------------------------------------------------------------

class Database:
    """Counts and sizes, each on a fresh connection (NullPool): nothing held between samples."""

    def __init__(self, url: str):
        for prefix in ("postgres://", "postgresql://"):  # as db/engine.py normalize_url
            if url.startswith(prefix):
                url = "postgresql+psycopg://" + url[len(prefix):]
        self.url = url
        self.sqlite = self.url.startswith("sqlite")
        self.engine = create_engine(self.url, poolclass=NullPool)
        self.path = Path(make_url(self.url).database) if self.sqlite else None

    def _scalar(self, sql: str, **params):
        try:
            with self.engine.connect() as conn:
                return conn.execute(text(sql), params).scalar()
        except Exception:  # no table yet (the run migrates a fresh database), or busy
            return None

    def size(self) -> int:
        if self.sqlite:
            return sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal"),
                                                   Path(f"{self.path}-shm")) if p.exists())
        return int(self._scalar("SELECT pg_database_size(current_database())") or 0)

    def max_campaign(self) -> int:
        if self.sqlite and not self.path.exists():
            return 0
        return int(self._scalar("SELECT max(id) FROM campaign") or 0)

    def new_campaign(self, after: int) -> int | None:
        if self.sqlite and not self.path.exists():
            return None
        return self._scalar("SELECT min(id) FROM campaign WHERE id > :a", a=after)

    def programs(self, campaign: int | None) -> int | None:
        if campaign is None:
            return 0
        return self._scalar("SELECT count(*) FROM program WHERE campaign_id = :c", c=campaign)

    def campaign_state(self, campaign: int) -> dict:
        with self.engine.connect() as conn:
            status, reserved = conn.execute(text(
                "SELECT status, iterations_reserved FROM campaign WHERE id = :c"), {"c": campaign}).one()
            rows = conn.execute(text("SELECT count(DISTINCT iteration) FROM program WHERE campaign_id = :c"),
                                {"c": campaign}).scalar()
        return {"status": status, "reserved": reserved, "committed": rows, "gaps": reserved - rows}


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"


# ---- the run ---------------------------------------------------------------------------------

def _default_sigint() -> None:
    """The child must take Ctrl-C even when this bench was started with `nohup ... &`: a
    non-interactive shell starts background jobs with SIGINT ignored, and Python keeps it so."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def evoforge_cmd(args, url: str, llm_url: str, *more: str) -> list[str]:
    return [EVOFORGE, "run", args.task, "--llm-base-url", llm_url, "--model", "perturb",
            "--seed", str(args.seed), "--parallel", str(args.parallel), "--db", url, "--json", *more]


def stop(proc: subprocess.Popen, grace_s: float) -> str:
    """SIGINT, then SIGTERM, then SIGKILL; returns which one ended it."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 15.0), (signal.SIGKILL, 15.0)):
        if proc.poll() is not None:
            return "exited"
        proc.send_signal(sig)
        try:
            proc.wait(wait)
            return signal.Signals(sig).name
        except subprocess.TimeoutExpired:
            continue
    return "unkillable"


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem_bytes": mem, "python": platform.python_version(),
            "kernel": platform.release(), "psutil": psutil is not None}


def git(*argv: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def snapshot(rev: str, workdir: Path) -> tuple[str, Path]:
    """`git archive rev` laid out as the installed package (setup.py: each top-level folder
    becomes evoforge.<folder>); returns (commit, the folder to put on PYTHONPATH). Readable by
    all: the fork-server's children run as unprivileged uids."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    if not commit:
        raise SystemExit(f"soak: no commit {rev!r}")
    src, pkg = workdir / "src", workdir / "pkg"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(pkg, ignore_errors=True)
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    shutil.copytree(src / "evoforge", pkg / "evoforge")
    for part in PARTS:
        shutil.copytree(src / part, pkg / "evoforge" / part)
    for path in (workdir, *workdir.rglob("*")):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
    return commit, pkg


def mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


HEADER = (f"{'min':>4} {'programs':>9} {'prog/s':>7} {'evoforge':>9} {'forksrv':>8} "
          f"{'sandbox(n)':>11} {'llm':>6} {'db MB':>8} {'B/prog':>7} {'cpu ms/prog':>11} {'load1':>5}")


def line(rec: dict) -> str:
    roles = rec["rss_by_role"]
    sb = roles.get("sandbox", {"rss": 0, "n": 0})
    ms = rec.get("cpu_ms_per_program", {})
    cpu = "/".join(f"{ms[r]:.1f}" if r in ms else "-" for r in ("evoforge", "forkserver"))
    return (f"{rec['minute']:>4} {rec['programs']:>9} {rec['rate']:>7.2f} "
            f"{mb(roles.get('evoforge', {}).get('rss')):>9} {mb(roles.get('forkserver', {}).get('rss')):>8} "
            f"{mb(sb['rss']) + '(' + str(sb['n']) + ')':>11} {mb(roles.get('llm', {}).get('rss')):>6} "
            f"{mb(rec['db_bytes']):>8} {rec['bytes_per_program'] or 0:>7.0f} {cpu:>11} {rec['load1']:>5.2f}")


def summarize(records: list[dict], window: int) -> dict:
    """Rate of the last `window` minutes over the first (minute 1, start-up, left out), and the
    RSS growth of each role from the end of the first window to the last sample."""
    if len(records) < 3:
        return {"minutes": len(records)}
    w = max(1, min(window, (len(records) - 1) // 2))
    first_a, first_b = records[0], records[w]
    last_a, last_b = records[-1 - w], records[-1]

    def rate(a, b):
        return (b["programs"] - a["programs"]) / max(b["t"] - a["t"], 1e-9)

    r_first, r_last = rate(first_a, first_b), rate(last_a, last_b)
    growth = {}
    for role in ("evoforge", "forkserver", "sandbox", "llm"):
        a = first_b["rss_by_role"].get(role, {}).get("rss")
        b = last_b["rss_by_role"].get(role, {}).get("rss")
        peak = max((r["rss_by_role"].get(role, {}).get("rss", 0) for r in records), default=0)
        if a and b:
            growth[role] = {"at_window_mb": round(a / 2**20, 1), "last_mb": round(b / 2**20, 1),
                            "peak_mb": round(peak / 2**20, 1), "growth": round(b / a, 3)}
    return {"minutes": last_b["minute"], "window_minutes": w,
            "first_window": [first_a["minute"], first_b["minute"]],
            "last_window": [last_a["minute"], last_b["minute"]],
            "rate_first": round(r_first, 2), "rate_last": round(r_last, 2),
            "rate_last_over_first": round(r_last / r_first, 3) if r_first else None,
            "load1_first": round(mean(r["load1"] for r in records[1:w + 1]), 2),
            "load1_last": round(mean(r["load1"] for r in records[-w:]), 2),
            "rss": growth, "programs": last_b["programs"], "db_bytes": last_b["db_bytes"],
            "bytes_per_program": last_b["bytes_per_program"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file in the work dir)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", default="soak.jsonl")
    ap.add_argument("--workdir", help="where the database and logs go (default: a new temp dir)")
    ap.add_argument("--task", default="circle_packing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=1_000_000)
    ap.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--window", type=int, default=10, help="minutes compared at start and end")
    ap.add_argument("--no-resume-check", action="store_true")
    ap.add_argument("--snapshot", metavar="REV", help="run this commit's code, not the checkout")
    args = ap.parse_args()
    # Ctrl-C or kill stops the run cleanly too, also when started with `nohup ... &`
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="evoforge-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    commit = git("rev-parse", "HEAD").strip()
    if args.snapshot:
        commit, pkg = snapshot(args.snapshot, workdir)
        env["PYTHONPATH"] = str(pkg)
    url = args.db or f"sqlite:///{workdir / 'soak.db'}"
    db = Database(url)
    base_bytes, base_campaign = db.size(), db.max_campaign()
    out = open(args.out, "w", buffering=1)

    def emit(rec: dict) -> None:
        out.write(json.dumps(rec) + "\n")

    with StandIn(args.seed) as llm:
        cmd = evoforge_cmd(args, url, llm.url, "--iterations", str(args.iterations))
        emit({"event": "start", "time": time.time(), "commit": commit,
              "code": f"snapshot of {args.snapshot}" if args.snapshot else f"checkout {REPO}",
              "checkout_head": git("rev-parse", "HEAD").strip(),
              "uncommitted_files": len(git("status", "--short").splitlines()),
              "machine": machine(), "db": redact(url), "sqlite": db.sqlite,
              "db_bytes_before": base_bytes, "workdir": str(workdir),
              "command": [*cmd[:cmd.index("--db") + 1], redact(url), *cmd[cmd.index("--db") + 2:]],
              "minutes": args.minutes, "interval_s": args.interval})
        print(f"soak: {args.minutes:g} min, {redact(url)}, work dir {workdir}, out {args.out}", flush=True)
        print(HEADER, flush=True)
        log = open(workdir / "evoforge.log", "wb")
        stdout = open(workdir / "evoforge.out", "wb")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=log, preexec_fn=_default_sigint,
                                start_new_session=True, cwd=str(workdir), env=env)
        records: list[dict] = []
        campaign = None
        prev_programs, prev_t = 0, 0.0
        prev_cpu: dict[int, float] = {}
        interrupted = False
        try:
            tick = 1
            while tick * args.interval <= args.minutes * 60 + 1e-6:
                deadline = t0 + tick * args.interval
                while time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                if proc.poll() is not None:
                    print(f"soak: evoforge exited early with {proc.returncode}, see {workdir}", flush=True)
                    break
                if campaign is None:
                    campaign = db.new_campaign(base_campaign)
                t = time.monotonic() - t0
                programs = db.programs(campaign)
                programs = prev_programs if programs is None else programs
                size = db.size()
                procs = sample_processes(proc.pid, llm.proc.pid)
                cpu_ms = cpu_per_program(procs, prev_cpu, programs - prev_programs)
                rec = {"event": "minute", "minute": round(t / 60, 2) if args.interval != 60 else tick,
                       "t": round(t, 2), "campaign": campaign, "programs": programs,
                       "rate": round((programs - prev_programs) / max(t - prev_t, 1e-9), 3),
                       "processes": procs, "rss_by_role": by_role(procs), "db_bytes": size,
                       "bytes_per_program": round((size - base_bytes) / programs, 1) if programs else None,
                       "cpu_ms_per_program": cpu_ms, "load1": os.getloadavg()[0]}
                records.append(rec)
                emit(rec)
                print(line(rec), flush=True)
                prev_programs, prev_t = programs, t
                tick += 1
        except KeyboardInterrupt:
            interrupted = True
            print("soak: interrupted, stopping the run", flush=True)
        how = stop(proc, grace_s=120.0)
        stdout.close()
        log.close()
        end: dict = {"event": "end", "stopped_by": how, "returncode": proc.returncode}
        try:
            end["run_summary"] = json.loads((workdir / "evoforge.out").read_text().strip().splitlines()[-1])
        except (IndexError, ValueError):
            end["run_summary"] = None
        if campaign is None:
            campaign = db.new_campaign(base_campaign)
        if campaign is not None:
            state = db.campaign_state(campaign)
            end["campaign_after_stop"] = state
            ok = state["status"] == "paused" and state["gaps"] == 0
            if not args.no_resume_check and not interrupted and state["status"] == "paused":
                r = subprocess.run(evoforge_cmd(args, url, llm.url, "--resume", str(campaign),
                                                "--iterations", str(RESUME_MORE)),
                                   capture_output=True, text=True, timeout=600, cwd=str(workdir),
                                   env=env)
                end["resume_stderr_tail"] = r.stderr[-2000:] if r.returncode else ""
                after = db.campaign_state(campaign)
                end["resume"] = {"returncode": r.returncode, "state": after,
                                 "more_programs": after["committed"] - state["committed"]}
                ok = ok and r.returncode == 0 and after["status"] == "completed" and \
                    after["committed"] - state["committed"] >= RESUME_MORE and after["gaps"] == 0
            end["campaign_ok"] = ok
        emit(end)
    summary = {"event": "summary", **summarize(records, args.window)}
    emit(summary)
    out.close()
    print(f"soak: stopped by {how} (exit {proc.returncode}); campaign {campaign}: "
          f"{end.get('campaign_after_stop')}; resume: {end.get('resume', {}).get('state')}; "
          f"{'OK' if end.get('campaign_ok') else 'NOT OK'}", flush=True)
    if "rate_first" in summary:
        print(f"rate: minutes {summary['first_window'][0]}-{summary['first_window'][1]} "
              f"{summary['rate_first']:.2f}/s, minutes {summary['last_window'][0]}-"
              f"{summary['last_window'][1]} {summary['rate_last']:.2f}/s, last/first "
              f"{summary['rate_last_over_first']} (mean load1 {summary['load1_first']} and "
              f"{summary['load1_last']} on {os.cpu_count()} CPUs)", flush=True)
        for role, g in summary["rss"].items():
            print(f"rss {role}: {g['at_window_mb']} MB at minute {summary['first_window'][1]} -> "
                  f"{g['last_mb']} MB at the end (x{g['growth']}, peak {g['peak_mb']} MB)", flush=True)
        print(f"db: {mb(summary['db_bytes'])} MB, {summary['bytes_per_program']} bytes/program "
              f"over {summary['programs']} programs", flush=True)
    return 0 if end.get("campaign_ok") else 1


if __name__ == "__main__":
    sys.exit(main())
