"""The answer side of the Hermes format: reasoning, text and `<tool_call>` blocks, read back.

Qwen3 answers `<think>…</think>` first (unless thinking is off), then text and/or blocks of
`<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`. The tags are single tokens that
arrive in the text, possibly split across stream chunks, and a JSON string inside the
arguments may itself hold `</tool_call>`. So:

- `AnswerScanner` reads the text incrementally (whole, or chunk by chunk): a leading
  `<think>` block is reasoning; a `<tool_call>` block ends at the first `</tool_call>` outside a
  JSON string; text that may be the start of a tag is held back until the next chunk decides.
  A block still open when the answer ends (cut by `max_tokens`) is read as it stands.
  A whole answer of the usual shape (a closed `<think>` block, blocks whose first `</tool_call>`
  ends complete JSON) is split by `_usual_pieces` with a few `partition`s into the same pieces, each
  call parsed once; anything else goes through the scanner (a differential test holds the two
  to the same pieces).
- `check_call` parses a block leniently (code fences, trailing commas, arguments sent as a
  JSON string), then checks it against the offer: the name must be offered (and allowed by
  `tool_choice`), the arguments must satisfy the tool's JSON Schema.
- A block that fails any check goes back into the text as the model wrote it: never dropped.
- Valid calls get `call_…` ids; with `parallel_tool_calls: false` only the first is kept.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from cocoon_platform.tools.offer import ToolOffer

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"

REASONING = 0
TEXT = 1
CALL = 2

_START, _THINK, _TEXT, _CALL = range(4)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_SPECIAL = re.compile(r'["\\<]')  # what can change a call block's scanning state
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _held(text: str, tag: str) -> int:
    """How many characters at the end of `text` could be the start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class AnswerScanner:
    """Feed answer text as it arrives; get back pieces `(kind, text)` in order: REASONING,
    TEXT, or CALL (the raw inside of a block, `closed` False for a block cut short; see
    `finish`). Text is released as soon as it cannot be part of a tag."""

    __slots__ = ("_buffer", "_escaped", "_in_string", "_lstrip", "_scanned", "_state")

    def __init__(self) -> None:
        self._buffer = ""
        self._state = _START
        self._in_string = False
        self._escaped = False
        self._scanned = 0  # characters of a call block's buffer already scanned
        self._lstrip = False  # strip the newlines that follow `<think>` or `</think>`

    def feed(self, text: str) -> list[tuple[int, str, bool]]:
        self._buffer += text
        out: list[tuple[int, str, bool]] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> list[tuple[int, str, bool]]:
        """The rest, when the answer has ended."""
        out: list[tuple[int, str, bool]] = []
        rest, self._buffer = self._buffer, ""
        if self._state == _THINK:
            self._lstrip = False
            if rest.strip("\n"):
                out.append((REASONING, rest.strip("\n"), True))
        elif self._state == _CALL:
            out.append((CALL, rest, False))
        elif self._lstrip:
            if rest.lstrip("\n"):
                out.append((TEXT, rest.lstrip("\n"), True))
        elif rest:
            out.append((TEXT, rest, True))
        self._state = _TEXT
        return out

    def _step(self, out: list[tuple[int, str, bool]]) -> bool:
        """One move of the state machine; True when it should run again."""
        buffer = self._buffer
        state = self._state
        if state == _START:
            head = buffer.lstrip()
            if head.startswith(THINK_OPEN):
                self._buffer = head[len(THINK_OPEN) :]
                self._state = _THINK
                self._lstrip = True
                return True
            if THINK_OPEN.startswith(head):
                return False  # empty, or maybe the start of `<think>`: wait
            self._state = _TEXT
            return True
        if state == _THINK:
            if self._lstrip:
                buffer = self._buffer = buffer.lstrip("\n")
                if not buffer:
                    return False
                self._lstrip = False
            end = buffer.find(THINK_CLOSE)
            if end >= 0:
                reasoning = buffer[:end].rstrip("\n")
                if reasoning:
                    out.append((REASONING, reasoning, True))
                self._buffer = buffer[end + len(THINK_CLOSE) :]
                self._state = _TEXT
                self._lstrip = True
                return True
            # Hold back what may start `</think>`, and newlines that may precede it.
            keep = len(buffer) - _held(buffer, THINK_CLOSE)
            keep = len(buffer[:keep].rstrip("\n"))
            if keep:
                out.append((REASONING, buffer[:keep], True))
                self._buffer = buffer[keep:]
            return False
        if state == _TEXT:
            if self._lstrip:
                buffer = buffer.lstrip("\n")
                if not buffer:
                    self._buffer = ""
                    return False
                self._lstrip = False
            start = buffer.find(CALL_OPEN)
            if start >= 0:
                if start:
                    out.append((TEXT, buffer[:start], True))
                self._buffer = buffer[start + len(CALL_OPEN) :]
                self._state = _CALL
                self._in_string = self._escaped = False
                self._scanned = 0
                return True
            keep = len(buffer) - _held(buffer, CALL_OPEN)
            if keep:
                out.append((TEXT, buffer[:keep], True))
            self._buffer = buffer[keep:]
            return False
        return self._scan_call(out)

    def _scan_call(self, out: list[tuple[int, str, bool]]) -> bool:
        """Find the block's `</tool_call>` outside JSON strings, from where the last read stopped,
        jumping between the characters that matter (quotes, backslashes, `<`)."""
        buffer = self._buffer
        index = self._scanned
        in_string, escaped = self._in_string, self._escaped
        if index == 0:
            # The usual block, whole: if what precedes the first `</tool_call>` is complete JSON,
            # that tag is outside its strings. One parse instead of a step per quote.
            end = buffer.find(CALL_CLOSE)
            if end >= 0:
                try:
                    orjson.loads(buffer[:end])
                except orjson.JSONDecodeError:
                    pass
                else:
                    out.append((CALL, buffer[:end], True))
                    self._buffer = buffer[end + len(CALL_CLOSE) :]
                    self._state = _TEXT
                    return True
        length = len(buffer)
        if escaped and index < length:
            index += 1  # the character a backslash at the end of the last read escaped
            escaped = False
        search = _SPECIAL.search
        while index < length:
            match = search(buffer, index)
            if match is None:
                index = length
                break
            position = match.start()
            char = buffer[position]
            index = position + 1
            if in_string:
                if char == '"':
                    in_string = False
                elif char == "\\":
                    if index == length:
                        escaped = True
                        break
                    index += 1
            elif char == '"':
                in_string = True
            elif char == "<":
                if buffer.startswith(CALL_CLOSE, position):
                    out.append((CALL, buffer[:position], True))
                    self._buffer = buffer[position + len(CALL_CLOSE) :]
                    self._state = _TEXT
                    return True
                if CALL_CLOSE.startswith(buffer[position:]):
                    index = position  # maybe the start of the closing tag: wait for more
                    break
        self._scanned, self._in_string, self._escaped = index, in_string, escaped
        return False


