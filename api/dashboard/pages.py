"""HTML shells of the dashboard pages. They hold no data: the scripts fetch it with the user's key."""
from __future__ import annotations

import hashlib
from functools import lru_cache
from html import escape
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_URL = "/dashboard/static"


@lru_cache(maxsize=None)
def asset_version() -> str:
    """A hash of the static files, appended to their URLs so a new release is never stale."""
    h = hashlib.sha256()
    for p in sorted(STATIC_DIR.iterdir()):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:10]


NAV = (("campaigns", "/", "Campaigns"), ("problems", "/problems", "Problems"))
HIGHLIGHTED = frozenset(("program", "problem"))   # pages that show Pygments HTML
SANDBOX_OPTIONS = ('<option value="fork" selected>fork (default)</option>'
                   '<option value="subprocess">subprocess</option><option value="docker">docker</option>')


def _asset(name: str) -> str:
    return f"{STATIC_URL}/{name}?v={asset_version()}"


def layout(*, title: str, page: str, body: str, scripts: list[str], data: dict[str, str] | None = None,
           nav: str = "campaigns") -> str:
    attrs = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in (data or {}).items())
    script_tags = "\n".join(f'<script src="{_asset(s)}" defer></script>' for s in ["common.js", *scripts])
    current = ' aria-current="page"'
    links = "".join(f'<a href="{href}"{current if nav == key else ""}>{label}</a>' for key, href, label in NAV)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · EvoForge</title>
<link rel="icon" href="{_asset('favicon.svg')}" type="image/svg+xml">
<link rel="stylesheet" href="{_asset('dashboard.css')}">
{'<link rel="stylesheet" href="/dashboard/pygments.css?v=' + asset_version() + '">' if page in HIGHLIGHTED else ""}
{script_tags}
</head>
<body data-page="{escape(page)}"{attrs}>
<a class="skip" href="#main">Skip to content</a>
<header class="topbar">
  <a class="brand" href="/"><span class="logo" aria-hidden="true"></span>EvoForge</a>
  <nav aria-label="Main">{links}<a class="nav-docs" href="/docs">API docs</a></nav>
  <div class="auth" id="auth-state" aria-live="polite"></div>
</header>
<main id="main" tabindex="-1">
<div id="alert" class="alert" role="alert" hidden></div>
{body}
</main>
<dialog id="key-dialog" aria-labelledby="key-title">
  <form method="dialog" id="key-form">
    <h2 id="key-title">API key required</h2>
    <p>This server needs an API key. It is kept in this browser tab only (session storage).</p>
    <label for="key-input">API key</label>
    <input id="key-input" name="key" type="password" autocomplete="off" spellcheck="false"
           placeholder="evf_..." required>
    <p class="hint">Create one with <code>evoforge apikey create --project NAME</code>.</p>
    <div class="row-end">
      <button type="button" class="btn" id="key-cancel">Cancel</button>
      <button type="submit" class="btn primary">Use key</button>
    </div>
  </form>
