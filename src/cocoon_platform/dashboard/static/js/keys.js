/* The account's API keys: create (shown once), list, revoke. */

import { api, report } from "./api.js";
import { $, announce, clearChildren, el, setText, show, showMessage } from "./dom.js";
import { timeNode } from "./format.js";
import { getKey, signOut } from "./session.js";

function isSessionKey(info) {
  const key = getKey();
  return Boolean(key && info.prefix && key.startsWith(info.prefix));
}

export async function loadKeys() {
  try {
    const list = await api("/v1/keys", { auth: true });
    const body = $("keys-table").tBodies[0];
    clearChildren(body);
    for (const info of list.data || []) body.appendChild(keyRow(info));
  } catch (error) {
    report("key-error")(error);
  }
}

function keyRow(info) {
  const current = isSessionKey(info);
  const revoke = el("button", { type: "button", className: "small danger" }, "Revoke");
  revoke.setAttribute("aria-label", "Revoke key " + (info.name || info.prefix));
  revoke.addEventListener("click", () => revokeKey(info, current, revoke));
  return el("tr", { dataset: { keyId: String(info.id) } },
    el("td", null, info.name ? info.name : el("span", { className: "muted" }, "unnamed"),
      current ? el("span", { className: "badge small-badge" }, "this session") : null),
    el("td", null, el("code", null, info.prefix + "…")),
    el("td", { className: "nowrap" }, timeNode(info.created_at)),
    el("td", { className: "nowrap" }, timeNode(info.last_used_at)),
    el("td", { className: "actions" }, revoke));
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

export function initKeyForm() {
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("key-name");
    const name = input.value.trim();
    const button = $("key-create");
    button.disabled = true;
    showMessage("key-error", "");
    try {
      const created = await api("/v1/keys", { method: "POST", auth: true, body: { name: name || null } });
      input.value = "";
      setText("created-key-value", created.api_key);
      show("created-key", true).focus();
      await loadKeys();
    } catch (error) {
      report("key-error")(error);
    }
    button.disabled = false;
  });
  $("created-key-done").addEventListener("click", () => {
    setText("created-key-value", "");
    show("created-key", false);
    $("key-name").focus();
  });
}
