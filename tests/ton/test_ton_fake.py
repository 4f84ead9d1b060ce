"""The toncenter fake: v3 semantics, control endpoints and the deposit CLI helpers."""

from __future__ import annotations

import argparse
import asyncio
import base64
import urllib.error
from typing import Any

import httpx
import pytest

from cocoon_platform.ton.address import TonAddress
from cocoon_platform.ton.comment import BodyKind, decode_body
from cocoon_simulator.toncenter import (
    ToncenterState,
    add_deposit_arguments,
    build_toncenter_app,
    inject_deposit_command,
    run_deposit_command,
)

WALLET = TonAddress.parse("EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sp")
TX_PATH = "/api/v3/transactions?account=" + WALLET.to_raw()


def lts(transactions: list[dict[str, Any]]) -> list[int]:
    return [int(tx["lt"]) for tx in transactions]


def test_deposit_shape(fake: Any) -> None:
    [tx] = fake.deposit(comment="ABCD1234", amount_nanoton=1_500_000_000)
    assert int(tx["lt"]) > 47_000_000_000_000
    assert len(base64.b64decode(tx["hash"], validate=True)) == 32
    assert tx["account"] == "0:" + WALLET.hash.hex().upper()  # toncenter prints upper-case hex
    assert isinstance(tx["mc_block_seqno"], int) and tx["emulated"] is False
    assert tx["description"]["aborted"] is False
    assert tx["description"]["compute_ph"]["success"] is True
    msg = tx["in_msg"]
    assert TonAddress.parse(msg["destination"]) == WALLET
    TonAddress.parse(msg["source"])
    assert msg["value"] == "1500000000" and msg["opcode"] == "0x00000000"
    assert msg["bounced"] is False
    assert msg["message_content"]["decoded"] == {"@type": "text_comment", "comment": "ABCD1234"}
    assert decode_body(msg["message_content"]["body"]).text == "ABCD1234"
    assert tx["out_msgs"] == []


def test_lts_monotonic_hashes_unique_and_blocks_shared(fake: Any) -> None:
    first = fake.deposit(comment="A", count=3)
    second = fake.deposit(comment="B", count=2)
    all_lts = lts(first + second)
    assert all_lts == sorted(all_lts) and len(set(all_lts)) == 5
    assert len({tx["hash"] for tx in first + second}) == 5
    assert len({tx["mc_block_seqno"] for tx in first}) == 1  # one block per request
    assert first[0]["mc_block_seqno"] < second[0]["mc_block_seqno"]


def test_default_query_is_newest_ten(fake: Any) -> None:
    created = fake.deposit(comment="X", count=12)
    status, body, _ = fake.get(TX_PATH)
    assert status == 200 and body["address_book"]
    assert lts(body["transactions"]) == sorted(lts(created), reverse=True)[:10]


@pytest.mark.parametrize(
    "form",
    [
        WALLET.to_raw(),
        WALLET.to_raw().upper(),
        WALLET.to_friendly(),
        WALLET.to_friendly(bounceable=False),
        WALLET.to_friendly(testnet=True, url_safe=False),
    ],
)
def test_account_matches_whatever_the_form(fake: Any, form: str) -> None:
    fake.deposit(comment="X")
    status, body, _ = fake.get("/api/v3/transactions?account=" + form.replace("+", "%2B"))
    assert status == 200 and len(body["transactions"]) == 1


def test_other_account_has_no_transactions(fake: Any) -> None:
    fake.deposit(comment="X")
    status, body, _ = fake.get("/api/v3/transactions?account=0:" + "11" * 32)
    assert status == 200 and body["transactions"] == []


def test_inclusive_lt_window_and_paging(fake: Any) -> None:
    created = lts(fake.deposit(comment="X", count=6))
    query = f"{TX_PATH}&sort=asc&start_lt={created[1]}&end_lt={created[4]}&limit=2"
    assert lts(fake.get(query)[1]["transactions"]) == created[1:3]
    assert lts(fake.get(query + "&offset=2")[1]["transactions"]) == created[3:5]
    assert lts(fake.get(query + "&offset=4")[1]["transactions"]) == []
    # Polling from the last seen lt returns it again (inclusive cursor).
    tail = fake.get(f"{TX_PATH}&sort=asc&start_lt={created[-1]}")[1]["transactions"]
    assert lts(tail) == [created[-1]]
    desc = fake.get(f"{TX_PATH}&sort=desc&end_lt={created[2]}&limit=1000")[1]["transactions"]
    assert lts(desc) == created[2::-1]


