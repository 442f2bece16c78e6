/* The new-campaign form's shared parts (pages.LLM_FIELDS): number fields, the mutator choice and
 * the LLM settings with the operator's endpoints, and the error box. Used by `/` and `/problems/{id}`. */
"use strict";

const EFForm = (() => {
  const { api, h } = EF;

  /* A number input's value, or null with a message in `errors`; `whole` asks for an integer. */
  function numField(id, errors, label, optional = false, whole = false) {
    const el = document.getElementById(id);
    el.removeAttribute("aria-invalid");
    if (el.value === "" && optional) return null;
    const v = Number(el.value);
    if (el.value === "" || !(whole ? Number.isInteger(v) : Number.isFinite(v)) || !el.checkValidity()) {
      errors.push(`${label}: ${el.validationMessage || (whole ? "a whole number is needed" : "a number is needed")}`);
      el.setAttribute("aria-invalid", "true");
      return null;
    }
    return v;
  }

  const intField = (id, errors, label, optional = false) => numField(id, errors, label, optional, true);

  /* `NAME` or `NAME:WEIGHT`, as ModelSpec.parse: the weight is the text after the last colon when
     it is a number the server accepts; otherwise the whole text is the name (weight 1). */
  function parseModel(text) {
    const i = text.lastIndexOf(":");
    if (i > 0) {
      const name = text.slice(0, i).trim();
      const raw = text.slice(i + 1).trim();
      const w = Number(raw);
      if (name && raw !== "" && Number.isFinite(w) && w > 0 && w <= 1e6) return { name, weight: w };
    }
    return { name: text, weight: 1 };
  }

  function parseModels(text) {
    return text.split(",").map((t) => t.trim()).filter((t) => t).map(parseModel);
  }

  const isLlm = () => document.getElementById("f-mutator").value === "llm";

  /* The LLM mutator and its token/cost budget into `body` (which has a `budget`); nothing for local. */
  function readMutator(body, errors) {
    if (!isLlm()) return;
    const mutator = {
      kind: "llm",
      temperature: numField("f-temperature", errors, "Temperature"),
      max_tokens: intField("f-reply-tokens", errors, "Max tokens per reply"),
      diff_mode: document.getElementById("f-diff").checked,
    };
    const endpoint = document.getElementById("f-endpoint").value;
    if (endpoint) mutator.endpoint = endpoint;        // none: the server says which exist
    const models = parseModels(document.getElementById("f-models").value);
    if (models.length) mutator.models = models;
    body.mutator = mutator;
    const tokens = intField("f-max-tokens", errors, "Max tokens (budget)", true);
    if (tokens !== null) body.budget.max_tokens = tokens;
    const cost = numField("f-max-cost", errors, "Max cost (budget)", true);
    if (cost !== null) body.budget.max_cost_usd = cost;
  }

  /* The operator's LLM endpoints (names and allowed models; URLs and keys stay on the server). */
  let endpoints = [];

  function showEndpoint() {
    const ep = endpoints.find((e) => e.name === document.getElementById("f-endpoint").value);
    const hint = document.getElementById("f-endpoint-hint");
    const models = document.getElementById("f-models");
    if (!ep) {
      hint.textContent = endpoints.length ? "" : "The operator has declared no LLM endpoint on this server.";
      return;
    }
    const any = ep.models.includes("*");
    hint.textContent = any ? "Any model name." : `Allowed models: ${ep.models.join(", ")}`;
    models.placeholder = any ? "model-a:2, model-b" : ep.models.slice(0, 2).join(", ");
  }

  async function loadEndpoints() {
    const sel = document.getElementById("f-endpoint");
    try {
      endpoints = (await api("/api/v1/endpoints")).endpoints;
    } catch (err) {
      endpoints = [];
      document.getElementById("f-endpoint-hint").textContent = `Endpoints could not be loaded: ${err.message}`;
    }
    sel.textContent = "";
    if (!endpoints.length) sel.append(h("option", { value: "" }, "No endpoints configured"));
    for (const e of endpoints) sel.append(h("option", { value: e.name }, e.name));
    showEndpoint();
  }

  function toggleMutator() {
    document.getElementById("f-llm").hidden = !isLlm();
  }

  /* The mutator select and endpoint hint wired up; a restored form (back button) keeps its choice. */
  function wire() {
    document.getElementById("f-mutator").addEventListener("change", toggleMutator);
    document.getElementById("f-endpoint").addEventListener("change", showEndpoint);
    toggleMutator();
  }

  function showFormError(messages, title = "The campaign was not created.") {
    const box = document.getElementById("form-error");
    box.textContent = "";
    if (!messages.length) { box.hidden = true; return; }
    box.append(h("strong", {}, title), h("ul", {}, messages.map((m) => h("li", {}, m))));
    box.hidden = false;
  }

  // Create the campaign (unless the form had errors) and open its page; a refusal is shown.
  async function submitCampaign(body, errors) {
    showFormError(errors);
    if (errors.length) return;
    const btn = document.getElementById("f-submit");
    btn.disabled = true;
    btn.textContent = "Creating…";
    try {
      const c = await api("/api/v1/campaigns", { method: "POST", json: body });
      location.assign(`/campaigns/${c.id}`);
    } catch (err) {
      showFormError([err.message]);
      btn.disabled = false;
      btn.textContent = "Create campaign";
    }
  }

  return { numField, intField, parseModels, readMutator, loadEndpoints, wire, showFormError,
           submitCampaign };
})();
