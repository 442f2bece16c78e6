"""The dashboard in headless Chromium against a real `evoforge serve` process.

Create a campaign through the form, watch it progress over server-sent events, open a heatmap
cell, land on the program and see its code and diff; every page at 1280 and 390 px without
console errors; screenshots under test-artifacts/dashboard/. Skips (with the reason) when
Playwright or Chromium is missing, unless EVOFORGE_REQUIRE_SERVICES=1 (CI), where it fails.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import httpx
import pytest

from tests.dashboard import browser as B

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WIDTHS = {1280: 900, 390: 844}


shot = B.shot


def fill_campaign(page, *, name: str, budget: int, parallel: int) -> None:
    """The circle_packing form's common fields: n=12 (a task param), name, budget, parallel."""
    page.fill("#p-n", "12")
    page.fill("#f-name", name)
    page.fill("#f-budget", str(budget))
    page.fill("#f-parallel", str(parallel))

def test_create_watch_open_cell_and_program(server, browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    watch = B.ConsoleWatch(page)

    page.goto(server + "/")
    page.get_by_text("No campaigns yet").wait_for()
    shot(page, "campaigns_empty_1280")
    page.wait_for_selector("#f-task option[value=circle_packing]", state="attached")
    page.select_option("#f-task", "circle_packing")
    page.wait_for_selector("#p-n")   # generated from the task's params JSON schema
    assert page.input_value("#p-n") == "26"
    fill_campaign(page, name="browser test", budget=30, parallel=2)
    page.fill("#f-seed", "3")
    page.click("#f-submit")

    page.wait_for_url(re.compile(r"/campaigns/\d+$"))
    cid = int(page.url.rsplit("/", 1)[1])
    page.evaluate("window.__sameDocument = true")
    # Progress arrives over SSE, without a reload: watch the evaluation count climb to 30.
    seen = set()
    page.wait_for_selector("#c-evals")
    read = "[document.querySelector('#c-status').textContent, document.querySelector('#c-evals').textContent]"
    for _ in range(600):
        status, evals = page.evaluate(read)   # both from the same render
        seen.add(int(evals.replace(",", "")))
        if status == "completed":
            break
        page.wait_for_timeout(100)
    assert page.inner_text("#c-status") == "completed"
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    assert len(seen) >= 2 and max(seen) == 30, seen
    page.wait_for_function("() => document.querySelector('#c-live').textContent.includes('completed')")
    page.wait_for_function("() => Number(document.querySelector('#heatmaps').dataset.rendered) > 0")
    page.wait_for_function("() => Number(document.querySelector('#history-plot').dataset.rendered) > 0")
    assert page.locator("#history-plot .main-svg").count() > 0      # plotly drew it
    shot(page, "campaign_1280")

    # Open a heatmap cell whose program has a parent, so the program page has a diff.
    elites = httpx.get(f"{server}/api/v1/campaigns/{cid}/elites").json()
    ids = [c["program_id"] for i in elites["islands"] for c in i["cells"]]
    child = next((p for p in ids if httpx.get(f"{server}/api/v1/programs/{p}").json()["parent_id"]), None)
    assert child is not None, "no elite with a parent after 30 evaluations"
    cell = page.locator(f'.hm a[data-program-id="{child}"]').first
    cell.hover()
    assert "score" in page.inner_text("#tooltip")
    cell.click()
    page.wait_for_url(re.compile(rf"/programs/{child}$"))
    page.wait_for_selector("#code .hl")
    assert "def pack_circles" in page.inner_text("#code")
    page.wait_for_selector("#diff .hl")
    assert re.search(r"\+\+\+ program \d+", page.inner_text("#diff"))
    assert page.locator("#lineage a").count() >= 1
    assert page.is_enabled("#copy-code") and page.is_enabled("#download-code")
    with page.expect_download() as dl:
        page.click("#download-code")
    assert dl.value.suggested_filename == f"program_{child}.py"
    shot(page, "program_1280")
    assert watch.errors == []
    ctx.close()


def test_pages_at_both_widths_without_console_errors(server, browser):
    r = httpx.post(f"{server}/api/v1/campaigns", json={"task": "circle_packing", "params": {"n": 26},
                                                         "seed": 0, "parallel": 2,
                                                         "budget": {"max_evaluations": 30}})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    for _ in range(600):
        c = httpx.get(f"{server}/api/v1/campaigns/{cid}").json()
        if c["status"] == "completed":
            break
        time.sleep(0.2)
    assert c["status"] == "completed"
    best = c["best_program_id"]
    for width, height in WIDTHS.items():
        ctx = browser.new_context(viewport={"width": width, "height": height})
        page = ctx.new_page()
        watch = B.ConsoleWatch(page)
        for path, ready, name in (("/", ".ccard", "campaigns"),
                                  (f"/campaigns/{cid}", "#heatmaps .hm a", "campaign"),
                                  (f"/programs/{best}", "#code .hl", "program_best")):
            resp = page.goto(server + path)
            assert resp.status == 200, path
            page.wait_for_selector(ready)
            page.wait_for_load_state("networkidle")
            # Nothing wider than the viewport (readable without sideways scrolling).
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} overflows by {overflow}px at {width}px"
            shot(page, f"{name}_{width}")
        # Keyboard: the first Tab lands on the skip link, and the main actions are real controls.
        page.goto(server + "/")
        page.wait_for_selector(".ccard")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        assert page.locator("#f-submit").evaluate("e => e.tagName") == "BUTTON"
        assert watch.csp_violations == [], (width, watch.csp_violations)
        assert watch.errors == [], (width, watch.errors)
        ctx.close()


