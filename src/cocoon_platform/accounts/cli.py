"""Operator commands for keys: `admin keys` (list), `admin keys set` and `admin keys revoke`.

Any account's keys, by id: no key material is ever printed (a key's prefix is what its owner
sees too). Settings are checked as the API checks them (accounts/schemas.py) and changed by the
same service function, so a limit set here counts what the key already spent in its period.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from cocoon_platform.cli.common import CommandError, Subparsers, load_settings, run_async
from cocoon_platform.config import format_ton

__all__ = ["register_keys"]


_DEFAULT_LIMIT = 100
# What an operator types to lift a restriction.
_NONE = {"none", "never", "all", ""}


def register_keys(admin: Subparsers[argparse.ArgumentParser]) -> None:
    """Add `keys`, `keys set` and `keys revoke` to the `admin` commands."""
    keys = admin.add_parser("keys", help="list any account's API keys with their limits (never the keys)")
    keys.add_argument("--deposit-code", help="only this account's keys")
    keys.add_argument("--account-id", type=int, help="only this account's keys")
    keys.add_argument("--revoked", action="store_true", help="include revoked keys")
    keys.add_argument("--limit", type=int, default=_DEFAULT_LIMIT, help=f"at most this many (default {_DEFAULT_LIMIT})")
    keys.set_defaults(handler=cmd_list_keys)
    actions = keys.add_subparsers(dest="keys_action")
    change = actions.add_parser("set", help="change a key's name, credit limit, reset, models or expiry")
    change.add_argument("key_id", type=int, help="the key's id (from `admin keys`)")
    change.add_argument("--name", help="a label; 'none' removes it")
    change.add_argument("--credit-limit-ton", help="most the key may spend per period, in TON; 'none' lifts it")
    change.add_argument("--limit-reset", help="daily, weekly, monthly, or 'never'")
    change.add_argument("--models", help="comma-separated model ids the key may use; 'all' lifts the list")
    change.add_argument("--expires-at", help="ISO 8601 time the key stops working; 'never' lifts it")
    change.set_defaults(handler=cmd_set_key)
    revoke = actions.add_parser("revoke", help="revoke a key (refused at once, on every instance)")
    revoke.add_argument("key_id", type=int)
    revoke.set_defaults(handler=cmd_revoke_key)


def cmd_list_keys(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    return run_async(lambda: _list(args))


def cmd_set_key(args: argparse.Namespace) -> int:
    sent: dict[str, Any] = {}
    for option, field in (
        ("name", "name"),
        ("credit_limit_ton", "credit_limit_ton"),
        ("limit_reset", "limit_reset"),
        ("models", "models"),
        ("expires_at", "expires_at"),
    ):
        value = getattr(args, option)
        if value is None:
            continue
        if value.strip().lower() in _NONE:
            sent[field] = None
        elif field == "models":
            sent[field] = [m.strip() for m in value.split(",") if m.strip()]
        else:
            sent[field] = value
    if not sent:
        raise CommandError(
            "nothing to change: give --name, --credit-limit-ton, --limit-reset, --models or --expires-at"
        )
    return run_async(lambda: _set(args.key_id, sent))


def cmd_revoke_key(args: argparse.Namespace) -> int:
    return run_async(lambda: _revoke(args.key_id))


async def _list(args: argparse.Namespace) -> int:
    from cocoon_platform.accounts.limits import read_models
    from cocoon_platform.accounts.service import keys_spending
    from cocoon_platform.db.engine import database
    from cocoon_platform.db.models import Account, ApiKey

    now = time.time()
    async with database(load_settings()) as db, db.sessions() as session:
        query = select(ApiKey, Account.deposit_code).join(Account, Account.id == ApiKey.account_id)
        if args.deposit_code:
            query = query.where(Account.deposit_code == args.deposit_code.strip().upper())
        if args.account_id is not None:
            query = query.where(ApiKey.account_id == args.account_id)
        if not args.revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        rows = (await session.execute(query.order_by(ApiKey.id.desc()).limit(args.limit))).all()
        table: list[tuple[str, ...]] = [
            ("ID", "ACCOUNT", "PREFIX", "NAME", "LIMIT TON", "RESET", "SPENT TON", "MODELS", "EXPIRES (UTC)", "STATUS")
        ]
        spending = await keys_spending(session, [key for key, _ in rows], now)
        for key, code in rows:
            table.append(
                (
                    str(key.id),
                    f"{key.account_id} ({code})",
                    key.prefix,
                    key.name or "-",
                    "-" if key.credit_limit_nanoton is None else format_ton(key.credit_limit_nanoton, 9, trim=True),
                    key.limit_reset or "never",
                    format_ton(spending[key.id].spent_nanoton, 9, trim=True),
                    ",".join(read_models(key.models) or []) or "all",
                    "-" if key.expires_at is None else _utc(key.expires_at),
                    "revoked" if key.revoked_at else "expired" if key.expires_at and key.expires_at <= now else "live",
                )
            )
    if len(table) == 1:
        print("no keys")
        return 0
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


async def _set(key_id: int, sent: dict[str, Any]) -> int:
    from cocoon_platform.accounts.schemas import KeyUpdate
    from cocoon_platform.accounts.service import change_key
    from cocoon_platform.db.engine import database
    from cocoon_platform.db.models import ApiKey

    try:
        update = KeyUpdate.model_validate(sent)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(p) for p in e['loc'][:1]).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise CommandError(problems) from None
    if update.expires_at is not None and update.expires_at.timestamp() <= time.time():
        raise CommandError("--expires-at must be in the future")
    async with database(load_settings()) as db, db.sessions() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))
        if key is None:
            raise CommandError(f"no live key {key_id}")
        key = await change_key(session, key, update.changes())
        await session.commit()
        print(
            f"key {key.id} ({key.prefix}, account {key.account_id}) changed: "
            + ", ".join(f"{field}={value!r}" for field, value in sent.items())
        )
    return 0


async def _revoke(key_id: int) -> int:
    from cocoon_platform.accounts.service import revoke_key
    from cocoon_platform.db.engine import database
    from cocoon_platform.db.models import ApiKey

    async with database(load_settings()) as db, db.sessions() as session:
        account_id = await session.scalar(select(ApiKey.account_id).where(ApiKey.id == key_id))
        if account_id is None or not await revoke_key(session, account_id, key_id):
            raise CommandError(f"no live key {key_id}")
        await session.commit()
    print(f"key {key_id} revoked")
    return 0


def _utc(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
