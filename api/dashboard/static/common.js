/* EvoForge dashboard: shared helpers (API calls with the session key, SSE over fetch, formatting). */
"use strict";

const EF = (() => {
  const KEY = "evoforge.apiKey";
  let keyPrompt = null;   // a pending prompt, shared by concurrent 401s
  let needsKey = false;   // the server answered 401 at least once: show the key controls

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  const getKey = () => sessionStorage.getItem(KEY) || "";

  function detailText(body, status) {
    const d = body && body.detail;
    if (!d) return `HTTP ${status}`;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) {
      return d.map((e) => {
        const loc = (e.loc || []).filter((p) => p !== "body").join(".");
        return loc ? `${loc}: ${e.msg}` : e.msg;
      }).join("; ");
    }
    return JSON.stringify(d);
  }

  function askForKey() {
    if (keyPrompt) return keyPrompt;
    const dlg = document.getElementById("key-dialog");
    const form = document.getElementById("key-form");
    const input = document.getElementById("key-input");
    keyPrompt = new Promise((resolve) => {
      const done = (ok) => {
        form.removeEventListener("submit", onSubmit);
        document.getElementById("key-cancel").removeEventListener("click", onCancel);
        dlg.removeEventListener("cancel", onCancel);
        if (dlg.open) dlg.close();
        keyPrompt = null;
        renderAuth();
        resolve(ok);
      };
      const onSubmit = (ev) => {
        ev.preventDefault();
        const v = input.value.trim();
        if (!v) { input.focus(); return; }
        sessionStorage.setItem(KEY, v);
        input.value = "";
        done(true);
      };
      const onCancel = (ev) => { ev.preventDefault(); done(false); };
      form.addEventListener("submit", onSubmit);
      document.getElementById("key-cancel").addEventListener("click", onCancel);
      dlg.addEventListener("cancel", onCancel);
      dlg.showModal();
      input.focus();
    });
    return keyPrompt;
  }

  /** fetch with the key; on 401 ask for a key once and retry. Returns the Response. */
  async function raw(path, opts = {}, retried = false) {
    const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    const key = getKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    let res;
    try {
      res = await fetch(path, Object.assign({}, opts, { headers }));
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "The server cannot be reached. Is `evoforge serve` running?");
    }
    if (res.status === 401) {
      needsKey = true;
      if (key) sessionStorage.removeItem(KEY);
      renderAuth();
      if (!retried && await askForKey()) return raw(path, opts, true);
      let msg = "An API key is required.";
      try { msg = detailText(await res.json(), 401); } catch (_) { /* keep msg */ }
      throw new ApiError(401, msg);
    }
    if (!res.ok) {
      let body = null;
      try { body = await res.json(); } catch (_) { /* not JSON */ }
      throw new ApiError(res.status, detailText(body, res.status));
    }
    return res;
  }

  async function api(path, opts = {}) {
    const o = Object.assign({}, opts);
    if (o.json !== undefined) {
      o.body = JSON.stringify(o.json);
      o.headers = Object.assign({ "Content-Type": "application/json" }, o.headers || {});
      delete o.json;
    }
    const res = await raw(path, o);
    if (res.status === 204) return null;
    return res.json();
  }

  /** Server-sent events over fetch (EventSource cannot send an Authorization header).
   * Calls onEvent(name, data); reconnects after a drop until an `end` event or stop(). */
  function stream(path, onEvent, onState) {
    let stopped = false;
    let ctrl = null;
    let failures = 0;
    async function once() {
      ctrl = new AbortController();
      const res = await raw(path, { signal: ctrl.signal, headers: { Accept: "text/event-stream" } });
      onState && onState("open");
      failures = 0;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        buf += value.replace(/\r\n/g, "\n");
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let name = "message";
          const data = [];
          for (const line of chunk.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (!data.length) continue;
          let parsed = null;
          try { parsed = JSON.parse(data.join("\n")); } catch (_) { continue; }
          onEvent(name, parsed);
          if (name === "end") return true;
        }
      }
    }
    (async () => {
      while (!stopped) {
        try {
          if (await once()) { onState && onState("ended"); return; }
        } catch (err) {
          if (stopped || err.name === "AbortError") return;
          if (err.status && err.status !== 0 && err.status < 500) { onState && onState("error", err); return; }
          failures += 1;
        }
        if (stopped) return;
        onState && onState("reconnecting");
        await new Promise((r) => setTimeout(r, Math.min(15000, 1000 * 2 ** Math.min(failures, 4))));
      }
    })();
    return { stop() { stopped = true; if (ctrl) ctrl.abort(); } };
  }

  function renderAuth() {
    const el = document.getElementById("auth-state");
    if (!el) return;
    el.textContent = "";
    const key = getKey();
    if (key) {
      el.append(h("span", { class: "label" }, "API key in use"));
      const b = h("button", { class: "btn small", type: "button" }, "Forget key");
      b.addEventListener("click", () => { sessionStorage.removeItem(KEY); location.reload(); });
      el.append(b);
    } else if (needsKey) {
      const b = h("button", { class: "btn small", type: "button" }, "Enter API key");
      b.addEventListener("click", async () => { if (await askForKey()) location.reload(); });
      el.append(b);
    } else {
      el.append(h("span", { class: "dot", "aria-hidden": "true" }), h("span", { class: "label" }, "Connected"));
    }
  }

  /* DOM helper: h("div", {class: "x", onclick: fn}, child, "text", ...) */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "html") el.innerHTML = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function showAlert(msg) {
    const el = document.getElementById("alert");
    if (!el) return;
    if (!msg) { el.hidden = true; el.textContent = ""; return; }
    el.textContent = msg;
    el.hidden = false;
  }

  const nf = new Intl.NumberFormat("en-US");
  const fmt = {
    int: (v) => (v === null || v === undefined ? "–" : nf.format(v)),
    score: (v) => {
      if (v === null || v === undefined) return "–";
      const a = Math.abs(v);
      if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
      return String(Number(v.toPrecision(6)));
    },
    num: (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d)),
    usd: (v) => (v === null || v === undefined ? "–" : (v === 0 ? "$0" : v < 0.01 ? `$${v.toFixed(4)}` : `$${v.toFixed(2)}`)),
    tokens: (v) => {
      if (!v) return "0";
      if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
      if (v >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
      return nf.format(v);
    },
    duration: (s) => {
      if (s === null || s === undefined) return "–";
      if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
      if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
      return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
    },
    ago: (iso) => {
      if (!iso) return "";
      const s = (Date.now() - Date.parse(iso)) / 1000;
      if (s < 60) return "just now";
      if (s < 3600) return `${Math.floor(s / 60)} min ago`;
      if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
      return new Date(iso).toLocaleDateString();
    },
    rate: (c) => (c.elapsed_s && c.evaluations ? (c.evaluations / c.elapsed_s) : null),
  };

  /** Fraction of the budget used, by whichever limit is closest to being spent. */
  function budgetUsed(c) {
    const b = c.budget || {};
    const parts = [];
    if (c.max_evaluations) parts.push([c.evaluations / c.max_evaluations, `${nf.format(c.evaluations)} / ${nf.format(c.max_evaluations)} evaluations`]);
    if (b.max_tokens) parts.push([c.tokens / b.max_tokens, `${fmt.tokens(c.tokens)} / ${fmt.tokens(b.max_tokens)} tokens`]);
    if (b.max_cost_usd) parts.push([c.cost_usd / b.max_cost_usd, `${fmt.usd(c.cost_usd)} / ${fmt.usd(b.max_cost_usd)}`]);
    if (b.max_seconds && c.elapsed_s !== null) parts.push([c.elapsed_s / b.max_seconds, `${fmt.duration(c.elapsed_s)} / ${fmt.duration(b.max_seconds)}`]);
    if (!parts.length) return { frac: null, label: `${nf.format(c.evaluations)} evaluations · no budget limit` };
    parts.sort((a, b2) => b2[0] - a[0]);
    let frac = Math.max(0, Math.min(1, parts[0][0]));
    if (c.status === "completed") frac = 1;
    return { frac, label: parts[0][1] };
  }

  /* A perceptual colour ramp (viridis), t in [0, 1]. */
  const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];
  function color(t) {
    if (!Number.isFinite(t)) t = 0;
    t = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t));
    const f = t - i;
    const c = VIRIDIS[i].map((v, k) => Math.round(v + (VIRIDIS[i + 1][k] - v) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }
  const ramp = () => `linear-gradient(90deg, ${VIRIDIS.map((c) => `rgb(${c.join(",")})`).join(", ")})`;

  /* A floating tooltip shared by the page (mouse and keyboard focus). */
  function tooltip(target, htmlFn) {
    const tip = document.getElementById("tooltip");
    const show = (ev) => {
      tip.innerHTML = htmlFn();
      tip.hidden = false;
      const r = ev.type === "focus" ? target.getBoundingClientRect() : { left: ev.clientX, top: ev.clientY, width: 0, height: 0 };
      const x = Math.min(window.innerWidth - tip.offsetWidth - 8, r.left + r.width + 12);
      const y = Math.min(window.innerHeight - tip.offsetHeight - 8, r.top + r.height + 12);
      tip.style.left = `${Math.max(8, x)}px`;
      tip.style.top = `${Math.max(8, y)}px`;
    };
    const hide = () => { tip.hidden = true; };
    target.addEventListener("mousemove", show);
    target.addEventListener("focus", show);
    target.addEventListener("mouseleave", hide);
    target.addEventListener("blur", hide);
  }

  /** Load plotly.min.js (served from the installed plotly package) once, on demand. */
  let plotlyPromise = null;
  function plotly() {
    if (window.Plotly) return Promise.resolve(window.Plotly);
    if (!plotlyPromise) {
      plotlyPromise = new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = "/dashboard/vendor/plotly.min.js";
        s.async = true;
        s.onload = () => resolve(window.Plotly);
        s.onerror = () => reject(new Error("plotly.min.js could not be loaded"));
        document.head.append(s);
      });
    }
    return plotlyPromise;
  }

  /** A campaign's scalar params as `k=v, ...`: the problem (linked apart) and the prompt context
   * left out, long strings cut. */
  function paramsText(p) {
    return Object.entries(p || {}).filter(([k, v]) => typeof v !== "object" && k !== "problem" && k !== "context")
      .map(([k, v]) => `${k}=${typeof v === "string" && v.length > 40 ? `${v.slice(0, 39)}…` : v}`).join(", ");
  }

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

  document.addEventListener("DOMContentLoaded", renderAuth);
  return { api, raw, stream, h, fmt, showAlert, budgetUsed, color, ramp, tooltip, plotly, esc, paramsText, ApiError, askForKey };
})();
