"""What the store reserves and settles, and the rows a settlement writes (shared by both databases).

The column lists here are the usage and ledger tables' own: change them with a migration and with
the statements in sqlite.py and postgres.py, which insert in exactly this order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from cocoon_platform.billing.ledger import EntryKind


@dataclass(frozen=True, slots=True)
class Reservation:
    hold_id: str
    account_id: int
    key_id: int
    amount: int
    # The reservation's overdraft rule, which its settlement keeps too (see cap_charges): the
    # balance may go `overdraft` below 0 only when the account's lifetime credits reach
    # `overdraft_min_credits`.
    overdraft: int = 0
    overdraft_min_credits: int = 0


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
    """The outcome of one request: its charge and its usage record.

    `charge` is what the request cost (billing/cost.py); the store charges less only where
    charging it all would break a promise (see cap_charges), and says what it charged."""

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

    def usage_row(self, created_ms: int, charged: int) -> tuple[Any, ...]:
        """Values in USAGE_COLUMNS order; `charged` is what the store charged of `charge`."""
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
            charged,
            self.status,
            self.http_status,
            self.estimated,
            self.duration_ms,
            created_ms,
            self.charge - charged or None,
        )


USAGE_COLUMNS = (
    "request_id, account_id, key_id, model, endpoint, prompt_tokens, cached_tokens, "
    "completion_tokens, reasoning_tokens, cost_nanoton, status, http_status, estimated, "
    "duration_ms, created_at, capped_nanoton"
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


class Released(NamedTuple):  # a tuple: one is made per settlement, on the hot path
    """A hold a settlement batch released: its amount, the key whose request made it, and whether
    it counted against that key's credit limit."""

    amount: int
    key_id: int | None
    key_counted: bool


class KeyLimit(NamedTuple):
    """A key's credit limit (None: it has none) and what it spent in the current period."""

    limit: int | None
    spent: int


def counts_against_key(settlement: Settlement, released: dict[str, Released], keys: dict[int, KeyLimit]) -> bool:
    """Whether a settlement's charge counts against its key's credit limit: its hold did, or, when
    the sweeper released the hold first, the key has a limit now."""
    hold = released.get(settlement.reservation.hold_id)
    if hold is not None:
        return hold.key_counted
    key = keys.get(settlement.reservation.key_id)
    return key is not None and key.limit is not None


def cap_charges(
    settles: Sequence[Settlement],
    counted: Sequence[bool],
    accounts: dict[int, tuple[int, int]],
    keys: dict[int, KeyLimit],
) -> list[int]:
    """What each settlement charges, in order: its whole charge, less only where that would break
    a promise (the network reported more than the hold's worst case: a miscounting upstream, a low
    prompt estimate):
    - a balance never goes further below 0 than the reservation's rule lets a hold take it: not
      at all for an account whose lifetime credits are below the overdraft's minimum (#14), at
      most the overdraft for one whose credits reach it. Other requests in flight don't shield
      the balance: they are charged in turn, and capped in turn if it runs out;
    - a key whose limit counts the request never spends past its limit in the period.
    So the operator is paid in full wherever the user agreed to be charged: within the balance,
    the overdraft the account has earned and the key's limit. What is left uncharged is the
    operator's loss, recorded on the usage record.

    `accounts` maps the charged accounts to their (balance, lifetime credits) and `keys` the
    counted keys to their limits, as the batch's transaction found them."""
    account_left: dict[int, int] = {}
    key_left: dict[int, int] = {}
    charged: list[int] = []
    for settlement, key_counted in zip(settles, counted, strict=True):
        reservation = settlement.reservation
        charge = settlement.charge
        if charge > 0:
            if reservation.account_id not in account_left:
                balance, credited = accounts[reservation.account_id]
                overdraft = reservation.overdraft if credited >= reservation.overdraft_min_credits else 0
                account_left[reservation.account_id] = max(balance + overdraft, 0)
            charge = min(charge, account_left[reservation.account_id])
            key = keys.get(reservation.key_id) if key_counted else None
            if key is not None and key.limit is not None:
                charge = min(charge, key_left.setdefault(reservation.key_id, max(key.limit - key.spent, 0)))
                key_left[reservation.key_id] -= charge
            account_left[reservation.account_id] -= charge
        charged.append(charge)
    return charged


@dataclass(frozen=True, slots=True)
class SettlementRows:
    """One batch of settlements as rows for the ledger, accounts, keys and usage tables."""

    settles: Sequence[Settlement]
    released: dict[str, Released]
    counted: list[bool]  # per settlement: whether its charge counts against its key's limit
    charged: list[int]  # per settlement: what it charges (see cap_charges)
    ledger: list[tuple[Any, ...]]
    usage: list[tuple[Any, ...]]

    def account_moves(self) -> list[tuple[int, int, int]]:
        """(charge, released, account id) per account, in id order so batches can't deadlock.

        A hold already released by the sweeper counts as released zero: the charge still applies.
        """
        moves: dict[int, list[int]] = {}
        for settlement, charge in zip(self.settles, self.charged, strict=True):
            move = moves.setdefault(settlement.reservation.account_id, [0, 0])
            move[0] += charge
            hold = self.released.get(settlement.reservation.hold_id)
            move[1] += hold.amount if hold is not None else 0
        return [(c, r, a) for a, (c, r) in sorted(moves.items()) if c or r]

    def key_moves(self) -> list[tuple[int, int, int]]:
        """(charge, released, key id) per key whose credit limit counts these requests, in id order."""
        moves: dict[int, list[int]] = {}
        for settlement, key_counted, charge in zip(self.settles, self.counted, self.charged, strict=True):
            if key_counted:
                moves.setdefault(settlement.reservation.key_id, [0, 0])[0] += charge
        for hold in self.released.values():
            if hold.key_counted and hold.key_id is not None:
                moves.setdefault(hold.key_id, [0, 0])[1] += hold.amount
        return [(c, r, k) for k, (c, r) in sorted(moves.items()) if c or r]


def settlement_rows(
    settles: Sequence[Settlement],
    released: dict[str, Released],
    accounts: dict[int, tuple[int, int]],
    keys: dict[int, KeyLimit],
    created_at: Any,
) -> SettlementRows:
    """The batch's rows, its charges capped (see cap_charges) against what its transaction found."""
    created_ms = int(time.time() * 1000)
    counted = [counts_against_key(s, released, keys) for s in settles]
    charged = cap_charges(settles, counted, accounts, keys)
    ledger = [
        (s.reservation.account_id, EntryKind.USAGE.value, -charge, f"usage:{s.request_id}", None, created_at)
        for s, charge in zip(settles, charged, strict=True)
        if charge
    ]
    return SettlementRows(
        settles=settles,
        released=released,
        counted=counted,
        charged=charged,
        ledger=ledger,
        usage=[s.usage_row(created_ms, charge) for s, charge in zip(settles, charged, strict=True)],
    )