def _usual_pieces(text: str) -> list[tuple[int, str, bool, Any]] | None:
    """The scanner's pieces of a whole answer, each call with its parsed JSON, when the answer has
    the usual shape; None otherwise (no `</think>`, a block cut short, a block whose first
    `</tool_call>` does not end complete JSON). `partition` finds and cuts in one call: on this
    path each call costs more than the bytes it copies."""
    pieces: list[tuple[int, str, bool, Any]] = []
    head = text.lstrip()
    if head.startswith(THINK_OPEN):
        reasoning, closed, rest = head[len(THINK_OPEN) :].partition(THINK_CLOSE)
        if not closed:
            return None
        reasoning = reasoning.strip("\n")
        if reasoning:
            pieces.append((REASONING, reasoning, True, None))
        rest = rest.lstrip("\n")
    else:
        rest = text
    while True:
        before, opened, rest = rest.partition(CALL_OPEN)
        if before:
            pieces.append((TEXT, before, True, None))
        if not opened:
            return pieces
        block, closed, rest = rest.partition(CALL_CLOSE)
        if not closed:
            return None
        try:
            value = orjson.loads(block)
        except orjson.JSONDecodeError:
            return None
        pieces.append((CALL, block, True, value))


def block_text(raw: str, closed: bool) -> str:
    """A block that failed its checks, as the model wrote it."""
    return CALL_OPEN + raw + (CALL_CLOSE if closed else "")


# Call ids are unique, not secret: a prefix of 64 random bits drawn once per process (`random`, no
# system call), then a count, so that an id costs a counter step and not a draw.
_CALL_ID_PREFIX = f"call_{random.getrandbits(64):016x}"
_call_numbers = itertools.count()


