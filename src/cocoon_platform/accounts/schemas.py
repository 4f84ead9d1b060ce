"""Request and response bodies of the account endpoints, with the spec's field names."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


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


class NewKeyRequest(BaseModel):
    name: str | None = Field(default=None, max_length=100, description="A label for the key.")


class KeyInfo(BaseModel):
    id: int
    prefix: str = Field(description="The first characters of the key; the key itself is never shown again.")
    name: str | None
    created_at: datetime
    last_used_at: datetime | None


class KeyList(BaseModel):
    data: list[KeyInfo]
