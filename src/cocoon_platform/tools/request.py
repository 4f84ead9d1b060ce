"""A chat body's tools and tool history, made into what the network takes.

`apply_tools` runs in `parse_request` (and in any dialect that builds a chat body), before the
network field filter: it takes the tools out, renders them and the tool history into the
messages in the model's format (the catalog's `tool_format`), and says how many prompt bytes
that added, so the reservation covers them. A model without a tool format keeps the clear
400 for `tools`; its tool history is refused by the field filter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cocoon_platform.errors import UnsupportedParameter
from cocoon_platform.tools.hermes import has_tool_history, offer_text, render_messages
from cocoon_platform.tools.offer import NONE, SchemaCache, ToolOffer, read_tool_offer
from cocoon_platform.upstream.catalog import HERMES

# Prompt bytes a history item may add beyond its text in the body (tags and the call's JSON frame).
HISTORY_ITEM_BYTES = 64


def apply_tools(
    body: dict[str, Any],
    tool_format_of: Callable[[str], str | None],
    schemas: SchemaCache,
    history: bool | None = None,
    tools_json: bytes | None = None,
) -> tuple[ToolOffer | None, int]:
    """Rewrite a chat body (model and messages already checked) for the network; `tool_format_of`
    gives a model's tool format (the catalog's); `history` says whether the messages carry tool
    calls or results, when the caller already knows; `tools_json` is the `tools` list's JSON as
    sent, when known (`read_tool_offer`). Returns the offer to read the answer against
    (None when no tools are offered, or `tool_choice` is `none`) and the prompt bytes added."""
    messages = body["messages"]
    if history is None:
        history = has_tool_history(messages)
    if not history and "tools" not in body and "tool_choice" not in body:
        return None, 0
    if tool_format_of(body["model"]) != HERMES:
        if body.get("tools"):
            raise UnsupportedParameter("tools", f"model {body['model']} cannot call tools")
        body.pop("tools", None)
        body.pop("tool_choice", None)
        return None, 0
    offer = read_tool_offer(body, schemas, tools_json)
    text, added = offer_text(offer)
    body["messages"] = render_messages(messages, text, history)
    if history:
        added += sum(HISTORY_ITEM_BYTES * (len(m.get("tool_calls") or ()) + (m["role"] == "tool")) for m in messages)
    if offer is None or offer.choice == NONE:
        return None, added
    return offer, added
