"""Two attempts of one request, billed as one.

A request whose `tool_choice` requires a call is sent again once when the model made none
(tools/). Both attempts ran on the network, so both are billed, through the request's one
reservation (which covers both) and one settlement: their usage objects are added up here.
"""

from __future__ import annotations

from typing import Any

COST_FIELDS = ("prompt_total_cost", "completion_total_cost", "total_cost")


def _positive_total(usage: dict[str, Any]) -> bool:
    total = usage.get("total_cost")
    return isinstance(total, int) and not isinstance(total, bool) and total > 0


def combined_usage(first: dict[str, Any] | None, second: dict[str, Any] | None) -> dict[str, Any] | None:
    """The usage of both attempts: counts added, nested objects too. The network's own costs
    stay only when both attempts reported a positive `total_cost` (else the charge is worked
    out from the tokens, rather than from half the work)."""
    if not isinstance(first, dict) or not isinstance(second, dict):
        return None  # one attempt's usage is unknown: bill from what was delivered
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
