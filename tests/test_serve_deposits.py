"""Deposits through `serve`: two instances, exactly one active watcher, takeover after kill -9."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from conftest import ServerFactory
from support import Server, Simulator, db_rows, ledger_consistent, new_account, run_cli, start_simulator
from test_operations import metric

from cocoon_simulator.toncenter import DEFAULT_WALLET

TENTH = 100_000_000  # 0.1 TON


def inject(sim: Simulator, code: str, count: int) -> None:
    httpx.post(
        sim.url + "/_ton/deposits", json={"comment": code, "amount_nanoton": TENTH, "count": count}, timeout=10
    ).raise_for_status()


def wait_balance(server: Server, key: str, nanoton: int, timeout: float = 30) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        body = httpx.get(server.url + "/v1/balance", headers={"Authorization": f"Bearer {key}"}).json()
        if body["balance_nanoton"] >= nanoton:
            assert body["balance_nanoton"] == nanoton, body
            return time.monotonic() - began
        time.sleep(0.1)
    raise AssertionError(f"balance did not reach {nanoton}")


def active(server: Server) -> float:
    return metric(httpx.get(server.url + "/metrics").text, "cocoon_deposit_watcher_active")


def test_one_active_watcher_credits_each_deposit_once(
    server_factory: ServerFactory, database_url: str, tmp_path: Path
) -> None:
    sim = start_simulator(tmp_path)
    try:
        # A fresh fake starts its lts again; a cursor left by an earlier fake in this database would skip them.
        assert run_cli(["migrate"], database_url).returncode == 0
        db_rows(database_url, "DELETE FROM watcher_cursors")
        settings = {
            "upstream_url": sim.url,
            "deposit_watcher": "true",
            "toncenter_url": sim.url,
            "deposit_wallet": DEFAULT_WALLET,
            "deposit_poll_seconds": "0.3",
        }
        first, second = server_factory(**settings), server_factory(**settings)
        key = new_account(first, database_url)
        code = httpx.get(first.url + "/v1/deposit", headers={"Authorization": f"Bearer {key}"}).json()["memo"]
        inject(sim, code, 10)
        inject(sim, f"  {code.lower()} ", 5)
        inject(sim, "NOT-A-CODE", 2)
        wait_balance(second, key, 15 * TENTH)
        time.sleep(1.5)  # metrics report once a second
        assert sorted([active(first), active(second)]) == [0.0, 1.0]
        holder, other = (first, second) if active(first) else (second, first)
        page = httpx.get(other.url + "/metrics").text
        assert metric(page, "cocoon_deposits", status="credited") >= 15
        assert metric(page, "cocoon_deposits", status="unmatched") >= 2
        assert db_rows(
            database_url,
            "SELECT COUNT(*) FROM ledger_entries l JOIN api_keys k ON "
            "k.account_id = l.account_id WHERE l.kind = 'deposit' AND k.prefix = :p",
            {"p": key[:9]},
        ) == [(15,)]
        holder.kill()
        inject(sim, code, 5)
        waited = wait_balance(other, key, 20 * TENTH, timeout=40)
        assert waited < 15, "the other instance takes the lease over within a few seconds"
        time.sleep(1.5)
        assert active(other) == 1.0
        assert not ledger_consistent(database_url)
    finally:
        sim.stop()
