"""The web dashboard in a real browser (Debian's Chromium through Playwright) against real servers.

Each test runs on SQLite and on PostgreSQL like the rest of the suite. The browser is Debian's
`/usr/bin/chromium`; Playwright never downloads one. Balance polling is exercised with Playwright's
fake clock, so a 10-second refresh takes no wall time.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import zxingcpp
from conftest import ServerFactory
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect, sync_playwright
from support import Server, db_rows, fund, new_account, run_cli, start_simulator

from cocoon_simulator.toncenter import DEFAULT_WALLET

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
STATIC_DIR = Path(__file__).resolve().parent.parent / "src" / "cocoon_platform" / "dashboard" / "static"
SCREENSHOT = Path("/tmp/cocoon-dashboard.png")
QWEN = "Qwen/Qwen3-32B"
TON = 1_000_000_000
KEY_STORE = "cocoon.apiKey"
T = TypeVar("T")
TIMEOUT_MS = 10_000


def ton_text(nanoton: int) -> str:
    """nanoTON as the dashboard prints TON: exact, grouped, no trailing zeros."""
    amount = Decimal(nanoton) / TON
    whole, _, frac = f"{amount:f}".partition(".")
    text = f"{int(whole):,}"
    frac = frac.rstrip("0")
    return f"{text}.{frac}" if frac else text


def decode_qr(png: bytes) -> str:
    """The text of the one QR code in a screenshot, read by zxing-cpp."""
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert [r.format for r in found] == [zxingcpp.BarcodeFormat.QRCode], found
    return found[0].text


def ensure_chromium() -> None:
    """Debian's Chromium, installed with apt-get when it is missing and we are root; else skip."""
    if CHROMIUM.exists():
        return
    if not (shutil.which("apt-get") and os.geteuid() == 0):
        pytest.skip(
            f"Debian's Chromium ({CHROMIUM}) is missing and cannot be installed here "
            "(`apt-get install -y chromium` needs root); the dashboard tests drive that browser"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    outcome = ""
    for command in ("apt-get install -y -q chromium", "apt-get update -q && apt-get install -y -q chromium"):
        try:
            done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=600)
            lines = (done.stderr or done.stdout).strip().splitlines()
            outcome = lines[-1] if lines else f"exit status {done.returncode}"
        except (OSError, subprocess.SubprocessError) as exc:
            outcome = str(exc)
        if CHROMIUM.exists():
            return
    pytest.skip(
        f"Debian's Chromium ({CHROMIUM}) is missing and `apt-get install -y chromium` failed "
        f"({outcome or 'no output'}); the dashboard tests drive that browser"
    )


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A fresh Playwright and Chromium per test: Playwright's sync API keeps an asyncio loop running
    in this thread while it is started, which the session fixtures' asyncio.run (PostgreSQL
    databases) must not meet, so it lives no longer than one test."""
    ensure_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Tab:
    """One browser context and page, collecting the console errors a broken page would log."""

    def __init__(self, browser: Browser, server: Server, fake_clock: bool = False) -> None:
        self.server = server
        self.context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", self._console)
        # Offline: nothing the pages load or call may leave the platform's own origin.
        self.requests: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        # Every CSP violation on every page the tab opens, whether Chromium logs it or not.
        self.context.expose_function("reportCspViolation", lambda text: self.errors.append(f"CSP: {text}"))
        self.context.add_init_script("""
            document.addEventListener("securitypolicyviolation", (e) => {
                window.reportCspViolation(e.violatedDirective + " " + (e.blockedURI || "inline"));
            });
        """)
        if fake_clock:
            self.page.clock.install()

    def _console(self, message: ConsoleMessage) -> None:
        # A refused request (401 on a bad key, 503 with no network) is logged by Chromium itself.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def goto(self, path: str) -> Page:
        self.page.goto(self.server.url + path)
        return self.page

    def stored_key(self) -> str | None:
        return self.page.evaluate("k => window.sessionStorage.getItem(k)", KEY_STORE)  # type: ignore[no-any-return]

    def clipboard(self) -> str:
        return self.page.evaluate("() => navigator.clipboard.readText()")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors
        elsewhere = [url for url in self.requests if not url.startswith(self.server.url + "/")]
        assert self.requests and not elsewhere, elsewhere


@pytest.fixture
def tab(browser: Browser, platform: Server) -> Iterator[Tab]:
    t = Tab(browser, platform, fake_clock=True)
    yield t
    t.close()


def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run a helper that calls asyncio.run (the ledger ones) outside Playwright's event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_for_api(server: Server, key: str, balance: int, request_id: str | None = None) -> None:
    """Until the API itself shows the balance (and the request), so the page's next refresh will."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        body = httpx.get(server.url + "/v1/balance", headers=bearer(key), timeout=10).json()
        usage = httpx.get(server.url + "/v1/usage", headers=bearer(key), timeout=10).json()["data"]
        if body["balance_nanoton"] == balance and (
            request_id is None or any(r["request_id"] == request_id for r in usage)
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"the API never showed balance {balance} and request {request_id}")


