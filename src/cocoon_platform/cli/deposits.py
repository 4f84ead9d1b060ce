"""Commands for TON deposits: `watch` and `admin deposits [assign]`.

`register_watch` and `register_deposits` add them to the `cocoon-platform` parser; each
handler takes the parsed arguments and returns the exit status, raising `CommandError` for a
one-line failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cocoon_platform.cli.common import CommandError, Subparsers, load_settings, run_async
from cocoon_platform.config import PLACEHOLDER_WALLET_WARNING, Settings, format_ton
from cocoon_platform.ton.address import InvalidAddress, TonAddress

if TYPE_CHECKING:
    from cocoon_platform.ton.deposits import DepositRow

__all__ = [
    "cmd_assign_deposit",
    "cmd_list_deposits",
    "cmd_watch",
    "register_deposits",
    "register_watch",
]

logger = logging.getLogger(__name__)

_COMMENT_WIDTH = 32
_DEFAULT_LIMIT = 100


def register_watch(commands: Subparsers[argparse.ArgumentParser]) -> None:
    """Add `watch` to the top-level commands."""
    watch = commands.add_parser(
        "watch",
        help="run the TON deposit watcher alone until SIGINT/SIGTERM (applies migrations first)",
        description="Credits deposits to the wallet COCOON_DEPOSIT_WALLET, read from COCOON_TONCENTER_URL. "
        "Runs whatever COCOON_DEPOSIT_WATCHER says: that setting only controls the watcher inside `serve`.",
    )
    watch.set_defaults(handler=cmd_watch)


def register_deposits(admin: Subparsers[argparse.ArgumentParser]) -> None:
    """Add `deposits` (list) and `deposits assign` to the `admin` commands."""
    deposits = admin.add_parser("deposits", help="list TON deposits, most recently recorded first")
    deposits.add_argument("--unmatched", action="store_true", help="only deposits no account was credited for")
    deposits.add_argument(
        "--limit", type=int, default=_DEFAULT_LIMIT, help=f"at most this many (default {_DEFAULT_LIMIT})"
    )
    deposits.set_defaults(handler=cmd_list_deposits)
    actions = deposits.add_subparsers(dest="deposits_action")
    assign = actions.add_parser("assign", help="credit an unmatched deposit to an account (once)")
    assign.add_argument("tx_hash", help="the transaction hash (hex as listed, or base64)")
    assign.add_argument("--deposit-code", required=True, help="deposit code of the account to credit")
    assign.set_defaults(handler=cmd_assign_deposit)


# --- watch -----------------------------------------------------------------------------------


def cmd_watch(_: argparse.Namespace) -> int:
    from cocoon_platform.ops.request_log import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    return run_async(lambda: _watch(settings))


async def _watch(settings: Settings) -> int:
    import aiohttp

    from cocoon_platform.db.engine import database
    from cocoon_platform.db.migrate import upgrade_head
    from cocoon_platform.ton.watcher import watch_exclusively

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Alembic runs its own event loop; run it in a thread so it doesn't nest in this one.
    await asyncio.to_thread(upgrade_head, settings)
    async with database(settings) as db, aiohttp.ClientSession() as http:
        _log_start(settings)
        await watch_exclusively(settings, db.sessions, http, stop)
    return 0


def _log_start(settings: Settings) -> None:
    # The host only: a URL may carry credentials.
    logger.info(
        "watching %s via %s every %gs (API key %s)",
        settings.deposit_wallet,
        urlsplit(settings.toncenter_url).hostname,
        settings.deposit_poll_seconds,
        "set" if settings.toncenter_api_key else "not set",
    )
    if settings.deposit_wallet_is_placeholder:
        logger.warning(PLACEHOLDER_WALLET_WARNING)


# --- admin deposits --------------------------------------------------------------------------


def cmd_list_deposits(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    return run_async(lambda: _list(args.unmatched, args.limit))


async def _list(unmatched_only: bool, limit: int) -> int:
    from cocoon_platform.db.engine import database
    from cocoon_platform.ton.deposits import list_deposits

    settings = load_settings()
    async with database(settings) as db, db.sessions() as session:
        rows = await list_deposits(session, unmatched_only, limit)
    if not rows:
        print("no unmatched deposits" if unmatched_only else "no deposits")
        return 0
    table: list[tuple[str, ...]] = [
        ("TX HASH", "TIME (UTC)", "SENDER", "AMOUNT TON", "COMMENT / KIND", "STATUS", "ACCOUNT")
    ]
    table += [_table_row(row, settings.ton_network == "testnet") for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


def _table_row(row: DepositRow, testnet: bool) -> tuple[str, ...]:
    return (
        row.tx_hash,
        datetime.fromtimestamp(row.utime, UTC).strftime("%Y-%m-%d %H:%M:%S"),
        _display_sender(row.sender, testnet),
        format_ton(row.amount_nanoton, 9),
        _display_comment(row.comment, row.body_kind),
        row.status,
        row.deposit_code or "-",
    )


def _display_sender(sender: str | None, testnet: bool) -> str:
    """Non-bounceable user-friendly form, as wallets show it."""
    if sender is None:
        return "-"
    try:
        return TonAddress.parse(sender).to_friendly(bounceable=False, testnet=testnet)
    except InvalidAddress:
        return repr(sender)  # untrusted text: escaped, never raw control sequences


def _display_comment(comment: str | None, body_kind: str) -> str:
    """The comment quoted and escaped (a sender's text must not put control sequences on the
    operator's terminal) and shortened, or the body kind in angle brackets."""
    if comment is None:
        return f"<{body_kind}>"
    text = repr(comment)
    return text if len(text) <= _COMMENT_WIDTH else text[: _COMMENT_WIDTH - 1] + "…"


def cmd_assign_deposit(args: argparse.Namespace) -> int:
    return run_async(lambda: _assign(args.tx_hash, args.deposit_code))


async def _assign(tx_hash: str, code: str) -> int:
    from cocoon_platform.accounts.keys import normalise_deposit_code
    from cocoon_platform.db.engine import database
    from cocoon_platform.ton.deposits import DepositError, assign_unmatched, parse_tx_hash

    async with database(load_settings()) as db, db.sessions() as session:
        try:
            balance = await assign_unmatched(session, tx_hash, code)
        except DepositError as exc:
            raise CommandError(str(exc)) from None
        await session.commit()
    print(
        f"deposit {parse_tx_hash(tx_hash)} credited to {normalise_deposit_code(code)}: "
        f"balance {format_ton(balance, 9)} TON ({balance} nanoTON)"
    )
    return 0
