"""Request and response bodies of the account endpoints, with the spec's field names."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, field_validator

from cocoon_platform.accounts.limits import LimitReset, store_models
from cocoon_platform.config import ton_to_nanoton

# A model id as an allow-list holds it: printable, no spaces or newlines.
ModelId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]


class ApiKeyResponse(BaseModel):
    api_key: str = Field(description="Plaintext API key (shown only once). Starts with 'ck_'.")
    deposit_code: str = Field(description="Unique code to include as memo in TON deposits.")
    balance_ton: float = Field(description="Current balance in TON.")
    created_at: datetime = Field(description="Account creation timestamp.")


class RegisterResponse(ApiKeyResponse):
    deposit_wallet: str = Field(description="TON wallet address for deposits.")


class LoginRequest(BaseModel):
    api_key: str = Field(description="API key to verify (with ck_ prefix).")


class LoginResponse(BaseModel):
    balance_ton: float
    deposit_code: str
    deposit_wallet: str


class KeySettingsFields(BaseModel):
    """A key's restrictions, each optional; a key with any of them cannot manage keys."""

    name: str | None = Field(default=None, max_length=100, description="A label for the key.")
    credit_limit_ton: Decimal | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        description="Most the key may spend per period (see limit_reset), in TON; null: no limit. Requests whose "
        "worst case would cross it get 402 key_limit_reached.",
    )
    limit_reset: LimitReset | None = Field(
        default=None,
        description="When the limit starts over (UTC: daily at midnight, weekly on Monday, monthly on "
        "the 1st); null: never.",
    )
    models: list[ModelId] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="The models the key may use (ids or aliases); null: all. Others get 403 model_not_allowed.",
    )
    expires_at: datetime | None = Field(
        default=None,
        description="When the key stops working (ISO 8601; UTC when no zone is given); null: never. "
        "After it the key gets 401 key_expired.",
    )

    @field_validator("credit_limit_ton")
    @classmethod
    def _exact_nanoton(cls, value: Decimal | None) -> Decimal | None:
        if value is not None:
            ton_to_nanoton(value)  # more than 9 decimals is an error
        return value

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def changes(self) -> dict[str, Any]:
        """The fields the caller sent, as ApiKey columns (stored forms; see accounts/limits.py)."""
        sent = self.model_fields_set
        values: dict[str, Any] = {}
        if "name" in sent:
            values["name"] = self.name
        if "credit_limit_ton" in sent:
            values["credit_limit_nanoton"] = (
                None if self.credit_limit_ton is None else ton_to_nanoton(self.credit_limit_ton)
            )
        if "limit_reset" in sent:
            values["limit_reset"] = None if self.limit_reset is None else self.limit_reset.value
        if "models" in sent:
            values["models"] = store_models(self.models)
        if "expires_at" in sent:
            values["expires_at"] = None if self.expires_at is None else int(self.expires_at.timestamp())
        return values


class NewKeyRequest(KeySettingsFields):
    pass


class KeyUpdate(KeySettingsFields):
    """Only the fields sent change; null removes a restriction."""


class KeyInfo(BaseModel):
    id: int
    prefix: str = Field(description="The first characters of the key; the key itself is never shown again.")
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    credit_limit_ton: float | None = Field(default=None, description="The key's limit per period, in TON.")
    credit_limit_nanoton: int | None = None
    limit_reset: LimitReset | None = None
    models: list[str] | None = Field(default=None, description="The models the key may use; null: all.")
    expires_at: datetime | None = None
    expired: bool = False
    restricted: bool = Field(
        default=False, description="Whether the key has any restriction (then it cannot create, change or delete keys)."
    )
    spent_nanoton: int = Field(default=0, description="What the key's requests were charged in the current period.")
    spent_ton: float = 0.0
    held_nanoton: int = Field(default=0, description="Held against the key's limit by its requests in flight.")
    period_start: datetime | None = Field(default=None, description="Start of the current period (null: never resets).")
    resets_at: datetime | None = Field(default=None, description="When the limit next starts over (null: never).")


class KeyList(BaseModel):
    data: list[KeyInfo]
    current_key_id: int | None = Field(default=None, description="The key this request was made with.")


class NewKeyResponse(ApiKeyResponse):
    """The spec's answer, with the new key's settings."""

    key: KeyInfo | None = Field(default=None, description="The new key's id and settings.")