</dialog>
<div id="tooltip" class="tooltip" role="tooltip" hidden></div>
</body>
</html>"""


# The mutator choice and LLM settings, shared by the new-campaign forms of `/` and `/problems/{id}`
# (static/form.js reads them).
LLM_FIELDS = """      <div class="field"><label for="f-mutator">Mutator</label>
        <select id="f-mutator" name="mutator">
          <option value="local" selected>Local (AST mutations, no LLM)</option>
          <option value="llm">LLM (OpenAI-compatible endpoint)</option>
        </select></div>
      <fieldset id="f-llm" class="llm" hidden>
        <legend>LLM settings</legend>
        <div class="field"><label for="f-endpoint">Endpoint</label>
          <select id="f-endpoint" name="endpoint"><option value="">Loading endpoints…</option></select>
          <p class="hint" id="f-endpoint-hint"></p></div>
        <div class="field"><label for="f-models">Models</label>
          <input id="f-models" name="models" type="text" autocomplete="off" spellcheck="false"
                 placeholder="model-a:2, model-b">
          <p class="hint">Comma-separated <code>NAME[:WEIGHT]</code>; the weight (default 1) is the text after the last colon when it is a number.</p></div>
        <div class="grid3">
          <div class="field"><label for="f-temperature">Temperature</label>
            <input id="f-temperature" name="temperature" type="number" min="0" max="2" step="any" value="0.7" inputmode="decimal"></div>
          <div class="field"><label for="f-reply-tokens">Max tokens per reply</label>
            <input id="f-reply-tokens" name="reply_max_tokens" type="number" min="16" max="200000" step="1" value="4096" inputmode="numeric"></div>
          <div class="field field-check"><label class="check" for="f-diff"><input id="f-diff" name="diff_mode" type="checkbox" checked>Diff mode</label></div>
        </div>
        <div class="pair">
          <div class="field"><label for="f-max-tokens">Max tokens <span class="opt">(budget)</span></label>
            <input id="f-max-tokens" name="max_tokens" type="number" min="1" max="1000000000000" step="1" placeholder="none" inputmode="numeric"></div>
          <div class="field"><label for="f-max-cost">Max cost, USD <span class="opt">(budget)</span></label>
            <input id="f-max-cost" name="max_cost_usd" type="number" min="0" max="10000000" step="any" placeholder="none" inputmode="decimal"></div>
        </div>
        <p class="hint" id="f-llm-hint">No API key or URL here: the operator declares each endpoint, its
          key and its prices on the server (<code>EVOFORGE_LLM_ENDPOINTS</code>); keys never go through the API.</p>
      </fieldset>"""


def campaigns_page() -> str:
    body = f"""
<div class="page-head">
  <div><h1>Campaigns</h1><p class="sub" id="list-summary">Loading…</p></div>
  <a class="btn primary jump" href="#new-title" id="jump-new">New campaign</a>
</div>
<div class="split">
  <section aria-labelledby="list-title" class="list-col">
    <h2 id="list-title" class="visually-hidden">All campaigns</h2>
    <div id="campaign-list" class="cards" aria-busy="true"><div class="skeleton"></div><div class="skeleton"></div></div>
  </section>
  <aside class="card form-card" aria-labelledby="new-title">
    <h2 id="new-title">New campaign</h2>
    <form id="new-campaign" novalidate>
      <div class="field"><label for="f-task">Task</label>
        <select id="f-task" name="task" required><option value="">Loading tasks…</option></select>
        <p class="hint" id="f-task-hint"></p></div>
      <fieldset id="f-params" class="params"><legend>Task parameters</legend></fieldset>
      <div class="field"><label for="f-name">Name <span class="opt">(optional)</span></label>
        <input id="f-name" name="name" maxlength="200" autocomplete="off"></div>
      <div class="grid3">
        <div class="field"><label for="f-budget">Evaluations</label>
          <input id="f-budget" name="max_evaluations" type="number" min="1" max="10000000" step="1" value="200" required></div>
        <div class="field"><label for="f-parallel">Parallel</label>
          <input id="f-parallel" name="parallel" type="number" min="1" max="256" step="1" value="2" required></div>
        <div class="field"><label for="f-seed">Seed</label>
          <input id="f-seed" name="seed" type="number" min="0" max="2147483647" step="1" value="0" required></div>
      </div>
{LLM_FIELDS}
      <details class="more"><summary>More budget &amp; archive options</summary>
        <div class="grid3">
          <div class="field"><label for="f-seconds">Max seconds</label>
            <input id="f-seconds" name="max_seconds" type="number" min="1" step="1" placeholder="none"></div>
          <div class="field"><label for="f-islands">Islands</label>
            <input id="f-islands" name="islands" type="number" min="1" max="64" step="1" value="4"></div>
          <div class="field"><label for="f-bins">Bins per dim</label>
            <input id="f-bins" name="bins" type="number" min="1" max="100" step="1" value="10"></div>
        </div>
      </details>
      <div id="form-error" class="form-error" role="alert" hidden></div>
      <button type="submit" class="btn primary wide" id="f-submit">Create campaign</button>
    </form>
  </aside>
