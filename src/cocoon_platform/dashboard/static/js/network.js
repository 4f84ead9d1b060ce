/* What both pages show without a key: network status, models, pricing and the quick-start snippet. */

import { api, report } from "./api.js";
import { $, clearChildren, el, setText, showMessage } from "./dom.js";
import { dateTime, formatInt, formatTon, tonToNano } from "./format.js";

const STATUS_TEXT = { online: "Online", cached: "Cached data", offline: "Offline" };

export async function loadStats() {
  const table = $("stats-table");
  if (!table) return;
  try {
    const stats = await api("/api/stats");
    const status = STATUS_TEXT[stats.status] ? stats.status : "offline";
    const badge = setText("network-status", STATUS_TEXT[status]);
    badge.dataset.status = status;
    const when = stats.cached_at ? new Date(stats.cached_at) : null;
    setText("network-updated", when && !isNaN(when.getTime())
      ? (status === "online" ? "Live data, read " : "Last seen ") + dateTime.format(when) + "."
      : (status === "offline" ? "The COCOON network can't be reached right now." : ""));
    const body = table.tBodies[0];
    clearChildren(body);
    const models = stats.models || [];
    for (const model of models) {
      const load = Math.max(0, Math.min(100, Number(model.load_pct) || 0));
      const meter = el("meter", { min: 0, max: 100, value: load, low: 60, high: 85, optimum: 0, title: load + "%" });
      meter.setAttribute("aria-label", "Load of " + model.id);
      body.appendChild(el("tr", null,
        el("th", { scope: "row" }, el("code", null, model.id)),
        el("td", { className: "num" }, formatInt(model.workers)),
        el("td", { className: "num" }, formatInt(model.running) + " / " + formatInt(model.capacity)),
        el("td", null, el("div", { className: "load" }, meter, el("span", { className: "load-pct" }, load + "%")))));
    }
    table.hidden = !models.length;
    showMessage("stats-message", models.length ? "" : "No models are being served right now. Check back in a minute.");
  } catch (error) {
    const badge = setText("network-status", "Unknown");
    badge.dataset.status = "offline";
    showMessage("stats-message", "Network status is unavailable: " + error.message);
  }
}

let knownModels = [];

/* /v1/models lists each model under its network id (which holds a "/") and again under its alias
 * (the id's last part, lower case): one entry per model here, with its aliases beside it. */
function groupAliases(list) {
  const models = list.filter((model) => model.id.includes("/")).map((model) => ({ ...model, aliases: [] }));
  const rest = [];
  for (const entry of list.filter((model) => !model.id.includes("/"))) {
    const model = models.find((m) => m.id.split("/").pop().toLowerCase() === entry.id.toLowerCase());
    if (model) model.aliases.push(entry.id);
    else rest.push({ ...entry, aliases: [] });
  }
  return [...models, ...rest];
}

/* The models of /v1/models (one entry each, with `aliases`), in the models table and the quick
 * start; [] when they can't be read. */
export async function loadModels() {
  let error = null;
  try {
    const list = await api("/v1/models");
    knownModels = groupAliases((list && list.data) || []);
  } catch (e) {
    knownModels = [];
    error = e;
  }
  renderModels(error);
  renderQuickstart();
  return knownModels;
}

function renderModels(error) {
  const table = $("models-table");
  if (!table) return;
  const body = table.tBodies[0];
  clearChildren(body);
  if (error) {
    table.hidden = true;
    showMessage("models-message", error.status === 503
      ? "The model list is temporarily unavailable: the COCOON network can't be reached right now. "
        + "Please try again in a minute."
      : "Could not load the models: " + error.message);
    return;
  }
  for (const model of knownModels) {
    body.appendChild(el("tr", null,
      el("th", { scope: "row" }, el("code", null, model.id), model.aliases.length
        ? el("span", { className: "muted small block" }, "alias ", el("code", null, model.aliases.join(", ")))
        : null),
      el("td", null, model.type || ""),
      el("td", { className: "num" }, model.context_window ? formatInt(model.context_window) : "n/a"),
      el("td", null, el("code", null, model.endpoint || "")),
      el("td", null, model.owned_by || ""),
      el("td", { className: "num" }, formatInt((model.workers || []).length))));
  }
  table.hidden = !knownModels.length;
  showMessage("models-message", knownModels.length ? "" : "No models are available right now.");
}

const RATE_NAMES = [
  ["prompt_token", "Prompt (input)"],
  ["cached_prompt_token", "Cached prompt"],
  ["completion_token", "Completion (output)"],
  ["reasoning_token", "Reasoning"],
];

/* The pricing table and its notes; resolves to /v1/pricing's body, or null when it failed. */
export async function loadPricing() {
  const table = $("pricing-table");
  if (!table) return null;
  try {
    const body = await api("/v1/pricing");
    const tbody = table.tBodies[0];
    clearChildren(tbody);
    for (const [rateName, label] of RATE_NAMES) {
      const rate = body.rates && body.rates[rateName];
      if (!rate) continue;
      const perToken = Number(rate.effective_nanoton) || 0;
      tbody.appendChild(el("tr", { dataset: { rate: rateName } },
        el("th", { scope: "row" }, label),
        el("td", { className: "num nanoton" }, formatInt(perToken)),
        // 1M tokens * n nanoTON = n * 1e6 nanoTON, formatted exactly as TON.
        el("td", { className: "num per-million" }, formatTon(perToken * 1000000))));
    }
    setText("pricing-notes", [
      "Prices include the platform markup (×" + body.markup_multiplier + ").",
      "Requests need a balance of at least " + formatTon(tonToNano(body.minimum_balance_ton)) + " TON.",
      body.price_source === "live" ? "Network prices are live." : "Using the configured default prices.",
      "1 TON = 1,000,000,000 nanoTON.",
    ].join(" "));
    return body;
  } catch (error) {
    report("pricing-notes")(error);
    return null;
  }
}

/* The first chat model, else the first model: the one examples use. */
export function defaultModel(models) {
  const chat = models.find((model) => model.type === "chat");
  return chat ? chat.id : (models.length ? models[0].id : null);
}

export function renderQuickstart() {
  const code = $("quickstart-code");
  if (!code) return;
  code.textContent = [
    "import os",
    "from openai import OpenAI",
    "",
    "client = OpenAI(",
    "    base_url=" + JSON.stringify(window.location.origin + "/v1") + ",",
    "    api_key=os.environ[\"COCOON_API_KEY\"],  # ck_...",
    ")",
    "",
    "response = client.chat.completions.create(",
    "    model=" + JSON.stringify(defaultModel(knownModels) || "MODEL_ID") + ",",
    "    messages=[{\"role\": \"user\", \"content\": \"Hello!\"}],",
    ")",
    "print(response.choices[0].message.content)",
  ].join("\n");
}
