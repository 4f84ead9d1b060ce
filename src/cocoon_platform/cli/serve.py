"""`serve` (the HTTP API) and `migrate`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from functools import partial

from cocoon_platform.cli.common import CommandError, Subparsers, load_settings
from cocoon_platform.config import PLACEHOLDER_WALLET_WARNING, Settings


def register_serve(commands: Subparsers[argparse.ArgumentParser]) -> None:
    """Add `serve` and `migrate` to the top-level commands."""
    serve = commands.add_parser("serve", help="run the HTTP API (applies migrations first)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes (default COCOON_WORKERS or 1)")
    serve.set_defaults(handler=cmd_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(handler=cmd_migrate)


def check_model_catalog(settings: Settings) -> None:
    from cocoon_platform.upstream.catalog import CatalogError, ModelCatalog

    try:
        ModelCatalog.load(settings.model_catalog_file)
    except CatalogError as exc:
        raise CommandError(str(exc)) from None


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
        print(
            f"warning: {settings.workers} workers without COCOON_REDIS_URL count rate limits each on its own: "
            f"a client can get up to {settings.workers} times every limit",
            file=sys.stderr,
        )
    if settings.deposit_wallet_is_placeholder:
        print(
            f"warning: {PLACEHOLDER_WALLET_WARNING}: deposits sent there never reach you; /ready answers 503",
            file=sys.stderr,
        )
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
        http=partial(
            HttpProtocol,
            guard=ConnectionGuard(
                ConnectionLimits(  # type: ignore[arg-type]
                    settings.header_timeout_seconds, settings.body_timeout_seconds, max_connections(settings)
                )
            ),
        ),
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
