/* The balance card: refreshed on a timer; a rise is announced as a deposit received, and any
 * change tells the listeners (the usage table, the deposits table) to refresh. Below the account's
 * own low-balance threshold (PATCH /api/account), a banner says so at the top of the page. */

import { api, report } from "./api.js";
import { announce, setText, show, showMessage } from "./dom.js";
import { formatTon, formatUsd, tonToNano } from "./format.js";
import { showThreshold } from "./threshold.js";

let lastBalance = null;
let pricing = null;
const listeners = [];

/* fn(balance, previous) after every refresh that changed the balance. */
export function onBalanceChange(fn) {
  listeners.push(fn);
}

export function setPricing(body) {
  pricing = body;
  updateLowBalance();
}

function updateLowBalance() {
  if (lastBalance === null || !pricing) return;
  const minimum = tonToNano(pricing.minimum_balance_ton);
  const available = lastBalance.balance_nanoton - (lastBalance.reserved_nanoton || 0);
  showMessage("balance-low", available < minimum
    ? "Your balance is below the " + formatTon(minimum) + " TON needed for a request. Add funds to start."
    : "");
}

export async function loadBalance() {
  let balance;
  try {
    balance = await api("/v1/balance", { auth: true });
  } catch (error) {
    report("balance-error")(error);
    return;
  }
  const previous = lastBalance;
  lastBalance = balance;
  const node = setText("balance-ton", formatTon(balance.balance_nanoton));
  node.dataset.nanoton = String(balance.balance_nanoton);
  if (balance.balance_usd !== null && balance.balance_usd !== undefined && balance.ton_usd_rate) {
    setText("balance-usd", "≈ " + formatUsd(balance.balance_usd) + " at " + formatUsd(balance.ton_usd_rate) + " per TON");
    show("balance-usd", true);
  } else {
    show("balance-usd", false);
  }
  showMessage("balance-reserved", balance.reserved_nanoton
    ? formatTon(balance.reserved_nanoton) + " TON held for requests in progress." : "");
  setText("balance-updated", new Date().toLocaleTimeString());
  showMessage("balance-error", "");
  updateLowBalance();
  const threshold = balance.low_balance_threshold_nanoton;
  showMessage("low-balance-banner", balance.low_balance && threshold !== null && threshold !== undefined
    ? "Your balance is below the " + formatTon(threshold) + " TON you asked to be warned at. Add funds to keep "
      + "your requests going." : "");
  showThreshold(threshold);
  if (previous && previous.balance_nanoton !== balance.balance_nanoton) {
    if (balance.balance_nanoton > previous.balance_nanoton) {
      const added = formatTon(balance.balance_nanoton - previous.balance_nanoton);
      showMessage("flash", "Deposit received: +" + added + " TON.");
      announce("Deposit received: " + added + " TON");
    }
    for (const fn of listeners) fn(balance, previous);
  }
}