@pytest.mark.parametrize(
    "query",
    [
        "/api/v3/transactions",
        "/api/v3/transactions?account=nonsense",
        TX_PATH + "&limit=0",
        TX_PATH + "&limit=1001",
        TX_PATH + "&limit=ten",
        TX_PATH + "&offset=-1",
        TX_PATH + "&sort=up",
        TX_PATH + "&start_lt=1.5",
        TX_PATH + "&end_lt=1_000",
    ],
)
def test_invalid_queries_are_400(fake: Any, query: str) -> None:
    status, body, _ = fake.get(query)
    assert status == 400 and "error" in body


def test_limit_1000_is_allowed(fake: Any) -> None:
    assert fake.get(TX_PATH + "&limit=1000")[0] == 200


def test_unknown_path_is_404(fake: Any) -> None:
    assert fake.get("/api/v3/nothing")[0] == 404


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"kind": "text", "comment": "ABCD1234"}, BodyKind.TEXT),
        ({"kind": "binary", "comment": "ABCD1234"}, BodyKind.BINARY),
        ({"kind": "encrypted", "comment": "ABCD1234"}, BodyKind.ENCRYPTED),
        ({"kind": "jetton", "comment": "ABCD1234"}, BodyKind.JETTON_NOTIFICATION),
        ({"kind": "none"}, BodyKind.EMPTY),
        ({"kind": "text", "comment": "ABCD1234", "bounced": True}, BodyKind.OTHER),
    ],
)
def test_body_kinds(fake: Any, fields: dict[str, Any], kind: BodyKind) -> None:
    [tx] = fake.deposit(**fields)
    assert decode_body(tx["in_msg"]["message_content"]["body"]).kind is kind


def test_decoded_can_be_left_out(fake: Any) -> None:
    [tx] = fake.deposit(comment="ABCD1234", decoded=False)
    assert tx["in_msg"]["message_content"]["decoded"] is None


def test_failure_flags(fake: Any) -> None:
    [tx] = fake.deposit(comment="X", bounced=True, aborted=True, out_msgs=2)
    assert tx["in_msg"]["bounced"] is True
    assert tx["description"]["aborted"] is True
    assert tx["description"]["compute_ph"]["success"] is False
    assert len(tx["out_msgs"]) == 2
    [after] = fake.deposit(comment="Y")
    assert int(after["lt"]) > int(tx["lt"]) + 2  # out messages consumed lts


def test_sender_is_kept(fake: Any) -> None:
    sender = TonAddress(0, bytes([7]) * 32, bounceable=False)
    [tx] = fake.deposit(comment="X", sender=sender.to_friendly())
    assert TonAddress.parse(tx["in_msg"]["source"]) == sender


def test_pending_then_finalised(fake: Any) -> None:
    [tx] = fake.deposit(comment="X", finalised=False)
    assert tx["mc_block_seqno"] is None
    assert fake.get("/_ton/stats")[1]["pending"] == 1
    finalised = fake.post("/_ton/finalise", {})["transactions"]
    assert [t["hash"] for t in finalised] == [tx["hash"]]
    [served] = fake.get(TX_PATH)[1]["transactions"]
    assert isinstance(served["mc_block_seqno"], int)
    assert fake.post("/_ton/finalise", {})["transactions"] == []


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "carrier-pigeon"},
        {"sender": "EQ-not-an-address"},
        {"amount_nanoton": -1},
        {"amount_nanoton": "5"},
        {"amount_nanoton": True},
        {"count": 0},
        {"colour": "red"},
    ],
)
def test_bad_deposit_requests_are_400(fake: Any, fields: dict[str, Any]) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        fake.deposit(**fields)
    assert info.value.code == 400
    info.value.close()


def test_faults_and_stats(fake: Any) -> None:
    fake.post("/_ton/faults", {"errors": 1, "rate_limit": 2, "retry_after": 2.5})
    assert fake.get(TX_PATH)[0] == 500
    status, body, headers = fake.get(TX_PATH)
    assert status == 429 and headers["Retry-After"] == "2.5" and "error" in body
    assert fake.get(TX_PATH)[0] == 429
    assert fake.get(TX_PATH)[0] == 200
    stats = fake.get("/_ton/stats")[1]
    assert (stats["requests"], stats["served_429"], stats["served_500"]) == (4, 2, 1)


