/* The account's deposits (/v1/deposits): pending transfers first, then credited ones, newest first,
 * paged. Refreshed when the balance moves and on a slower timer of its own, since a transfer is
 * listed as pending before it reaches the balance. */

import { api, report } from "./api.js";
import { $, clearChildren, el, show, showMessage } from "./dom.js";
import { formatTon, timeNode } from "./format.js";

const PAGE = 20;
// Only a web address may become a link target (the explorer's, from the platform's settings).
const WEB_LINK = /^https?:\/\/[^\s]+$/;

let before = null;
let loading = false;

export async function loadDeposits(reset) {
  if (loading) return;
  loading = true;
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (!reset && before !== null) params.set("before", String(before));
  const more = $("deposits-more");
  more.disabled = true;
  try {
    const page = await api("/v1/deposits?" + params.toString(), { auth: true });
    const body = $("deposits-table").tBodies[0];
    if (reset) clearChildren(body);
    for (const deposit of page.data || []) body.appendChild(depositRow(deposit));
    before = page.has_more ? page.next_before : null;
    show(more, Boolean(page.has_more));
    const empty = !body.rows.length;
    show("deposits-empty", empty);
    $("deposits-table").hidden = empty;
    showMessage("deposits-error", "");
  } catch (error) {
    report("deposits-error")(error);
  }
  loading = false;
  more.disabled = false;
}

function depositRow(deposit) {
  const hash = String(deposit.tx_hash || "");
  const short = hash.length > 16 ? hash.slice(0, 8) + "…" + hash.slice(-6) : hash;
  const transaction = WEB_LINK.test(deposit.explorer_url || "")
    ? el("a", { href: deposit.explorer_url, rel: "noopener noreferrer", target: "_blank",
      title: "Transaction " + hash + " in a TON explorer" }, el("code", null, short))
    : el("code", { title: hash }, short);
  const credited = deposit.status === "credited";
  return el("tr", { dataset: { txHash: hash, status: deposit.status } },
    el("td", { className: "nowrap" }, timeNode(deposit.created_at, true)),
    el("td", { className: "num amount" }, formatTon(deposit.amount_nanoton)),
    el("td", null, el("span", { className: "status", dataset: { status: credited ? "ok" : "pending" } },
      credited ? "credited" : "pending"),
    credited && deposit.credited_at ? el("span", { className: "muted small block" }, "at ", timeNode(deposit.credited_at, true)) : null),
    el("td", null, transaction));
}
