/* The account's API keys: create (shown once), list with each key's spend against its limit,
 * change a key's restrictions, revoke. A key with any restriction (a spending limit, a model list,
 * an expiry) cannot manage keys: signed in with one, the page says so and offers no such action. */

import { api, report } from "./api.js";
import { $, announce, clearChildren, el, setText, show, showMessage } from "./dom.js";
import { formatTon, isTonAmount, timeNode, tonFieldValue } from "./format.js";
import { getKey, signOut } from "./session.js";

const PERIOD = { daily: "today", weekly: "this week", monthly: "this month" };

let models = [];
let restrictedSession = false;
const listeners = [];

/* fn(keys, current) after every load of the key list (current: the session's key, if listed). */
export function onKeysLoaded(fn) {
  listeners.push(fn);
}

function isSessionKey(info, currentId) {
  if (currentId !== null && currentId !== undefined) return info.id === currentId;
  const key = getKey();
  return Boolean(key && info.prefix && key.startsWith(info.prefix));
}

/* The model ids the restriction fields offer as check boxes (those of /v1/models). */
export function setKeyModels(list) {
  models = list.map((model) => model.id);
  fillModelChecks("key", readChecked("key"));
}

function fillModelChecks(prefix, ticked) {
  const box = $(prefix + "-models");
  clearChildren(box);
  for (const id of [...new Set([...models, ...ticked])]) {
    const input = el("input", { type: "checkbox", value: id, checked: ticked.includes(id) });
    box.appendChild(el("label", { className: "check" }, input, el("code", null, id)));
  }
}

function readChecked(prefix) {
  return [...$(prefix + "-models").querySelectorAll("input:checked")].map((input) => input.value);
}

/* The restriction fields as API fields (null: no such restriction); throws a message to show. */
function readRestrictions(prefix) {
  const limit = $(prefix + "-limit").value.trim();
  if (limit && !isTonAmount(limit)) {
    throw new Error("Spending limit: an amount of TON such as 0.5 (at most 9 decimals), or empty for none.");
  }
  const expires = $(prefix + "-expires").value;
  const when = expires ? new Date(expires) : null;
  if (when && isNaN(when.getTime())) throw new Error("Expires: a date and time, or empty for never.");
  const ticked = readChecked(prefix);
  return {
    credit_limit_ton: limit || null,
    limit_reset: $(prefix + "-reset").value || null,
    models: ticked.length ? ticked : null,
    expires_at: when ? when.toISOString() : null,
  };
}