</div>"""
    return layout(title="Campaigns", page="campaigns", body=body, scripts=["form.js", "campaigns.js"])


def campaign_page(campaign_id: int) -> str:
    body = f"""
<nav class="crumbs" aria-label="Breadcrumb"><a href="/">Campaigns</a><span aria-hidden="true">/</span><span id="crumb">#{campaign_id}</span></nav>
<div class="page-head">
  <div><h1 id="c-title">Campaign #{campaign_id}</h1><p class="sub" id="c-sub">Loading…</p>
    <p class="sub" id="c-problem" hidden>Problem <a id="c-problem-link" href="/problems"></a></p></div>
  <div class="actions" id="c-actions"></div>
</div>
<section class="failure" id="c-failure" role="alert" aria-labelledby="failure-title" hidden>
  <h2 id="failure-title">This campaign failed</h2>
  <pre class="block err" id="c-error"></pre>
</section>
<section class="tiles" id="c-tiles" aria-label="Progress"></section>
<div class="progress big" id="c-progress" role="progressbar" aria-label="Budget used" aria-valuemin="0" aria-valuemax="100" aria-valuenow="0"><span></span></div>
<p class="live" id="c-live" aria-live="polite"></p>
<div class="grid2">
  <section class="card" aria-labelledby="plot-title">
    <h2 id="plot-title">Best score over evaluations</h2>
    <div id="history-plot" class="plot"><p class="empty">Loading…</p></div>
  </section>
  <section class="card" aria-labelledby="stats-title">
    <h2 id="stats-title">Islands</h2>
    <div id="island-stats"></div>
    <h3>Results by status</h3>
    <div id="status-bars"></div>
    <h3>Tokens &amp; cost</h3>
    <div id="token-stats"></div>
  </section>
</div>
<section class="card" aria-labelledby="map-title">
  <div class="card-head"><h2 id="map-title">MAP-Elites archive</h2><div id="map-legend" class="legend"></div></div>
  <p class="hint" id="map-hint"></p>
  <div id="heatmaps" class="heatmaps"><p class="empty">Loading…</p></div>
</section>"""
    return layout(title=f"Campaign #{campaign_id}", page="campaign", body=body,
                  scripts=["campaign.js"], data={"campaign-id": str(campaign_id)})


def program_page(program_id: int) -> str:
    body = f"""
<nav class="crumbs" aria-label="Breadcrumb"><a href="/">Campaigns</a><span aria-hidden="true">/</span><a id="crumb-campaign" href="/">Campaign</a><span aria-hidden="true">/</span><span>Program #{program_id}</span></nav>
<div class="page-head">
  <div><h1 id="p-title">Program #{program_id}</h1><p class="sub" id="p-sub">Loading…</p></div>
  <div class="actions">
    <button class="btn" type="button" id="copy-code" disabled>Copy code</button>
    <button class="btn" type="button" id="download-code" disabled>Download .py</button>
  </div>
</div>
<section class="tiles six" id="p-tiles" aria-label="Summary"></section>
<div class="program-grid">
  <div class="program-main">
    <section class="card" aria-labelledby="code-title">
      <div class="card-head"><h2 id="code-title">Code</h2><span class="hint" id="code-meta"></span></div>
      <div id="code" class="code"><p class="empty">Loading…</p></div>
    </section>
    <section class="card" aria-labelledby="diff-title">
      <div class="card-head"><h2 id="diff-title">Diff against parent</h2><span class="hint" id="diff-meta"></span></div>
      <div id="diff" class="code"><p class="empty">Loading…</p></div>
    </section>
    <section class="card" aria-labelledby="llm-title">
      <h2 id="llm-title">Prompt &amp; response</h2>
      <div id="llm"><p class="empty">Loading…</p></div>
    </section>
  </div>
  <div class="program-side">
    <section class="card" aria-labelledby="eval-title"><h2 id="eval-title">Evaluation</h2><div id="evaluation"></div></section>
    <section class="card" aria-labelledby="metrics-title"><h2 id="metrics-title">Metrics</h2><div id="metrics"></div></section>
    <section class="card" aria-labelledby="lineage-title"><h2 id="lineage-title">Lineage</h2><div id="lineage"></div></section>
  </div>
