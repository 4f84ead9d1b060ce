"""/docs (#14 item 10, ruling 9 of #23): Swagger UI from files shipped in a package, working
offline in Chromium, under a policy of its own (scripts from this origin only); the dashboard
keeps its stricter one."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, expect
from support import Server
from test_dashboard import Tab, browser  # noqa: F401 (the fixture)


def test_docs_work_offline_with_no_script_from_elsewhere(browser: Browser, platform: Server) -> None:  # noqa: F811
    """Seen: /docs loaded Swagger UI from a CDN without an integrity hash, and failed offline."""
    tab = Tab(browser, platform)
    # Offline: anything not on the platform's own origin fails, as on a machine without a network.
    tab.context.route(
        "**/*", lambda route: route.continue_() if route.request.url.startswith(platform.url + "/") else route.abort()
    )
    page = tab.goto("/docs")
    expect(page.locator(".opblock-summary-path", has_text="/v1/chat/completions").first).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("Cocoon Platform API")
    tab.close()  # no console error, no CSP violation, no request elsewhere


def test_docs_policy_is_its_own_and_the_dashboards_stays_strict(platform: Server) -> None:
    docs = httpx.get(platform.url + "/docs")
    policy = docs.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self' 'unsafe-inline'" in policy
    assert "unsafe-eval" not in policy and "cdn" not in docs.text
    for src in ("swagger-ui-bundle.js", "swagger-ui.css", "start.js"):
        assert f"/docs/static/{src}?v=" in docs.text
        asset = httpx.get(platform.url + f"/docs/static/{src}")
        assert asset.status_code == 200 and asset.headers["x-content-type-options"] == "nosniff"
    assert "unsafe-inline" not in httpx.get(platform.url + "/").headers["content-security-policy"]
    assert httpx.get(platform.url + "/redoc").status_code == 404, "no CDN-loaded ReDoc either"
