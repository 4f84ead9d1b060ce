"""What the store reserves and settles, and the rows a settlement writes (shared by both databases).

The column lists here are the usage and ledger tables' own: change them with a migration and with
the statements in sqlite.py and postgres.py, which insert in exactly this order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cocoon_platform.billing.ledger import EntryKind


@dataclass(frozen=True, slots=True)
class Reservation:
    hold_id: str
    account_id: int
    key_id: int
    amount: int
    # Whether the hold counts against the key's credit limit (the key had one when it was made):
    # then the settlement adds the charge to the key's spending in its period.
    key_counted: bool = False


@dataclass(frozen=True, slots=True)
class AccountFunds:
    """What a refused reservation is explained from: the account's funds and the key's state."""

    balance: int
    reserved: int
    credited: int
    key_id: int
    expires_at: int | None
    models: str | None
    credit_limit: int | None
    limit_reset: str | None
    limit_spent: int  # in the current period
    limit_reserved: int


@dataclass(slots=True)
class Settlement:
    """The outcome of one request: its charge and its usage record."""

    reservation: Reservation
    charge: int
    request_id: str
    model: str
    endpoint: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    status: str
    http_status: int
    estimated: bool
    duration_ms: int

    def usage_row(self, created_ms: int) -> tuple[Any, ...]:
        """Values in USAGE_COLUMNS order."""
        return (
            self.request_id,
            self.reservation.account_id,
            self.reservation.key_id,
            self.model[:200],
            self.endpoint,
            self.prompt_tokens,
            self.cached_tokens,
            self.completion_tokens,
            self.reasoning_tokens,
            self.charge,
            self.status,
            self.http_status,
            self.estimated,
            self.duration_ms,
            created_ms,
        )


USAGE_COLUMNS = (
    "request_id, account_id, key_id, model, endpoint, prompt_tokens, cached_tokens, "
    "completion_tokens, reasoning_tokens, cost_nanoton, status, http_status, estimated, "
    "duration_ms, created_at"
)
LEDGER_COLUMNS = "account_id, kind, amount_nanoton, reference, memo, created_at"
# AccountFunds' fields, from `api_keys k JOIN accounts a`; parameters 2..4: the current day, week and
# month's starts (the spending of a period that is over counts as zero).
FUNDS_COLUMNS = """a.balance_nanoton, a.reserved_nanoton, a.credited_nanoton, k.id, k.expires_at, k.models,
       k.credit_limit_nanoton, k.limit_reset,
       CASE WHEN k.limit_period_start < (CASE k.limit_reset WHEN 'daily' THEN $2 WHEN 'weekly' THEN $3
                                         WHEN 'monthly' THEN $4 ELSE 0 END)
            THEN 0 ELSE k.limit_spent_nanoton END,
       k.limit_reserved_nanoton"""


@dataclass(frozen=True, slots=True)
class SettlementRows:
    """One batch of settlements as rows for the ledger, accounts and usage tables."""

    hold_ids: list[str]
    ledger: list[tuple[Any, ...]]
    usage: list[tuple[Any, ...]]
    settles: Sequence[Settlement]

    def account_moves(self, released: dict[str, tuple[int, int | None]]) -> list[tuple[int, int, int]]:
        """(charge, released, account id) per account, in id order so batches can't deadlock;
        `released` maps each hold this batch released to its (amount, key id).

        A hold already released by the sweeper counts as released zero: the charge still applies.
        """
        moves: dict[int, list[int]] = {}
        for s in self.settles:
            move = moves.setdefault(s.reservation.account_id, [0, 0])
            move[0] += s.charge
            move[1] += released.get(s.reservation.hold_id, (0, None))[0]
        return [(c, r, a) for a, (c, r) in sorted(moves.items()) if c or r]

    def key_moves(self, released: dict[str, tuple[int, int | None]]) -> list[tuple[int, int, int]]:
        """(charge, released, key id) per key whose credit limit counted these requests, in id order."""
        moves: dict[int, list[int]] = {}
        for s in self.settles:
            if s.reservation.key_counted:
                moves.setdefault(s.reservation.key_id, [0, 0])[0] += s.charge
        for amount, key_id in released.values():
            if key_id is not None:
                moves.setdefault(key_id, [0, 0])[1] += amount
        return [(c, r, k) for k, (c, r) in sorted(moves.items()) if c or r]


def settlement_rows(settles: Sequence[Settlement], created_at: Any) -> SettlementRows:
    created_ms = int(time.time() * 1000)
    ledger = [
        (s.reservation.account_id, EntryKind.USAGE.value, -s.charge, f"usage:{s.request_id}", None, created_at)
        for s in settles
        if s.charge
    ]
    return SettlementRows(
        hold_ids=[s.reservation.hold_id for s in settles],
        ledger=ledger,
        usage=[s.usage_row(created_ms) for s in settles],
        settles=settles,
    )