</div>"""
    return layout(title=f"Program #{program_id}", page="program", body=body,
                  scripts=["program.js"], data={"program-id": str(program_id)})


def problems_page() -> str:
    # The server's limits, checked in the browser first (a folder's JSON body or an archive).
    from evoforge.evaluators.openevolve.package import MAX_FILE_BYTES, MAX_UPLOAD_BYTES

    body = f"""
<div class="page-head">
  <div><h1>Problems</h1><p class="sub" id="list-summary">Loading…</p></div>
  <a class="btn primary jump" href="#upload-title" id="jump-upload">Upload a problem</a>
</div>
<div class="split">
  <section aria-labelledby="list-title" class="list-col">
    <h2 id="list-title" class="visually-hidden">All problems</h2>
    <div id="problem-list" class="cards" aria-busy="true"><div class="skeleton"></div></div>
  </section>
  <aside class="card form-card" aria-labelledby="upload-title">
    <h2 id="upload-title">Upload a problem</h2>
    <p class="hint para">OpenEvolve's layout (<code>initial_program.py</code>, <code>evaluator.py</code>, optional
      <code>config.yaml</code>, <code>requirements.txt</code> and the files the evaluator reads) or the
      native <code>evoforge.toml</code>. The same content uploaded again is the same problem.</p>
    <form id="upload" novalidate>
      <div class="field"><label for="u-folder">A folder</label>
        <input id="u-folder" name="folder" type="file" webkitdirectory multiple>
        <p class="hint">Read in this browser: hidden and <code>__pycache__</code> entries are left out,
          binary files and files over {MAX_FILE_BYTES >> 20} MiB are skipped and listed.</p></div>
      <div class="field"><label for="u-archive">…or an archive</label>
        <input id="u-archive" name="archive" type="file" accept=".zip,.tar,.tar.gz,.tgz"></div>
      <div id="u-summary" class="upload-summary" aria-live="polite" hidden></div>
      <div class="pair">
        <div class="field"><label for="u-name">Name <span class="opt">(optional)</span></label>
          <input id="u-name" name="name" maxlength="200" autocomplete="off"></div>
        <div class="field"><label for="u-sandbox">Sandbox</label>
          <select id="u-sandbox" name="sandbox">{SANDBOX_OPTIONS}</select></div>
      </div>
      <p class="hint para">Requirements (<code>requirements.txt</code>) are checked against this sandbox's Python.</p>
      <div id="u-error" class="form-error" role="alert" hidden></div>
      <button type="submit" class="btn primary wide" id="u-submit" disabled>Upload</button>
    </form>
  </aside>
</div>"""
    return layout(title="Problems", page="problems", body=body, scripts=["problems.js"], nav="problems",
                  data={"max-file-bytes": str(MAX_FILE_BYTES), "max-upload-bytes": str(MAX_UPLOAD_BYTES)})


def problem_page(problem_id: str) -> str:
    short = escape(problem_id[:12])
    body = f"""
<nav class="crumbs" aria-label="Breadcrumb"><a href="/problems">Problems</a><span aria-hidden="true">/</span><span id="crumb">{short}</span></nav>
<div class="page-head">
  <div><h1 id="q-title">Problem {short}</h1><p class="sub" id="q-sub">Loading…</p></div>
  <div class="actions"><button class="btn danger" type="button" id="q-delete" disabled>Delete</button></div>
