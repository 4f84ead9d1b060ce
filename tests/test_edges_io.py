"""Input and output at the edges (#14 items 7, 8, 11): a `model` can't forge or flood the log,
out-of-range integers are a 4xx, secret-bearing answers are never cached, JSON is never
sniffed, and the server doesn't announce itself."""

from __future__ import annotations

import logging

import httpx
from conftest import ServerFactory
from support import Server, Simulator, new_account

from cocoon_platform.ops.request_log import TextFormatter

QWEN = "Qwen/Qwen3-32B"
TON = 1_000_000_000


def chat(server: Server, key: str, model: str) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )


def test_a_model_name_cannot_forge_or_flood_the_log(
    server_factory: ServerFactory, simulator: Simulator, database_url: str
) -> None:
    """Seen: a model with a newline forged an ERROR line; a 4 MB model grew the log by 4 MB."""
    server = server_factory(upstream_url=simulator.url, log_level="info")
    key = new_account(server, database_url, TON)
    forged = chat(server, key, "x\n2026-01-01 00:00:00,000 ERROR cocoon_platform forged")
    assert forged.status_code == 400 and forged.json()["error"]["param"] == "model"
    size = len(server.log())
    huge = chat(server, key, "m" * (3 << 20))
    assert huge.status_code == 400 and "model must be 1-128 characters" in huge.json()["error"]["message"]
    assert chat(server, key, QWEN).status_code == 200
    log = server.log()
    assert len(log) - size < 10_000, "the 3 MB model reached the log"
    assert not any(line.startswith("2026-01-01") for line in log.splitlines()), "a forged line"


def test_log_lines_escape_what_a_client_sent() -> None:
    record = logging.LogRecord(
        "cocoon_platform", logging.ERROR, __file__, 1, "unhandled error on %s", ("/v1/x\nERROR forged\\",), None
    )
    record.fields = {"model": "a\r\nb", "status": 400}
    line = TextFormatter("%(levelname)s %(message)s").format(record)
    assert line == "ERROR unhandled error on /v1/x\\nERROR forged\\\\ model=a\\r\\nb status=400"


def test_out_of_range_integers_are_4xx_not_500(server_factory: ServerFactory, database_url: str) -> None:
    """Seen: long digit strings reached the database and came back as a 500 with a traceback."""
    server = server_factory()
    key = new_account(server, database_url)
    auth = {"Authorization": f"Bearer {key}"}
    huge = "99999999999999999999"
    usage = httpx.get(server.url + f"/v1/usage?before={huge}", headers=auth)
    assert usage.status_code == 422 and "less than or equal to 9223372036854775807" in usage.text
    revoke = httpx.delete(server.url + f"/v1/keys/{huge}", headers=auth)
    assert revoke.status_code == 422 and "less than or equal to 9223372036854775807" in revoke.text
    assert httpx.delete(server.url + "/v1/keys/9223372036854775807", headers=auth).status_code == 404
    assert httpx.get(server.url + "/v1/usage?before=9223372036854775807", headers=auth).status_code == 200
    assert "Traceback" not in server.log()


def test_secrets_are_not_cached_json_not_sniffed_and_no_banner(platform: Server, database_url: str) -> None:
    registered = httpx.post(platform.url + "/api/register")
    key = registered.json()["api_key"]
    minted = httpx.post(platform.url + "/v1/keys", headers={"Authorization": f"Bearer {key}"})
    answers = [
        registered,
        minted,
        httpx.get(platform.url + "/v1/models"),
        httpx.get(platform.url + "/v1/balance", headers={"Authorization": f"Bearer {key}"}),
        httpx.get(platform.url + "/v1/balance"),
        chat(platform, "ck_nobody", QWEN),
        chat(platform, key, QWEN),
    ]
    for answer in answers:
        assert answer.headers["content-type"].startswith("application/json"), answer.request.url
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url
        assert answer.headers["cache-control"] == "no-store", answer.request.url
        assert "server" not in answer.headers, answer.headers
    assert httpx.get(platform.url + "/").headers["cache-control"] == "no-cache", "the dashboard keeps its own"


def test_a_browser_script_may_read_retry_after(server_factory: ServerFactory) -> None:
    """Ruling 9 of #23: a page told to wait (429) can read how long."""
    server = server_factory(cors_origins="https://app.example")
    answer = httpx.get(server.url + "/v1/pricing", headers={"Origin": "https://app.example"})
    exposed = {h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")}
    assert {"retry-after", "x-request-id"} <= exposed


def test_the_new_error_codes_are_published(platform: Server) -> None:
    """Ruling 3 of #23: new conditions get new codes, listed in the published Error schema."""
    error = httpx.get(platform.url + "/openapi.json").json()["components"]["schemas"]["Error"]
    codes = error["properties"]["error"]["properties"]["code"]
    listed = set(codes.get("enum") or next(c["enum"] for c in codes["anyOf"] if "enum" in c))
    assert {"rate_limit_exceeded", "request_timeout", "headers_too_large"} <= listed
