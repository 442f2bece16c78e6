"""The Problems pages in headless Chromium against a real `evoforge serve` process.

Upload a folder (read in the browser into JSON), see its files highlighted, its config and its
upload report, start a campaign with the form and land on it, follow the campaign's link back to
the problem; refused uploads (a traversal member in an archive, a missing requirement, a hostile
file name) show the server's reason and store nothing; hostile names and file contents render as
text; no console errors or CSP violations. Skips like tests/dashboard/test_dashboard_browser.py.
"""
from __future__ import annotations

import io
import re
import tarfile
import time
import zipfile

import httpx
import pytest

from tests.dashboard import browser as B

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = '''"""A tiny problem: make the sum of three numbers close to 10."""
# EVOLVE-BLOCK-START
def numbers():
    return [1.0, 2.0, 3.0]
# EVOLVE-BLOCK-END


def run():
    return numbers()
'''

EVALUATOR = '''import importlib.util


def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("candidate", program_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    xs = mod.run()
    return {"combined_score": 1.0 / (1.0 + abs(sum(xs) - 10.0)), "count": float(len(xs))}
'''

FAILING_EVALUATOR = '''import sys


def evaluate(program_path):
    print("the evaluator cannot read its data <b>file</b>", file=sys.stderr)
    raise RuntimeError("no data: <script>window.__pwned = 3</script>")
'''

CONFIG = """max_iterations: 7
checkpoint_interval: 10
llm:
  api_key: sk-test-never-shown-0123456789
  temperature: 0.4
evaluator:
  timeout: 30
"""

HOSTILE = "<script>window.__pwned = 1</script>\n\x1b[31mred\x1b[0m <img src=x onerror=\"window.__pwned = 2\">\n"


def problem_dir(root, *, evaluator: str = EVALUATOR, extra: dict[str, bytes] | None = None):
    """An OpenEvolve problem folder, with the entries a browser must leave out or skip."""
    files = {"initial_program.py": SEED.encode(), "evaluator.py": evaluator.encode(),
             "config.yaml": CONFIG.encode(), "data/notes.txt": HOSTILE.encode(),
             ".secret_dotfile": b"token=1", "__pycache__/evaluator.cpython-311.pyc": b"\x00\x01",
             "blob.bin": bytes(range(256)) * 4, **(extra or {})}
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


shot = B.shot


def no_overflow(page, what: str) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"{what} overflows by {overflow}px"


def stored(server: str) -> int:
    return httpx.get(f"{server}/api/v1/problems").json()["total"]


