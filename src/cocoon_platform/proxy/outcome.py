"""What happened to one forwarded request: filled in while it runs, read to settle and observe it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cocoon_platform.billing.cost import Attempt, Delivered, UsageStatus
from cocoon_platform.billing.prices import TokenCounts
from cocoon_platform.errors import PlatformError


@dataclass(slots=True)
class Outcome:
    """One request's outcome. `status` is what its usage record will say; `settled` turns true
    once the record is written and the hold released, with `tokens` and `charge` as billed."""

    status: UsageStatus = UsageStatus.OK
    settled: bool = False
    http_status: int = 200
    usage: dict[str, Any] | None = None  # the network's usage object for the last attempt, if it sent one
    estimated: bool = False
    # The text chunks (reasoning among them) the network sent in the last attempt, counted as they
    # arrived, whether relayed to the caller, held back while a tool call is awaited, or assembled
    # into a whole answer. A first attempt's, and its usage, are set aside in `earlier` once the
    # network takes a second (`second_attempt`).
    delivered_completion: int = 0
    delivered_reasoning: int = 0
    delivered_bytes: int = 0  # of that text, for when a chunk carries several tokens
    error: PlatformError | None = None
    account_id: int | None = None
    key_id: int | None = None
    tokens: TokenCounts | None = None
    charge: int = 0
    upstream_seconds: float | None = None
    stream_id: str | None = None  # the upstream's chunk id, reused on the usage chunk we emit
    first_token_seconds: float | None = None
    upstream_done: bool = False  # the stream's `[DONE]` arrived
    answering: bool = False  # the network began answering (its answer's head arrived)
    client_left: bool = False  # the caller went away before its answer was whole
    earlier: Attempt | None = None  # the first attempt, once the network took a second (a retry)

    def delivered(self) -> Delivered:
        return Delivered(self.delivered_completion, self.delivered_reasoning, self.delivered_bytes)

    def second_attempt(self) -> None:
        """The network took a second attempt (`proxy/attempts.py`): the first's usage and what it
        delivered are set aside, to be billed with the second's, which are counted from here."""
        self.earlier = Attempt(self.usage, self.delivered())
        self.usage, self.upstream_done = None, False
        self.delivered_completion = self.delivered_reasoning = self.delivered_bytes = 0
