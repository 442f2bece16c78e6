/* `/`: the campaign list (refreshed while any campaign is active) and the new-campaign form. */
"use strict";

(() => {
  const { api, h, fmt, paramsText } = EF;
  const { intField, readMutator, showFormError, submitCampaign } = EFForm;
  const ACTIVE = new Set(["queued", "running"]);
  const ACTIONS = {
    queued: [["start", "resume", "primary"], ["pause", "pause"], ["cancel", "cancel", "danger"]],
    running: [["pause", "pause"], ["cancel", "cancel", "danger"]],
    paused: [["resume", "resume", "primary"], ["cancel", "cancel", "danger"]],
  };
  let timer = null;
  let tasks = [];

  function campaignCard(c) {
    const rate = fmt.rate(c);
    const used = EF.budgetUsed(c);
    const stats = [
      ["Best", c.best_program_id ? h("a", { href: `/programs/${c.best_program_id}`, title: "Open the best program" }, fmt.score(c.best_score)) : fmt.score(c.best_score)],
      ["Eval/s", rate === null ? "–" : rate.toFixed(rate < 10 ? 2 : 1)],
      ["Cache hits", fmt.int(c.cache_hits)],
      ["Failures", fmt.int(c.failures)],
      ["Tokens", fmt.tokens(c.tokens)],
      ["Cost", fmt.usd(c.cost_usd)],
      ["Elapsed", fmt.duration(c.elapsed_s)],
    ];
    const actions = h("div", { class: "actions" });
    for (const [label, verb, kind] of ACTIONS[c.status] || []) {
      actions.append(h("button", {
        class: `btn small ${kind || ""}`, type: "button", "data-action": verb,
        "aria-label": `${label} campaign ${c.id}`,
        onclick: (ev) => act(ev.currentTarget, c.id, verb),
      }, label[0].toUpperCase() + label.slice(1)));
    }
    const pct = used.frac === null ? null : Math.round(used.frac * 100);
    return h("article", { class: "ccard", "data-campaign-id": c.id, "data-status": c.status },
      h("div", { class: "ccard-top" },
        h("a", { class: "ccard-title", href: `/campaigns/${c.id}` }, c.name || `Campaign ${c.id}`, h("span", { class: "id" }, `#${c.id}`)),
        h("span", { class: `badge ${c.status}` }, c.status),
        h("span", { class: "ccard-task" }, h("code", {}, c.task), paramsText(c.params) ? ` ${paramsText(c.params)}` : "",
          c.problem ? [" · ", h("a", { href: `/problems/${c.problem}`, class: "problem-link" }, `problem ${c.problem.slice(0, 12)}`)] : "",
          ` · ${fmt.ago(c.created_at)}`),
        actions),
      h("div", { class: "progress-row" },
        h("div", { class: "progress", role: "progressbar", "aria-label": `Budget used by campaign ${c.id}`, "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct ?? 0 },
          h("span", { style: `width:${pct ?? 0}%` })),
        h("span", { class: "label" }, used.label)),
      h("dl", { class: "stats" }, stats.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
      c.error ? h("p", { class: "error-line" }, c.error) : null);
  }

  async function act(btn, id, verb) {
    btn.disabled = true;
    try {
      await api(`/api/v1/campaigns/${id}/${verb}`, { method: "POST" });
      EF.showAlert(null);
    } catch (err) {
      EF.showAlert(`Could not ${verb} campaign ${id}: ${err.message}`);
    }
    await refresh();
  }

  async function refresh() {
    clearTimeout(timer);
    const list = document.getElementById("campaign-list");
    const summary = document.getElementById("list-summary");
    try {
      const page = await api("/api/v1/campaigns?limit=100");
      list.textContent = "";
      list.removeAttribute("aria-busy");
      if (!page.items.length) {
        list.append(h("div", { class: "card empty" }, h("strong", {}, "No campaigns yet"),
          "Create one with the form: pick a task, set a budget, and watch the archive fill."));
        summary.textContent = "Nothing has run on this server yet.";
      } else {
        page.items.forEach((c) => list.append(campaignCard(c)));
        const active = page.items.filter((c) => ACTIVE.has(c.status)).length;
        summary.textContent = `${fmt.int(page.total)} campaign${page.total === 1 ? "" : "s"}` +
          (active ? ` · ${active} active` : "") + (page.total > page.items.length ? ` · newest ${page.items.length} shown` : "");
      }
      const anyActive = page.items.some((c) => ACTIVE.has(c.status));
      timer = setTimeout(refresh, anyActive ? 2000 : 10000);
      return true;
    } catch (err) {
      list.removeAttribute("aria-busy");
      list.textContent = "";
      list.append(h("div", { class: "card empty" }, h("strong", {}, "Campaigns could not be loaded"), err.message));
      summary.textContent = "";
      if (err.status !== 401) timer = setTimeout(refresh, 5000);
      return err.status !== 401;
    }
  }

  /* ---- form: task picker + fields generated from the task's params JSON schema ---- */

  function resolveRef(schema, root) {
    if (schema && schema.$ref && root.$defs) {
      const name = schema.$ref.split("/").pop();
      return root.$defs[name] || schema;
    }
    if (schema && schema.allOf && schema.allOf.length === 1) return resolveRef(schema.allOf[0], root);
    return schema;
  }

  function typeOf(s) {
    if (s.enum) return "enum";
    let t = s.type;
    if (!t && s.anyOf) t = (s.anyOf.find((x) => x.type && x.type !== "null") || {}).type;
    if (Array.isArray(t)) t = t.find((x) => x !== "null");
    return t || "json";
  }

  function paramField(name, raw, root, def) {
    const s = resolveRef(raw, root) || {};
    const id = `p-${name}`;
    const title = s.title || raw.title || name;
    const desc = s.description || raw.description || "";
    const t = typeOf(s);
    const value = def !== undefined ? def : s.default;
    let input;
    if (t === "enum") {
      input = h("select", { id, name }, s.enum.map((v) => h("option", { value: JSON.stringify(v), selected: v === value }, String(v))));
    } else if (t === "boolean") {
      input = h("input", { id, name, type: "checkbox", checked: !!value });
      return h("div", { class: "field" }, h("label", { class: "check", for: id }, input, title), desc ? h("p", { class: "hint" }, desc) : null);
    } else if (t === "integer" || t === "number") {
      const min = s.minimum ?? (s.exclusiveMinimum !== undefined ? s.exclusiveMinimum : null);
      const max = s.maximum ?? (s.exclusiveMaximum !== undefined ? s.exclusiveMaximum : null);
      input = h("input", { id, name, type: "number", step: t === "integer" ? "1" : "any", min, max, value: value ?? "", inputmode: t === "integer" ? "numeric" : "decimal" });
    } else if (t === "string") {
      input = h("input", { id, name, type: "text", value: value ?? "", maxlength: s.maxLength });
    } else {
      input = h("textarea", { id, name, spellcheck: "false" }, value === undefined ? "" : JSON.stringify(value, null, 1));
    }
    input.dataset.kind = t;
    return h("div", { class: "field" }, h("label", { for: id }, title), input, desc ? h("p", { class: "hint" }, desc) : null);
  }

  function renderParams() {
    const sel = document.getElementById("f-task");
    const fs = document.getElementById("f-params");
    fs.textContent = "";
    const task = tasks.find((t) => t.name === sel.value);
    document.getElementById("f-task-hint").textContent = task
      ? `entrypoint ${task.entrypoint}() · timeout ${task.resources.timeout_s} s · ${task.resources.memory_mb} MB${task.resources.gpu ? " · GPU" : ""}`
      : "";
    if (!task) return;
    const schema = task.params_schema || {};
    const props = schema.properties || {};
    fs.append(h("legend", {}, "Task parameters"));
    const names = Object.keys(props);
    fs.classList.toggle("none", names.length === 0);
    for (const name of names) fs.append(paramField(name, props[name], schema, (task.defaults || {})[name]));
  }

  function readParams(errors) {
    const fs = document.getElementById("f-params");
    const params = {};
    for (const el of fs.querySelectorAll("input, select, textarea")) {
      el.removeAttribute("aria-invalid");
      const kind = el.dataset.kind;
      if (kind === "boolean") { params[el.name] = el.checked; continue; }
      if (kind === "enum") { params[el.name] = JSON.parse(el.value); continue; }
      if (el.value === "") continue;
      if (kind === "integer" || kind === "number") {
        const v = Number(el.value);
        if (!Number.isFinite(v) || (kind === "integer" && !Number.isInteger(v)) || !el.checkValidity()) {
          errors.push(`${el.name}: ${el.validationMessage || "not a valid number"}`);
          el.setAttribute("aria-invalid", "true");
        } else params[el.name] = v;
      } else if (kind === "string") {
        params[el.name] = el.value;
      } else {
        try { params[el.name] = JSON.parse(el.value); } catch (_) {
          errors.push(`${el.name}: not valid JSON`);
          el.setAttribute("aria-invalid", "true");
        }
      }
    }
    return params;
  }

  async function submit(ev) {
    ev.preventDefault();
    const errors = [];
    const task = document.getElementById("f-task").value;
    if (!task) errors.push("Pick a task.");
    const params = readParams(errors);
    const body = {
      task, params,
      seed: intField("f-seed", errors, "Seed"),
      parallel: intField("f-parallel", errors, "Parallel"),
      budget: { max_evaluations: intField("f-budget", errors, "Evaluations") },
      archive: { islands: intField("f-islands", errors, "Islands"), bins: intField("f-bins", errors, "Bins") },
    };
    const seconds = intField("f-seconds", errors, "Max seconds", true);
    if (seconds) body.budget.max_seconds = seconds;
    const name = document.getElementById("f-name").value.trim();
    if (name) body.name = name;
    readMutator(body, errors);
    await submitCampaign(body, errors);
  }

  async function loadTasks() {
    const sel = document.getElementById("f-task");
    try {
      tasks = await api("/api/v1/tasks");
      sel.textContent = "";
      for (const t of tasks) sel.append(h("option", { value: t.name }, t.name));
      const preferred = tasks.find((t) => t.name === "circle_packing") || tasks[0];
      if (preferred) sel.value = preferred.name;
      renderParams();
    } catch (err) {
      sel.textContent = "";
      sel.append(h("option", { value: "" }, "Tasks unavailable"));
      showFormError([`Tasks could not be loaded: ${err.message}`]);
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    document.getElementById("f-task").addEventListener("change", renderParams);
    EFForm.wire();
    document.getElementById("new-campaign").addEventListener("submit", submit);
    document.getElementById("jump-new").addEventListener("click", () => setTimeout(() => document.getElementById("f-task").focus(), 0));
    // The list first, so that a key prompt (if any) comes once; no key, no tasks either.
    if (await refresh()) { loadTasks(); EFForm.loadEndpoints(); }
    else showFormError(["An API key is needed to create campaigns."]);
  });
})();