def wait_status(server: str, cid: int, final=("completed", "failed", "cancelled"), timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while True:
        c = httpx.get(f"{server}/api/v1/campaigns/{cid}").json()
        if c["status"] in final or time.monotonic() > deadline:
            return c
        time.sleep(0.3)


def test_upload_a_folder_see_it_and_start_a_campaign(server, browser, tmp_path):
    folder = problem_dir(tmp_path / "sum_to_ten")
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    watch = B.ConsoleWatch(page)

    page.goto(server + "/problems")
    page.get_by_text("No problems yet").wait_for()
    page.set_input_files("#u-folder", str(folder))
    page.wait_for_selector("#u-paths")
    # Read in the browser: hidden and __pycache__ entries left out, the binary file skipped.
    paths = page.eval_on_selector_all("#u-paths li", "ls => ls.map(l => l.textContent)")
    assert sorted(paths) == ["config.yaml", "data/notes.txt", "evaluator.py", "initial_program.py"]
    assert "blob.bin (binary, not UTF-8 text)" in page.inner_text("#u-skipped")
    assert "2 hidden or __pycache__ entries left out" in page.inner_text("#u-summary")
    page.fill("#u-name", "sum to ten")
    shot(page, "problems_upload_1280")
    with page.expect_response(lambda r: "/api/v1/problems" in r.url and r.request.method == "POST") as resp:
        page.click("#u-submit")
    assert resp.value.status == 201
    page.wait_for_url(re.compile(r"/problems/[0-9a-f]{64}$"))
    pid = page.url.rsplit("/", 1)[1]

    # The seed file first, highlighted on the server; the hostile data file shows as text.
    page.wait_for_selector("#file-view .hl")
    assert page.inner_text("#q-title") == "sum to ten"
    assert "def numbers" in page.inner_text("#file-view")
    assert page.get_attribute("#file-list button[data-path='initial_program.py']", "aria-pressed") == "true"
    assert page.locator("#file-view .hl .k").count() > 0                      # Python keywords
    page.click("#file-list button[data-path='data/notes.txt']")
    page.wait_for_function("() => document.getElementById('file-view').dataset.path === 'data/notes.txt'")
    text = page.inner_text("#file-view")
    assert "<script>window.__pwned = 1</script>" in text and '<img src=x onerror="window.__pwned = 2">' in text
    assert page.locator("#file-view script, #file-view img").count() == 0
    assert page.evaluate("window.__pwned") is None
    files = page.eval_on_selector_all("#file-list button", "bs => bs.map(b => b.dataset.path)")
    assert "config.yaml" not in files and "blob.bin" not in files and "evaluator.py" in files

    # Config as YAML (and JSON), the secret key dropped unread, the upload report.
    assert "max_iterations" in page.inner_text("#config-view")
    page.click("#cfg-json")
    assert '"max_iterations": 7' in page.inner_text("#config-view")
    assert "sk-test-never-shown" not in page.content()
    assert "llm.api_key" in page.inner_text("#report")
    assert "checkpoint_interval" in page.inner_text("#report")
    assert page.input_value("#f-iterations") == "7"                         # from config.yaml
    shot(page, "problem_1280")

    # Start a campaign from the form: 3 iterations on the local mutator.
    page.fill("#f-iterations", "3")
    page.fill("#f-parallel", "1")
    page.fill("#f-name", "from the problem page")
    page.click("#f-submit")
    page.wait_for_url(re.compile(r"/campaigns/\d+$"))
    cid = int(page.url.rsplit("/", 1)[1])
    c = wait_status(server, cid)
    assert c["problem"] == pid and c["name"] == "from the problem page"
    assert c["budget"]["max_evaluations"] == 4 and c["parallel"] == 1
    assert c["mutator"].get("kind", "local") == "local"
    assert c["status"] == "completed", c.get("error")
    link = page.locator("#c-problem-link")
    link.wait_for()
    assert link.get_attribute("href") == f"/problems/{pid}"
    page.wait_for_function("() => document.getElementById('c-problem-link').textContent.startsWith('sum to ten')")
    assert page.is_hidden("#c-failure")
    shot(page, "campaign_of_problem_1280")
    link.click()
    page.wait_for_url(re.compile(rf"/problems/{pid}$"))
    page.wait_for_selector("#file-view .hl")

    # The same content again: the same problem, said so; the list shows it once.
    assert upload_folder_again(page, server, folder) == pid
    page.wait_for_selector("#q-note:not([hidden])")
    page.goto(server + "/problems")
    page.wait_for_selector(f".ccard[data-problem-id='{pid}']")
    assert page.locator(".ccard").count() == 1
    assert watch.csp_violations == []
    assert watch.errors == []
    ctx.close()


def upload_folder_again(page, server, folder) -> str:
    page.goto(server + "/problems")
    page.wait_for_selector(".ccard")
    page.set_input_files("#u-folder", str(folder))
    page.wait_for_selector("#u-paths")
    page.click("#u-submit")
    page.wait_for_url(re.compile(r"/problems/[0-9a-f]{64}#existing$"))
    return page.url.split("/problems/", 1)[1].split("#", 1)[0]


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _refused(page, *, status: int | None = 422) -> str:
    with page.expect_response(lambda r: "/api/v1/problems" in r.url and r.request.method == "POST") as resp:
        page.click("#u-submit")
    if status is not None:
        assert resp.value.status == status
    page.wait_for_selector("#u-error", state="visible")
    assert re.search(r"/problems$", page.url), page.url                     # still on the list
    return page.inner_text("#u-error")


def test_refused_uploads_show_the_reason_and_store_nothing(server, browser, tmp_path):
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    watch = B.ConsoleWatch(page)
    page.goto(server + "/problems")
    page.get_by_text("No problems yet").wait_for()
    good = {"initial_program.py": SEED.encode(), "evaluator.py": EVALUATOR.encode()}

    # A traversal member in a tar.gz: refused whole, with the member named.
    (tmp_path / "evil.tar.gz").write_bytes(_tar_gz({**good, "../escape.py": b"x = 1\n"}))
    page.set_input_files("#u-archive", str(tmp_path / "evil.tar.gz"))
    assert "application/gzip" in page.inner_text("#u-summary")
    err = _refused(page)
    assert "The problem was not uploaded." in err and "escape.py" in err
    assert stored(server) == 0
    no_overflow(page, "the refused upload at 390px")
    shot(page, "problems_refused_390")

    # An absolute path in a zip: refused as well.
    (tmp_path / "abs.zip").write_bytes(_zip({**good, "/etc/cron.d/x": b"x = 1\n"}))
    page.set_input_files("#u-archive", str(tmp_path / "abs.zip"))
    assert "cron.d" in _refused(page)
    assert stored(server) == 0

    # A requirement the sandbox's Python lacks: refused with its name and how to provide it.
    folder = problem_dir(tmp_path / "needs_dep",
                         extra={"requirements.txt": b"numpy\nno-such-package-evoforge-xyz>=1.0\n"})
    page.set_input_files("#u-folder", str(folder))
    page.wait_for_selector("#u-paths")
    err = _refused(page)
    assert "no-such-package-evoforge-xyz" in err and "missing" in err
    assert stored(server) == 0

    # Not an archive at all: said in the browser, nothing sent.
    (tmp_path / "notes.rar").write_bytes(b"Rar!")
    page.set_input_files("#u-archive", str(tmp_path / "notes.rar"))
    assert "not a .zip, .tar or .tar.gz archive" in page.inner_text("#u-summary")
    assert page.is_disabled("#u-submit")
    errors = [e for e in watch.errors if "status of 422" not in e]
    assert errors == [] and watch.csp_violations == [], watch.errors
    ctx.close()


def test_hostile_names_render_as_text_and_pages_fit_both_widths(server, browser, tmp_path):
    """A hostile problem name, a member name that is skipped (and so reported), file text."""
    name = '<script>window.__pwned=1</script> & "quoted"'   # control characters: refused (422)
    member = '<img src=x onerror="window.__pwned=2">.py'
    archive = _zip({"initial_program.py": SEED, "evaluator.py": EVALUATOR, "data/notes.txt": HOSTILE,
                    member: "x = 1\n"})
    r = httpx.post(f"{server}/api/v1/problems", params={"name": name}, content=archive,
                   headers={"Content-Type": "application/zip"})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert any(member in s for s in r.json()["report"]["skipped"]), r.json()["report"]
    for width, height in ((1280, 900), (390, 844)):
        ctx = browser.new_context(viewport={"width": width, "height": height})
        page = ctx.new_page()
        watch = B.ConsoleWatch(page)
        page.goto(server + "/problems")
        card = page.locator(f".ccard[data-problem-id='{pid}'] .ccard-title")
        card.wait_for()
        assert "<script>window.__pwned=1</script>" in card.inner_text()
        no_overflow(page, f"/problems at {width}px")
        shot(page, f"problems_{width}")
        card.click()
        page.wait_for_selector("#file-view .hl")
        assert "<script>window.__pwned=1</script>" in page.inner_text("#q-title")
        assert member in page.inner_text("#report .skipped")
        assert page.locator("main img").count() == 0
        assert page.evaluate("window.__pwned") is None
        assert page.locator("main script").count() == 0
        no_overflow(page, f"/problems/{{id}} at {width}px")
        shot(page, f"problem_{width}")
        assert watch.csp_violations == [] and watch.errors == [], watch.errors
        ctx.close()


def test_failed_seed_shows_the_error_on_the_campaign_page(server, browser, tmp_path):
    r = httpx.post(f"{server}/api/v1/problems",
                   json={"initial_program.py": SEED, "evaluator.py": FAILING_EVALUATOR})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    watch = B.ConsoleWatch(page)
    page.goto(f"{server}/problems/{pid}")
    page.wait_for_selector("#file-view .hl")
    page.fill("#f-iterations", "5")
    page.click("#f-submit")
    page.wait_for_url(re.compile(r"/campaigns/\d+$"))
    cid = int(page.url.rsplit("/", 1)[1])
    c = wait_status(server, cid)
    assert c["status"] == "failed" and c["evaluations"] <= 1, c
    page.wait_for_selector("#c-failure:not([hidden])")
    err = page.inner_text("#c-error")
    assert "the seed program failed" in err and "<script>window.__pwned = 3</script>" in err
    assert page.evaluate("window.__pwned") is None
    shot(page, "campaign_failed_seed_1280")
    assert watch.csp_violations == [] and watch.errors == [], watch.errors
    ctx.close()


ENDPOINTS = """
[endpoints.team]
base_url = "http://127.0.0.1:9/v1"
models = ["perturb", "other"]
"""


@pytest.fixture
def llm_server(tmp_path, monkeypatch):
    """`evoforge serve` with an operator-declared LLM endpoint (unreachable: nothing runs)."""
    (tmp_path / "endpoints.toml").write_text(ENDPOINTS)
    monkeypatch.setenv("EVOFORGE_LLM_ENDPOINTS", str(tmp_path / "endpoints.toml"))
    home = tmp_path / "home"
    home.mkdir()
    with B.serve(f"sqlite:///{tmp_path / 'llm.db'}", home) as url:
        yield url


def test_llm_budget_and_schedule_from_the_form(llm_server, browser):
    server = llm_server
    config = "max_iterations: 12\nllm:\n  temperature: 0.4\n  models:\n    - name: perturb\n      weight: 3\n"
    r = httpx.post(f"{server}/api/v1/problems", params={"name": "llm problem"},
                   json={"initial_program.py": SEED, "evaluator.py": EVALUATOR, "config.yaml": config})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    watch = B.ConsoleWatch(page)
    page.goto(f"{server}/problems/{pid}")
    page.wait_for_selector("#file-view .hl")
    assert page.input_value("#f-iterations") == "12"
    page.select_option("#f-mutator", "llm")
    page.wait_for_selector("#f-endpoint option[value=team]", state="attached")
    assert page.input_value("#f-models") == "perturb:3"                     # the config's models
    assert page.input_value("#f-temperature") == "0.4"
    assert page.inner_text("#f-endpoint-hint") == "Allowed models: perturb, other"

    # A model the endpoint does not allow: the server's 422, readable, and nothing created.
    page.fill("#f-models", "perturb:3, gpt-expensive")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/campaigns") and r.request.method == "POST") as resp:
        page.click("#f-submit")
    assert resp.value.status == 422
    page.wait_for_selector("#form-error", state="visible")
    err = page.inner_text("#form-error")
    assert "The campaign was not created." in err and "gpt-expensive" in err
    assert httpx.get(f"{server}/api/v1/campaigns").json()["total"] == 0

    page.fill("#f-models", "perturb:3, other")
    page.fill("#f-iterations", "20")
    page.fill("#f-max-tokens", "50000")
    page.fill("#f-max-cost", "2.5")
    page.click(".more summary")
    page.fill("#f-seconds", "600")
    page.fill("#f-cron", "0 3 * * *")
    page.fill("#f-per-run", "10")
    page.click("#f-submit")
    page.wait_for_url(re.compile(r"/campaigns/\d+$"))
    cid = int(page.url.rsplit("/", 1)[1])
    c = httpx.get(f"{server}/api/v1/campaigns/{cid}").json()
    httpx.post(f"{server}/api/v1/campaigns/{cid}/cancel")             # its endpoint is unreachable
    assert c["problem"] == pid
    m = c["mutator"]
    assert m["kind"] == "llm" and m["endpoint"] == "team" and m["temperature"] == 0.4
    assert m["models"] == [{"name": "perturb", "weight": 3.0}, {"name": "other", "weight": 1.0}]
    assert c["budget"] == {**c["budget"], "max_evaluations": 21, "max_tokens": 50000,
                           "max_cost_usd": 2.5, "max_seconds": 600}
    assert c["schedule"] == {"cron": "0 3 * * *", "evaluations_per_run": 10}
    errors = [e for e in watch.errors if "status of 422" not in e]
    assert errors == [] and watch.csp_violations == [], watch.errors
    ctx.close()
