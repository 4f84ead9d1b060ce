"""Settings: one class, read from `COCOON_*` environment variables and an optional `.env`."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

if TYPE_CHECKING:
    from cocoon_platform.ops.client_address import IPNetwork

NANOTON_PER_TON = 1_000_000_000

# A valid mainnet address owned by nobody we know of: used only so a fresh checkout starts.
# Operators must set COCOON_DEPOSIT_WALLET to their own wallet; /ready and `serve` say when they haven't.
DEFAULT_DEPOSIT_WALLET = "EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sp"
PLACEHOLDER_WALLET_WARNING = "COCOON_DEPOSIT_WALLET is the placeholder default, not a wallet you own"


def ton_to_nanoton(value: str | float | int | Decimal) -> int:
    """Convert an amount of TON to nanoTON exactly; more than 9 decimals is an error."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    nano = amount * NANOTON_PER_TON
    if nano != nano.to_integral_value():
        raise ValueError(f"{value} TON has more than 9 decimal places")
    return int(nano)


def format_ton(nanoton: int, places: int = 4, *, trim: bool = False) -> str:
    """Render nanoTON as TON with a fixed number of places, rounding toward zero; never in
    exponent form (`str(Decimal)` writes 0 at 9 places as `0E-9`). With `trim`, trailing zeros
    go (`0`, `0.05`), for amounts quoted exactly in messages."""
    quantum = Decimal(1).scaleb(-places)
    text = f"{(Decimal(nanoton) / NANOTON_PER_TON).quantize(quantum, rounding='ROUND_DOWN'):f}"
    if trim and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class Settings(BaseSettings):
    """Every setting of the platform; see the configuration table in README.md."""

    model_config = SettingsConfigDict(env_prefix="COCOON_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./data/cocoon.db"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)

    upstream_url: str = "http://127.0.0.1:10000"
    upstream_access_hash: str | None = None
    upstream_connect_timeout: float = Field(3.0, gt=0)
    # The COCOON client's per-request `timeout`, sent on every forwarded request (the client gives
    # the network 95% of it, then answers 504); the platform's own deadline is a margin above it,
    # so the network always ends first and says what it did. The read timeout is idle time
    # between bytes: what detects a dead upstream.
    upstream_request_timeout: float = Field(120.0, gt=0)
    upstream_deadline_margin: float = Field(10.0, ge=1)
    upstream_read_timeout: float = Field(60.0, gt=0)
    upstream_max_connections: int = Field(1024, ge=1)
    upstream_pool_wait_seconds: float = Field(3.0, gt=0)
    # Request fields forwarded as sent although the older COCOON client build refuses them
    # (comma-separated; for deployments whose client build accepts them, e.g. "seed,logprobs").
    upstream_extra_fields: str = ""
    stats_refresh_seconds: float = Field(5.0, gt=0)
    stats_stale_seconds: float = Field(30.0, gt=0)
    model_catalog_file: str | None = None

    admin_token: str | None = None
    deposit_wallet: str = DEFAULT_DEPOSIT_WALLET
    ton_network: Literal["mainnet", "testnet"] = "mainnet"

    markup_multiplier: Decimal = Decimal("1.5")
    min_balance_ton: Decimal = Decimal("0.01")
    max_overdraft_ton: Decimal = Decimal("0.05")
    # Only accounts whose lifetime credits (deposits and operator credits) reach this may overdraw.
    overdraft_min_credits_ton: Decimal = Decimal("1")
    # A deposit's page in a TON explorer; {tx_hash} is the transaction's hash in hex.
    ton_explorer_tx_url: str = "https://tonviewer.com/transaction/{tx_hash}"
    max_tokens_cap: int = Field(128000, ge=1)
    default_max_tokens: int = Field(4096, ge=1)
    max_coefficient: int = Field(1000, ge=1)
    # Network prices used until (and whenever) the upstream's /jsonstats can't be read.
    price_per_token: int = Field(20, ge=0)
    prompt_multiplier: int = Field(10000, ge=0)
    completion_multiplier: int = Field(80000, ge=0)
    reasoning_multiplier: int = Field(80000, ge=0)
    cached_multiplier: int = Field(1000, ge=0)

    reservation_ttl_seconds: float = Field(900.0, gt=0)
    sweep_interval_seconds: float = Field(30.0, gt=0)
    settle_batch_max: int = Field(256, ge=1)

    toncenter_url: str = "https://toncenter.com"
    toncenter_api_key: str | None = None
    deposit_poll_seconds: float = Field(2.0, gt=0)
    deposit_rescan_seconds: float = Field(300.0, gt=0)
    deposit_watcher: bool = True
    tonapi_url: str = "https://tonapi.io"
    coingecko_url: str = "https://api.coingecko.com"
    rates_enabled: bool = True

    redis_url: str | None = None
    metrics_token: str | None = None
    log_json: bool = False
    log_level: str = "info"
    rate_limit_rpm: int = Field(600, ge=0)
    rate_limit_concurrent: int = Field(32, ge=0)
    rate_limit_signup_per_minute: int = Field(10, ge=0)
    auth_failures_per_minute: int = Field(30, ge=0)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    header_timeout_seconds: float = Field(10.0, gt=0)
    body_timeout_seconds: float = Field(60.0, gt=0)
    # 0: half the process's open-file limit, so upstream connections and the database fit beside.
    max_connections: int = Field(0, ge=0)
    cors_origins: str = ""
    # Peers whose X-Forwarded-For is believed (comma-separated CIDRs; see ops/client_address.py).
    trusted_proxies: str = ""
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL"

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"unreadable database URL {value!r}") from exc
        if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
            url = url.set(drivername="postgresql+asyncpg")
        elif url.drivername == "sqlite":
            url = url.set(drivername="sqlite+aiosqlite")
        if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(
                f"unsupported database {url.drivername!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://"
            )
        return url.render_as_string(hide_password=False)

    @field_validator("markup_multiplier")
    @classmethod
    def _check_markup(cls, value: Decimal) -> Decimal:
        if value < 1:
            raise ValueError("markup multiplier must be at least 1 (the platform never sells below cost)")
        return value

    @field_validator("min_balance_ton", "max_overdraft_ton", "overdraft_min_credits_ton")
    @classmethod
    def _check_amount(cls, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError("must not be negative")
        ton_to_nanoton(value)
        return value

    @field_validator("toncenter_url", "tonapi_url", "coingecko_url")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) < 10:
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")

    @field_validator("ton_explorer_tx_url")
    @classmethod
    def _check_explorer_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or "{tx_hash}" not in value:
            raise ValueError("must be an http(s):// URL containing {tx_hash}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        from cocoon_platform.ops.client_address import parse_networks

        parse_networks(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.upper() not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
            raise ValueError("must be one of critical, error, warning, info, debug")
        return value.lower()

    @field_validator("upstream_url")
    @classmethod
    def _check_upstream(cls, value: str) -> str:
        urls = [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
            raise ValueError("must be one or more comma-separated http(s):// URLs")
        return ",".join(urls)

    @model_validator(mode="after")
    def _check_wallet(self) -> Settings:
        from cocoon_platform.ton.address import InvalidAddress, TonAddress

        try:
            address = TonAddress.parse(self.deposit_wallet)
        except InvalidAddress as exc:
            raise ValueError(f"COCOON_DEPOSIT_WALLET is not a valid TON address: {exc}") from exc
        # The raw form carries no network flag; the user-friendly form must match the network.
        if ":" not in self.deposit_wallet and address.testnet != (self.ton_network == "testnet"):
            raise ValueError(
                f"COCOON_DEPOSIT_WALLET is a {'testnet' if address.testnet else 'mainnet'} address "
                f"but COCOON_TON_NETWORK is {self.ton_network}"
            )
        return self

    @property
    def deposit_wallet_is_placeholder(self) -> bool:
        """Whether COCOON_DEPOSIT_WALLET is still the shipped default (in any of its forms)."""
        from cocoon_platform.ton.address import TonAddress

        return TonAddress.parse(self.deposit_wallet) == TonAddress.parse(DEFAULT_DEPOSIT_WALLET)

    @property
    def upstream_urls(self) -> list[str]:
        return self.upstream_url.split(",")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @cached_property
    def upstream_deadline(self) -> float:
        """The platform's own deadline per request, in seconds: the request timeout plus the margin,
        but never past a hold's expiry (less min(60 s, 20%)), so the sweeper never releases a live one."""
        ttl = self.reservation_ttl_seconds
        return min(self.upstream_request_timeout + self.upstream_deadline_margin, max(1.0, ttl - min(60.0, ttl * 0.2)))

    @cached_property
    def upstream_timeout_sent(self) -> float:
        """The `timeout` sent with each request: the setting, or less when a short hold's expiry
        bounds the deadline, so that the network always ends first."""
        deadline = self.upstream_deadline
        return min(self.upstream_request_timeout, max(deadline - self.upstream_deadline_margin, deadline / 2))

    @cached_property
    def min_balance_nanoton(self) -> int:
        return ton_to_nanoton(self.min_balance_ton)

    @cached_property
    def max_overdraft_nanoton(self) -> int:
        return ton_to_nanoton(self.max_overdraft_ton)

    @cached_property
    def overdraft_min_credits_nanoton(self) -> int:
        return ton_to_nanoton(self.overdraft_min_credits_ton)

    @cached_property
    def upstream_extra_field_set(self) -> frozenset[str]:
        return frozenset(f.strip() for f in self.upstream_extra_fields.split(",") if f.strip())

    @cached_property
    def trusted_proxy_networks(self) -> list[IPNetwork]:
        from cocoon_platform.ops.client_address import parse_networks

        return parse_networks(self.trusted_proxies)

    @cached_property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
