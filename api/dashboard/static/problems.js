/* `/problems`: the stored problems, and the upload of a folder (read here into JSON {path: text})
 * or of an archive (.zip, .tar, .tar.gz, posted as it is). */
"use strict";

(() => {
  const { api, h, fmt } = EF;
  const MAX_FILE = Number(document.body.dataset.maxFileBytes);
  const MAX_UPLOAD = Number(document.body.dataset.maxUploadBytes);
  const ARCHIVES = [[".tar.gz", "application/gzip"], [".tgz", "application/gzip"],
    [".zip", "application/zip"], [".tar", "application/x-tar"]];
  let upload = null;   // {kind: "folder", files, skipped, left} | {kind: "archive", file, type}
  let token = 0;       // the latest selection wins over a slower read of an earlier one

  const kib = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

  function problemCard(q) {
    return h("article", { class: "ccard", "data-problem-id": q.id },
      h("div", { class: "ccard-top" },
        h("a", { class: "ccard-title", href: `/problems/${q.id}` }, q.name || "unnamed", h("span", { class: "id" }, q.id.slice(0, 12))),
        h("span", { class: "badge" }, q.layout),
        h("span", { class: "ccard-task" }, `${fmt.int(q.file_count ?? (q.files || []).length)} files`,
          q.size_bytes !== undefined ? ` · ${kib(q.size_bytes)}` : "",
          q.campaigns ? ` · ${fmt.int(q.campaigns)} campaign${q.campaigns === 1 ? "" : "s"}` : "",
          ` · ${fmt.ago(q.created_at)}`)));
  }

  async function refresh() {
    const list = document.getElementById("problem-list");
    const summary = document.getElementById("list-summary");
    try {
      const page = await api("/api/v1/problems?limit=100");
      list.textContent = "";
      list.removeAttribute("aria-busy");
      if (!page.items.length) {
        list.append(h("div", { class: "card empty" }, h("strong", {}, "No problems yet"),
          "Upload a folder or an archive with a seed program and its evaluator."));
        summary.textContent = "Nothing uploaded to this project yet.";
      } else {
        page.items.forEach((q) => list.append(problemCard(q)));
        summary.textContent = `${fmt.int(page.total)} problem${page.total === 1 ? "" : "s"}` +
          (page.total > page.items.length ? ` · newest ${page.items.length} shown` : "");
      }
      return true;
    } catch (err) {
      list.removeAttribute("aria-busy");
      list.textContent = "";
      list.append(h("div", { class: "card empty" }, h("strong", {}, "Problems could not be loaded"), err.message));
      summary.textContent = "";
      return err.status !== 401;
    }
  }

  /* ---- reading a folder ---- */

  const utf8 = new TextDecoder("utf-8", { fatal: true });

  /* The path inside the chosen folder: webkitRelativePath less its first part (the folder's name). */
  function relative(file) {
    const parts = (file.webkitRelativePath || file.name).split("/");
    return (file.webkitRelativePath && parts.length > 1 ? parts.slice(1) : parts).join("/");
  }

  async function readFolder(fileList) {
    const files = {};
    const skipped = [];
    let left = 0;     // hidden and __pycache__ entries, not listed one by one
    let total = 0;
    for (const file of fileList) {
      const path = relative(file);
      if (path.split("/").some((p) => p.startsWith(".") || p === "__pycache__")) { left += 1; continue; }
      if (file.size > MAX_FILE) { skipped.push(`${path} (${kib(file.size)}, over ${kib(MAX_FILE)})`); continue; }
      if (total + file.size > MAX_UPLOAD) {
        return { error: `The folder holds over ${kib(MAX_UPLOAD)} of files; the most one upload may carry is ${kib(MAX_UPLOAD)}.` };
      }
      const bytes = new Uint8Array(await file.arrayBuffer());
      let text;
      try {
        text = utf8.decode(bytes);
      } catch (_) {
        skipped.push(`${path} (binary, not UTF-8 text)`);
        continue;
      }
      if (text.includes("\u0000")) { skipped.push(`${path} (binary, holds NUL bytes)`); continue; }
      files[path] = text;
      total += bytes.length;
    }
    const body = JSON.stringify(files);
    const size = new Blob([body]).size;   // JSON escapes make the body bigger than the files
    if (size > MAX_UPLOAD) return { error: `The folder's files come to ${kib(size)} as JSON; the most one upload may carry is ${kib(MAX_UPLOAD)}.` };
    return { kind: "folder", files, body, skipped, left, total };
  }

  function summarize() {
    const box = document.getElementById("u-summary");
    box.textContent = "";
    box.hidden = !upload;
    document.getElementById("u-submit").disabled = !upload || !!upload.error;
    if (!upload) return;
    if (upload.error) { box.append(h("p", { class: "error-line" }, upload.error)); return; }
    if (upload.kind === "archive") {
      box.append(h("p", {}, h("strong", {}, upload.file.name), ` · ${kib(upload.file.size)} · ${upload.type}`));
      return;
    }
    const paths = Object.keys(upload.files).sort();
    box.append(h("p", {}, h("strong", {}, `${paths.length} file${paths.length === 1 ? "" : "s"}`), ` · ${kib(upload.total)} to upload`));
    box.append(h("ul", { class: "paths", id: "u-paths" }, paths.slice(0, 50).map((p) => h("li", {}, p)),
      paths.length > 50 ? h("li", { class: "hint" }, `… and ${paths.length - 50} more`) : null));
    if (upload.skipped.length) {
      box.append(h("p", { class: "hint" }, "Skipped here:"),
        h("ul", { class: "paths skipped", id: "u-skipped" }, upload.skipped.map((s) => h("li", {}, s))));
    }
    if (upload.left) box.append(h("p", { class: "hint" }, `${upload.left} hidden or __pycache__ entr${upload.left === 1 ? "y" : "ies"} left out.`));
  }

  async function onFolder(ev) {
    const mine = ++token;
    document.getElementById("u-archive").value = "";
    showError([]);
    const list = Array.from(ev.target.files || []);
    if (!list.length) { upload = null; summarize(); return; }
    const read = await readFolder(list);
    if (mine !== token) return;
    upload = read;
    if (!read.error && !Object.keys(read.files).length) upload = { error: "No text file to upload in this folder." };
    summarize();
  }

  function onArchive(ev) {
    ++token;
    document.getElementById("u-folder").value = "";
    showError([]);
    const file = (ev.target.files || [])[0];
    if (!file) { upload = null; summarize(); return; }
    const match = ARCHIVES.find(([ext]) => file.name.toLowerCase().endsWith(ext));
    if (!match) upload = { error: `${file.name}: not a .zip, .tar or .tar.gz archive.` };
    else if (file.size > MAX_UPLOAD) upload = { error: `${file.name} is ${kib(file.size)}; the most one upload may carry is ${kib(MAX_UPLOAD)}.` };
    else upload = { kind: "archive", file, type: match[1] };
    summarize();
  }

  function showError(messages) {
    const box = document.getElementById("u-error");
    box.textContent = "";
    box.hidden = !messages.length;
    if (messages.length) box.append(h("strong", {}, "The problem was not uploaded."), h("ul", {}, messages.map((m) => h("li", {}, m))));
  }

  async function submit(ev) {
    ev.preventDefault();
    if (!upload || upload.error) return;
    const query = new URLSearchParams();
    const name = document.getElementById("u-name").value.trim();
    if (name) query.set("name", name);
    query.set("sandbox", document.getElementById("u-sandbox").value);
    const [body, type] = upload.kind === "archive" ? [upload.file, upload.type] : [upload.body, "application/json"];
    const btn = document.getElementById("u-submit");
    btn.disabled = true;
    btn.textContent = "Uploading…";
    try {
      const res = await EF.raw(`/api/v1/problems?${query}`, { method: "POST", body, headers: { "Content-Type": type } });
      const q = await res.json();
      location.assign(`/problems/${encodeURIComponent(q.id)}${res.status === 200 ? "#existing" : ""}`);
    } catch (err) {
      showError([err.message]);
      btn.disabled = false;
      btn.textContent = "Upload";
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    document.getElementById("u-folder").addEventListener("change", onFolder);
    document.getElementById("u-archive").addEventListener("change", onArchive);
    document.getElementById("upload").addEventListener("submit", submit);
    document.getElementById("jump-upload").addEventListener("click", () => setTimeout(() => document.getElementById("u-folder").focus(), 0));
    if (!await refresh()) showError(["An API key is needed to upload problems."]);
  });
})();
