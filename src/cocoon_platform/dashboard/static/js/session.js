/* The signed-in key and one-shot messages across a page change. The key lives in this tab's
 * sessionStorage only: never localStorage, never a URL. */

import { showMessage } from "./dom.js";

const KEY_STORE = "cocoon.apiKey";
const FLASH_STORE = "cocoon.flash";

export function getKey() {
  try {
    return window.sessionStorage.getItem(KEY_STORE);
  } catch (e) {
    return null;
  }
}

export function setKey(key) {
  window.sessionStorage.setItem(KEY_STORE, key);
}

/* A message for the next page this tab opens. */
export function setFlash(text) {
  try { window.sessionStorage.setItem(FLASH_STORE, text); } catch (e) { /* private mode */ }
}

export function showFlash() {
  let text = null;
  try {
    text = window.sessionStorage.getItem(FLASH_STORE);
    window.sessionStorage.removeItem(FLASH_STORE);
  } catch (e) { /* nothing stored */ }
  if (text) showMessage("flash", text);
}

let signingOut = false;

export function isSigningOut() {
  return signingOut;
}

/* Forget the key (and anything else of ours in this tab) and go to the landing page. */
export function signOut(message) {
  if (signingOut) return;
  signingOut = true;
  try {
    window.sessionStorage.clear();
  } catch (e) { /* nothing stored */ }
  if (message) setFlash(message);
  window.location.replace("/");
}