def test_pages_run_under_a_csp_that_blocks_inline_script(server, browser):
    """The policy is in force (an injected inline script does not run, and the watch sees the
    violation), so the other tests' empty `csp_violations` means the dashboard needs no inline code."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    watch = B.ConsoleWatch(page)
    resp = page.goto(server + "/")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self';" in csp, csp
    page.get_by_text("No campaigns yet").wait_for()
    assert watch.errors == []
    ran = page.evaluate("""() => { const s = document.createElement("script");
        s.textContent = "window.__inlineRan = true"; document.head.append(s);
        return window.__inlineRan === true; }""")
    assert ran is False
    for _ in range(50):
        if watch.csp_violations:
            break
        page.wait_for_timeout(100)
    assert watch.csp_violations and "script-src" in watch.csp_violations[0], watch.errors
    ctx.close()


def test_key_prompt_when_the_server_has_keys(tmp_path, browser):
    home = tmp_path / "home"
    home.mkdir()
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    out = subprocess.run([*B.evoforge_bin(), "apikey", "create", "--project", "team", "--json", "--db", db],
                         env=dict(os.environ, EVOFORGE_HOME=str(home)), capture_output=True, text=True,
                         check=True)
    key = json.loads(out.stdout)["key"]
    with B.serve(db, home) as url:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#key-dialog[open]")
        page.fill("#key-input", "evf_wrong")
        page.click("#key-dialog button[type=submit]")
        page.get_by_text("Campaigns could not be loaded").wait_for()  # a bad key: a clear error
        page.click("#auth-state button")
        page.wait_for_selector("#key-dialog[open]")
        page.fill("#key-input", key)
        page.click("#key-dialog button[type=submit]")
        page.get_by_text("No campaigns yet").wait_for()
        assert page.evaluate("sessionStorage.getItem('evoforge.apiKey')") == key
        page.reload()                                   # kept for the session: no second prompt
        page.get_by_text("No campaigns yet").wait_for()
        assert not page.is_visible("#key-dialog")
        shot(page, "campaigns_with_key_1280")
        ctx.close()


def _open_form(page, server):
    page.goto(server + "/")
    page.get_by_text("No campaigns yet").wait_for()
    page.wait_for_selector("#f-task option[value=circle_packing]", state="attached")
    page.select_option("#f-task", "circle_packing")
    page.wait_for_selector("#p-n")


ENDPOINTS = """
[endpoints.team]
base_url = "http://127.0.0.1:9/v1"
key_env = "TEAM_LLM_KEY"
models = ["perturb", "other", "ollama/qwen2:7b"]