def new_call_id() -> str:
    """`call_` + this process's 16 hex digits + the count, in decimal."""
    return f"{_CALL_ID_PREFIX}{next(_call_numbers)}"


def _loads(text: str) -> Any:
    """JSON, leniently: a code fence around it, trailing commas, text after the object."""
    try:
        return orjson.loads(text)  # the usual case, and the fast one
    except orjson.JSONDecodeError:
        pass
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    for candidate in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            value, end = json.JSONDecoder().raw_decode(candidate)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than orjson reads
            continue
        if not candidate[end:].strip():
            return value
    return None


_UNREAD = object()  # a block's JSON not parsed yet


def check_call(raw: str, offer: ToolOffer, value: Any = _UNREAD) -> dict[str, Any] | None:
    """An OpenAI tool call for a block's inside (`value`: its JSON, when already parsed), or None
    when it is not a valid call to an offered tool (unparseable, unknown or disallowed name,
    arguments against the schema, or nested too deeply to be written back)."""
    if value is _UNREAD:
        value = _loads(raw)
    if not isinstance(value, dict):
        return None
    name = value.get("name")
    if not isinstance(name, str):
        return None
    tool = offer.tool(name)
    if tool is None:
        return None
    arguments = value.get("arguments", value.get("parameters"))
    if isinstance(arguments, str):
        arguments = _loads(arguments) if arguments.strip() else {}
    elif arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    if tool.check is not None:
        try:
            if not tool.check(arguments):
                return None
        except Exception:  # a schema jsonschema cannot apply, e.g. a $ref to nowhere
            return None  # the call cannot be checked: it stays text
    try:
        encoded = orjson.dumps(arguments).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, or nested deeper than orjson writes
        try:
            encoded = json.dumps(arguments, ensure_ascii=False)
        except RecursionError:  # deeper than json.dumps writes too: the call stays text
            return None
    return {"id": new_call_id(), "type": "function", "function": {"name": name, "arguments": encoded}}


@dataclass(slots=True)
class ReadAnswer:
    """One answer read whole: what goes into the message."""

    content: str | None
    reasoning: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def read_answer(text: str, offer: ToolOffer) -> ReadAnswer:
    """A whole answer's text: reasoning, content, and its valid tool calls."""
    if CALL_OPEN not in text and THINK_OPEN not in text:
        return ReadAnswer(text, None)  # nothing to take out
    pieces = _usual_pieces(text)
    if pieces is None:
        scanner = AnswerScanner()
        scanned = scanner.feed(text)
        scanned.extend(scanner.finish())
        pieces = [(kind, piece, closed, _UNREAD) for kind, piece, closed in scanned]
    reasoning: list[str] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for kind, piece, closed, value in pieces:
        if kind == REASONING:
            reasoning.append(piece)
        elif kind == TEXT:
            texts.append(piece)
        else:
            call = check_call(piece, offer, value)
            if call is None:
                texts.append(block_text(piece, closed))
            elif offer.parallel or not calls:
                calls.append(call)
    text = "".join(texts)
    content: str | None = text
    if calls:
        content = text.strip() or None  # as OpenAI: no text beside the calls is null
    return ReadAnswer(content, "".join(reasoning) or None, calls)


def read_message(message: dict[str, Any], offer: ToolOffer) -> bool:
    """Rewrite a non-streamed answer's message in place: reasoning into `reasoning_content`
    (kept when the network already split it off), calls into `tool_calls`, the rest as
    `content`. True when it holds at least one valid call."""
    content = message.get("content")
    if not isinstance(content, str):
        return False
    answer = read_answer(content, offer)
    message["content"] = answer.content
    if answer.reasoning is not None:
        earlier = message.get("reasoning_content")
        message["reasoning_content"] = (
            (earlier + "\n" + answer.reasoning) if isinstance(earlier, str) and earlier else answer.reasoning
        )
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
        return True
    if not message.get("tool_calls"):
        message.pop("tool_calls", None)  # vLLM's empty list: the SDKs read an absent field the same
    return False


def read_choices(document: dict[str, Any], offer: ToolOffer) -> bool:
    """Rewrite each choice of a non-streamed chat completion (`read_message`); a choice that
    made a call finishes with `tool_calls`. True when any choice made one."""
    called = False
    for choice in document["choices"]:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and read_message(message, offer):
            choice["finish_reason"] = "tool_calls"
            called = True
    return called
