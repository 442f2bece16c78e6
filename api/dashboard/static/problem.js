/* `/problems/{id}`: a stored problem's files (highlighted on the server), config, requirements and
 * upload report, and the form that starts a campaign on it. */
"use strict";

(() => {
  const { api, h, fmt } = EF;
  const { intField, readMutator, showFormError, submitCampaign } = EFForm;
  const id = document.body.dataset.problemId;
  const base = `/dashboard-api/problems/${encodeURIComponent(id)}`;
  let problem = null;
  let configHtml = null;
  let fileToken = 0;

  const kib = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);
  const encodePath = (p) => p.split("/").map(encodeURIComponent).join("/");

  function tiles(q) {
    const total = q.files.reduce((a, f) => a + f.bytes, 0);
    const items = [
      ["Layout", q.layout, q.layout === "native" ? "evoforge.toml" : "OpenEvolve's"],
      ["Files", fmt.int(q.files.length), kib(total)],
      ["Seed", q.seed, "the initial program"],
      ["Evaluator", q.evaluator, "runs in the sandbox"],
      ["Requirements", fmt.int(q.requirements.length), q.requirements.length ? "checked at upload" : "none declared"],
      ["Campaigns", fmt.int(q.campaigns), `uploaded ${fmt.ago(q.created_at)}`],
    ];
    const el = document.getElementById("q-tiles");
    el.textContent = "";
    for (const [k, v, s] of items) el.append(h("div", { class: "tile" }, h("div", { class: "k" }, k), h("div", { class: "v", title: String(v) }, v), h("div", { class: "s", title: s }, s || " ")));
  }

  function fileList(q) {
    const ul = document.getElementById("file-list");
    ul.textContent = "";
    const role = (p) => (p === q.seed ? "seed" : p === q.evaluator ? "evaluator" : null);
    for (const f of q.files) {
      const r = role(f.path);
      ul.append(h("li", {}, h("button", {
        type: "button", class: "file", "data-path": f.path, "aria-pressed": "false",
        onclick: () => showFile(f.path),
      }, h("span", { class: "name" }, f.path), r ? h("span", { class: `badge ${r === "seed" ? "completed" : "queued"}` }, r) : null,
      h("span", { class: "size" }, kib(f.bytes)))));
    }
  }

  async function showFile(path) {
    const mine = ++fileToken;
    for (const b of document.querySelectorAll("#file-list button")) b.setAttribute("aria-pressed", String(b.dataset.path === path));
    const view = document.getElementById("file-view");
    const meta = document.getElementById("file-meta");
    view.setAttribute("aria-busy", "true");
    try {
      const f = await api(`${base}/files/${encodePath(path)}`);
      if (mine !== fileToken) return;
      view.innerHTML = f.html;             // Pygments' output: the text is escaped on the server
      view.dataset.path = f.path;
      meta.textContent = `${f.path} · ${f.language} · ${fmt.int(f.lines)} lines · ${kib(f.bytes)}`;
    } catch (err) {
      if (mine !== fileToken) return;
      view.textContent = "";
      view.append(h("p", { class: "empty" }, `${path} could not be loaded: ${err.message}`));
      meta.textContent = "";
    } finally {
      if (mine === fileToken) view.removeAttribute("aria-busy");
    }
  }

  function showConfig(kind) {
    document.getElementById("cfg-yaml").setAttribute("aria-pressed", String(kind === "yaml"));
    document.getElementById("cfg-json").setAttribute("aria-pressed", String(kind === "json"));
    const view = document.getElementById("config-view");
    view.dataset.format = kind;
    view.innerHTML = configHtml[kind];
  }

  function list(items, empty, cls) {
    if (!items || !items.length) return h("p", { class: "hint" }, empty);
    return h("ul", { class: `plain ${cls || ""}` }, items.map((x) => h("li", {}, typeof x === "string" ? x : JSON.stringify(x))));
  }

  function report(q) {
    const r = q.report || {};
    document.getElementById("requirements").replaceChildren(
      q.requirements.length ? h("ul", { class: "plain reqs" }, q.requirements.map((x) => h("li", {}, h("code", {}, x))))
        : h("p", { class: "hint" }, "None declared (no requirements.txt)."));
    const parts = [
      h("h3", {}, "Skipped files"), list(r.skipped, "None.", "skipped"),
      h("h3", {}, "Secret keys ignored"), list(r.ignored_secrets, "None.", "secrets"),
      h("h3", {}, "Config keys without effect here"), list(r.unsupported, "None.", "unsupported")];
    if (r.notes && r.notes.length) parts.push(h("h3", {}, "Notes"), list(r.notes, "", "notes"));
    document.getElementById("report").replaceChildren(...parts);
  }

  /* The form starts from the problem's config: what it sets shows as the field's value or hint. */
  function prefill(q) {
    const c = q.config || {};
    const llm = c.llm || {};
    document.getElementById("f-iterations").value = Number.isInteger(c.max_iterations) ? c.max_iterations : 100;
    const parallel = (c.evaluator || {}).parallel_evaluations ?? c.parallel_evaluations;
    if (Number.isInteger(parallel)) document.getElementById("f-parallel").placeholder = String(parallel);
    if (Number.isInteger(c.random_seed)) document.getElementById("f-seed").placeholder = String(c.random_seed);
    if (typeof llm.temperature === "number") document.getElementById("f-temperature").value = String(llm.temperature);
    if (Number.isInteger(llm.max_tokens)) document.getElementById("f-reply-tokens").value = String(llm.max_tokens);
    const models = Array.isArray(llm.models) ? llm.models.filter((m) => m && typeof m.name === "string") : [];
    if (models.length) {
      document.getElementById("f-models").value = models.map((m) => (typeof m.weight === "number" ? `${m.name}:${m.weight}` : m.name)).join(", ");
    }
    if (typeof c.diff_based_evolution === "boolean") document.getElementById("f-diff").checked = c.diff_based_evolution;
    document.getElementById("f-submit").disabled = false;
  }

  async function submit(ev) {
    ev.preventDefault();
    const errors = [];
    const iterations = intField("f-iterations", errors, "Iterations");
    const body = { problem: id, mutator: { kind: "local" }, budget: {} };
    if (iterations !== null) body.budget.max_evaluations = iterations + 1;   // the seed, then N mutations
    const parallel = intField("f-parallel", errors, "Parallel", true);
    if (parallel !== null) body.parallel = parallel;
    const seed = intField("f-seed", errors, "Seed", true);
    if (seed !== null) body.seed = seed;
    const seconds = intField("f-seconds", errors, "Max seconds", true);
    if (seconds !== null) body.budget.max_seconds = seconds;
    const name = document.getElementById("f-name").value.trim();
    if (name) body.name = name;
    body.sandbox = document.getElementById("f-sandbox").value;
    const cron = document.getElementById("f-cron").value.trim();
    if (cron) body.schedule = { cron, evaluations_per_run: intField("f-per-run", errors, "Evaluations per run") };
    readMutator(body, errors);
    await submitCampaign(body, errors);
  }

  async function remove() {
    const name = problem.name || id.slice(0, 12);
    if (!window.confirm(`Delete problem ${name}? This cannot be undone (a problem that campaigns use is kept).`)) return;
    const btn = document.getElementById("q-delete");
    btn.disabled = true;
    try {
      await api(`/api/v1/problems/${encodeURIComponent(id)}`, { method: "DELETE" });
      location.assign("/problems");
    } catch (err) {
      EF.showAlert(`Could not delete the problem: ${err.message}`);
      btn.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    EFForm.wire();
    document.getElementById("new-campaign").addEventListener("submit", submit);
    document.getElementById("q-delete").addEventListener("click", remove);
    document.getElementById("cfg-yaml").addEventListener("click", () => showConfig("yaml"));
    document.getElementById("cfg-json").addEventListener("click", () => showConfig("json"));
    let d;
    try {
      d = await api(base);
    } catch (err) {
      document.getElementById("q-sub").textContent = "";
      EF.showAlert(err.status === 404 ? `Problem ${id.slice(0, 12)} does not exist (or belongs to another project).`
        : `The problem could not be loaded: ${err.message}`);
      for (const s of ["file-view", "config-view"]) document.getElementById(s).textContent = "";
      showFormError([err.status === 404 ? "No such problem." : err.message]);
      return;
    }
    problem = d.problem;
    configHtml = d.config_html;
    const q = problem;
    const title = q.name || `Problem ${id.slice(0, 12)}`;
    document.getElementById("q-title").textContent = title;
    document.getElementById("crumb").textContent = q.name || id.slice(0, 12);
    document.title = `${title} · EvoForge`;
    document.getElementById("q-sub").textContent = `${id} · ${q.layout} layout · uploaded ${fmt.ago(q.created_at)}`;
    if (location.hash === "#existing") {
      const note = document.getElementById("q-note");
      note.textContent = "This content was uploaded before: it is the same problem, stored once.";
      note.hidden = false;
    }
    tiles(q);
    fileList(q);
    showConfig("yaml");
    report(q);
    prefill(q);
    document.getElementById("q-delete").disabled = false;
    EFForm.loadEndpoints();
    const first = q.files.find((f) => f.path === q.seed) || q.files[0];
    if (first) await showFile(first.path);
    else document.getElementById("file-view").replaceChildren(h("p", { class: "empty" }, "No files."));
  });
})();
