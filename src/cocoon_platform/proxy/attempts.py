"""Two attempts of one request, billed as one.

A request whose `tool_choice` requires a call is sent again once when the model made none
(tools/). Both attempts ran on the network, so both are billed, through the request's one
reservation (which covers both) and one settlement: `billing.cost.bill` is given the first
attempt (`Outcome.earlier`, set aside once the network takes the second) beside the second's,
so a second attempt that breaks off still adds what it generated. The answer's `usage` says
what was billed, made here.
"""

from __future__ import annotations

from typing import Any

from cocoon_platform.proxy.outcome import Outcome

COST_FIELDS = ("prompt_total_cost", "completion_total_cost", "total_cost")


def answer_usage(outcome: Outcome) -> dict[str, Any] | None:
    """The usage object a settled request's answer shows, before its cost is added: the network's
    own (None if it sent none) for one attempt; for two, both network reports added up when the
    bill took both as they were, else the token counts billed (an attempt's part estimated)."""
    earlier = outcome.earlier
    if earlier is None:
        return outcome.usage
    if not outcome.estimated and earlier.usage is not None and outcome.usage is not None:
        return combined_usage(earlier.usage, outcome.usage)
    tokens = outcome.tokens
    assert tokens is not None, "the outcome is settled"
    return {
        "prompt_tokens": tokens.prompt,
        "completion_tokens": tokens.completion,
        "total_tokens": tokens.prompt + tokens.completion,
        "prompt_tokens_details": {"cached_tokens": tokens.cached},
        "completion_tokens_details": {"reasoning_tokens": tokens.reasoning},
    }


def _positive_total(usage: dict[str, Any]) -> bool:
    total = usage.get("total_cost")
    return isinstance(total, int) and not isinstance(total, bool) and total > 0


def combined_usage(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The usage of both attempts: counts added, nested objects too. The network's own costs
    stay only when both attempts reported a positive `total_cost` (else one attempt's cost was
    worked out from its tokens, and the network's figures would show only part of the charge)."""
    out = _added(first, second)
    if not (_positive_total(first) and _positive_total(second)):
        for name in COST_FIELDS:
            out.pop(name, None)
    return out


def _added(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    out = dict(first)
    for key, value in second.items():
        earlier = out.get(key)
        if isinstance(value, dict) and isinstance(earlier, dict):
            out[key] = _added(earlier, value)
        elif (
            isinstance(value, int)
            and isinstance(earlier, int)
            and not isinstance(value, bool)
            and not isinstance(earlier, bool)
        ):
            out[key] = earlier + value
        else:
            out[key] = value
    return out
