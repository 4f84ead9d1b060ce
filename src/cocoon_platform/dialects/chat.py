"""What the dialects read from chat answers and chat stream chunks.

Stream chunks are the relay's typed objects (`proxy/events.py`): the relay reads them and feeds
their text to the dialect's stream in one loop (`proxy.relay.read_texts`); `frame_chunks` takes
the chunks the tool support rewrites.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from cocoon_platform.errors import InvalidRequest
from cocoon_platform.proxy.events import DECODE_ERRORS, Chunk, decode_chunk
from cocoon_platform.proxy.relay import TextStream

_decode_many = msgspec.json.Decoder(list[Chunk]).decode


def frame_chunks(stream: TextStream, payloads: list[bytes]) -> bytes:
    """A dialect stream's events for chunk payloads that are not the relay's (the tool support's
    rewritten answer): each chunk decoded and taken as any chunk is (`TextStream.choices`); the
    relay's own go through `proxy.relay.read_texts`."""
    out = [] if stream.started else stream.begin()
    for chunk in decoded_chunks(payloads):
        stream.choices(chunk.choices, out)
    if stream.held:
        stream.write_held(out)
    return b"".join(out)


def decoded_chunks(payloads: list[bytes]) -> list[Chunk]:
    """The chunks of one read, decoded in one call, as one JSON array, and each alone only when
    that fails; one that does not decode is skipped, as the relay skips it."""
    try:
        return _decode_many(b"[" + b",".join(payloads) + b"]")
    except DECODE_ERRORS:
        return _decode_each(payloads)


def _decode_each(payloads: list[bytes]) -> list[Chunk]:
    """Each payload's chunk; one that does not decode is skipped."""
    decoded = []
    for payload in payloads:
        try:
            decoded.append(decode_chunk(payload))
        except DECODE_ERRORS:
            continue
    return decoded


def usage_numbers(usage: Any) -> tuple[int, int, int, int, int, float]:
    """A chat usage object's counts and the cost the platform charged: prompt, cached, completion
    and reasoning tokens, the cost in nanoTON and in TON. A count that is not an int of at least 0
    (a bool is none) counts 0."""
    if not isinstance(usage, dict):
        usage = {}
    prompt, completion, cost = usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("cost_nanoton")
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    details = usage.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else usage.get("reasoning_tokens")
    # Each count checked inline (a call each would cost as much as the rest): exactly an int, >= 0.
    cost = cost if type(cost) is int and cost >= 0 else 0
    return (
        prompt if type(prompt) is int and prompt >= 0 else 0,
        cached if type(cached) is int and cached >= 0 else 0,
        completion if type(completion) is int and completion >= 0 else 0,
        reasoning if type(reasoning) is int and reasoning >= 0 else 0,
        cost,
        cost / 1_000_000_000,
    )


@dataclass(slots=True)
class ChatMessage:
    """The first choice of a whole chat answer."""

    text: str
    reasoning: str
    tool_calls: list[dict[str, Any]]  # OpenAI's shape: {"id", "type", "function": {"name", "arguments"}}
    finish_reason: str | None
    stop_reason: Any


def read_message(document: dict[str, Any]) -> ChatMessage:
    choices = document.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    text = message.get("content")
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    calls = message.get("tool_calls")
    return ChatMessage(
        text=text if isinstance(text, str) else "",
        reasoning=reasoning if isinstance(reasoning, str) else "",
        tool_calls=[c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else [],
        finish_reason=choice.get("finish_reason"),
        stop_reason=choice.get("stop_reason"),
    )


def function_of(call: dict[str, Any]) -> tuple[str, str]:
    """A chat tool call's function name and arguments (JSON text)."""
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    name, arguments = function.get("name"), function.get("arguments")
    return (name if isinstance(name, str) else "", arguments if isinstance(arguments, str) else "{}")


def text_of(content: Any, where: str, kinds: frozenset[str]) -> str:
    """A dialect's content (a string, or a list of parts of the `kinds` types with `text`) as one
    string, parts joined by a newline; other parts are refused (the network reads text only)."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or a list of text parts", param=where)
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds or not isinstance(part.get("text"), str):
            raise InvalidRequest(
                f"{where}[{index}]: only text parts are supported by the COCOON network (got {kind!r})", param=where
            )
        texts.append(part["text"])
    return "\n".join(texts)
