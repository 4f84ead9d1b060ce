"""Splitting an upstream stream into events, whether it speaks SSE or bare JSON objects, and
reading the usual event quickly."""

from __future__ import annotations

from typing import Any

import msgspec

DONE = b"[DONE]"
# A byte is looked for by its value (`LF in data`), not as bytes (`b"\n" in data`): CPython 3.11
# first tries a bytes needle as an integer, and formats and drops a TypeError for it, which costs
# six times the search itself (this runs for every event of every stream).
LF, CR = ord("\n"), ord("\r")


class EventSplitter:
    """Feed raw bytes as they arrive; get back complete event payloads (JSON bytes or `[DONE]`).

    SSE: events end with a blank line; `data:` lines are joined, comments and other fields
    dropped. Bare JSON: objects follow each other with or without separators, so they are
    cut where their braces balance (outside strings).
    """

    __slots__ = ("_buffer", "_mode")

    def __init__(self) -> None:
        self._buffer = b""
        self._mode: str | None = None  # "sse" or "json", decided by the first bytes

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        if self._mode is None:
            head = self._buffer.lstrip()
            if not head:
                return []
            if head[:1] in (b"{", b"["):
                self._mode = "json"
            elif len(head) >= 5 or head[:1] in (b"d", b":", b"e", b"i", b"r"):
                self._mode = "sse"
            else:
                return []
        return self._split_sse() if self._mode == "sse" else self._split_json()

    def finish(self) -> list[bytes]:
        """Whatever complete event is left when the stream ends without a final separator."""
        rest, self._buffer = self._buffer, b""
        if self._mode == "sse":
            payload = self._sse_payload(rest)
            return [payload] if payload else []
        return []

    def _split_sse(self) -> list[bytes]:
        buffer = self._buffer
        if CR not in buffer and buffer.startswith(b"data: "):
            # The usual stream, every event one `data: ` line: one C-level split instead of a
            # Python step per event. A payload holding a newline means some event was not.
            end = buffer.rfind(b"\n\n") + 2
            if end == 1:
                return []
            payloads = buffer[6 : end - 2].split(b"\n\ndata: ")
            if LF not in b"".join(payloads):
                self._buffer = buffer[end:]
                if payloads[-1] != DONE and payloads[-1].strip() == DONE:
                    payloads[-1] = DONE  # padded: the only payload whose padding matters
                return payloads
        held = b""
        if CR in buffer:
            if buffer.endswith(b"\r"):
                buffer, held = buffer[:-1], b"\r"  # its "\n" may come with the next read
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *events, rest = buffer.split(b"\n\n")
        self._buffer = rest + held
        out = []
        for event in events:
            payload = self._sse_payload(event)
            if payload:
                out.append(payload)
        return out

    @staticmethod
    def _sse_payload(event: bytes) -> bytes:
        if event.startswith(b"data:") and LF not in event:
            return event[5:].strip()  # the usual case: one data line
        lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
        return b"\n".join(lines)

    def _split_json(self) -> list[bytes]:
        out = []
        buffer = self._buffer
        start = 0
        depth = 0
        in_string = False
        escaped = False
        begin = -1
        for index in range(len(buffer)):
            byte = buffer[index]
            if in_string:
                if escaped:
                    escaped = False
                elif byte == 0x5C:  # backslash
                    escaped = True
                elif byte == 0x22:
                    in_string = False
                continue
            if byte == 0x22:
                in_string = True
            elif byte in (0x7B, 0x5B):  # { [
                if depth == 0:
                    begin = index
                depth += 1
            elif byte in (0x7D, 0x5D):  # } ]
                depth -= 1
                if depth == 0:
                    out.append(buffer[begin : index + 1])
                    start = index + 1
        self._buffer = buffer[start:]
        return out


class FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: FunctionDelta | None = None


class Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: Delta | None = None  # a chat chunk's
    text: str | None = None  # a completion chunk's
    finish_reason: str | None = None
    stop_reason: Any = None  # vLLM: the stop string that ended the answer, when one did


class Chunk(msgspec.Struct):
    """What the relay and the dialects read from a stream chunk: its choices (what they carry
    of text, tool calls and ending), its id and usage. Other fields are skipped, though still
    checked to be well-formed JSON. The relay decodes each chunk once and hands the result to
    the dialect translating the stream."""

    choices: list[ChunkChoice] = []
    id: Any = None
    usage: Any = None


decode_chunk = msgspec.json.Decoder(Chunk).decode  # the relay's, and the dialects' for what it did not decode
# What msgspec raises on a payload it cannot take: not JSON or not the type, invalid UTF-8, too deep.
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def usual_event(payload: bytes) -> Chunk | None:
    """The payload as a usual event; None for anything else (no choices, a usage object, a field
    of another type, not JSON at all), which the general path reads. Decoding only these fields
    into typed objects takes half the time of a full parse and a walk through dicts.

    msgspec skips the other fields without checking their text is UTF-8, and fails on invalid
    UTF-8 or deep nesting with errors of its own kinds: both go to the general path, which drops
    such an event."""
    if not payload.isascii():
        try:
            payload.decode()
        except UnicodeDecodeError:
            return None
    try:
        event = decode_chunk(payload)
    except DECODE_ERRORS:
        return None
    return event if event.choices and event.usage is None else None
