/* `/programs/{id}`: highlighted code, diff against the parent, metrics, evaluation, prompt and
 * response, lineage; copy and download. */
"use strict";

(() => {
  const { api, h, fmt } = EF;
  const id = Number(document.body.dataset.programId);
  let code = null;

  function value(v) {
    if (typeof v === "number") return Number.isInteger(v) ? fmt.int(v) : fmt.score(v);
    if (v === null || v === undefined) return "–";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function kv(obj) {
    const entries = Object.entries(obj || {});
    if (!entries.length) return h("p", { class: "hint" }, "None.");
    return h("dl", { class: "kv" }, entries.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, value(v))]));
  }

  function tiles(p, c) {
    const ev = p.evaluation;
    const items = [
      ["Score", fmt.score(p.score), c.best_program_id === p.id ? "best of the campaign" : (c.best_score !== null ? `campaign best ${fmt.score(c.best_score)}` : "")],
      ["Status", h("span", { class: `badge ${p.status}` }, p.status || "–"), ev && ev.cache !== "miss" ? `cache hit (${ev.cache})` : (ev ? `${fmt.num(ev.duration_s, 2)} s` : "")],
      ["Iteration", fmt.int(p.iteration), `generation ${p.generation}`],
      ["Island", `#${p.island}`, p.kind || ""],
      ["Parent", p.parent_id ? h("a", { href: `/programs/${p.parent_id}` }, `#${p.parent_id}`) : "seed", ""],
      ["Model", p.model || "local", p.tokens ? `${fmt.tokens(p.tokens)} tokens · ${fmt.usd(p.cost_usd)}` : "no tokens"],
    ];
    const el = document.getElementById("p-tiles");
    el.textContent = "";
    for (const [k, v, s] of items) el.append(h("div", { class: "tile" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v), h("div", { class: "s", title: s }, s || " ")));
  }

  function evaluation(p) {
    const el = document.getElementById("evaluation");
    el.textContent = "";
    const ev = p.evaluation;
    if (!ev) { el.append(h("p", { class: "hint" }, "Not evaluated.")); return; }
    const art = Object.assign({}, ev.artifacts || {});
    const stderr = art.stderr; delete art.stderr;
    const stdout = art.stdout; delete art.stdout;
    const reason = art.reason; delete art.reason;
    const facts = { status: ev.status, score: ev.score, "duration (s)": ev.duration_s, cache: ev.cache };
    if (ev.source_evaluation_id) facts["reused evaluation"] = ev.source_evaluation_id;
    if (art.stage) { facts.stage = art.stage; delete art.stage; }
    el.append(kv(facts));
    if (reason) el.append(h("h3", {}, "Reason"), h("pre", { class: `block${ev.status === "ok" ? "" : " err"}` }, reason));
    if (stderr) el.append(h("h3", {}, "stderr"), h("pre", { class: "block err", id: "stderr" }, stderr));
    if (stdout) el.append(h("h3", {}, "stdout"), h("pre", { class: "block" }, stdout));
    if (p.extra && p.extra.traceback) el.append(h("h3", {}, "Mutator traceback"), h("pre", { class: "block err" }, p.extra.traceback));
    if (Object.keys(art).length) el.append(h("h3", {}, "Artifacts"), h("pre", { class: "block" }, JSON.stringify(art, null, 2)));
    if (Object.keys(ev.features || {}).length) el.append(h("h3", {}, "Behaviour features"), kv(ev.features));
  }

  // worker/prune.py dropped its code, prompt and response (hashes, scores, evaluation kept).
  function prunedNote(p) {
    return `pruned: code/prompt removed on ${p.pruned_at ? p.pruned_at.slice(0, 10) : "an earlier date"}`;
  }

  function llm(p) {
    const el = document.getElementById("llm");
    el.textContent = "";
    if (p.pruned) { el.append(h("p", { class: "hint pruned" }, prunedNote(p))); return; }
    if (!p.prompt && !p.response) {
      const detail = p.extra && p.extra.detail ? `: ${p.extra.detail}` : "";
      el.append(h("p", { class: "hint" }, p.parent_id === null
        ? "The seed program: no prompt."
        : `Made by the local mutator (${p.kind || "unknown"}${detail}), without a model call.`));
      return;
    }
    if (p.prompt) el.append(h("details", { class: "llm" }, h("summary", {}, `Prompt · ${fmt.tokens(p.prompt_tokens)} tokens`), h("pre", { class: "block" }, p.prompt)));
    if (p.response) el.append(h("details", { class: "llm", open: true }, h("summary", {}, `Response · ${fmt.tokens(p.completion_tokens)} tokens${p.model ? ` · ${p.model}` : ""}`), h("pre", { class: "block" }, p.response)));
  }

  function lineage(lin) {
    const el = document.getElementById("lineage");
    el.textContent = "";
    el.append(h("ol", { class: "lineage" }, lin.ancestors.map((a, i) => h("li", { class: i === 0 ? "self" : null },
      h("span", {}, i === 0 ? h("strong", {}, `#${a.id}`) : h("a", { href: `/programs/${a.id}` }, `#${a.id}`),
        h("span", { class: "meta" }, ` it ${a.iteration} · ${a.kind || "seed"}${a.status !== "ok" ? ` · ${a.status}` : ""}`),
        a.pruned ? h("span", { class: "tag pruned", title: "code, prompt and response removed by a prune" }, "pruned") : null),
      h("span", { class: "sc" }, fmt.score(a.score))))));
    if (lin.truncated) el.append(h("p", { class: "hint" }, "Older ancestors not shown."));
  }

  async function copy() {
    const btn = document.getElementById("copy-code");
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) { await navigator.clipboard.writeText(code); ok = true; }
    } catch (_) { /* fall back */ }
    if (!ok) {
      const ta = h("textarea", { style: "position:fixed;left:-9999px", readonly: true });
      ta.value = code;
      document.body.append(ta);
      ta.select();
      try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
      ta.remove();
    }
    btn.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => { btn.textContent = "Copy code"; }, 1500);
  }

  function download() {
    const url = URL.createObjectURL(new Blob([code], { type: "text/x-python" }));
    const a = h("a", { href: url, download: `program_${id}.py` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  document.addEventListener("DOMContentLoaded", async () => {
    document.getElementById("copy-code").addEventListener("click", copy);
    document.getElementById("download-code").addEventListener("click", download);
    let d;
    try {
      d = await api(`/dashboard-api/programs/${id}`);
    } catch (err) {
      document.getElementById("p-sub").textContent = "";
      EF.showAlert(err.status === 404 ? `Program ${id} does not exist (or belongs to another project).` : `The program could not be loaded: ${err.message}`);
      for (const s of ["code", "diff", "llm"]) document.getElementById(s).textContent = "";
      return;
    }
    const p = d.program;
    const c = d.campaign;
    code = p.code || "";
    const crumb = document.getElementById("crumb-campaign");
    crumb.href = `/campaigns/${c.id}`;
    crumb.textContent = c.name || `Campaign #${c.id}`;
    document.getElementById("p-sub").textContent =
      `${c.task} · campaign #${c.id} · iteration ${p.iteration} · ${p.kind || "seed"} · created ${fmt.ago(p.created_at)}`;
    tiles(p, c);
    const codeEl = document.getElementById("code");
    codeEl.innerHTML = d.code_html || "";
    if (!d.code_html) codeEl.append(h("p", { class: p.pruned ? "empty pruned" : "empty" }, p.pruned ? prunedNote(p) : "No code stored (the mutation failed before a program was made)."));
    document.getElementById("code-meta").textContent = p.code ? `${fmt.int(p.code.split("\n").length)} lines · ${p.code_hash ? p.code_hash.slice(0, 12) : ""}` : "";
    const diffEl = document.getElementById("diff");
    diffEl.innerHTML = d.diff_html || "";
    if (!d.diff_html) diffEl.append(h("p", { class: "empty" }, p.pruned ? prunedNote(p) : p.parent_id === null ? "The seed program has no parent." : "Identical to its parent."));
    if (p.diff) {
      const add = (p.diff.match(/^\+(?!\+\+)/gm) || []).length;
      const del = (p.diff.match(/^-(?!--)/gm) || []).length;
      document.getElementById("diff-meta").textContent = `against #${p.parent_id} · +${add} −${del}`;
    }
    evaluation(p);
    document.getElementById("metrics").replaceChildren(kv(p.metrics));
    llm(p);
    lineage(d.lineage);
    for (const b of ["copy-code", "download-code"]) document.getElementById(b).disabled = !p.code;
  });
})();
