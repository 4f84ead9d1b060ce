"""The stream relay: upstream events forwarded as they arrive, and counted for billing.

Events that arrived in one read leave in one write: no event waits for another. The usage
chunk and `[DONE]` are held back: the handler sends them once the stream is settled, the usage
with its cost. A broken connection ends the relay with `outcome.error` set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from cocoon_platform.errors import UpstreamError
from cocoon_platform.proxy.asgi import Send
from cocoon_platform.proxy.events import DONE, LF, Chunk, EventSplitter, usual_event
from cocoon_platform.proxy.outcome import Outcome
from cocoon_platform.upstream.http import ConnectionBroken, UpstreamResponse


class Frame(Protocol):
    """Turns the payloads of one read into the bytes the client gets; `chunks` are the payloads
    as the relay decoded them, one for each (None when it did not decode them all, or when the
    payloads are not the relay's)."""

    def __call__(self, payloads: list[bytes], chunks: list[Chunk] | None = None, /) -> bytes: ...


async def relay(
    response: UpstreamResponse,
    send: Send,
    outcome: Outcome,
    started: float,
    watch_client: Callable[[], None],
    frame: Frame,
) -> None:
    """Forward upstream events until the answer ends; keep the usage for settlement. The
    caller's deadline raises through. `watch_client` is called before the relay first waits
    for the network, so a client that leaves meanwhile is noticed. `frame` turns the payloads
    of one read, with the chunks decoded from them, into the bytes the client gets (SSE in the
    caller's dialect)."""
    splitter = EventSplitter()
    try:
        while True:
            if not response.buffered:
                watch_client()
            data = await response.next_piece()
            out, chunks = read_events(splitter.feed(data) if data else splitter.finish(), outcome, started)
            if out:
                await send({"type": "http.response.body", "body": frame(out, chunks), "more_body": True})
            if not data:
                break
    except ConnectionBroken:
        outcome.error = UpstreamError(502, "The COCOON network dropped the stream.", "stream_cut")


def openai_frame(outcome: Outcome, answer_id: str) -> Frame:
    """Frames a read's events as SSE, with the answer's id for the upstream's chunk id: one
    C-level replace per read (the upstream's id is random, and a quote inside text is escaped,
    so nothing else matches)."""
    ours = b'"id":"' + answer_id.encode() + b'"'

    def frame(payloads: list[bytes], chunks: list[Chunk] | None = None, /) -> bytes:
        body = b"data: " + b"\n\ndata: ".join(payloads) + b"\n\n"
        if outcome.stream_id is not None:
            body = body.replace(b'"id":"' + outcome.stream_id.encode() + b'"', ours)
        return body

    return frame


def read_events(payloads: list[bytes], outcome: Outcome, started: float) -> tuple[list[bytes], list[Chunk] | None]:
    """Count what the events of one read deliver; return the payloads to forward, in order, and
    the chunks decoded from them, one for each; None instead when the general path read one of
    them (rare: the dialects then decode the read themselves, and the usual read needs no check
    for a missing chunk, which would cost a comparison per chunk).

    The usual event (one line, choices with text, no usage) is read by the typed fast path
    and counted here in one loop, as `count_delivered` counts (inline: this runs for every
    event); any other goes through `inspect_document`. `[DONE]` is not forwarded."""
    out: list[bytes] = []
    chunks: list[Chunk] = []
    whole = True  # every payload forwarded has its chunk
    completion = reasoning = size = 0
    for payload in payloads:
        if payload == DONE:
            outcome.upstream_done = True
            continue
        event = usual_event(payload) if LF not in payload else None
        if event is None:
            if (forwarded := inspect_document(payload, outcome, started)) is not None:
                out.append(forwarded)
                whole = False
            continue
        if outcome.first_token_seconds is None:
            first_event(outcome, started, event.id)
        for choice in event.choices:
            delta = choice.delta
            if delta is None:
                text = choice.text
            else:
                thought = delta.reasoning_content or delta.reasoning
                if thought:  # reasoning text if the choice has some, else its answer text
                    reasoning += 1
                    completion += 1
                    size += len(thought)
                    continue
                text = delta.content
            if text:
                completion += 1
                size += len(text)
        out.append(payload)
        chunks.append(event)
    if completion:
        outcome.delivered_completion += completion
        outcome.delivered_reasoning += reasoning
        outcome.delivered_bytes += size
    return out, chunks if whole else None


def inspect_document(payload: bytes, outcome: Outcome, started: float) -> bytes | None:
    """Any event, parsed whole, every field checked by hand; returns the bytes to forward (None
    to hold the event back)."""
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(chunk, dict):
        return None
    if outcome.first_token_seconds is None:
        first_event(outcome, started, chunk.get("id"))
    usage = chunk.get("usage")
    choices = chunk.get("choices")
    if isinstance(usage, dict):
        outcome.usage = usage
    if not choices:
        if "error" in chunk:
            outcome.error = UpstreamError(502, "The COCOON network failed mid-stream.", "stream_error")
        return None  # the usage-only chunk goes out after settlement, with its cost
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict):
            count_delivered(outcome, delta.get("reasoning_content") or delta.get("reasoning"), delta.get("content"))
        else:
            count_delivered(outcome, None, choice.get("text"))
    if usage:
        del chunk["usage"]
        return orjson.dumps(chunk)
    # A payload spread over several lines would break the client's SSE parser: re-encode it.
    return orjson.dumps(chunk) if LF in payload else payload


def first_event(outcome: Outcome, started: float, stream_id: Any) -> None:
    """The stream's first readable event: its time, and its id for the usage chunk we emit."""
    outcome.first_token_seconds = time.perf_counter() - started
    if isinstance(stream_id, str):
        outcome.stream_id = stream_id


def count_delivered(outcome: Outcome, thought: Any, text: Any) -> None:
    """One choice of a chunk: reasoning text if it has some, else its answer text."""
    if isinstance(thought, str) and thought:
        outcome.delivered_reasoning += 1
        outcome.delivered_completion += 1
        outcome.delivered_bytes += len(thought)
    elif isinstance(text, str) and text:
        outcome.delivered_completion += 1
        outcome.delivered_bytes += len(text)
