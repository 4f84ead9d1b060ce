"""The stream relay: upstream events forwarded as they arrive, and counted for billing.

Events that arrived in one read leave in one write: no event waits for another. The usage
chunk and `[DONE]` are held back: the handler sends them once the stream is settled, the usage
with its cost. A broken connection ends the relay with `outcome.error` set.

A read's events are counted and framed in one of two ways: chat's (`read_events`, then a
`Frame` of the payloads it forwards) or a dialect's (`read_texts`), which counts them as
`read_events` does and, in the same loop over the chunks, hands their text to the dialect's
stream: one walk over each chunk instead of two, for every chunk of every dialect stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from cocoon_platform.errors import UpstreamError
from cocoon_platform.proxy.asgi import Send
from cocoon_platform.proxy.events import DECODE_ERRORS, DONE, LF, ChunkChoice, EventSplitter, decode_chunk, usual_event
from cocoon_platform.proxy.outcome import Outcome
from cocoon_platform.upstream.http import ConnectionBroken, UpstreamResponse

Frame = Callable[[list[bytes]], bytes]  # the payloads of one read as the bytes the client gets


class TextStream(Protocol):
    """A dialect's stream as `read_texts` feeds it. Its blocks of text (the model's reasoning, its
    answer) open as their kind of text arrives; the texts of the open block are held, and their
    delta events written together (`write_held`) at the end of the read or when the block closes."""

    thinking: Any  # the kind of block reasoning text goes in
    answering: Any  # the kind of block answer text goes in
    open: Any  # the open block's kind (None when none is)
    held: list[str]  # the open block's texts whose delta events are not written yet
    started: bool  # its first events are written

    def begin(self) -> list[bytes]:
        """The stream's first events (a new list), called once, before any other."""
        ...

    def switch(self, kind: Any, out: list[bytes]) -> None:
        """Close the open block (its held texts written) and open one of `kind`."""
        ...

    def choices(self, choices: list[ChunkChoice], out: list[bytes]) -> None:
        """Any chunk's choices (the dialect answers with the first): its ending, reasoning, text
        and tool calls."""
        ...

    def write_held(self, out: list[bytes]) -> None:
        """The delta events of the held texts."""
        ...


async def relay(
    response: UpstreamResponse,
    send: Send,
    outcome: Outcome,
    watch_client: Callable[[], None],
    read: Frame,
) -> None:
    """Forward upstream events until the answer ends; `read` counts the events of one read (the
    usage kept for settlement) and frames them as the bytes the client gets (SSE in the caller's
    dialect): `framed_events` or `read_texts`. The caller's deadline raises through.
    `watch_client` is called before the relay first waits for the network, so a client that
    leaves meanwhile is noticed."""
    splitter = EventSplitter()
    try:
        while True:
            if not response.buffered:
                watch_client()
            data = await response.next_piece()
            body = read(splitter.feed(data) if data else splitter.finish())
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if not data:
                break
    except ConnectionBroken:
        outcome.error = UpstreamError(502, "The COCOON network dropped the stream.", "stream_cut")


def openai_frame(outcome: Outcome, answer_id: str) -> Frame:
    """Frames a read's events as SSE, with the answer's id for the upstream's chunk id: one
    C-level replace per read (the upstream's id is random, and a quote inside text is escaped,
    so nothing else matches)."""
    ours = b'"id":"' + answer_id.encode() + b'"'

    def frame(payloads: list[bytes]) -> bytes:
        body = b"data: " + b"\n\ndata: ".join(payloads) + b"\n\n"
        if outcome.stream_id is not None:
            body = body.replace(b'"id":"' + outcome.stream_id.encode() + b'"', ours)
        return body

    return frame


def framed_events(frame: Frame, outcome: Outcome, started: float, payloads: list[bytes]) -> bytes:
    """The events of one read counted (`read_events`) and those forwarded framed by `frame`."""
    forwarded = read_events(payloads, outcome, started)
    return frame(forwarded) if forwarded else b""