def test_reset_keeps_lts_growing(fake: Any) -> None:
    [before] = fake.deposit(comment="X")
    fake.post("/_ton/faults", {"errors": 5})
    fake.post("/_ton/reset", {})
    assert fake.get(TX_PATH)[1]["transactions"] == []  # faults cleared too
    [after] = fake.deposit(comment="X")
    assert int(after["lt"]) > int(before["lt"])
    assert fake.get("/_ton/stats")[1]["requests"] == 1


def test_per_second_rate_limit_in_process() -> None:
    now = [1000.0]
    state = ToncenterState(
        wallet=WALLET,
        rate_limit_per_second=2,
        keyed_rate_limit_per_second=None,
        clock=lambda: now[0],
    )
    app = build_toncenter_app(state)

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
            statuses = [(await client.get(TX_PATH)).status_code for _ in range(3)]
            limited = await client.get(TX_PATH)
            assert limited.headers["retry-after"] == "1"
            keyed = [(await client.get(TX_PATH, headers={"X-API-Key": "k"})).status_code for _ in range(5)]
            now[0] += 1.0
            statuses.append((await client.get(TX_PATH)).status_code)
            return statuses + keyed

    assert asyncio.run(scenario()) == [200, 200, 429, 200, 200, 200, 200, 200, 200]
    assert state.served_429 == 2


def test_app_uses_only_its_own_state() -> None:
    first, second = ToncenterState(wallet=WALLET), ToncenterState(wallet=WALLET)
    apps = build_toncenter_app(first), build_toncenter_app(second)

    async def scenario() -> None:
        for app in apps:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
                response = await client.post("/_ton/deposits", json={"comment": "A"})
                assert response.status_code == 200

    asyncio.run(scenario())
    assert len(first.transactions) == len(second.transactions) == 1


def _deposit_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_deposit_arguments(parser)
    return parser.parse_args(list(argv))


def test_run_deposit_command_prints_hash(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    args = _deposit_args("--code", "ABCD1234", "--amount-ton", "1.5", "--url", fake.url)
    assert run_deposit_command(args) == 0
    printed = capsys.readouterr().out.split()
    [tx] = fake.get(TX_PATH)[1]["transactions"]
    assert printed == [tx["hash"]]
    assert tx["in_msg"]["value"] == "1500000000"
    assert tx["in_msg"]["message_content"]["decoded"]["comment"] == "ABCD1234"


def test_run_deposit_command_options(fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    args = _deposit_args(
        "--code",
        "X",
        "--amount-ton",
        "2",
        "--url",
        fake.url,
        "--count",
        "2",
        "--pending",
        "--kind",
        "binary",
    )
    assert run_deposit_command(args) == 0
    assert len(capsys.readouterr().out.split()) == 2
    assert fake.get("/_ton/stats")[1]["pending"] == 2


@pytest.mark.parametrize("amount", ["1.0000000001", "-1", "abc", "NaN"])
def test_run_deposit_command_bad_amount(fake: Any, amount: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = _deposit_args("--code", "X", "--amount-ton", amount, "--url", fake.url)
    assert run_deposit_command(args) == 1
    assert "bad TON amount" in capsys.readouterr().err


def test_run_deposit_command_rejected_and_unreachable(
    fake: Any, free_port: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_sender = _deposit_args("--code", "X", "--amount-ton", "1", "--url", fake.url, "--sender", "nope")
    assert run_deposit_command(bad_sender) == 1
    assert "HTTP 400" in capsys.readouterr().err
    nowhere = _deposit_args("--code", "X", "--amount-ton", "1", "--url", f"http://127.0.0.1:{free_port()}")
    assert run_deposit_command(nowhere) == 1
    assert "deposit failed" in capsys.readouterr().err


def test_inject_deposit_command_exact_amount(fake: Any) -> None:
    [tx] = inject_deposit_command(fake.url, "CODE0001", "0.000000001")
    assert tx["in_msg"]["value"] == "1"


def test_the_simulator_writes_bodies_without_the_platforms_comment_module() -> None:
    """Its own encoder (cocoon_simulator/ton_bodies.py): a decoder mistake can't be mirrored."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cocoon_simulator.__main__, cocoon_simulator.toncenter; "
            "print(sorted(m for m in sys.modules if m.startswith('cocoon_platform')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "cocoon_platform.ton.comment" not in loaded and "cocoon_platform.ton.address" in loaded, loaded