/* A Date as the value of an <input type="datetime-local"> (this browser's time zone). */
function localInputValue(iso) {
  const date = new Date(iso);
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

function fillRestrictions(prefix, info) {
  $(prefix + "-limit").value = tonFieldValue(info.credit_limit_nanoton);
  $(prefix + "-reset").value = info.limit_reset || "";
  $(prefix + "-expires").value = info.expires_at ? localInputValue(info.expires_at) : "";
  fillModelChecks(prefix, info.models || []);
}

export async function loadKeys() {
  try {
    const list = await api("/v1/keys", { auth: true });
    const keys = list.data || [];
    const current = keys.find((info) => isSessionKey(info, list.current_key_id));
    restrictedSession = Boolean(current && current.restricted);
    show("keys-restricted", restrictedSession);
    for (const control of $("key-form").elements) control.disabled = restrictedSession;
    const body = $("keys-table").tBodies[0];
    clearChildren(body);
    for (const info of keys) body.appendChild(keyRow(info, info === current));
    for (const fn of listeners) fn(keys, current);
  } catch (error) {
    report("key-error")(error);
  }
}

function spendCell(info) {
  const spent = Number(info.spent_nanoton) || 0;
  const limit = info.credit_limit_nanoton;
  const period = PERIOD[info.limit_reset] || "in total";
  if (limit === null || limit === undefined) {
    return el("td", { className: "nowrap" }, el("span", { className: "muted" }, "no limit"));
  }
  const meter = el("meter", { min: 0, max: Math.max(1, limit), value: Math.min(spent, limit), low: limit * 0.7,
    high: limit * 0.9, optimum: 0 });
  meter.setAttribute("aria-label", "Spent of the limit of " + (info.name || info.prefix));
  return el("td", { className: "nowrap spend" },
    el("span", { className: "spent" }, formatTon(spent) + " of " + formatTon(limit) + " TON " + period),
    el("div", null, meter),
    info.resets_at ? el("span", { className: "muted small" }, "starts over ", timeNode(info.resets_at, true)) : null);
}

function keyRow(info, current) {
  const actions = el("td", { className: "actions nowrap" });
  if (!restrictedSession) {
    const edit = el("button", { type: "button", className: "small" }, "Change");
    edit.setAttribute("aria-label", "Change key " + (info.name || info.prefix));
    edit.addEventListener("click", () => openEditor(info));
    const revoke = el("button", { type: "button", className: "small danger" }, "Revoke");
    revoke.setAttribute("aria-label", "Revoke key " + (info.name || info.prefix));
    revoke.addEventListener("click", () => revokeKey(info, current, revoke));
    actions.append(edit, " ", revoke);
  }
  const expires = info.expires_at
    ? el("td", { className: "nowrap" }, timeNode(info.expires_at, true), info.expired ? " (expired)" : null)
    : el("td", { className: "muted" }, "never");
  return el("tr", { dataset: { keyId: String(info.id) } },
    el("td", null, info.name ? info.name : el("span", { className: "muted" }, "unnamed"),
      current ? el("span", { className: "badge small-badge" }, "this session") : null,
      info.restricted ? el("span", { className: "badge small-badge" }, "restricted") : null),
    el("td", null, el("code", null, info.prefix + "…")),
    spendCell(info),
    el("td", null, ...(info.models && info.models.length
      ? info.models.map((id) => el("code", { className: "block" }, id))
      : [el("span", { className: "muted" }, "all")])),
    expires,
    el("td", { className: "nowrap" }, timeNode(info.last_used_at, true),
      el("span", { className: "muted small block" }, "created ", timeNode(info.created_at, true))),
    actions);
}

let editing = null;

function openEditor(info) {
  editing = info;
  setText("key-dialog-prefix", info.prefix + "…");
  $("edit-name").value = info.name || "";
  fillRestrictions("edit", info);
  showMessage("edit-error", "");
  $("key-dialog").showModal();
}

async function saveEdit(event) {
  event.preventDefault();
  if (!editing) return;
  let body;
  try {
    body = { name: $("edit-name").value.trim() || null, ...readRestrictions("edit") };
  } catch (error) {
    showMessage("edit-error", error.message);
    return;
  }
  const button = $("edit-save");
  button.disabled = true;
  try {
    await api("/v1/keys/" + encodeURIComponent(String(editing.id)), { method: "PATCH", auth: true, body });
    $("key-dialog").close();
    editing = null;
    announce("Key changed");
    await loadKeys();
  } catch (error) {
    report("edit-error")(error);
  }
  button.disabled = false;
}

async function revokeKey(info, current, button) {
  const label = info.name ? "\"" + info.name + "\" (" + info.prefix + "…)" : info.prefix + "…";
  let question = "Revoke the key " + label + "? Anything using it stops working at once. This cannot be undone.";
  if (current) question += "\n\nThis is the key you are signed in with: you will be signed out.";
  if (!window.confirm(question)) return;
  button.disabled = true;
  showMessage("key-error", "");
  try {
    await api("/v1/keys/" + encodeURIComponent(String(info.id)), { method: "DELETE", auth: true });
  } catch (error) {
    button.disabled = false;
    report("key-error")(error);
    return;
  }
  if (current) {
    signOut("You revoked the key you were signed in with.");
    return;
  }
  announce("Key revoked");
  await loadKeys();
}

async function createKey(event) {
  event.preventDefault();
  let body;
  try {
    body = { name: $("key-name").value.trim() || null, ...readRestrictions("key") };
  } catch (error) {
    showMessage("key-error", error.message);
    return;
  }
  // Only what was set: a key with none of the restrictions is created as the API always did.
  for (const field of Object.keys(body)) if (body[field] === null && field !== "name") delete body[field];
  const button = $("key-create");
  button.disabled = true;
  showMessage("key-error", "");
  try {
    const created = await api("/v1/keys", { method: "POST", auth: true, body });
    $("key-form").reset();
    fillModelChecks("key", []);
    setText("created-key-value", created.api_key);
    show("created-key", true).focus();
    await loadKeys();
  } catch (error) {
    report("key-error")(error);
  }
  button.disabled = restrictedSession;
}

export function initKeys() {
  $("key-form").addEventListener("submit", createKey);
  $("key-edit-form").addEventListener("submit", saveEdit);
  $("edit-cancel").addEventListener("click", () => { $("key-dialog").close(); editing = null; });
  $("created-key-done").addEventListener("click", () => {
    setText("created-key-value", "");
    show("created-key", false);
    $("key-name").focus();
  });
}