def read_events(payloads: list[bytes], outcome: Outcome, started: float) -> list[bytes]:
    """Count what the events of one read deliver; return the payloads to forward, in order.

    The usual event (one line, choices with text, no usage) is read by the typed fast path
    and counted here in one loop, as `count_delivered` counts (inline: this runs for every
    event); any other goes through `inspect_document`. `[DONE]` is not forwarded."""
    out: list[bytes] = []
    completion = reasoning = size = 0
    for payload in payloads:
        if payload == DONE:
            outcome.upstream_done = True
            continue
        event = usual_event(payload) if LF not in payload else None
        if event is None:
            if (forwarded := inspect_document(payload, outcome, started)) is not None:
                out.append(forwarded)
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
    if completion:
        outcome.delivered_completion += completion
        outcome.delivered_reasoning += reasoning
        outcome.delivered_bytes += size
    return out


def read_texts(stream: TextStream, outcome: Outcome, started: float, payloads: list[bytes]) -> bytes:
    """`read_events` and a dialect's framing in one loop: the events of one read counted as
    `read_events` counts them, and fed to `stream`, whose events for them are returned.

    The usual chunk (one choice, the first, not the last, one piece of reasoning or of answer
    text) costs a few steps: its text is held for the open block's delta events, a block of its
    kind opened first if need be. Any other chunk goes to `stream.choices`, and an event the typed
    path does not read goes through `inspect_document` as in `read_events`."""
    if not payloads:
        return b""
    out = [] if stream.started else stream.begin()  # checked here: a call costs more than the check
    held = stream.held
    hold = held.append
    thinking, answering = stream.thinking, stream.answering
    completion = reasoning = size = 0
    try:
        for payload in payloads:
            if payload == DONE:
                outcome.upstream_done = True
                continue
            event = usual_event(payload) if LF not in payload else None
            if event is None:
                if (forwarded := inspect_document(payload, outcome, started)) is not None:
                    try:
                        stream.choices(decode_chunk(forwarded).choices, out)
                    except DECODE_ERRORS:
                        pass  # what the relay forwards is JSON, but not always a chunk's
                continue
            if outcome.first_token_seconds is None:
                first_event(outcome, started, event.id)
            try:
                (choice,) = event.choices  # the usual chunk's one choice: no loop over them
            except ValueError:
                count_choices(event.choices, outcome)  # several (n > 1)
                stream.choices(event.choices, out)
                continue
            delta = choice.delta
            if delta is None or choice.index or choice.finish_reason is not None or delta.tool_calls is not None:
                count_choices(event.choices, outcome)
                stream.choices(event.choices, out)
                continue
            text = delta.content
            thought = delta.reasoning_content or delta.reasoning
            if thought:
                reasoning += 1
                completion += 1
                size += len(thought)
                if text:  # both in one delta: the stream takes them in its order
                    stream.choices(event.choices, out)
                    continue
                kind, text = thinking, thought
            elif text:
                completion += 1
                size += len(text)
                kind = answering
            else:
                continue
            if kind is not stream.open:
                stream.switch(kind, out)
            hold(text)
    finally:
        # Counted even if the stream raised: what was delivered is billed as in `read_events`,
        # which counts before anything is framed.
        if completion:
            outcome.delivered_completion += completion
            outcome.delivered_reasoning += reasoning
            outcome.delivered_bytes += size
    if held:
        stream.write_held(out)
    return b"".join(out)


def count_choices(choices: list[ChunkChoice], outcome: Outcome) -> None:
    """What a chunk's choices deliver, as `read_events` counts it."""
    for choice in choices:
        delta = choice.delta
        if delta is None:
            count_delivered(outcome, None, choice.text)
        else:
            count_delivered(outcome, delta.reasoning_content or delta.reasoning, delta.content)


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