[endpoints.local]
base_url = "http://127.0.0.1:9/v1"
models = ["*"]
"""


@pytest.fixture
def llm_server(tmp_path, monkeypatch):
    """`evoforge serve` with two operator-declared LLM endpoints (EVOFORGE_LLM_ENDPOINTS)."""
    (tmp_path / "endpoints.toml").write_text(ENDPOINTS)
    monkeypatch.setenv("EVOFORGE_LLM_ENDPOINTS", str(tmp_path / "endpoints.toml"))
    monkeypatch.setenv("TEAM_LLM_KEY", "sk-team-key-for-the-dashboard-test")
    home = tmp_path / "home"
    home.mkdir()
    with B.serve(f"sqlite:///{tmp_path / 'dash.db'}", home) as url:
        yield url


def _pick_llm(page):
    page.select_option("#f-mutator", "llm")
    page.wait_for_selector("#f-llm", state="visible")
    page.wait_for_selector("#f-endpoint option[value=team]", state="attached")


def test_create_llm_campaign_through_the_form(llm_server, browser):
    server = llm_server
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    watch = B.ConsoleWatch(page)
    _open_form(page, server)
    assert page.input_value("#f-mutator") == "local"
    assert not page.is_visible("#f-llm")            # local by default: no LLM fields
    _pick_llm(page)
    # The operator's endpoints by name; no URL field, no URL shown, no key field.
    assert page.eval_on_selector_all("#f-endpoint option", "os => os.map(o => o.value)") == \
        ["local", "team"]
    assert page.locator("#f-base-url").count() == 0
    assert "127.0.0.1:9" not in page.content()
    page.select_option("#f-endpoint", "team")
    assert page.inner_text("#f-endpoint-hint") == "Allowed models: perturb, other, ollama/qwen2:7b"
    assert page.input_value("#f-temperature") == "0.7"
    assert page.input_value("#f-reply-tokens") == "4096"
    assert page.is_checked("#f-diff")
    assert "EVOFORGE_LLM_ENDPOINTS" in page.inner_text("#f-llm-hint")
    assert page.locator("#new-campaign input[type=password]").count() == 0   # no key field
    shot(page, "campaigns_form_llm_1280")

    fill_campaign(page, name="llm form", budget=5, parallel=1)
    page.fill("#f-models", "perturb:2, other, ollama/qwen2:7b")
    page.fill("#f-temperature", "0.3")
    page.fill("#f-reply-tokens", "2048")
    page.uncheck("#f-diff")
    page.fill("#f-max-tokens", "50000")
    page.fill("#f-max-cost", "1.5")
    page.click("#f-submit")
    page.wait_for_url(re.compile(r"/campaigns/\d+$"))
    cid = int(page.url.rsplit("/", 1)[1])

    c = httpx.get(f"{server}/api/v1/campaigns/{cid}").json()
    m = c["mutator"]
    assert m["kind"] == "llm"
    assert m["endpoint"] == "team" and m.get("base_url") is None
    assert m["models"] == [{"name": "perturb", "weight": 2.0}, {"name": "other", "weight": 1.0},
                           {"name": "ollama/qwen2:7b", "weight": 1.0}]   # "7b" is no weight
    assert m["temperature"] == 0.3 and m["max_tokens"] == 2048 and m["diff_mode"] is False
    assert c["budget"]["max_tokens"] == 50000
    assert c["budget"]["max_cost_usd"] == 1.5
    assert c["budget"]["max_evaluations"] == 5
    assert c["name"] == "llm form" and c["params"]["n"] == 12
    httpx.post(f"{server}/api/v1/campaigns/{cid}/cancel")   # its endpoint is unreachable anyway
    assert watch.errors == []
    ctx.close()


def test_llm_form_shows_the_servers_error_and_creates_nothing(llm_server, browser):
    server = llm_server
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    page = ctx.new_page()
    watch = B.ConsoleWatch(page)
    _open_form(page, server)
    _pick_llm(page)
    page.select_option("#f-endpoint", "team")
    page.fill("#f-models", "gpt-expensive")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/campaigns")
                              and r.request.method == "POST") as resp:
        page.click("#f-submit")
    assert resp.value.status == 422
    page.wait_for_selector("#form-error", state="visible")
    err = page.inner_text("#form-error")
    assert "The campaign was not created." in err
    assert "'gpt-expensive' are not allowed on LLM endpoint 'team'" in err
    assert page.url == server + "/"
    assert page.is_enabled("#f-submit") and page.inner_text("#f-submit") == "Create campaign"
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the LLM fields overflow by {overflow}px at 390px"
    shot(page, "campaigns_form_llm_error_390")
    assert httpx.get(f"{server}/api/v1/campaigns").json()["total"] == 0
    # Back to local: the same form creates a local campaign (the LLM fields are not sent).
    page.select_option("#f-mutator", "local")
    assert not page.is_visible("#f-llm")
    page.fill("#f-budget", "3")
    page.click("#f-submit")
    page.wait_for_url(re.compile(r"/campaigns/\d+$"))
    c = httpx.get(f"{server}/api/v1/campaigns/{page.url.rsplit('/', 1)[1]}").json()
    assert c["mutator"].get("kind", "local") == "local"
    assert c["mutator"].get("endpoint") is None and not c["mutator"].get("models")
    assert "max_tokens" not in c["budget"] or c["budget"]["max_tokens"] is None
    # Chromium logs the 422 itself; anything else is a script error.
    errors = [e for e in watch.errors if "status of 422" not in e]
    assert errors == [], errors
    ctx.close()


def test_llm_form_without_endpoints_says_so(server, browser):
    """A server whose operator declared no LLM endpoint: the form says so, and the server's
    answer to an LLM campaign names what is missing."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    watch = B.ConsoleWatch(page)
    _open_form(page, server)
    page.select_option("#f-mutator", "llm")
    page.wait_for_selector("#f-endpoint option[value='']", state="attached")
    page.wait_for_function("() => document.getElementById('f-endpoint-hint').textContent !== ''")
    assert page.inner_text("#f-endpoint") == "No endpoints configured"
    assert "declared no LLM endpoint" in page.inner_text("#f-endpoint-hint")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/campaigns")
                              and r.request.method == "POST") as resp:
        page.click("#f-submit")
    assert resp.value.status == 422
    page.wait_for_selector("#form-error", state="visible")
    assert "needs mutator.endpoint (available: none configured)" in page.inner_text("#form-error")
    errors = [e for e in watch.errors if "status of 422" not in e]
    assert errors == [], errors
    ctx.close()
