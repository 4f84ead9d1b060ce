"""Operator commands on money and the database: `admin credit`, `admin debit`, `admin reconcile`
and `admin backup`. Balances change only through the billing package (docs/money.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from cocoon_platform.cli.common import CommandError, Subparsers, load_settings, run_async
from cocoon_platform.config import format_ton, ton_to_nanoton


def register_admin(admin: Subparsers[argparse.ArgumentParser]) -> None:
    """Add `credit`, `debit`, `reconcile` and `backup` to the `admin` commands."""
    _add_balance_command(admin, "credit", cmd_credit, "credit")
    _add_balance_command(admin, "debit", cmd_debit, "debit")
    reconcile = admin.add_parser("reconcile", help="check every balance against its ledger and every hold")
    reconcile.set_defaults(handler=cmd_reconcile)
    backup = admin.add_parser(
        "backup",
        help="copy the SQLite database while serving (online backup API; PostgreSQL: pg_dump)",
    )
    backup.add_argument("path", help="file to write (created 0600)")
    backup.add_argument("--force", action="store_true", help="replace the file if it exists")
    backup.set_defaults(handler=cmd_backup)


async def _adjust_balance(args: argparse.Namespace, sign: int) -> int:
    from cocoon_platform.accounts.service import account_by_code, account_by_key
    from cocoon_platform.billing.ledger import NotEnoughAvailable, operator_credit, operator_debit
    from cocoon_platform.db.engine import database

    try:
        amount = ton_to_nanoton(args.amount_ton)
    except ValueError as exc:
        raise CommandError(f"--amount-ton: {exc}") from None
    if amount <= 0:
        raise CommandError("--amount-ton must be positive")
    if args.api_key is not None:
        raise CommandError(
            "--api-key would put the key in the process list and the shell's history: "
            "pipe it to --api-key-stdin instead, or name the account by --deposit-code"
        )
    api_key = _key_from_stdin() if args.api_key_stdin else None
    async with database(load_settings()) as db, db.sessions() as session:
        if api_key is not None:
            account = await account_by_key(session, api_key)
            if account is None:
                raise CommandError("no account has that API key (or it was revoked)")
        else:
            account = await account_by_code(session, args.deposit_code)
            if account is None:
                raise CommandError(f"no account has deposit code {args.deposit_code!r}")
        if sign > 0:
            balance = await operator_credit(session, account.id, amount, args.reason)
        else:
            try:
                balance = await operator_debit(session, account.id, amount, args.reason)
            except NotEnoughAvailable as exc:
                raise CommandError(
                    f"cannot debit {format_ton(amount, 9)} TON: the account has "
                    f"{format_ton(exc.available, 9)} TON available"
                ) from None
        await session.commit()
    print(f"account {account.id} ({account.deposit_code}): balance {format_ton(balance, 9)} TON ({balance} nanoTON)")
    return 0


def _key_from_stdin() -> str:
    """The account's key, the first line of standard input (never an argument: see --help)."""
    key = sys.stdin.readline().strip()
    if not key:
        raise CommandError(
            "--api-key-stdin: standard input has no key (e.g. `cocoon-platform admin credit "
            "--api-key-stdin ... < keyfile`)"
        )
    return key


def cmd_credit(args: argparse.Namespace) -> int:
    return run_async(lambda: _adjust_balance(args, +1))


def cmd_debit(args: argparse.Namespace) -> int:
    return run_async(lambda: _adjust_balance(args, -1))


def _add_balance_command(
    admin: Subparsers[argparse.ArgumentParser], name: str, handler: Callable[[argparse.Namespace], int], verb: str
) -> None:
    parser = admin.add_parser(
        name,
        help=f"{verb} an account through the ledger",
        description=f"{verb.capitalize()} an account through the ledger. Name the account by its deposit code, "
        "or pipe one of its keys to --api-key-stdin: a key is never taken as an argument, where "
        "ps and the shell's history would show it.",
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--deposit-code", help="the account's deposit code")
    who.add_argument(
        "--api-key-stdin", action="store_true", help="read one of the account's ck_ keys from standard input (one line)"
    )
    who.add_argument("--api-key", help=argparse.SUPPRESS)  # refused with a pointer to --api-key-stdin
    parser.add_argument("--amount-ton", required=True, help="amount in TON, e.g. 1.5")
    parser.add_argument("--reason", required=True, help="why; kept in the ledger entry")
    parser.set_defaults(handler=handler)


async def _reconcile() -> int:
    from cocoon_platform.db.engine import database
    from cocoon_platform.ops.reconcile import capped_charges, find_discrepancies, orphaned_holds

    async with database(load_settings()) as db:
        problems = await find_discrepancies(db.engine)
        orphaned, unbilled = await orphaned_holds(db.engine)
        capped, uncharged = await capped_charges(db.engine)
    if orphaned:
        print(
            f"{orphaned} orphaned hold{'s' if orphaned != 1 else ''} (requests cut by the platform's own "
            f"crashes, released at 0): up to {format_ton(unbilled, 9)} TON unbilled"
        )
    if capped:
        print(
            f"{capped} capped charge{'s' if capped != 1 else ''} (the network reported more than the hold's "
            f"worst case; an account without the overdraft or a key's limit could not pay it all): "
            f"{format_ton(uncharged, 9)} TON unbilled"
        )
    for line in problems:
        print(line)
    if problems:
        raise CommandError(f"{len(problems)} discrepanc{'y' if len(problems) == 1 else 'ies'} found")
    print("books are sound: every balance equals its ledger, every hold is open and accounted for")
    return 0


def cmd_reconcile(_: argparse.Namespace) -> int:
    return run_async(_reconcile)


def cmd_backup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cocoon_platform.ops.backup import BackupError, backup_sqlite, sqlite_path

    try:
        size = backup_sqlite(sqlite_path(load_settings().database_url), Path(args.path), overwrite=args.force)
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    print(f"backed up {size} bytes to {args.path}; after a restore, run `cocoon-platform admin reconcile`")
    return 0
