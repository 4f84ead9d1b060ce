"""One front door: every route, the lean inference path (PlatformApp's fast door) and FastAPI's
alike, gets the cross-cutting concerns: an `x-request-id`, CORS for an allowed origin, the
security headers every API answer carries (`nosniff`, a cache policy), and the body-size limit
(413 in the error shape). The routes are read from the application, so a new one is covered
without touching this test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cocoon_platform.app import INFERENCE_PATHS, create_app
from cocoon_platform.config import Settings
from cocoon_platform.db.migrate import upgrade_head

ORIGIN = "https://app.example"
LIMIT = 4096


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('door') / 'door.db'}",
        cors_origins=ORIGIN,
        max_body_bytes=LIMIT,
        deposit_watcher=False,
        rates_enabled=False,
        upstream_url="http://127.0.0.1:9",
        stats_refresh_seconds=60,
        log_level="WARNING",
    )
    upgrade_head(settings)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def routes_of(routes: list[Any]) -> Iterator[tuple[set[str], str]]:
    """Each route's methods and path, through included routers (the app includes them unprefixed)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from routes_of(included.routes)
        elif getattr(route, "methods", None):
            yield set(route.methods), route.path


def every_route(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) for each route FastAPI serves and each inference path of the fast door."""
    app = client.app
    while not hasattr(app, "api"):  # the CORS middleware wraps the platform's front door
        app = app.app  # type: ignore[attr-defined]
    routes = {
        (method, path)
        for methods, path in routes_of(app.api.routes)  # type: ignore[attr-defined]
        for method in methods - {"HEAD", "OPTIONS"}
    }
    routes |= {("POST", path) for path in INFERENCE_PATHS}
    # Path parameters get a value that passes their checks (ids are positive integers).
    return sorted(
        (
            method,
            path.replace("{key_id}", "1")
            .replace("{model:path}", "Qwen/Qwen3-32B")
            .replace("{name:path}", "app.css")
            .replace("{path:path}", "x"),
        )
        for method, path in routes
    )


def check_common(answer_headers: dict[str, str], what: str) -> None:
    assert answer_headers.get("x-request-id"), f"{what}: no x-request-id"
    assert answer_headers.get("access-control-allow-origin") == ORIGIN, f"{what}: no CORS"
    assert answer_headers.get("x-content-type-options") == "nosniff", f"{what}: no nosniff"
    assert answer_headers.get("cache-control"), f"{what}: no cache policy"


def test_every_route_gets_the_common_headers(client: TestClient) -> None:
    routes = every_route(client)
    assert ("POST", "/v1/chat/completions") in routes and ("GET", "/health") in routes and len(routes) > 25
    for method, path in routes:
        answer = client.request(method, path, headers={"Origin": ORIGIN}, json={} if method != "GET" else None)
        check_common({k.lower(): v for k, v in answer.headers.items()}, f"{method} {path} ({answer.status_code})")


def test_every_route_refuses_a_body_over_the_limit(client: TestClient) -> None:
    for method, path in every_route(client):
        answer = client.request(
            method, path, headers={"Origin": ORIGIN, "Content-Type": "application/json"}, content=b" " * (LIMIT + 1)
        )
        what = f"{method} {path}"
        assert answer.status_code == 413, f"{what}: {answer.status_code} {answer.text[:200]}"
        body = answer.json()
        error = body.get("error", body)
        assert "exceeds" in str(error), f"{what}: {body}"
        check_common({k.lower(): v for k, v in answer.headers.items()}, what)


def test_count_tokens_refuses_in_anthropics_shape(client: TestClient) -> None:
    # It sits under /v1/messages: Anthropic's SDK reads only its own error shape there.
    too_large = client.post(
        "/v1/messages/count_tokens", content=b" " * (LIMIT + 1), headers={"Content-Type": "application/json"}
    )
    wrong_method = client.get("/v1/messages/count_tokens")
    for answer, status, kind in ((too_large, 413, "request_too_large"), (wrong_method, 405, "invalid_request_error")):
        assert answer.status_code == status
        body = answer.json()
        assert body["type"] == "error" and body["error"]["type"] == kind, body
