"""Helpers for the browser tests (and bench/dashboard_load.py): a real `evoforge serve` process
and Debian's Chromium driven by Playwright from PyPI (never `playwright install`)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("EVOFORGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; never `playwright install`)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evoforge_bin() -> list[str]:
    exe = Path(sys.executable).with_name("evoforge")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "evoforge.cli"]


@contextmanager
def serve(db_url: str, home: Path, *, timeout_s: float = 60):
    """`evoforge serve` on a free loopback port; yields the base URL; stops it afterwards."""
    port = free_port()
    env = dict(os.environ, EVOFORGE_HOME=str(home))
    env.pop("EVOFORGE_BROKER_URL", None)
    log = open(home / "serve.log", "wb")
    proc = subprocess.Popen([*evoforge_bin(), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--db", db_url, "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"evoforge serve exited: {(home / 'serve.log').read_text()[-2000:]}")
            try:
                if httpx.get(url + "/api/v1/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("evoforge serve did not become healthy")
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


CSP_REPORTER = """document.addEventListener("securitypolicyviolation", (e) =>
  console.error(`CSP violation: ${e.effectiveDirective} blocked ${e.blockedURI || "inline"}` +
                ` at ${e.sourceFile || ""}:${e.lineNumber}`));"""


class ConsoleWatch:
    """Collects console errors, uncaught page errors and Content-Security-Policy violations
    (reported by the page's `securitypolicyviolation` events) of a page."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.add_init_script(CSP_REPORTER)
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    @property
    def csp_violations(self) -> list[str]:
        return [e for e in self.errors if "CSP violation" in e]



def shot(page, name: str) -> None:
    """A full-page screenshot into ARTIFACTS, for looking at a failed run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
