/* The account's low-balance threshold: shown in the balance card, changed with PATCH /api/account
 * (empty: no warning), which only an unrestricted key may do (a restricted key gets 403
 * account_management_not_allowed: the page says so and offers no way to). */

import { api, report } from "./api.js";
import { $, announce, show, showMessage } from "./dom.js";
import { isTonAmount, tonFieldValue } from "./format.js";

let edited = false;
let restrictedSession = false;

/* Whether the session's key is restricted: then the threshold is shown but cannot be changed. */
export function setThresholdRestricted(restricted) {
  restrictedSession = restricted;
  show("threshold-restricted", restricted);
  $("threshold-ton").disabled = restricted;
  $("threshold-save").disabled = restricted;
}

/* The stored threshold in the field, unless the person is changing it. */
export function showThreshold(nanoton) {
  const input = $("threshold-ton");
  if (edited || document.activeElement === input) return;
  input.value = tonFieldValue(nanoton);
}

export function initThreshold(onSaved) {
  const input = $("threshold-ton");
  input.addEventListener("input", () => { edited = true; });
  $("threshold-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (text && !isTonAmount(text)) {
      showMessage("threshold-error", "An amount of TON such as 0.5 (at most 9 decimals), or empty for no warning.");
      input.focus();
      return;
    }
    const button = $("threshold-save");
    button.disabled = true;
    showMessage("threshold-error", "");
    try {
      await api("/api/account", { method: "PATCH", auth: true, body: { low_balance_threshold_ton: text || null } });
      edited = false;
      announce(text ? "You will be warned below " + text + " TON" : "Low-balance warning off");
      await onSaved();
    } catch (error) {
      report("threshold-error")(error);
    }
    button.disabled = restrictedSession;
  });
}
