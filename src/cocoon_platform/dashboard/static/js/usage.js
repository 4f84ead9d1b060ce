/* Recent requests (paged, newest first) and the daily totals of the last 30 days, as a table and
 * as the spend chart. */

import { api, report, request } from "./api.js";
import { renderSpendChart } from "./chart.js";
import { $, clearChildren, el, setText, show, showMessage } from "./dom.js";
import { formatDuration, formatInt, formatTon, timeNode } from "./format.js";

const USAGE_PAGE = 20;
const CSV_ROWS = 10000; // the most /v1/usage exports at once

let usageBefore = null;
let usageLoading = false;
let reloadAfter = false;

/* The query naming the key picked in the usage filter, if one is: it narrows the requests, the
 * totals and the chart alike. */
function keyFilter(params) {
  const keyId = $("usage-key").value;
  if (keyId) params.set("key_id", keyId);
  return params;
}

/* The keys the usage can be narrowed to, keeping the one picked while it still exists. */
export function setUsageKeys(keys) {
  const select = $("usage-key");
  const picked = select.value;
  while (select.options.length > 1) select.remove(1);
  for (const info of keys) {
    select.appendChild(el("option", { value: String(info.id), selected: String(info.id) === picked },
      (info.name || "unnamed") + " (" + info.prefix + "…)"));
  }
  if (select.value !== picked) loadUsage(true);
}

/* The first page again (reset), or the next one. */
export async function loadUsage(reset) {
  if (usageLoading) {
    reloadAfter = reloadAfter || reset; // e.g. the key filter changed while a page was coming
    return;
  }
  usageLoading = true;
  const params = keyFilter(new URLSearchParams({ limit: String(USAGE_PAGE) }));
  if (!reset && usageBefore !== null) params.set("before", String(usageBefore));
  const more = $("usage-more");
  more.disabled = true;
  try {
    const page = await api("/v1/usage?" + params.toString(), { auth: true });
    const body = $("usage-table").tBodies[0];
    if (reset) clearChildren(body);
    for (const row of page.data || []) body.appendChild(usageRow(row));
    usageBefore = page.has_more ? page.next_before : null;
    show(more, Boolean(page.has_more));
    const empty = !body.rows.length;
    show("usage-empty", empty);
    $("usage-table").hidden = empty;
    const keySelect = $("usage-key");
    const scope = keySelect.value ? "key " + keySelect.selectedOptions[0].textContent : "";
    renderTotals(page.totals || [], !scope);
    renderSpendChart($("spend-chart"), $("spend-legend"), page.totals || [], page.start, page.end, scope);
    setText("spend-scope", scope ? "Of " + scope + " (chosen in Usage)." : "Of all your keys.");
    showMessage("usage-error", "");
  } catch (error) {
    report("usage-error")(error);
  }
  usageLoading = false;
  more.disabled = false;
  if (reloadAfter) {
    reloadAfter = false;
    await loadUsage(true);
  }
}

function usageRow(row) {
  const status = el("span", { className: "status", dataset: { status: row.status } }, row.status);
  // A capped charge: the rest of the request's cost was never charged (the API's capped_nanoton).
  const capped = Number(row.capped_nanoton) > 0
    ? el("span", { className: "muted small block", title: formatInt(row.capped_nanoton)
      + " nanoTON not charged: the whole cost would have gone past your balance or the key's limit" },
      "+" + formatTon(row.capped_nanoton) + " uncharged") : null;
  const cost = el("td", { className: "num cost", title: formatInt(row.cost_nanoton) + " nanoTON" },
    formatTon(row.cost_nanoton), capped);
  return el("tr", { dataset: { requestId: row.request_id } },
    el("td", { className: "nowrap" }, timeNode(row.created_at, true)),
    el("td", null, el("code", { className: "block" }, row.model),
      el("span", { className: "muted small" }, row.endpoint)),
    el("td", { className: "num" }, formatInt(row.prompt_tokens)),
    el("td", { className: "num" }, formatInt(row.cached_tokens)),
    el("td", { className: "num" }, formatInt(row.completion_tokens)),
    el("td", { className: "num" }, formatInt(row.reasoning_tokens)),
    cost,
    el("td", null, status, row.estimated
      ? el("span", { className: "muted small", title: "Token counts were estimated" }, " (estimated)") : null),
    el("td", { className: "num nowrap" }, formatDuration(row.duration_ms)));
}

/* The totals table; the balance card's 30-day spend too when they are the whole account's. */
function renderTotals(totals, wholeAccount) {
  const body = $("totals-table").tBodies[0];
  clearChildren(body);
  let spent = 0;
  let requests = 0;
  for (const row of totals) {
    spent += Number(row.cost_nanoton) || 0;
    requests += Number(row.requests) || 0;
    body.appendChild(el("tr", null,
      el("td", { className: "nowrap" }, row.date),
      el("td", null, el("code", null, row.model)),
      el("td", { className: "num" }, formatInt(row.requests)),
      el("td", { className: "num" }, formatInt(row.prompt_tokens)),
      el("td", { className: "num" }, formatInt(row.cached_tokens)),
      el("td", { className: "num" }, formatInt(row.completion_tokens)),
      el("td", { className: "num" }, formatInt(row.reasoning_tokens)),
      el("td", { className: "num cost" }, formatTon(row.cost_nanoton))));
  }
  $("totals-table").hidden = !totals.length;
  if (!wholeAccount) return;
  showMessage("balance-spent", requests ? "Spent in the last 30 days: " + formatTon(spent) + " TON over "
    + formatInt(requests) + (requests === 1 ? " request." : " requests.") : "");
  show("totals-empty", !totals.length);
}

/* The latest requests as a CSV file: fetched with the key (a plain link couldn't send it), then
 * handed to the browser as a download. */
export async function downloadUsageCsv() {
  const button = $("usage-csv");
  button.disabled = true;
  showMessage("usage-error", "");
  try {
    const params = keyFilter(new URLSearchParams({ format: "csv", limit: String(CSV_ROWS) }));
    const response = await request("/v1/usage?" + params.toString(), { auth: true, accept: "text/csv" });
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: "cocoon-usage-" + new Date().toISOString().slice(0, 10) + ".csv" });
    document.body.appendChild(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (error) {
    report("usage-error")(error);
  }
  button.disabled = false;
}