def test_register_deposit_usage_keys_and_sign_out(tab: Tab, platform: Server, database_url: str) -> None:
    page = tab.goto("/")
    expect(page.locator("#continue-button")).to_be_hidden()
    page.get_by_role("button", name="Create account").click()

    # The key, once, with its warning and a copy button; the dashboard is one confirmation away.
    panel = page.locator("#new-account")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("Store it now: it won't be shown again.")
    key = page.locator("#new-key").inner_text()
    assert re.fullmatch(r"ck_[A-Za-z0-9_-]{40,}", key), key
    assert tab.stored_key() == key
    code = page.locator("#new-code").inner_text()
    assert re.fullmatch(r"[A-Z2-9]{8}", code), code
    wallet = page.locator("#new-wallet").inner_text()
    expect(page.locator("#new-balance")).to_have_text("0")
    page.get_by_role("button", name="Copy key").click()
    assert tab.clipboard() == key
    expect(page.locator("#continue-button")).to_be_disabled()
    page.get_by_label("I have stored my API key somewhere safe").check()
    page.get_by_role("button", name="Continue to dashboard").click()
    page.wait_for_url(platform.url + "/dashboard")

    # Balance 0 and the deposit instructions; the key itself is nowhere on the page or in its URL.
    expect(page.locator("#balance-ton")).to_have_text("0")
    expect(page.locator("#balance-low")).to_be_visible()
    expect(page.locator("#deposit-memo")).to_have_text(code)
    expect(page.locator("#deposit-wallet")).to_have_text(wallet)
    link = page.get_by_role("link", name="Open in a TON wallet")
    expect(link).to_have_attribute("href", f"ton://transfer/{wallet}?text={code}")
    # The QR code beside them, drawn by the platform, reads as that same link in a wallet's camera.
    qr = page.get_by_role("img", name=re.compile("QR code"))
    expect(qr).to_be_visible()
    page.wait_for_function("() => document.getElementById('deposit-qr').complete")
    assert decode_qr(qr.screenshot()) == f"ton://transfer/{wallet}?text={code}"
    expect(page.locator("#deposit-instructions")).to_contain_text(code)
    expect(page.locator("#usage-empty")).to_be_visible()
    assert key not in page.content() and key not in page.url
    assert page.evaluate("() => window.localStorage.length") == 0
    page.locator("#deposit").get_by_role("button", name="Copy").nth(1).click()
    assert tab.clipboard() == code
    snippet = page.locator("#quickstart-code").inner_text()
    assert f'base_url="{platform.url}/v1"' in snippet and f'model="{QWEN}"' in snippet and key not in snippet

    # A deposit shows up by itself on the next 10-second refresh.
    off_loop(fund, database_url, key, 3 * TON // 2)
    wait_for_api(platform, key, 3 * TON // 2)
    page.clock.fast_forward(11_000)
    expect(page.locator("#balance-ton")).to_have_text("1.5")
    expect(page.locator("#flash")).to_have_text("Deposit received: +1.5 TON.")
    expect(page.locator("#balance-low")).to_be_hidden()

    # An inference through the API: the refresh after the balance moves brings its usage row and cost.
    response = httpx.post(
        platform.url + "/v1/chat/completions",
        headers=bearer(key),
        timeout=30,
        json={
            "model": QWEN,
            "max_tokens": 24,
            "messages": [{"role": "user", "content": "Hello from the dashboard test"}],
        },
    )
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    cost = response.json()["usage"]["cost_nanoton"]
    assert cost > 0
    wait_for_api(platform, key, 3 * TON // 2 - cost, request_id)
    page.clock.fast_forward(11_000)
    expect(page.locator("#balance-ton")).to_have_text(ton_text(3 * TON // 2 - cost))
    row = page.locator(f'#usage-table tr[data-request-id="{request_id}"]')
    expect(row).to_be_visible()
    expect(row.locator("td.cost")).to_have_text(ton_text(cost))
    expect(row).to_contain_text(QWEN)
    expect(row).to_contain_text("ok")
    totals = page.locator("#totals-table tbody tr")
    expect(totals).to_have_count(1)
    expect(totals.first.locator("td").nth(2)).to_have_text("1")
    expect(totals.first.locator("td.cost")).to_have_text(ton_text(cost))
    expect(page.locator("#balance-spent")).to_have_text(
        f"Spent in the last 30 days: {ton_text(cost)} TON over 1 request."
    )
    # The spend chart: a picture named for what it shows, one bar for today's one model.
    chart = page.get_by_role("img", name=re.compile("spend per day", re.I))
    expect(chart).to_be_visible()
    expect(chart).to_have_attribute("aria-label", re.compile(re.escape(f": {ton_text(cost)} TON in all over {QWEN}.")))
    bar = chart.locator("rect.bar")
    expect(bar).to_have_count(1)
    expect(bar).to_have_attribute("data-model", QWEN)
    expect(bar).to_have_attribute("data-nanoton", str(cost))
    expect(page.locator("#spend-legend li")).to_have_text([QWEN])

    # A named key (the name is text, never markup), listed, then revoked after a confirmation.
    name = '<img src=x onerror="window.pwned=1"> laptop'
    page.get_by_placeholder("Name, e.g. laptop (optional)").fill(name)
    page.get_by_role("button", name="Create key").click()
    created = page.locator("#created-key")
    expect(created).to_be_visible()
    expect(created).to_contain_text("Store it now: it won't be shown again.")
    second = page.locator("#created-key-value").inner_text()
    assert second.startswith("ck_") and second != key
    assert httpx.get(platform.url + "/v1/balance", headers=bearer(second), timeout=10).status_code == 200
    rows = page.locator("#keys-table tbody tr")
    expect(rows).to_have_count(2)
    named = rows.filter(has_text="laptop")
    expect(named.locator("td").first).to_have_text(name)
    expect(named).to_contain_text(second[:9] + "…")
    expect(rows.filter(has_text="this session")).to_contain_text(key[:9] + "…")
    assert page.locator("#keys-table img").count() == 0 and page.evaluate("() => window.pwned") is None
    page.get_by_role("button", name="I have stored it").click()
    expect(created).to_be_hidden()
    assert second not in page.content()

    page.once("dialog", lambda dialog: dialog.dismiss())
    named.get_by_role("button", name="Revoke").click()
    expect(rows).to_have_count(2)
    messages: list[str] = []

    def accept(dialog: object) -> None:
        messages.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()  # type: ignore[attr-defined]

    page.once("dialog", accept)
    named.get_by_role("button", name="Revoke").click()
    expect(rows).to_have_count(1)
    assert "laptop" in messages[0] and "cannot be undone" in messages[0]
    assert httpx.get(platform.url + "/v1/balance", headers=bearer(second), timeout=10).status_code == 401

    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Signing out forgets the key in this tab and lands on the public page.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(platform.url + "/")
    expect(page.locator("#flash")).to_have_text("You have signed out.")
    assert tab.stored_key() is None and page.evaluate("() => window.sessionStorage.length") == 0
    tab.goto("/dashboard")
    page.wait_for_url(platform.url + "/")
    expect(page.locator("#flash")).to_contain_text("Sign in with your API key")


def test_sign_in_bad_key_good_key_and_revoked_key(tab: Tab, platform: Server, database_url: str) -> None:
    key = off_loop(new_account, platform, database_url, 2 * TON)
    page = tab.goto("/")
    field = page.get_by_label("API key", exact=True)
    expect(field).to_have_attribute("type", "password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("Enter your API key")
    field.fill("ck_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_have_text("Invalid API key")
    assert tab.stored_key() is None and page.url == platform.url + "/"

    field.fill(f"  {key}  ")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(platform.url + "/dashboard")
    assert tab.stored_key() == key
    expect(page.locator("#balance-ton")).to_have_text("2")
    expect(page.locator("#keys-table tbody tr")).to_have_count(1)

    # The stored key stops working elsewhere: the next refresh signs the tab out with a message.
    keys = httpx.get(platform.url + "/v1/keys", headers=bearer(key), timeout=10).json()["data"]
    assert httpx.delete(f"{platform.url}/v1/keys/{keys[0]['id']}", headers=bearer(key), timeout=10).status_code == 204
    page.clock.fast_forward(11_000)
    page.wait_for_url(platform.url + "/")
    expect(page.locator("#flash")).to_contain_text("You have been signed out: Invalid API key")
    assert tab.stored_key() is None


def sign_in(tab: Tab, key: str) -> Page:
    """Open the dashboard signed in with `key`, as the sign-in form leaves the tab."""
    page = tab.goto("/")
    page.evaluate("([k, v]) => window.sessionStorage.setItem(k, v)", [KEY_STORE, key])
    tab.goto("/dashboard")
    expect(page.locator("#balance-ton")).not_to_have_text("…")
    return page


def test_playground_streams_an_answer_and_shows_its_cost(tab: Tab, platform: Server, database_url: str) -> None:
    key = off_loop(new_account, platform, database_url, 2 * TON)
    page = sign_in(tab, key)
    # The tab's CSP watch works: a style attribute set by script is refused, and reported.
    page.evaluate("() => document.body.setAttribute('style', 'outline: 1px solid red')")
    for _ in range(100):
        if any("CSP: style-src" in error for error in tab.errors):
            break
        page.wait_for_timeout(50)
    assert any("CSP: style-src" in error for error in tab.errors), tab.errors
    tab.errors.clear()

    # On a phone-sized screen nothing is wider than the screen (tables scroll inside their cards).
    page.set_viewport_size({"width": 360, "height": 740})
    expect(page.get_by_role("img", name=re.compile("QR code"))).to_be_visible()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    overflowing = page.evaluate("""() => [...document.querySelectorAll(".card")]
        .filter(card => card.scrollWidth > card.clientWidth + 1).map(card => card.id)""")
    assert overflowing == [], overflowing

    playground = page.locator("#playground")
    playground.get_by_label("Model").select_option(QWEN)
    playground.get_by_label("Message", exact=True).fill("Hello from the playground")
    # Count the pieces of the answer as they land: a streamed answer arrives in several.
    page.evaluate("""() => {
        window.answerPieces = 0;
        new MutationObserver(m => { window.answerPieces += m.length; })
            .observe(document.getElementById("playground-answer-text"), {childList: true});
    }""")
    with page.expect_response(lambda r: r.url.endswith("/v1/chat/completions")) as answer:
        playground.get_by_role("button", name="Send").click()
    assert answer.value.headers["content-type"].startswith("text/event-stream")
    shown = playground.locator("#playground-usage")
    expect(shown).to_contain_text("Cost: ")
    match = re.search(r"\(request (\S+)\)\.$", shown.inner_text())
    assert match, shown.inner_text()
    usage = httpx.get(platform.url + "/v1/usage", headers=bearer(key), timeout=10).json()["data"]
    record = next(r for r in usage if r["request_id"] == match.group(1))
    assert record["status"] == "ok" and record["cost_nanoton"] > 0
    expect(shown).to_contain_text(f"{record['prompt_tokens']} prompt, {record['completion_tokens']} completion")
    expect(shown).to_contain_text(f"Cost: {ton_text(record['cost_nanoton'])} TON")
    assert playground.locator("#playground-answer-text").inner_text().strip()
    assert page.evaluate("() => window.answerPieces") > 1
    # The balance and the usage table follow at once.
    expect(page.locator("#balance-ton")).to_have_text(ton_text(2 * TON - record["cost_nanoton"]))
    expect(page.locator(f'#usage-table tr[data-request-id="{match.group(1)}"]')).to_be_visible()

    # The usage as a CSV file, fetched with the key and handed over as a download.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert "request_id" in lines[0] and any(line.startswith(match.group(1) + ",") for line in lines[1:]), lines[:3]


def test_capped_key_reaches_its_limit_and_cannot_manage_keys(tab: Tab, platform: Server, database_url: str) -> None:
    key = off_loop(new_account, platform, database_url, 2 * TON)
    page = sign_in(tab, key)
    form = page.locator("#key-form")
    form.get_by_placeholder("Name, e.g. laptop (optional)").fill("capped")
    form.get_by_text("Restrictions (optional)").click()
    form.get_by_label("Spending limit (TON)").fill("0.0001")
    form.get_by_label("Limit starts over").select_option("daily")
    form.get_by_label(QWEN).check()
    form.get_by_role("button", name="Create key").click()
    expect(page.locator("#created-key")).to_be_visible()
    capped = page.locator("#created-key-value").inner_text()
    assert capped.startswith("ck_")
    mine = httpx.get(platform.url + "/v1/keys", headers=bearer(capped), timeout=10).json()
    info = next(k for k in mine["data"] if k["id"] == mine["current_key_id"])
    assert (info["name"], info["credit_limit_nanoton"], info["limit_reset"], info["models"], info["restricted"]) == (
        "capped",
        100_000,
        "daily",
        [QWEN],
        True,
    )

    # Spend it: requests pass until the next one's worst case would cross the limit.
    answers = []
    for _ in range(40):
        answer = httpx.post(
            platform.url + "/v1/chat/completions",
            headers=bearer(capped),
            timeout=30,
            json={"model": QWEN, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]},
        )
        answers.append(answer)
        if answer.status_code != 200:
            break
    assert len(answers) > 1 and answers[-1].status_code == 402, [a.status_code for a in answers]
    assert answers[-1].json()["error"]["code"] == "key_limit_reached"
    spent = sum(a.json()["usage"]["cost_nanoton"] for a in answers[:-1])

    # The dashboard shows the key's spend against its limit, and changes the limit.
    tab.goto("/dashboard")
    row = page.locator("#keys-table tbody tr").filter(has_text="capped")
    expect(row.locator("td.spend .spent")).to_have_text(f"{ton_text(spent)} of 0.0001 TON today")
    expect(row).to_contain_text(QWEN)

    # The usage narrowed to one key: its requests, and the chart says whose they are.
    capped_usage = httpx.get(
        platform.url + "/v1/usage", params={"key_id": info["id"], "limit": 20}, headers=bearer(capped), timeout=10
    ).json()["data"]
    page.get_by_label("Show the usage of").select_option(str(info["id"]))
    expect(page.locator("#usage-table tbody tr")).to_have_count(len(capped_usage))
    expect(page.locator("#usage-table tbody tr").first).to_have_attribute(
        "data-request-id", capped_usage[0]["request_id"]
    )
    expect(page.get_by_role("img", name=re.compile("spend per day", re.I))).to_have_attribute(
        "aria-label", re.compile(f"^Spend per day by model of key capped .*: {re.escape(ton_text(spent))} TON in all")
    )
    unused = next(k["id"] for k in mine["data"] if k["id"] != info["id"])  # the key this tab signed in with
    page.get_by_label("Show the usage of").select_option(str(unused))
    expect(page.locator("#usage-empty")).to_be_visible()
    page.get_by_label("Show the usage of").select_option("")
    expect(page.locator("#usage-table tbody tr")).to_have_count(len(capped_usage))

    expect(page.locator("#threshold-restricted")).to_be_hidden()  # signed in with the unrestricted key
    expect(page.get_by_label("Warn me when the balance is below (TON)")).to_be_enabled()
    row.get_by_role("button", name="Change key capped").click()
    dialog = page.get_by_role("dialog", name=re.compile("Change key"))
    expect(dialog.get_by_label("Spending limit (TON)")).to_have_value("0.0001")
    expect(dialog.get_by_label(QWEN)).to_be_checked()
    dialog.get_by_label("Spending limit (TON)").fill("1")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(row.locator("td.spend .spent")).to_have_text(f"{ton_text(spent)} of 1 TON today")
    mine = httpx.get(platform.url + "/v1/keys", headers=bearer(capped), timeout=10).json()
    info = next(k for k in mine["data"] if k["id"] == mine["current_key_id"])
    assert (info["credit_limit_nanoton"], info["limit_reset"], info["models"]) == (TON, "daily", [QWEN])

    # Signed in with the capped key, the page says it can't manage keys, and offers no way to.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(platform.url + "/")
    page = sign_in(tab, capped)
    expect(page.locator("#keys-restricted")).to_be_visible()
    expect(page.locator("#keys-restricted")).to_contain_text("can't create, change or revoke keys")
    expect(page.get_by_role("button", name="Create key")).to_be_disabled()
    expect(page.locator("#keys-table tbody tr")).to_have_count(2)
    expect(page.get_by_role("button", name=re.compile("^(Revoke|Change) key"))).to_have_count(0)
    # Its playground offers only the model it may use.
    expect(page.locator("#playground").get_by_label("Model").locator("option")).to_have_text([QWEN])
    # Nor may it change the account's settings: the threshold shows, with why it can't be changed.
    expect(page.locator("#threshold-restricted")).to_be_visible()
    expect(page.locator("#threshold-restricted")).to_contain_text("can't change the account's settings")
    expect(page.get_by_label("Warn me when the balance is below (TON)")).to_be_disabled()
    expect(page.locator("#threshold-form").get_by_role("button", name="Save")).to_be_disabled()


def test_a_capped_charge_shows_what_was_left_uncharged(tab: Tab, platform: Server, database_url: str) -> None:
    """The network reports far more than the request's worst case; the account, below the
    overdraft's minimum, pays its whole balance, and its usage row says what was not charged."""
    key = off_loop(new_account, platform, database_url, TON // 50)
    answer = httpx.post(
        platform.url + "/v1/chat/completions",
        headers=bearer(key),
        timeout=30,
        json={
            "model": QWEN,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "[[sim:tokens=40]] [[sim:overcount=100000]] count"}],
        },
    )
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    wait_for_api(platform, key, 0, request_id)
    (record,) = httpx.get(platform.url + "/v1/usage", headers=bearer(key), timeout=10).json()["data"]
    assert record["cost_nanoton"] == TON // 50 and record["capped_nanoton"] > 0
    page = sign_in(tab, key)
    cost = page.locator(f'#usage-table tr[data-request-id="{request_id}"] td.cost')
    expect(cost).to_have_text(f"{ton_text(TON // 50)}+{ton_text(record['capped_nanoton'])} uncharged")
    expect(cost.locator("span")).to_have_attribute("title", re.compile(f"^{record['capped_nanoton']:,} nanoTON not"))


def wait_for_deposit(server: Server, key: str, status: str) -> str:
    """Until /v1/deposits lists one deposit with this status; its transaction hash."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        listed = httpx.get(server.url + "/v1/deposits", headers=bearer(key), timeout=10).json()["data"]
        if [d["status"] for d in listed] == [status]:
            return str(listed[0]["tx_hash"])
        time.sleep(0.1)
    raise AssertionError(f"/v1/deposits never listed one {status} deposit")


def test_deposit_through_the_simulator_raises_the_balance(
    browser: Browser, server_factory: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    sim = start_simulator(tmp_path)
    try:
        # A fresh fake chain starts its lts again; a cursor left by an earlier one would skip them.
        assert run_cli(["migrate"], database_url).returncode == 0
        off_loop(db_rows, database_url, "DELETE FROM watcher_cursors")
        server = server_factory(
            upstream_url=sim.url,
            deposit_watcher="true",
            toncenter_url=sim.url,
            deposit_wallet=DEFAULT_WALLET,
            deposit_poll_seconds="0.3",
        )
        key = off_loop(new_account, server, database_url)
        tab = Tab(browser, server, fake_clock=True)
        try:
            page = sign_in(tab, key)
            expect(page.locator("#balance-ton")).to_have_text("0")
            expect(page.locator("#deposits-empty")).to_be_visible()
            # The code the user copies: the page fills it in after it loads, so wait for the real one.
            code = httpx.get(server.url + "/v1/deposit", headers=bearer(key), timeout=10).json()["memo"]
            expect(page.locator("#deposit-memo")).to_have_text(code)
            # Seen on the chain but not final: listed as pending, not in the balance yet.
            sent = run_cli(
                ["simulate", "deposit", "--code", code, "--amount-ton", "1.25", "--url", sim.url, "--pending"],
                database_url,
            )
            assert sent.returncode == 0, sent.stderr
            tx_hash = wait_for_deposit(server, key, "pending")
            page.clock.fast_forward(31_000)
            row = page.locator(f'#deposits-table tr[data-tx-hash="{tx_hash}"]')
            expect(row).to_have_attribute("data-status", "pending")
            expect(row.locator("td.amount")).to_have_text("1.25")
            expect(page.locator("#balance-ton")).to_have_text("0")

            # Final: credited, and the page shows it with the balance on its next refresh.
            httpx.post(sim.url + "/_ton/finalise", timeout=10).raise_for_status()
            wait_for_api(server, key, 1_250_000_000)
            page.clock.fast_forward(11_000)
            expect(page.locator("#balance-ton")).to_have_text("1.25")
            expect(page.locator("#flash")).to_have_text("Deposit received: +1.25 TON.")
            expect(row).to_have_attribute("data-status", "credited")
            expect(page.locator("#deposits-table tbody tr")).to_have_count(1)
            expect(row.get_by_role("link")).to_have_attribute("href", re.compile(f"^https://.*{tx_hash}"))

            # The account's own low-balance warning: set above the balance, then removed.
            expect(page.locator("#low-balance-banner")).to_be_hidden()
            page.get_by_label("Warn me when the balance is below (TON)").fill("2")
            page.locator("#threshold-form").get_by_role("button", name="Save").click()
            expect(page.locator("#low-balance-banner")).to_contain_text("below the 2 TON you asked to be warned at")
            balance = httpx.get(server.url + "/v1/balance", headers=bearer(key), timeout=10).json()
            assert (balance["low_balance"], balance["low_balance_threshold_nanoton"]) == (True, 2 * TON)
            page.get_by_label("Warn me when the balance is below (TON)").fill("")
            page.locator("#threshold-form").get_by_role("button", name="Save").click()
            expect(page.locator("#low-balance-banner")).to_be_hidden()
            balance = httpx.get(server.url + "/v1/balance", headers=bearer(key), timeout=10).json()
            assert (balance["low_balance"], balance["low_balance_threshold_nanoton"]) == (False, None)
        finally:
            tab.close()
    finally:
        sim.stop()


def test_public_network_status_models_pricing(tab: Tab, platform: Server) -> None:
    page = tab.goto("/")
    expect(page.locator("#network-status")).to_have_text("Online")
    stats = page.locator("#stats-table tbody tr").filter(has_text=QWEN)
    expect(stats).to_have_count(1)
    expect(stats.locator("meter")).to_have_count(1)
    # One row a model, its alias (listed apart by /v1/models) beside its id.
    expect(page.locator("#models-table tbody tr")).to_have_count(2)
    expect(page.locator("#models-table tbody tr").filter(has_text=QWEN)).to_contain_text("chat")
    expect(page.locator("#models-table tbody tr").filter(has_text=QWEN)).to_contain_text("alias qwen3-32b")
    expected = {
        "prompt_token": ("30", "0.03"),
        "cached_prompt_token": ("3", "0.003"),
        "completion_token": ("240", "0.24"),
        "reasoning_token": ("240", "0.24"),
    }
    for rate, (per_token, per_million) in expected.items():
        row = page.locator(f'#pricing-table tr[data-rate="{rate}"]')
        expect(row.locator("td.nanoton")).to_have_text(per_token)
        expect(row.locator("td.per-million")).to_have_text(per_million)
    expect(page.locator("#pricing-notes")).to_contain_text("×1.5")
    expect(page.locator("#pricing-notes")).to_contain_text("at least 0.01 TON")
    expect(page.locator("#quickstart-code")).to_contain_text(f'base_url="{platform.url}/v1"')


def test_network_unreachable_is_explained(browser: Browser, server_factory: ServerFactory) -> None:
    server = server_factory(upstream_url="http://127.0.0.1:9", stats_refresh_seconds="30")
    tab = Tab(browser, server)
    try:
        page = tab.goto("/")
        expect(page.locator("#network-status")).to_have_text("Offline")
        expect(page.locator("#stats-message")).to_contain_text("No models are being served")
        expect(page.locator("#models-message")).to_contain_text("temporarily unavailable", timeout=15_000)
        expect(page.locator("#models-table")).to_be_hidden()
        expect(page.locator('#pricing-table tr[data-rate="prompt_token"] td.nanoton')).to_have_text("30")
        expect(page.locator("#pricing-notes")).to_contain_text("default prices")
        expect(page.locator("#quickstart-code")).to_contain_text('model="MODEL_ID"')
    finally:
        tab.close()


def test_pages_and_static_files_headers(platform: Server) -> None:
    with platform.client() as client:
        for path in ("/", "/dashboard"):
            page = client.get(path)
            assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
            csp = page.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert page.headers["x-content-type-options"] == "nosniff" and page.headers["cache-control"] == "no-cache"
            # No inline script or style: every <script> has a src, no style attributes or blocks.
            assert not re.search(r"<script(?![^>]*\bsrc=)", page.text) and not re.search(r"\sstyle=|<style", page.text)
            assert client.get(path, headers={"If-None-Match": page.headers["etag"]}).status_code == 304
            head = client.head(path)
            assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == page.headers["etag"]
            assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
            assert {a.split("?")[0] for a in assets} >= {"/static/app.js", "/static/app.css", "/static/favicon.svg"}

        for asset, content_type in (
            ("app.js", "text/javascript; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
        ):
            url = next(a for a in assets if a.startswith(f"/static/{asset}?v="))
            versioned = client.get(url)
            assert versioned.status_code == 200 and versioned.headers["content-type"] == content_type
            assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
            # A module's relative imports are served versioned; everything else as it is on disk.
            unversioned = re.sub(rb"\?v=[0-9a-f]{16}", b"", versioned.content)
            assert unversioned == (STATIC_DIR / asset).read_bytes()
            assert client.get(f"/static/{asset}").headers["cache-control"] == "no-cache"
            assert client.get(url, headers={"If-None-Match": versioned.headers["etag"]}).status_code == 304

        # Every module the entry imports, directly or not, is preloaded by the page at its version.
        preloaded = set(re.findall(r'<link rel="modulepreload" href="(/static/js/[^"]+)"', page.text))
        pending, reached = [next(a for a in assets if a.startswith("/static/app.js?v="))], set()
        while pending:
            module = client.get(pending.pop())
            assert module.status_code == 200
            imports = re.findall(r'from "\./(?:js/)?([a-z-]+\.js\?v=[0-9a-f]{16})"', module.text)
            assert imports or not re.search(r"^import ", module.text, re.M)
            for name in imports:
                if f"/static/js/{name}" not in reached:
                    reached.add(f"/static/js/{name}")
                    pending.append(f"/static/js/{name}")
        assert reached == preloaded and len(reached) == len(list((STATIC_DIR / "js").glob("*.js")))
        qr = client.get("/dashboard/deposit-qr.svg", params={"code": "ABCD2345"})
        assert qr.status_code == 200 and qr.headers["content-type"] == "image/svg+xml"
        assert qr.headers["content-security-policy"] == "default-src 'none'" and b"<script" not in qr.content
        for bad in ("", "abcd2345", "ABCD234", "ABCD23450", "ABCD234I", "ABCD 234"):
            refused = client.get("/dashboard/deposit-qr.svg", params={"code": bad})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "code", bad
        missing = client.get("/static/nope.js")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
        assert client.get("/static/..%2Fendpoints.py").status_code == 404
        paths = client.get("/openapi.json").json()["paths"]
        assert "/" not in paths and "/dashboard" not in paths and not any(p.startswith("/static") for p in paths)


def test_script_never_renders_markup_or_persists_the_key() -> None:
    modules = sorted(STATIC_DIR.rglob("*.js"))
    assert len(modules) > 5
    for module in modules:
        source = module.read_text()
        script = re.sub(r"^\s*//.*$", "", re.sub(r"/\*.*?\*/", "", source, flags=re.S), flags=re.M)
        for forbidden in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "localStorage",
            "eval(",
            "new Function",
            "import(",
        ):
            assert forbidden not in script, (module.name, forbidden)
