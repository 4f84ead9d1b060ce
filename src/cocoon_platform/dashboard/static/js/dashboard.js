/* The signed-in page: what runs where, and what refreshes when. */

import { $ } from "./dom.js";
import { loadBalance, onBalanceChange, setPricing } from "./balance.js";
import { loadDeposit } from "./deposit.js";
import { loadDeposits } from "./deposits.js";
import { initKeys, loadKeys, onKeysLoaded, setKeyModels } from "./keys.js";
import { loadModels, loadPricing, loadStats, renderQuickstart } from "./network.js";
import { initPlayground, setPlaygroundAllowed, setPlaygroundModels } from "./playground.js";
import { everyWhileVisible } from "./poll.js";
import { getKey, setFlash, signOut } from "./session.js";
import { initThreshold, setThresholdRestricted } from "./threshold.js";
import { downloadUsageCsv, loadUsage, setUsageKeys } from "./usage.js";

const BALANCE_EVERY_MS = 10000;
const STATS_EVERY_MS = 15000;
const DEPOSITS_EVERY_MS = 30000; // pending transfers show here before the balance moves

export function initDashboard() {
  if (!getKey()) {
    setFlash("Sign in with your API key to open the dashboard.");
    window.location.replace("/");
    return;
  }
  $("signout-button").addEventListener("click", () => signOut("You have signed out."));
  $("balance-refresh").addEventListener("click", loadBalance);
  $("usage-refresh").addEventListener("click", () => loadUsage(true));
  $("usage-more").addEventListener("click", () => loadUsage(false));
  $("usage-csv").addEventListener("click", downloadUsageCsv);
  $("usage-key").addEventListener("change", () => loadUsage(true));
  onKeysLoaded(setUsageKeys);
  onKeysLoaded((keys, current) => setPlaygroundAllowed(current ? current.models : null));
  onKeysLoaded((keys, current) => setThresholdRestricted(Boolean(current && current.restricted)));
  initKeys();
  initPlayground(loadBalance);
  $("deposits-refresh").addEventListener("click", () => loadDeposits(true));
  $("deposits-more").addEventListener("click", () => loadDeposits(false));
  initThreshold(loadBalance);
  onBalanceChange(() => loadUsage(true));
  onBalanceChange(() => loadDeposits(true));

  loadBalance();
  loadDeposit();
  loadDeposits(true);
  loadUsage(true);
  loadKeys();
  loadPricing().then((body) => { if (body) setPricing(body); });
  loadStats();
  loadModels().then((models) => {
    setPlaygroundModels(models);
    setKeyModels(models);
  });
  renderQuickstart();
  everyWhileVisible(loadBalance, BALANCE_EVERY_MS);
  everyWhileVisible(loadStats, STATS_EVERY_MS);
  everyWhileVisible(() => loadDeposits(true), DEPOSITS_EVERY_MS);
}
