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


@dataclass(frozen=True, slots=True)
class AccountFunds:
    balance: int
    reserved: int


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
            self.request_id, self.reservation.account_id, self.reservation.key_id, self.model[:200], self.endpoint,
            self.prompt_tokens, self.cached_tokens, self.completion_tokens, self.reasoning_tokens, self.charge,
            self.status, self.http_status, self.estimated, self.duration_ms, created_ms,
        )


USAGE_COLUMNS = ("request_id, account_id, key_id, model, endpoint, prompt_tokens, cached_tokens, "
                 "completion_tokens, reasoning_tokens, cost_nanoton, status, http_status, estimated, "
                 "duration_ms, created_at")
LEDGER_COLUMNS = "account_id, kind, amount_nanoton, reference, memo, created_at"


@dataclass(frozen=True, slots=True)
class SettlementRows:
    """One batch of settlements as rows for the ledger, accounts and usage tables."""

    hold_ids: list[str]
    ledger: list[tuple[Any, ...]]
    usage: list[tuple[Any, ...]]
    settles: Sequence[Settlement]

    def account_moves(self, released: dict[str, int]) -> list[tuple[int, int, int]]:
        """(charge, released, account id) per account, in id order so batches can't deadlock.

        A hold already released by the sweeper counts as released zero: the charge still applies.
        """
        moves: dict[int, list[int]] = {}
        for s in self.settles:
            move = moves.setdefault(s.reservation.account_id, [0, 0])
            move[0] += s.charge
            move[1] += released.get(s.reservation.hold_id, 0)
        return [(c, r, a) for a, (c, r) in sorted(moves.items()) if c or r]


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
