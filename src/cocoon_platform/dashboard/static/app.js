/* Cocoon Platform dashboard: plain JavaScript, same-origin JSON API only.
 *
 * Rules kept throughout: data from the API is put on the page with textContent (never innerHTML);
 * the API key lives in sessionStorage only (never localStorage, never a URL).
 */
(function () {
  "use strict";

  var KEY_STORE = "cocoon.apiKey";
  var FLASH_STORE = "cocoon.flash";
  var NANO_PER_TON = 1000000000;
  var BALANCE_EVERY_MS = 10000;
  var STATS_EVERY_MS = 15000;
  var USAGE_PAGE = 20;

  // ---------------------------------------------------------------- small helpers

  function $(id) {
    return document.getElementById(id);
  }

  /* el("td", {className: "num"}, "text", childNode): text children become text nodes. */
  function el(tag, props) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (name) {
        if (name === "dataset") {
          Object.keys(props.dataset).forEach(function (k) { node.dataset[k] = props.dataset[k]; });
        } else if (name === "attrs") {
          Object.keys(props.attrs).forEach(function (k) { node.setAttribute(k, props.attrs[k]); });
        } else {
          node[name] = props[name];
        }
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" || typeof child === "number"
        ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function setText(id, text) {
    var node = $(id);
    if (node) node.textContent = text;
    return node;
  }

  function show(id, visible) {
    var node = typeof id === "string" ? $(id) : id;
    if (node) node.hidden = !visible;
    return node;
  }

  function showMessage(id, text) {
    var node = $(id);
    if (!node) return;
    node.textContent = text || "";
    node.hidden = !text;
  }

  function announce(text) {
    var live = $("live");
    if (!live) return;
    live.textContent = "";
    window.setTimeout(function () { live.textContent = text; }, 50);
  }

  function clearChildren(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  var grouping = new Intl.NumberFormat("en-US");

  function formatInt(n) {
    return grouping.format(Number(n) || 0);
  }

  /* nanoTON (an integer) as TON, exact, without trailing zeros: 1500000000 -> "1.5". */
  function formatTon(nanoton) {
    var n = Math.round(Number(nanoton) || 0);
    var negative = n < 0;
    var abs = Math.abs(n);
    var frac = abs % NANO_PER_TON;
    var whole = (abs - frac) / NANO_PER_TON;
    var text = grouping.format(whole);
    if (frac) text += "." + String(frac).padStart(9, "0").replace(/0+$/, "");
    return (negative ? "-" : "") + text;
  }

  function formatUsd(value) {
    return new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 2 })
      .format(value);
  }

  var dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  var shortDateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });

  function timeNode(iso, short) {
    if (!iso) return document.createTextNode("never");
    var date = new Date(iso);
    if (isNaN(date.getTime())) return document.createTextNode(String(iso));
    return el("time", { dateTime: date.toISOString(), title: date.toISOString() },
      (short ? shortDateTime : dateTime).format(date));
  }

  function formatDuration(ms) {
    ms = Number(ms) || 0;
    return ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  }

  // ---------------------------------------------------------------- session

  function getKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORE);
    } catch (e) {
      return null;
    }
  }

  function setKey(key) {
    window.sessionStorage.setItem(KEY_STORE, key);
  }

  function setFlash(text) {
    try { window.sessionStorage.setItem(FLASH_STORE, text); } catch (e) { /* private mode */ }
  }

  function takeFlash() {
    try {
      var text = window.sessionStorage.getItem(FLASH_STORE);
      window.sessionStorage.removeItem(FLASH_STORE);
      return text;
    } catch (e) {
      return null;
    }
  }

  var signingOut = false;

  /* Forget the key (and anything else of ours in this tab) and go to the landing page. */
  function signOut(message) {
    if (signingOut) return;
    signingOut = true;
    try {
      window.sessionStorage.removeItem(KEY_STORE);
      window.sessionStorage.clear();
    } catch (e) { /* nothing stored */ }
    if (message) setFlash(message);
    window.location.replace("/");
  }

  // ---------------------------------------------------------------- API

  function ApiError(message, status) {
    this.name = "ApiError";
    this.message = message;
    this.status = status;
  }
  ApiError.prototype = Object.create(Error.prototype);

  function errorMessage(data, response) {
    if (data && data.error && typeof data.error.message === "string" && data.error.message) {
      return data.error.message;
    }
    if (data && Array.isArray(data.detail) && data.detail.length && data.detail[0].msg) {
      return String(data.detail[0].msg);
    }
    if (response.status === 429) return "Too many requests; please wait a moment and try again.";
    if (response.status >= 500) return "The platform had a problem (HTTP " + response.status + "). Please try again.";
    return "Request failed (HTTP " + response.status + ").";
  }

  /* fetch JSON from the platform; options: method, body (JSON), auth (send the stored key). */
  function api(path, options) {
    options = options || {};
    var headers = { Accept: "application/json" };
    var init = { method: options.method || "GET", headers: headers, cache: "no-store", credentials: "same-origin" };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    if (options.auth) {
      var key = getKey();
      if (!key) {
        signOut("Please sign in.");
        return Promise.reject(new ApiError("Not signed in", 401));
      }
      headers.Authorization = "Bearer " + key;
    }
    return window.fetch(path, init).then(function (response) {
      if (response.status === 204) return null;
      return response.json().catch(function () { return null; }).then(function (data) {
        if (response.ok) return data;
        var message = errorMessage(data, response);
        if (response.status === 401 && options.auth) {
          signOut("You have been signed out: " + message + ". Sign in again with a valid key.");
        }
        throw new ApiError(message, response.status);
      });
    }, function () {
      throw new ApiError("Could not reach the platform. Check your connection and try again.", 0);
    });
  }

  /* Errors raised while signing out need no message of their own. */
  function report(id) {
    return function (error) {
      if (signingOut) return;
      showMessage(id, error && error.message ? error.message : "Something went wrong.");
    };
  }

  // ---------------------------------------------------------------- copy buttons

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return legacyCopy(text); });
    }
    return legacyCopy(text);
  }

  function legacyCopy(text) {
    return new Promise(function (resolve, reject) {
      var area = el("textarea", { value: text, readOnly: true, className: "offscreen" });
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) resolve(); else reject(new Error("copy refused"));
    });
  }

  function wireCopyButtons() {
    document.addEventListener("click", function (event) {
      var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
      if (!button) return;
      var source = $(button.dataset.copy);
      if (!source) return;
      var label = button.dataset.label || button.textContent;
      button.dataset.label = label;
      copyText(source.textContent).then(function () {
        button.textContent = "Copied";
        announce("Copied to the clipboard");
      }, function () {
        // Select the text so the person can copy it by hand.
        var range = document.createRange();
        range.selectNodeContents(source);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Press Ctrl+C";
      }).then(function () {
        window.setTimeout(function () { button.textContent = label; }, 2000);
      });
    });
  }

  // ---------------------------------------------------------------- public parts

  var STATUS_TEXT = { online: "Online", cached: "Cached data", offline: "Offline" };

  function loadStats() {
    var table = $("stats-table");
    if (!table) return Promise.resolve();
    return api("/api/stats").then(function (stats) {
      var status = STATUS_TEXT[stats.status] ? stats.status : "offline";
      var badge = setText("network-status", STATUS_TEXT[status]);
      badge.dataset.status = status;
      var when = stats.cached_at ? new Date(stats.cached_at) : null;
      setText("network-updated", when && !isNaN(when.getTime())
        ? (status === "online" ? "Live data, read " : "Last seen ") + dateTime.format(when) + "."
        : (status === "offline" ? "The COCOON network can't be reached right now." : ""));
      var body = table.tBodies[0];
      clearChildren(body);
      (stats.models || []).forEach(function (model) {
        var load = Math.max(0, Math.min(100, Number(model.load_pct) || 0));
        var meter = el("meter", { min: 0, max: 100, value: load, low: 60, high: 85, optimum: 0,
          title: load + "%" });
        meter.setAttribute("aria-label", "Load of " + model.id);
        body.appendChild(el("tr", null,
          el("th", { scope: "row" }, el("code", null, model.id)),
          el("td", { className: "num" }, formatInt(model.workers)),
          el("td", { className: "num" }, formatInt(model.running) + " / " + formatInt(model.capacity)),
          el("td", null, el("div", { className: "load" }, meter, el("span", { className: "load-pct" }, load + "%")))));
      });
      var empty = !(stats.models || []).length;
      table.hidden = empty;
      showMessage("stats-message", empty ? "No models are being served right now. Check back in a minute." : "");
    }).catch(function (error) {
      var badge = setText("network-status", "Unknown");
      badge.dataset.status = "offline";
      showMessage("stats-message", "Network status is unavailable: " + error.message);
    });
  }

  var knownModels = [];

  function loadModels() {
    return api("/v1/models").then(function (list) {
      knownModels = (list && list.data) || [];
      renderModels(null);
      renderQuickstart();
    }).catch(function (error) {
      knownModels = [];
      renderModels(error);
      renderQuickstart();
    });
  }

  function renderModels(error) {
    var table = $("models-table");
    if (!table) return;
    var body = table.tBodies[0];
    clearChildren(body);
    if (error) {
      table.hidden = true;
      showMessage("models-message", error.status === 503
        ? "The model list is temporarily unavailable: the COCOON network can't be reached right now. "
          + "Please try again in a minute."
        : "Could not load the models: " + error.message);
      return;
    }
    knownModels.forEach(function (model) {
      body.appendChild(el("tr", null,
        el("th", { scope: "row" }, el("code", null, model.id)),
        el("td", null, model.type || ""),
        el("td", { className: "num" }, model.context_window ? formatInt(model.context_window) : "n/a"),
        el("td", null, el("code", null, model.endpoint || "")),
        el("td", null, model.owned_by || ""),
        el("td", { className: "num" }, formatInt((model.workers || []).length))));
    });
    table.hidden = !knownModels.length;
    showMessage("models-message", knownModels.length ? "" : "No models are available right now.");
  }

  var RATE_NAMES = [
    ["prompt_token", "Prompt (input)"],
    ["cached_prompt_token", "Cached prompt"],
    ["completion_token", "Completion (output)"],
    ["reasoning_token", "Reasoning"],
  ];

  var pricing = null;

  function loadPricing() {
    var table = $("pricing-table");
    if (!table) return Promise.resolve();
    return api("/v1/pricing").then(function (body) {
      pricing = body;
      var tbody = table.tBodies[0];
      clearChildren(tbody);
      RATE_NAMES.forEach(function (pair) {
        var rate = body.rates && body.rates[pair[0]];
        if (!rate) return;
        var perToken = Number(rate.effective_nanoton) || 0;
        tbody.appendChild(el("tr", { dataset: { rate: pair[0] } },
          el("th", { scope: "row" }, pair[1]),
          el("td", { className: "num nanoton" }, formatInt(perToken)),
          // 1M tokens * n nanoTON = n * 1e6 nanoTON, formatted exactly as TON.
          el("td", { className: "num per-million" }, formatTon(perToken * 1000000))));
      });
      var notes = [];
      notes.push("Prices include the platform markup (×" + body.markup_multiplier + ").");
      notes.push("Requests need a balance of at least " + formatTon(Math.round(body.minimum_balance_ton * NANO_PER_TON))
        + " TON.");
      notes.push(body.price_source === "live" ? "Network prices are live." : "Using the configured default prices.");
      notes.push("1 TON = 1,000,000,000 nanoTON.");
      setText("pricing-notes", notes.join(" "));
      updateLowBalance();
    }).catch(report("pricing-notes"));
  }

  function quickstartModel() {
    for (var i = 0; i < knownModels.length; i++) {
      if (knownModels[i].type === "chat") return knownModels[i].id;
    }
    return knownModels.length ? knownModels[0].id : "MODEL_ID";
  }

  function renderQuickstart() {
    var code = $("quickstart-code");
    if (!code) return;
    var origin = window.location.origin;
    code.textContent = [
      "import os",
      "from openai import OpenAI",
      "",
      "client = OpenAI(",
      "    base_url=" + JSON.stringify(origin + "/v1") + ",",
      "    api_key=os.environ[\"COCOON_API_KEY\"],  # ck_...",
      ")",
      "",
      "response = client.chat.completions.create(",
      "    model=" + JSON.stringify(quickstartModel()) + ",",
      "    messages=[{\"role\": \"user\", \"content\": \"Hello!\"}],",
      ")",
      "print(response.choices[0].message.content)",
    ].join("\n");
  }

  function everyWhileVisible(fn, ms) {
    var timer = null;
    function schedule() {
      window.clearTimeout(timer);
      timer = window.setTimeout(tick, ms);
    }
    function tick() {
      if (document.hidden) {
        schedule();
        return;
      }
      Promise.resolve(fn()).then(schedule, schedule);
    }
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) {
        window.clearTimeout(timer);
        tick();
      }
    });
    schedule();
  }

  function showFlash() {
    var text = takeFlash();
    if (text) showMessage("flash", text);
  }

  // ---------------------------------------------------------------- landing page

  function initLanding() {
    if (getKey()) {
      show("signed-in-note", true);
      show("nav-dashboard", true);
    }

    var registerButton = $("register-button");
    registerButton.addEventListener("click", function () {
      showMessage("register-error", "");
      registerButton.disabled = true;
      registerButton.textContent = "Creating…";
      api("/api/register", { method: "POST" }).then(function (account) {
        setKey(account.api_key);
        setText("new-key", account.api_key);
        setText("new-code", account.deposit_code);
        setText("new-wallet", account.deposit_wallet);
        setText("new-balance", formatTon(Math.round(Number(account.balance_ton) * NANO_PER_TON)));
        show("auth-panels", false);
        show("signed-in-note", false);
        show("flash", false);
        var panel = show("new-account", true);
        panel.focus();
        panel.scrollIntoView({ block: "start" });
      }).catch(report("register-error")).then(function () {
        registerButton.disabled = false;
        registerButton.textContent = "Create account";
      });
    });

    var stored = $("stored-confirm");
    var continueButton = $("continue-button");
    stored.addEventListener("change", function () { continueButton.disabled = !stored.checked; });
    continueButton.addEventListener("click", function () {
      setText("new-key", "");
      window.location.assign("/dashboard");
    });

    var form = $("login-form");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      showMessage("login-error", "");
      var input = $("login-key");
      var key = input.value.trim();
      if (!key) {
        showMessage("login-error", "Enter your API key (it starts with ck_).");
        input.focus();
        return;
      }
      var button = $("login-button");
      button.disabled = true;
      api("/api/login", { method: "POST", body: { api_key: key } }).then(function () {
        setKey(key);
        input.value = "";
        window.location.assign("/dashboard");
      }).catch(function (error) {
        showMessage("login-error", error.message);
        input.focus();
      }).then(function () {
        button.disabled = false;
      });
    });

    loadStats();
    loadModels();
    loadPricing();
    renderQuickstart();
    everyWhileVisible(loadStats, STATS_EVERY_MS);
  }

  // ---------------------------------------------------------------- dashboard

  var lastBalance = null;

  function updateLowBalance() {
    if (lastBalance === null || !pricing) return;
    var minimum = Math.round(Number(pricing.minimum_balance_ton) * NANO_PER_TON);
    var available = lastBalance.balance_nanoton - (lastBalance.reserved_nanoton || 0);
    showMessage("balance-low", available < minimum
      ? "Your balance is below the " + formatTon(minimum) + " TON needed for a request. Add funds to start."
      : "");
  }

  function loadBalance() {
    return api("/v1/balance", { auth: true }).then(function (balance) {
      var previous = lastBalance;
      lastBalance = balance;
      var node = setText("balance-ton", formatTon(balance.balance_nanoton));
      node.dataset.nanoton = String(balance.balance_nanoton);
      if (balance.balance_usd !== null && balance.balance_usd !== undefined && balance.ton_usd_rate) {
        setText("balance-usd", "≈ " + formatUsd(balance.balance_usd) + " at " + formatUsd(balance.ton_usd_rate) + " per TON");
        show("balance-usd", true);
      } else {
        show("balance-usd", false);
      }
      if (balance.reserved_nanoton) {
        setText("balance-reserved", formatTon(balance.reserved_nanoton) + " TON held for requests in progress.");
        show("balance-reserved", true);
      } else {
        show("balance-reserved", false);
      }
      setText("balance-updated", new Date().toLocaleTimeString());
      showMessage("balance-error", "");
      updateLowBalance();
      if (previous && previous.balance_nanoton !== balance.balance_nanoton) {
        if (balance.balance_nanoton > previous.balance_nanoton) {
          var added = formatTon(balance.balance_nanoton - previous.balance_nanoton);
          showMessage("flash", "Deposit received: +" + added + " TON.");
          announce("Deposit received: " + added + " TON");
        }
        loadUsage(true);
      }
    }).catch(report("balance-error"));
  }

  function loadDeposit() {
    return api("/v1/deposit", { auth: true }).then(function (deposit) {
      setText("deposit-wallet", deposit.wallet);
      setText("deposit-memo", deposit.memo);
      setText("deposit-instructions", deposit.instructions);
      var link = $("payment-link");
      // Only a TON transfer link may become a link target.
      if (typeof deposit.payment_link === "string" && /^ton:\/\/transfer\/[A-Za-z0-9_\-:]+(\?[^\s]*)?$/.test(deposit.payment_link)) {
        link.href = deposit.payment_link;
        link.hidden = false;
      } else {
        link.hidden = true;
      }
    }).catch(report("deposit-error"));
  }

  var usageBefore = null;
  var usageLoading = false;

  function loadUsage(reset) {
    if (usageLoading) return Promise.resolve();
    usageLoading = true;
    var params = new URLSearchParams({ limit: String(USAGE_PAGE) });
    if (!reset && usageBefore !== null) params.set("before", String(usageBefore));
    var more = $("usage-more");
    more.disabled = true;
    return api("/v1/usage?" + params.toString(), { auth: true }).then(function (page) {
      var body = $("usage-table").tBodies[0];
      if (reset) clearChildren(body);
      (page.data || []).forEach(function (row) { body.appendChild(usageRow(row)); });
      usageBefore = page.has_more ? page.next_before : null;
      show(more, Boolean(page.has_more));
      var empty = !body.rows.length;
      show("usage-empty", empty);
      $("usage-table").hidden = empty;
      renderTotals(page.totals || []);
      showMessage("usage-error", "");
    }).catch(report("usage-error")).then(function () {
      usageLoading = false;
      more.disabled = false;
    });
  }

  function usageRow(row) {
    var status = el("span", { className: "status", dataset: { status: row.status } }, row.status);
    var cost = el("td", { className: "num cost", title: formatInt(row.cost_nanoton) + " nanoTON" },
      formatTon(row.cost_nanoton));
    return el("tr", { dataset: { requestId: row.request_id } },
      el("td", { className: "nowrap" }, timeNode(row.created_at, true)),
      el("td", null, el("code", { className: "block" }, row.model),
        el("span", { className: "muted small" }, row.endpoint)),
      el("td", { className: "num" }, formatInt(row.prompt_tokens)),
      el("td", { className: "num" }, formatInt(row.cached_tokens)),
      el("td", { className: "num" }, formatInt(row.completion_tokens)),
      el("td", { className: "num" }, formatInt(row.reasoning_tokens)),
      cost,
      el("td", null, status, row.estimated ? el("span", { className: "muted small", title: "Token counts were estimated" }, " (estimated)") : null),
      el("td", { className: "num nowrap" }, formatDuration(row.duration_ms)));
  }

  function renderTotals(totals) {
    var body = $("totals-table").tBodies[0];
    clearChildren(body);
    totals.forEach(function (row) {
      body.appendChild(el("tr", null,
        el("td", { className: "nowrap" }, row.date),
        el("td", null, el("code", null, row.model)),
        el("td", { className: "num" }, formatInt(row.requests)),
        el("td", { className: "num" }, formatInt(row.prompt_tokens)),
        el("td", { className: "num" }, formatInt(row.cached_tokens)),
        el("td", { className: "num" }, formatInt(row.completion_tokens)),
        el("td", { className: "num" }, formatInt(row.reasoning_tokens)),
        el("td", { className: "num cost" }, formatTon(row.cost_nanoton))));
    });
    $("totals-table").hidden = !totals.length;
    var spent = 0;
    var requests = 0;
    totals.forEach(function (row) {
      spent += Number(row.cost_nanoton) || 0;
      requests += Number(row.requests) || 0;
    });
    showMessage("balance-spent", requests ? "Spent in the last 30 days: " + formatTon(spent) + " TON over "
      + formatInt(requests) + (requests === 1 ? " request." : " requests.") : "");
    show("totals-empty", !totals.length);
  }

  function isSessionKey(info) {
    var key = getKey();
    return Boolean(key && info.prefix && key.indexOf(info.prefix) === 0);
  }

  function loadKeys() {
    return api("/v1/keys", { auth: true }).then(function (list) {
      var body = $("keys-table").tBodies[0];
      clearChildren(body);
      (list.data || []).forEach(function (info) {
        var current = isSessionKey(info);
        var revoke = el("button", { type: "button", className: "small danger" }, "Revoke");
        revoke.setAttribute("aria-label", "Revoke key " + (info.name || info.prefix));
        revoke.addEventListener("click", function () { revokeKey(info, current, revoke); });
        body.appendChild(el("tr", { dataset: { keyId: String(info.id) } },
          el("td", null, info.name ? info.name : el("span", { className: "muted" }, "unnamed"),
            current ? el("span", { className: "badge small-badge" }, "this session") : null),
          el("td", null, el("code", null, info.prefix + "…")),
          el("td", { className: "nowrap" }, timeNode(info.created_at)),
          el("td", { className: "nowrap" }, timeNode(info.last_used_at)),
          el("td", { className: "actions" }, revoke)));
      });
    }).catch(report("key-error"));
  }

  function revokeKey(info, current, button) {
    var label = info.name ? "\"" + info.name + "\" (" + info.prefix + "…)" : info.prefix + "…";
    var question = "Revoke the key " + label + "? Anything using it stops working at once. This cannot be undone.";
    if (current) question += "\n\nThis is the key you are signed in with: you will be signed out.";
    if (!window.confirm(question)) return;
    button.disabled = true;
    showMessage("key-error", "");
    api("/v1/keys/" + encodeURIComponent(String(info.id)), { method: "DELETE", auth: true }).then(function () {
      if (current) {
        signOut("You revoked the key you were signed in with.");
        return;
      }
      announce("Key revoked");
      return loadKeys();
    }).catch(function (error) {
      button.disabled = false;
      report("key-error")(error);
    });
  }

  function initKeyForm() {
    var form = $("key-form");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var input = $("key-name");
      var name = input.value.trim();
      var button = $("key-create");
      button.disabled = true;
      showMessage("key-error", "");
      api("/v1/keys", { method: "POST", auth: true, body: { name: name || null } }).then(function (created) {
        input.value = "";
        setText("created-key-value", created.api_key);
        var panel = show("created-key", true);
        panel.focus();
        return loadKeys();
      }).catch(report("key-error")).then(function () {
        button.disabled = false;
      });
    });
    $("created-key-done").addEventListener("click", function () {
      setText("created-key-value", "");
      show("created-key", false);
      $("key-name").focus();
    });
  }

  function initDashboard() {
    if (!getKey()) {
      setFlash("Sign in with your API key to open the dashboard.");
      window.location.replace("/");
      return;
    }
    $("signout-button").addEventListener("click", function () { signOut("You have signed out."); });
    $("balance-refresh").addEventListener("click", loadBalance);
    $("usage-refresh").addEventListener("click", function () { loadUsage(true); });
    $("usage-more").addEventListener("click", function () { loadUsage(false); });
    initKeyForm();

    loadBalance();
    loadDeposit();
    loadUsage(true);
    loadKeys();
    loadPricing();
    loadStats();
    loadModels();
    renderQuickstart();
    everyWhileVisible(loadBalance, BALANCE_EVERY_MS);
    everyWhileVisible(loadStats, STATS_EVERY_MS);
  }

  // ---------------------------------------------------------------- start

  function start() {
    wireCopyButtons();
    showFlash();
    var page = document.body.dataset.page;
    if (page === "landing") initLanding();
    else if (page === "dashboard") initDashboard();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
}());
