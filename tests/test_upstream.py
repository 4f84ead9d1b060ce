"""The upstream connection against simulator processes: models, stats, failover and live prices."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import ServerFactory
from support import Server, Simulator, free_port, new_account, start_simulator

QWEN = "Qwen/Qwen3-32B"
SEED = "ByteDance-Seed/Seed-X-PPO-7B"
TON = 1_000_000_000


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def chat(server: Server, key: str) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={"model": QWEN, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
    )


def test_models_have_the_spec_shape(platform: Server) -> None:
    body = httpx.get(platform.url + "/v1/models").json()
    models = {m["id"]: m for m in body["data"]}
    assert models[QWEN]["owned_by"] == "Alibaba" and models[QWEN]["endpoint"] == "/v1/chat/completions"
    assert models[QWEN]["type"] == "chat" and models[QWEN]["context_window"] == 131072
    assert models[SEED]["type"] == "translation" and models[SEED]["endpoint"] == "/v1/completions"
    assert models[SEED]["owned_by"] == "ByteDance" and models[SEED]["context_window"] == 8192
    for model in models.values():
        assert model["workers"] and all(
            {"running_requests", "max_running_requests"} <= set(w) for w in model["workers"]
        )


def test_stats_shape_and_online(platform: Server) -> None:
    body = httpx.get(platform.url + "/api/stats").json()
    assert body["status"] == "online" and body["cached_at"].endswith(("Z", "+00:00"))
    qwen = next(m for m in body["models"] if m["id"] == QWEN)
    assert qwen["workers"] >= 1 and qwen["capacity"] >= qwen["running"] >= 0
    assert qwen["load_pct"] == round(100 * qwen["running"] / qwen["capacity"], 1)


def test_failover_between_two_upstreams(server_factory: ServerFactory, database_url: str, tmp_path: Path) -> None:
    first, second = start_simulator(tmp_path), start_simulator(tmp_path)
    try:
        server = server_factory(upstream_url=f"{first.url},{second.url}")
        key = new_account(server, database_url, TON)
        assert all(chat(server, key).status_code == 200 for _ in range(4))
        served = [int(s.stats()["completed"]) for s in (first, second)]  # type: ignore[call-overload]
        assert all(n > 0 for n in served), served  # both take turns while both are up
        first.stop()
        assert all(chat(server, key).status_code == 200 for _ in range(6))
        second.stop()
        down = chat(server, key)
        assert down.status_code == 503 and "unavailable" in down.json()["error"]["message"]
    finally:
        first.stop()
        second.stop()


def test_stats_go_cached_then_models_stay_served(server_factory: ServerFactory, tmp_path: Path) -> None:
    sim = start_simulator(tmp_path)
    try:
        server = server_factory(upstream_url=sim.url, stats_refresh_seconds="0.3", stats_stale_seconds="1")
        wait_for(lambda: httpx.get(server.url + "/api/stats").json()["status"] == "online")
        online = httpx.get(server.url + "/api/stats").json()
        sim.stop()
        wait_for(lambda: httpx.get(server.url + "/api/stats").json()["status"] == "cached")
        cached = httpx.get(server.url + "/api/stats").json()
        assert [m["id"] for m in cached["models"]] == [m["id"] for m in online["models"]]
        assert cached["cached_at"] is not None
        models = httpx.get(server.url + "/v1/models")
        assert models.status_code == 200
        assert {m["id"] for m in models.json()["data"]} == {QWEN, SEED, "qwen3-32b", "seed-x-ppo-7b"}  # and aliases
    finally:
        sim.stop()


def test_offline_before_anything_is_known(server_factory: ServerFactory) -> None:
    server = server_factory(upstream_url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    stats = httpx.get(server.url + "/api/stats")
    assert time.monotonic() - started < 2
    assert stats.status_code == 200 and stats.json() == {"models": [], "status": "offline", "cached_at": None}
    models = httpx.get(server.url + "/v1/models")
    assert models.status_code == 503
    assert models.json()["error"]["type"] == "server_error" and "unreachable" in models.json()["error"]["message"]


def test_stats_never_wait_on_a_hanging_upstream(server_factory: ServerFactory, tmp_path: Path) -> None:
    """A client that accepts connections but never answers: /api/stats still answers at once."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        server = server_factory(upstream_url=f"http://127.0.0.1:{listener.getsockname()[1]}")
        for _ in range(3):
            started = time.monotonic()
            assert httpx.get(server.url + "/api/stats", timeout=10).json()["status"] == "offline"
            assert time.monotonic() - started < 1.5
    finally:
        listener.close()


