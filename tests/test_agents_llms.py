"""/llms.txt and the Markdown pages it links to, against a running platform and simulator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from support import Server, start_server, start_simulator

from cocoon_platform.agents.tools import build_server

LINK = re.compile(r"^- \[([^\]]+)\]\(([^)]+)\)(?::\s*(.*))?$", re.MULTILINE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """What llms.txt says depends on the routes, prices and settings, not on the database: SQLite."""
    tmp: Path = tmp_path_factory.mktemp("llms")
    simulator = start_simulator(tmp)
    platform = start_server(
        tmp,
        f"sqlite+aiosqlite:///{tmp}/cocoon.db",
        {
            "COCOON_UPSTREAM_URL": simulator.url,
            "COCOON_RATE_LIMIT_RPM": "120",
            "COCOON_MAX_TOKENS_CAP": "32000",
            "COCOON_TRUSTED_PROXIES": "127.0.0.1/32",
        },
    )
    try:
        platform.client().get("/v1/models").raise_for_status()  # the live model list is known
        yield platform
    finally:
        platform.stop()
        simulator.stop()


def test_llms_txt_is_in_the_llmstxt_format(server: Server) -> None:
    answer = server.client().get("/llms.txt")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/markdown")
    lines = answer.text.splitlines()
    assert lines[0] == "# Cocoon Platform"
    assert lines[2].startswith("> ") and "TON" in lines[2]
    head, _, sections = answer.text.partition("\n## ")
    assert not re.search(r"^#{1,6} ", head.split("\n", 1)[1], re.MULTILINE), (
        "only the title is a heading before the sections"
    )
    titles = re.findall(r"^## (.+)$", answer.text, re.MULTILINE)
    assert titles == ["Docs", "API", "Optional"]
    for section in ("## " + sections).split("\n## ")[1:]:
        body = [line for line in section.splitlines()[1:] if line.strip()]
        assert body and all(LINK.match(line) for line in body), section


def test_llms_txt_names_every_operation_of_the_openapi_document(server: Server) -> None:
    client = server.client()
    openapi = client.get("/openapi.json").json()
    text = client.get("/llms.txt").text
    api = text.split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    listed = {m.group(1) for m in LINK.finditer(api)}
    published = {
        f"{method.upper()} {path}"
        for path, item in openapi["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert listed == published
    assert {path for path in openapi["paths"]} <= {name.split(" ", 1)[1] for name in listed}
    for match in LINK.finditer(api):  # each summary is the document's
        method, path = match.group(1).split(" ", 1)
        assert match.group(3) == openapi["paths"][path][method.lower()]["summary"]


def test_llms_txt_prices_and_limits_are_the_live_ones(server: Server) -> None:
    client = server.client()
    rates = client.get("/v1/pricing").json()["rates"]
    text = client.get("/llms.txt").text
    for label, name in (
        ("prompt token", "prompt_token"),
        ("cached prompt token", "cached_prompt_token"),
        ("completion token", "completion_token"),
        ("reasoning token", "reasoning_token"),
    ):
        shown = re.search(rf"^- {label}: (\d+) nanoTON", text, re.MULTILINE)
        assert shown is not None, label
        assert int(shown.group(1)) == rates[name]["effective_nanoton"]
    assert "prices live" in text  # read from the simulated COCOON client, not the defaults
    assert "120 requests a minute per key" in text
    assert "at most 32000" in text
    assert "`POST /v1/keys`): no limit." in text  # the tests' servers turn the sign-up limit off
    models = client.get("/v1/models").json()["data"]
    for model in models:  # each model by its id, and its alias beside it
        line = re.search(rf"^- .*`{re.escape(model['id'])}`.*$", text, re.MULTILINE)
        assert line is not None and f": {model['type']}, `POST {model['endpoint']}`" in line.group(0)
    assert any("/" not in model["id"] for model in models)


def test_every_link_resolves_and_every_anchor_exists(server: Server) -> None:
    client = server.client()
    text = client.get("/llms.txt").text
    links = [m.group(2) for m in LINK.finditer(text)]
    assert links and all(link.startswith(server.url + "/") for link in links)
    pages: dict[str, str] = {}
    for link in links:
        url, _, fragment = link.partition("#")
        if url not in pages:
            answer = httpx.get(url, timeout=30)
            assert answer.status_code == 200, url
            pages[url] = answer.text
        if fragment:
            assert f'<a id="{fragment}"></a>' in pages[url], link


def test_markdown_pages(server: Server) -> None:
    client = server.client()
    reference = client.get("/docs.md").text
    openapi = client.get("/openapi.json").json()
    assert reference.startswith("# Cocoon Platform API reference")
    for path, item in openapi["paths"].items():
        for method in item:
            assert f"### {method.upper()} {path}\n" in reference
    assert "- `messages` (array of object, required)" in reference
    assert "- `limit` (query, integer)" in reference
    overview = client.get("/index.html.md").text
    assert overview.startswith("# Cocoon Platform\n") and "## Quick start" in overview
    assert f'base_url="{server.url}/v1"' in overview
    full = client.get("/llms-full.txt").text
    assert full.startswith("# Cocoon Platform\n")
    assert "# Cocoon Platform API reference" in full and "## Quick start" in full
    guide = client.get("/docs/mcp.md").text
    assert guide.startswith("# Cocoon Platform over MCP") and f'"url": "{server.url}/mcp"' in guide
    assert "{base_url}" not in guide and guide.rstrip() in full
    documented = re.findall(r"^\| `(\w+)` \|", guide, re.MULTILINE)
    served = anyio.run(build_server(lambda _: pytest.fail("no tool is called")).list_tools)
    assert sorted(documented) == sorted(tool.name for tool in served)  # every tool, and no other


def test_links_follow_the_scheme_a_trusted_proxy_forwards(server: Server, tmp_path: Path) -> None:
    forwarded = {"X-Forwarded-Proto": "https"}
    text = server.client().get("/llms.txt", headers=forwarded).text  # this server trusts its loopback peers
    assert f"https://127.0.0.1:{server.port}/docs.md" in text and "http://" not in text
    untrusting = start_server(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path}/cocoon.db", {"COCOON_TRUSTED_PROXIES": "10.0.0.0/8"}
    )
    try:
        text = untrusting.client().get("/llms.txt", headers=forwarded).text
        assert f"http://127.0.0.1:{untrusting.port}/docs.md" in text and "https://" not in text
    finally:
        untrusting.stop()
