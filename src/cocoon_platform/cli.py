"""The `cocoon-platform` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from pydantic import ValidationError

from cocoon_platform.config import PLACEHOLDER_WALLET_WARNING, Settings, format_ton, ton_to_nanoton


class CommandError(Exception):
    """A failure to report in one line, with a non-zero exit."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "settings"
            name = f"COCOON_{field.upper()}" if field != "settings" else field
            lines.append(f"  {name}: {error['msg']}")
        raise CommandError("invalid configuration:\n" + "\n".join(lines)) from None


def run_async(factory: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return asyncio.run(factory())


def check_model_catalog(settings: Settings) -> None:
    from cocoon_platform.upstream.catalog import CatalogError, ModelCatalog

    try:
        ModelCatalog.load(settings.model_catalog_file)
    except CatalogError as exc:
        raise CommandError(str(exc)) from None


# --- serve / migrate -------------------------------------------------------------------------


def cmd_migrate(_: argparse.Namespace) -> int:
    from cocoon_platform.db.migrate import upgrade_head

    settings = load_settings()
    upgrade_head(settings)
    print("database is at the newest schema")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cocoon_platform.db.migrate import upgrade_head
    from cocoon_platform.server import ConnectionGuard, ConnectionLimits, HttpProtocol

    # Flags override the environment; workers are new processes that read it again.
    for flag, env in (("host", "COCOON_HOST"), ("port", "COCOON_PORT"), ("workers", "COCOON_WORKERS")):
        value = getattr(args, flag)
        if value is not None:
            os.environ[env] = str(value)
    settings = load_settings()
    check_model_catalog(settings)
    upgrade_head(settings)
    limited = settings.rate_limit_rpm or settings.rate_limit_concurrent or settings.rate_limit_signup_per_minute
    if settings.workers > 1 and limited and not settings.redis_url:
        print(f"warning: {settings.workers} workers without COCOON_REDIS_URL count rate limits each on its own: "
              f"a client can get up to {settings.workers} times every limit", file=sys.stderr)
    if settings.deposit_wallet_is_placeholder:
        print(f"warning: {PLACEHOLDER_WALLET_WARNING}: deposits sent there never reach you; /ready answers 503",
              file=sys.stderr)
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Worker processes share their metrics through files (prometheus_client multiprocess mode).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cocoon-metrics-")
    uvicorn.run(
        "cocoon_platform.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="auto",
        # uvicorn calls `http` as it would the protocol class; its annotation asks for the class.
        http=partial(HttpProtocol, guard=ConnectionGuard(ConnectionLimits(  # type: ignore[arg-type]
            settings.header_timeout_seconds, settings.body_timeout_seconds, max_connections(settings)))),
        access_log=False,
        # Client addresses are resolved by ops/client_address.py, from COCOON_TRUSTED_PROXIES only.
        proxy_headers=False,
        server_header=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
    )
    return 0


def max_connections(settings: Settings) -> int:
    """COCOON_MAX_CONNECTIONS, or by default half the open-file limit: each client connection
    may need an upstream connection beside it, and the database and logs need some too."""
    if settings.max_connections:
        return settings.max_connections
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(soft, 1 << 20) // 2)


# --- admin -----------------------------------------------------------------------------------


async def _adjust_balance(args: argparse.Namespace, sign: int) -> int:
    from cocoon_platform.accounts.service import account_by_code, account_by_key
    from cocoon_platform.billing.ledger import NotEnoughAvailable, operator_credit, operator_debit
    from cocoon_platform.db.engine import create_engine, create_sessionmaker

    try:
        amount = ton_to_nanoton(args.amount_ton)
    except ValueError as exc:
        raise CommandError(f"--amount-ton: {exc}") from None
    if amount <= 0:
        raise CommandError("--amount-ton must be positive")
    settings = load_settings()
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            if args.api_key:
                account = await account_by_key(session, args.api_key)
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
    finally:
        await engine.dispose()
    print(f"account {account.id} ({account.deposit_code}): balance {format_ton(balance, 9)} TON ({balance} nanoTON)")
    return 0


def cmd_credit(args: argparse.Namespace) -> int:
    return run_async(lambda: _adjust_balance(args, +1))


def cmd_debit(args: argparse.Namespace) -> int:
    return run_async(lambda: _adjust_balance(args, -1))


def _add_balance_command(admin: Any, name: str, handler: Callable[[argparse.Namespace], int], verb: str) -> None:
    parser = admin.add_parser(name, help=f"{verb} an account through the ledger")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--api-key", help="the account's ck_ key")
    who.add_argument("--deposit-code", help="the account's deposit code")
    parser.add_argument("--amount-ton", required=True, help="amount in TON, e.g. 1.5")
    parser.add_argument("--reason", required=True, help="why; kept in the ledger entry")
    parser.set_defaults(handler=handler)


async def _reconcile() -> int:
    from cocoon_platform.db.engine import create_engine
    from cocoon_platform.ops.reconcile import find_discrepancies

    engine = create_engine(load_settings())
    try:
        problems = await find_discrepancies(engine)
    finally:
        await engine.dispose()
    for line in problems:
        print(line)
    if problems:
        raise CommandError(f"{len(problems)} discrepanc{'y' if len(problems) == 1 else 'ies'} found")
    print("books are sound: every balance equals its ledger, every reservation is open and accounted for")
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


def run_simulator(argv: list[str]) -> int:
    from cocoon_simulator.__main__ import main as simulate

    return simulate(argv)


# --- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from cocoon_platform.accounts.cli import register_keys
    from cocoon_platform.agents.stdio import register_mcp
    from cocoon_platform.ton.cli import register_deposits, register_watch

    parser = argparse.ArgumentParser(prog="cocoon-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API (applies migrations first)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes (default COCOON_WORKERS or 1)")
    serve.set_defaults(handler=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(handler=cmd_migrate)
    register_watch(commands)
    register_mcp(commands)

    # The simulator is a development tool in a package of its own: imported only when asked for.
    simulate = commands.add_parser(
        "simulate", add_help=False,
        help="run a COCOON-client simulator with a toncenter fake (for development and tests; see --help)",
    )
    simulate.add_argument("arguments", nargs=argparse.REMAINDER)

    admin = commands.add_parser("admin", help="operator commands").add_subparsers(dest="admin", required=True)
    _add_balance_command(admin, "credit", cmd_credit, "credit")
    _add_balance_command(admin, "debit", cmd_debit, "debit")
    reconcile = admin.add_parser("reconcile", help="check every balance against its ledger and every reservation")
    reconcile.set_defaults(handler=cmd_reconcile)
    backup = admin.add_parser(
        "backup", help="copy the SQLite database while serving (online backup API; PostgreSQL: pg_dump)",
    )
    backup.add_argument("path", help="file to write (created 0600)")
    backup.add_argument("--force", action="store_true", help="replace the file if it exists")
    backup.set_defaults(handler=cmd_backup)
    register_deposits(admin)
    register_keys(admin)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:  # the simulator parses its own arguments, --help included
        return run_simulator(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except CommandError as exc:
        print(f"cocoon-platform: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