</div>
<p class="note" id="q-note" role="status" hidden></p>
<section class="tiles six" id="q-tiles" aria-label="Summary"></section>
<div class="program-grid">
  <div class="program-main">
    <section class="card" aria-labelledby="files-title">
      <div class="card-head"><h2 id="files-title">Files</h2><span class="hint" id="file-meta"></span></div>
      <div class="files">
        <ul id="file-list" class="file-list" aria-label="Files of the problem"></ul>
        <div id="file-view" class="code"><p class="empty">Loading…</p></div>
      </div>
    </section>
    <section class="card" aria-labelledby="config-title">
      <div class="card-head"><h2 id="config-title">Config</h2>
        <div class="seg" role="group" aria-label="Config format">
          <button class="btn small" type="button" id="cfg-yaml" aria-pressed="true">YAML</button>
          <button class="btn small" type="button" id="cfg-json" aria-pressed="false">JSON</button></div></div>
      <div id="config-view" class="code"><p class="empty">Loading…</p></div>
    </section>
  </div>
  <div class="program-side">
    <section class="card form-card" aria-labelledby="new-title">
      <h2 id="new-title">Start a campaign</h2>
      <form id="new-campaign" novalidate>
        <div class="field"><label for="f-name">Name <span class="opt">(optional)</span></label>
          <input id="f-name" name="name" maxlength="200" autocomplete="off"></div>
        <div class="grid3">
          <div class="field"><label for="f-iterations">Iterations</label>
            <input id="f-iterations" name="iterations" type="number" min="0" max="9999999" step="1" required></div>
          <div class="field"><label for="f-parallel">Parallel</label>
            <input id="f-parallel" name="parallel" type="number" min="1" max="256" step="1" placeholder="config"></div>
          <div class="field"><label for="f-seed">Seed</label>
            <input id="f-seed" name="seed" type="number" min="0" max="2147483647" step="1" placeholder="config"></div>
        </div>
        <p class="hint para">Iterations are mutations after the seed program (the budget is iterations + 1
          evaluations). Empty fields take the problem's config.</p>
{LLM_FIELDS}
        <details class="more"><summary>Sandbox, time limit &amp; schedule</summary>
          <div class="pair">
            <div class="field"><label for="f-sandbox">Sandbox</label>
              <select id="f-sandbox" name="sandbox">{SANDBOX_OPTIONS}</select></div>
            <div class="field"><label for="f-seconds">Max seconds</label>
              <input id="f-seconds" name="max_seconds" type="number" min="1" step="1" placeholder="none"></div>
          </div>
          <div class="pair">
            <div class="field"><label for="f-cron">Schedule <span class="opt">(cron, UTC)</span></label>
              <input id="f-cron" name="cron" maxlength="120" autocomplete="off" spellcheck="false" placeholder="0 3 * * *"></div>
            <div class="field"><label for="f-per-run">Evaluations per run</label>
              <input id="f-per-run" name="evaluations_per_run" type="number" min="1" max="10000000" step="1" value="100"></div>
          </div>
        </details>
        <div id="form-error" class="form-error" role="alert" hidden></div>
        <button type="submit" class="btn primary wide" id="f-submit" disabled>Create campaign</button>
      </form>
    </section>
    <section class="card" aria-labelledby="req-title"><h2 id="req-title">Requirements</h2><div id="requirements"></div></section>
    <section class="card" aria-labelledby="report-title"><h2 id="report-title">Upload report</h2><div id="report"></div></section>
  </div>
</div>"""
    return layout(title=f"Problem {problem_id[:12]}", page="problem", body=body, nav="problems",
                  scripts=["form.js", "problem.js"], data={"problem-id": problem_id})


def not_found_page(message: str, nav: str = "campaigns") -> str:
    body = f"""<div class="page-head"><div><h1>Not found</h1><p class="sub">{escape(message)}</p></div></div>
<p><a class="btn" href="/">Back to campaigns</a></p>"""
    return layout(title="Not found", page="notfound", body=body, scripts=[], nav=nav)
