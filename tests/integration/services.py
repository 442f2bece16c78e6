"""Real Redis, PostgreSQL and `evoforge worker`/`evoforge beat` processes on loopback, for tests.

Import the fixtures you need from this module (not from a conftest other suites edit):

    from tests.integration.services import redis_server, postgres_server, pg_url  # noqa: F401

Servers start from the system binaries (`redis-server`, /usr/lib/postgresql/*/bin) on free
ports. When a binary is missing the test is skipped with the reason, unless
EVOFORGE_REQUIRE_SERVICES=1 (CI), where it fails instead.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVOFORGE = [sys.executable, "-m", "evoforge.cli"]


def unavailable(reason: str) -> None:
    if os.environ.get("EVOFORGE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"service required (EVOFORGE_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def stop_process(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# -- Redis ------------------------------------------------------------------------------------
class RedisServer:
    """A throwaway redis-server (no persistence: a restart loses every queued message)."""

    def __init__(self, workdir: Path):
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        log = open(self.workdir / f"redis-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if not shutil.which("redis-server"):
        unavailable("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """A fresh logical database on the shared server for each test."""
    import redis

    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    r.close()
    return redis_server.url


# -- PostgreSQL -------------------------------------------------------------------------------
def pg_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


class PostgresServer:
    """initdb + pg_ctl as the `postgres` user in a private directory; trust auth on loopback."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="evoforge-pg-"))
        self.data = self.dir / "data"

    def _as_postgres(self, *cmd: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(prefix + list(cmd), capture_output=True, text=True, timeout=120)

    def start(self) -> "PostgresServer":
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)
        out = self._as_postgres(f"{self.bindir}/initdb", "-D", str(self.data), "-U", "postgres",
                                "--auth=trust", "-E", "UTF8", "--no-sync")
        if out.returncode:
            raise RuntimeError(f"initdb failed: {out.stderr}")
        opts = (f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        out = self._as_postgres(f"{self.bindir}/pg_ctl", "-D", str(self.data), "-l",
                                str(self.dir / "server.log"), "-o", opts, "-w", "-t", "60", "start")
        if out.returncode:
            raise RuntimeError(f"pg_ctl start failed: {out.stderr}\n{self.log_tail()}")
        return self

    def log_tail(self) -> str:
        try:
            return (self.dir / "server.log").read_text()[-3000:]
        except OSError:
            return ""

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def createdb(self, name: str | None = None) -> str:
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._as_postgres(f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "immediate", "-w",
                          "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    bindir = pg_bindir()
    if bindir is None:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    if os.geteuid() == 0 and not _user_exists("postgres"):
        unavailable("no `postgres` system user to run the server as")
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture
def pg_url(postgres_server):
    """A fresh database, migrated to head (plain postgresql:// spelling, as users write it)."""
    from evoforge.db.engine import upgrade

    url = postgres_server.createdb()
    upgrade(url)
    return url


# -- EvoForge processes -----------------------------------------------------------------------
def evoforge_env(db_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"EVOFORGE_DATABASE_URL": db_url, "EVOFORGE_BROKER_URL": broker_url,
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
                "PYTHONUNBUFFERED": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_evoforge(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")
    return subprocess.Popen(EVOFORGE + args, env=env, cwd=str(ROOT), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def start_worker(env: dict[str, str], log_path: Path, *, queues: str = "llm,eval,gpu",
                 concurrency: int = 2, name: str | None = None) -> subprocess.Popen:
    args = ["worker", "--queues", queues, "--concurrency", str(concurrency), "--loglevel", "info"]
    if name:
        args += ["--hostname", f"{name}@%h"]
    return start_evoforge(args, env, log_path)


def wait_for(predicate, timeout_s: float, interval_s: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def use_broker(url: str) -> None:
    """Point this process's Celery producer at `url` with fresh connections. The pool caches the
    queues it declared per connection; after a test flushed Redis (bindings gone) a cached
    connection would publish into nowhere."""
    from kombu import pools

    from evoforge.worker.celery_app import app

    app.conf.broker_url = url
    pools.reset()       # closes and forgets every producer/connection pool of this process
    app._after_fork()   # the app's cached pools


def default_sigint() -> None:
    """`preexec_fn` for a child a test interrupts with SIGINT: a test run started in the
    background by a non-interactive shell (`cmd &`) inherits SIGINT *ignored*, which an exec
    keeps, so Ctrl-C would never reach the child; this puts the default back in the child."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