def test_live_prices_replace_defaults_and_bill(
    server_factory: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    sim = start_simulator(tmp_path, "--price-per-token", "40")
    try:
        server = server_factory(upstream_url=sim.url, stats_refresh_seconds="0.3", stats_stale_seconds="1")
        wait_for(lambda: httpx.get(server.url + "/v1/pricing").json()["price_source"] == "live")
        rates = httpx.get(server.url + "/v1/pricing").json()["rates"]
        assert rates["prompt_token"] == {"base_nanoton": 40, "multiplier": 1.0, "effective_nanoton": 60}
        assert rates["completion_token"]["effective_nanoton"] == 480
        assert rates["cached_prompt_token"]["effective_nanoton"] == 6
        key = new_account(server, database_url, TON)
        response = httpx.post(
            server.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            json={
                "model": QWEN,
                "max_tokens": 10,
                "messages": [{"role": "user", "content": "[[sim:cost=0]] [[sim:tokens=10]] live"}],
            },
        )
        usage = response.json()["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        network = 40 * ((usage["prompt_tokens"] - cached) + cached // 10 + 8 * usage["completion_tokens"])
        assert usage["cost_nanoton"] == -(-network * 3 // 2)
        sim.stop()
        wait_for(lambda: httpx.get(server.url + "/v1/pricing").json()["price_source"] == "default")
        assert httpx.get(server.url + "/v1/pricing").json()["rates"]["prompt_token"]["effective_nanoton"] == 30
    finally:
        sim.stop()


def test_access_hash_is_passed_to_the_client(server_factory: ServerFactory, tmp_path: Path) -> None:
    sim = start_simulator(tmp_path, "--price-per-token", "30", "--access-hash", "h4sh")
    try:
        assert httpx.get(sim.url + "/jsonstats").status_code == 403
        without = server_factory(upstream_url=sim.url, stats_refresh_seconds="0.3")
        with_hash = server_factory(upstream_url=sim.url, stats_refresh_seconds="0.3", upstream_access_hash="h4sh")
        wait_for(lambda: httpx.get(with_hash.url + "/v1/pricing").json()["price_source"] == "live")
        assert httpx.get(with_hash.url + "/v1/pricing").json()["rates"]["prompt_token"]["effective_nanoton"] == 45
        assert httpx.get(without.url + "/v1/pricing").json()["price_source"] == "default"
    finally:
        sim.stop()


def test_operator_catalog_extends_models(server_factory: ServerFactory, simulator: Simulator, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({QWEN: {"context_window": 32768, "owned_by": "Qwen team"}}))
    server = server_factory(upstream_url=simulator.url, model_catalog_file=str(catalog))
    models = {m["id"]: m for m in httpx.get(server.url + "/v1/models").json()["data"]}
    assert models[QWEN]["context_window"] == 32768 and models[QWEN]["owned_by"] == "Qwen team"
    assert models[QWEN]["endpoint"] == "/v1/chat/completions"


def test_unknown_models_get_derived_facts() -> None:
    from cocoon_platform.upstream.catalog import ModelCatalog

    catalog = ModelCatalog.load(None)
    llama = catalog.info("meta-llama/Llama-3.3-70B-Instruct")
    assert (llama.owned_by, llama.type, llama.endpoint, llama.context_window) == (
        "Meta",
        "chat",
        "/v1/chat/completions",
        None,
    )
    bare = catalog.info("mystery")
    assert bare.owned_by == "unknown" and bare.type == "chat"
    assert catalog.info("acme/Seed-X-Mini").type == "translation"


@pytest.mark.parametrize("content", ["{not json", '{"SEED/x": 5}', "[1]"])
def test_bad_catalog_file_is_refused_at_start(tmp_path: Path, database_url: str, content: str) -> None:
    from support import run_cli

    catalog = tmp_path / "catalog.json"
    catalog.write_text(content)
    result = run_cli(
        ["serve", "--port", str(free_port())], database_url, {"COCOON_MODEL_CATALOG_FILE": str(catalog)}, timeout=20
    )
    assert result.returncode != 0 and "model catalog" in result.stderr and "Traceback" not in result.stderr
