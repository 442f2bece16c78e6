/* `/campaigns/{id}`: tiles, best-score plot, MAP-Elites heatmaps, island/status/token stats;
 * live over server-sent events (progress -> tiles at once, the rest refetched at most every 1.5 s). */
"use strict";

(() => {
  const { api, h, fmt } = EF;
  const id = Number(document.body.dataset.campaignId);
  const FINAL = new Set(["completed", "cancelled", "failed"]);
  let campaign = null;
  let lastOverviewAt = 0;
  let pending = null;
  let plotted = false;
  let events = null;
  const rateWindow = [];   // [t_ms, evaluations] from progress events, for a live rate

  function tiles(c) {
    const used = EF.budgetUsed(c);
    const liveRate = recentRate();
    const rate = liveRate ?? fmt.rate(c);
    const best = c.best_program_id
      ? h("a", { href: `/programs/${c.best_program_id}`, id: "best-link" }, fmt.score(c.best_score)) : fmt.score(c.best_score);
    const gain = c.best_score !== null && c.seed_score !== null ? c.best_score - c.seed_score : null;
    const items = [
      ["Status", h("span", { class: `badge ${c.status}`, id: "c-status" }, c.status), c.error ? c.error : (c.finished_at ? `finished ${fmt.ago(c.finished_at)}` : "")],
      ["Evaluations", h("span", { id: "c-evals" }, fmt.int(c.evaluations)), c.max_evaluations ? `of ${fmt.int(c.max_evaluations)}` : "no limit"],
      ["Best score", best, gain !== null ? `seed ${fmt.score(c.seed_score)} (${gain >= 0 ? "+" : ""}${fmt.score(gain)})` : ""],
      ["Eval/s", rate === null ? "–" : rate.toFixed(rate < 10 ? 2 : 1), liveRate !== null ? "last 30 s" : "average"],
      ["Cache hits", fmt.int(c.cache_hits), c.evaluations ? `${Math.round((100 * c.cache_hits) / c.evaluations)}% of evaluations` : ""],
      ["Failures", fmt.int(c.failures), c.rejected ? `${fmt.int(c.rejected)} rejected` : ""],
      ["Tokens", fmt.tokens(c.tokens), c.budget && c.budget.max_tokens ? `of ${fmt.tokens(c.budget.max_tokens)}` : ""],
      ["Cost", fmt.usd(c.cost_usd), fmt.duration(c.elapsed_s)],
    ];
    const el = document.getElementById("c-tiles");
    el.textContent = "";
    for (const [k, v, s] of items) el.append(h("div", { class: "tile" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v), h("div", { class: "s", title: s || "" }, s || " ")));
    const bar = document.getElementById("c-progress");
    const pct = used.frac === null ? 0 : Math.round(used.frac * 100);
    bar.setAttribute("aria-valuenow", pct);
    bar.setAttribute("aria-valuetext", used.label);
    bar.firstElementChild.style.width = `${pct}%`;
    document.getElementById("c-title").textContent = c.name || `Campaign #${c.id}`;
    document.getElementById("crumb").textContent = c.name || `#${c.id}`;
    document.title = `${c.name || `Campaign #${c.id}`} · EvoForge`;
    const p = EF.paramsText(c.params);
    document.getElementById("c-sub").textContent =
      `#${c.id} · ${c.task}${p ? ` (${p})` : ""} · ${c.islands} islands · parallel ${c.parallel} · seed ${c.seed} · ${used.label}`;
    problemLink(c);
    failure(c);
    actions(c);
  }

  /* The stored problem the campaign runs, linked; its name is fetched once. */
  let problemShown = null;
  function problemLink(c) {
    if (!c.problem || problemShown === c.problem) return;
    problemShown = c.problem;
    const link = document.getElementById("c-problem-link");
    link.href = `/problems/${encodeURIComponent(c.problem)}`;
    link.textContent = c.problem.slice(0, 12);
    document.getElementById("c-problem").hidden = false;
    api(`/api/v1/problems/${encodeURIComponent(c.problem)}`).then((q) => {
      if (q.name) link.textContent = `${q.name} (${c.problem.slice(0, 12)})`;
    }).catch(() => { /* the short id stays */ });
  }

  /* A failed campaign's error (e.g. the seed program's failure with the evaluator's stderr tail). */
  function failure(c) {
    const box = document.getElementById("c-failure");
    const show = c.status === "failed" && !!c.error;
    box.hidden = !show;
    if (show) document.getElementById("c-error").textContent = c.error;
  }

  function recentRate() {
    if (rateWindow.length < 2) return null;
    const a = rateWindow[0];
    const b = rateWindow[rateWindow.length - 1];
    const dt = (b[0] - a[0]) / 1000;
    return dt >= 2 ? (b[1] - a[1]) / dt : null;
  }

  function actions(c) {
    const el = document.getElementById("c-actions");
    const verbs = { queued: [["Start", "resume", "primary"], ["Pause", "pause"], ["Cancel", "cancel", "danger"]],
      running: [["Pause", "pause"], ["Cancel", "cancel", "danger"]],
      paused: [["Resume", "resume", "primary"], ["Cancel", "cancel", "danger"]] }[c.status] || [];
    const key = verbs.map((v) => v[1]).join(",");
    if (el.dataset.key === key) return;
    el.dataset.key = key;
    el.textContent = "";
    for (const [label, verb, kind] of verbs) {
      el.append(h("button", { class: `btn ${kind || ""}`, type: "button", "data-action": verb, onclick: async (ev) => {
        ev.currentTarget.disabled = true;
        try {
          campaign = await api(`/api/v1/campaigns/${id}/${verb}`, { method: "POST" });
          EF.showAlert(null);
          tiles(campaign);
          if (verb === "resume") connect();
        } catch (err) { EF.showAlert(`Could not ${verb}: ${err.message}`); }
        el.dataset.key = "";
        actions(campaign);
      } }, label));
    }
  }

  /* ---- best score over evaluations (plotly, loaded on demand) ---- */
  async function plot(hist) {
    const el = document.getElementById("history-plot");
    if (!hist.best.x.length) {
      el.innerHTML = "";
      el.append(h("p", { class: "empty" }, campaign && FINAL.has(campaign.status) ? "No program was scored." : "Waiting for the first scored program…"));
      plotted = false;
      return;
    }
    let Plotly;
    try { Plotly = await EF.plotly(); } catch (err) {
      el.innerHTML = "";
      el.append(h("p", { class: "empty" }, `The plot is unavailable: ${err.message}`));
      return;
    }
    const thinned = hist.scores.stride > 1 ? ` (every ${hist.scores.stride}th)` : "";
    const data = [
      { x: hist.scores.x, y: hist.scores.y, type: "scatter", mode: "markers", name: `program score${thinned}`,
        marker: { size: 4, color: "rgba(93,102,120,.35)" }, hovertemplate: "evaluation %{x}<br>score %{y:.6g}<extra></extra>" },
      { x: hist.best.x, y: hist.best.y, type: "scatter", mode: "lines", name: "best so far",
        line: { shape: "hv", color: "#3653d4", width: 2.5 }, hovertemplate: "evaluation %{x}<br>best %{y:.6g}<extra></extra>" },
    ];
    const layout = {
      margin: { l: 52, r: 12, t: 8, b: 40 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: getComputedStyle(document.body).fontFamily, size: 12, color: "#384052" },
      xaxis: { title: { text: "evaluation" }, gridcolor: "#eceef2", zeroline: false, rangemode: "tozero" },
      yaxis: { title: { text: "score" }, gridcolor: "#eceef2", zeroline: false },
      legend: { orientation: "h", x: 0, y: 1.1, bgcolor: "rgba(0,0,0,0)" }, hovermode: "closest",
    };
    const config = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
    if (!plotted) el.innerHTML = "";
    await (plotted ? Plotly.react(el, data, layout, config) : Plotly.newPlot(el, data, layout, config));
    plotted = true;
    el.dataset.rendered = String(hist.best.x.length);
  }

  /* ---- MAP-Elites heatmaps: one grid per island, occupied cells are links ---- */
  function heatmaps(elites, c) {
    const root = document.getElementById("heatmaps");
    const dims = elites.dims || [];
    const cells = elites.islands.flatMap((i) => i.cells.map((cell) => Object.assign({ island: i.island }, cell)));
    const legend = document.getElementById("map-legend");
    legend.textContent = "";
    root.textContent = "";
    if (!cells.length) {
      root.append(h("p", { class: "empty" }, c && FINAL.has(c.status) ? "The archive is empty: no program was placed." : "The archive is empty so far: cells fill as programs are evaluated."));
      document.getElementById("map-hint").textContent = "";
      root.dataset.rendered = "0";
      return;
    }
    const scores = cells.map((x) => x.score);
    const lo = Math.min(...scores);
    const hi = Math.max(...scores);
    const norm = (s) => (hi > lo ? (s - lo) / (hi - lo) : 1);
    legend.append(h("span", {}, fmt.score(lo)), h("span", { class: "ramp", style: `background:${EF.ramp()}` }), h("span", {}, fmt.score(hi)));
    const dx = dims[0] || { name: "cell", bins: 1, lo: 0, hi: 1 };
    const dy = dims[1] || null;
    const nx = dx.bins;
    const ny = dy ? dy.bins : 1;
    document.getElementById("map-hint").textContent =
      `${cells.length} elite${cells.length === 1 ? "" : "s"} in ${elites.islands.length} island${elites.islands.length === 1 ? "" : "s"} · ` +
      `x: ${dx.name} (${fmt.score(dx.lo)}–${fmt.score(dx.hi)})` + (dy ? ` · y: ${dy.name} (${fmt.score(dy.lo)}–${fmt.score(dy.hi)})` : "") +
      (dims.length > 2 ? ` · best over ${dims.slice(2).map((d) => d.name).join(", ")}` : "") + " · click a cell to open its program";
    const bestId = c ? c.best_program_id : null;
    for (const isl of elites.islands) {
      const grid = h("div", { class: `hm${ny === 1 ? " row1" : ""}`, style: `grid-template-columns:repeat(${nx},minmax(0,1fr));grid-template-rows:repeat(${ny},minmax(0,1fr))` });
      const byPos = new Map();
      for (const cell of isl.cells) {
        const idx = cell.cell.split(",").map(Number);
        const x = idx[0] || 0;
        const y = dy ? (idx[1] || 0) : 0;
        const k = `${x},${y}`;
        if (!byPos.has(k) || byPos.get(k).score < cell.score) byPos.set(k, Object.assign({ x, y }, cell));
      }
      if (nx * ny <= 1600) {   // draw the empty cells too, so the grid reads as a grid
        for (let y = 0; y < ny; y += 1) {
          for (let x = 0; x < nx; x += 1) {
            if (!byPos.has(`${x},${y}`)) grid.append(h("i", { style: `grid-column:${x + 1};grid-row:${ny - y}` }));
          }
        }
      }
      for (const cell of byPos.values()) {
        const feats = Object.entries(cell.features || {}).map(([k, v]) => `${EF.esc(k)} ${typeof v === "number" ? fmt.score(v) : EF.esc(v)}`).join("<br>");
        const a = h("a", {
          href: `/programs/${cell.program_id}`, class: cell.program_id === bestId ? "best" : null,
          style: `grid-column:${cell.x + 1};grid-row:${ny - cell.y};background:${EF.color(norm(cell.score))}`,
          "aria-label": `island ${isl.island}, cell ${cell.cell}: score ${fmt.score(cell.score)}, program ${cell.program_id}`,
          "data-score": cell.score, "data-program-id": cell.program_id,
        });
        EF.tooltip(a, () => `<b>score ${fmt.score(cell.score)}</b><br>program #${cell.program_id} · island ${isl.island} · cell (${EF.esc(cell.cell)})${feats ? `<br>${feats}` : ""}`);
        grid.append(a);
      }
      const best = isl.cells.length ? Math.max(...isl.cells.map((x) => x.score)) : null;
      root.append(h("div", { class: "island" },
        h("h3", {}, `Island ${isl.island}`, h("span", {}, `${isl.cells.length} cell${isl.cells.length === 1 ? "" : "s"}${best !== null ? ` · best ${fmt.score(best)}` : ""}`)),
        h("div", { class: "hm-wrap" },
          h("div", { class: "hm-ylabel" }, dy ? `${dy.name} →` : ""), grid,
          h("div", { class: "hm-xlabel" }, `${dx.name} →`))));
    }
    root.dataset.rendered = String(cells.length);
  }

  function islandTable(islands) {
    const el = document.getElementById("island-stats");
    el.textContent = "";
    if (!islands.some((i) => i.programs)) { el.append(h("p", { class: "empty" }, "No programs yet.")); return; }
    el.append(h("div", { class: "table-scroll" }, h("table", { class: "t" },
      h("thead", {}, h("tr", {}, ["Island", "Programs", "OK", "Failed", "Elites", "Best"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, islands.map((i) => h("tr", {},
        h("td", {}, `#${i.island}`), h("td", {}, fmt.int(i.programs)), h("td", {}, fmt.int(i.ok)),
        h("td", {}, fmt.int(i.failures)), h("td", {}, fmt.int(i.elites)), h("td", {}, fmt.score(i.best_score))))))));
  }

  function statusBars(statuses) {
    const el = document.getElementById("status-bars");
    el.textContent = "";
    const entries = Object.entries(statuses);
    if (!entries.length) { el.append(h("p", { class: "hint" }, "Nothing evaluated yet.")); return; }
    const total = entries.reduce((a, [, n]) => a + n, 0);
    el.append(h("div", { class: "bars" }, entries.map(([st, n]) => h("div", { class: "bar", title: `${st}: ${n} of ${total}` },
      h("span", {}, st), h("div", { class: "track" }, h("div", { class: `fill ${st}`, style: `width:${(100 * n) / total}%` })),
      h("span", { class: "n" }, fmt.int(n))))));
  }

  function tokenTable(models, c) {
    const el = document.getElementById("token-stats");
    el.textContent = "";
    const llm = models.filter((m) => m.prompt_tokens || m.completion_tokens || m.cost_usd);
    if (!llm.length) {
      const kind = c && c.mutator && c.mutator.kind === "llm" ? "No tokens used yet." : "Local AST mutator: no model calls, no tokens, no cost.";
      el.append(h("p", { class: "hint" }, kind));
      return;
    }
    el.append(h("div", { class: "table-scroll" }, h("table", { class: "t" },
      h("thead", {}, h("tr", {}, ["Model", "Programs", "Prompt", "Completion", "Cost"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, models.map((m) => h("tr", {}, h("td", {}, m.model), h("td", {}, fmt.int(m.programs)),
        h("td", {}, fmt.tokens(m.prompt_tokens)), h("td", {}, fmt.tokens(m.completion_tokens)), h("td", {}, fmt.usd(m.cost_usd))))))));
  }

  async function loadOverview() {
    lastOverviewAt = Date.now();
    try {
      const o = await api(`/dashboard-api/campaigns/${id}/overview`);
      performance.mark("ef:overview-loaded");
      campaign = o.campaign;
      EF.showAlert(null);
      tiles(o.campaign);
      heatmaps(o.elites, o.campaign);
      performance.mark("ef:heatmap-rendered");
      islandTable(o.islands);
      statusBars(o.statuses);
      tokenTable(o.models, o.campaign);
      await plot(o.history);
      return o;
    } catch (err) {
      if (err.status === 404) {
        document.getElementById("c-sub").textContent = "";
        EF.showAlert(`Campaign ${id} does not exist (or belongs to another project).`);
        for (const s of ["history-plot", "heatmaps"]) document.getElementById(s).textContent = "";
      } else {
        EF.showAlert(`The campaign could not be loaded: ${err.message}`);
      }
      throw err;
    }
  }

  /** Refetch the overview now, or once 1.5 s have passed since the last one. */
  function scheduleOverview() {
    if (pending) return;
    const wait = Math.max(0, 1500 - (Date.now() - lastOverviewAt));
    pending = setTimeout(async () => { pending = null; try { await loadOverview(); } catch (_) { /* shown */ } }, wait);
  }

  function connect() {
    if (events) events.stop();
    const live = document.getElementById("c-live");
    events = EF.stream(`/api/v1/campaigns/${id}/events`, (name, data) => {
      if (name === "progress") {
        rateWindow.push([Date.now(), data.evaluations]);
        while (rateWindow.length > 2 && Date.now() - rateWindow[0][0] > 30000) rateWindow.shift();
        campaign = data;
        tiles(data);
        live.textContent = `Live · updated ${new Date().toLocaleTimeString()}`;
        scheduleOverview();
      } else if (name === "end") {
        live.textContent = data.reason === "deleted" ? "This campaign was deleted." : `Campaign ${data.reason}.`;
        rateWindow.length = 0;
        scheduleOverview();
      }
    }, (state, err) => {
      if (state === "open") live.textContent = "Live · connected";
      else if (state === "reconnecting") live.textContent = "Connection lost · reconnecting…";
      else if (state === "error") live.textContent = `Live updates unavailable: ${err.message}`;
    });
  }

  document.addEventListener("DOMContentLoaded", async () => {
    let o;
    try { o = await loadOverview(); } catch (_) { return; }
    if (!FINAL.has(o.campaign.status)) connect();
    else document.getElementById("c-live").textContent = o.campaign.finished_at ? `Finished ${fmt.ago(o.campaign.finished_at)}.` : "";
  });
  window.addEventListener("pagehide", () => { if (events) events.stop(); });
})();
