/* The landing page: create an account (its key shown once), sign in, and the public parts. */

import { api, report } from "./api.js";
import { $, setText, show, showMessage } from "./dom.js";
import { formatTon, tonToNano } from "./format.js";
import { loadModels, loadPricing, loadStats, renderQuickstart } from "./network.js";
import { everyWhileVisible } from "./poll.js";
import { getKey, setKey } from "./session.js";

const STATS_EVERY_MS = 15000;

function initRegister() {
  const registerButton = $("register-button");
  registerButton.addEventListener("click", async () => {
    showMessage("register-error", "");
    registerButton.disabled = true;
    registerButton.textContent = "Creating…";
    try {
      const account = await api("/api/register", { method: "POST" });
      setKey(account.api_key);
      setText("new-key", account.api_key);
      setText("new-code", account.deposit_code);
      setText("new-wallet", account.deposit_wallet);
      setText("new-balance", formatTon(tonToNano(account.balance_ton)));
      show("auth-panels", false);
      show("signed-in-note", false);
      show("flash", false);
      const panel = show("new-account", true);
      panel.focus();
      panel.scrollIntoView({ block: "start" });
    } catch (error) {
      report("register-error")(error);
    }
    registerButton.disabled = false;
    registerButton.textContent = "Create account";
  });

  const stored = $("stored-confirm");
  const continueButton = $("continue-button");
  stored.addEventListener("change", () => { continueButton.disabled = !stored.checked; });
  continueButton.addEventListener("click", () => {
    setText("new-key", "");
    window.location.assign("/dashboard");
  });
}

function initSignIn() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showMessage("login-error", "");
    const input = $("login-key");
    const key = input.value.trim();
    if (!key) {
      showMessage("login-error", "Enter your API key (it starts with ck_).");
      input.focus();
      return;
    }
    const button = $("login-button");
    button.disabled = true;
    try {
      await api("/api/login", { method: "POST", body: { api_key: key } });
      setKey(key);
      input.value = "";
      window.location.assign("/dashboard");
    } catch (error) {
      showMessage("login-error", error.message);
      input.focus();
    }
    button.disabled = false;
  });
}

export function initLanding() {
  if (getKey()) {
    show("signed-in-note", true);
    show("nav-dashboard", true);
  }
  initRegister();
  initSignIn();
  loadStats();
  loadModels();
  loadPricing();
  renderQuickstart();
  everyWhileVisible(loadStats, STATS_EVERY_MS);
}
