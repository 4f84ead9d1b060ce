"""Tool calls in a stream: upstream chunks in, OpenAI tool-call chunks out.

Per choice, the answer's text goes through an `AnswerScanner`: text and reasoning leave as
`content` / `reasoning_content` deltas as soon as they cannot be the start of a tag; a
`<tool_call>` block is held until it closes, then leaves as one `tool_calls` delta carrying
`index`, `id`, `type`, `name` and the whole `arguments` (what the OpenAI SDKs' accumulators
expect); a block that fails its checks leaves as text. When the upstream ends a choice, what
is left is released and the choice's `finish_reason` is `tool_calls` if it made a call; the
network's `stop_reason`, when its finishing chunk had one, goes with it as it was sent.

With `hold_text` (tool_choice `required` or named, first attempt), text is held back until the
choice makes a call: if none does, the caller may try again without the client having seen
the first answer's text (`waiting`), or give up: `finish` releases it.

Every chunk out carries the first upstream chunk's id, so a retried stream reads as one.
"""

from __future__ import annotations

from typing import Any

import orjson

from cocoon_platform.tools.answer import REASONING, TEXT, AnswerScanner, block_text, check_call
from cocoon_platform.tools.offer import ToolOffer


class _Choice:
    __slots__ = ("calls", "held", "scanner", "space")

    def __init__(self) -> None:
        self.scanner = AnswerScanner()
        self.calls = 0
        self.held: list[tuple[dict[str, Any], dict[str, Any] | None]] = []  # (delta, ending) not yet sent
        self.space = ""  # whitespace-only text not yet sent: dropped if a call follows


class StreamTranslator:
    """One stream's translation; `translate` takes the payloads of one read, in order."""

    def __init__(self, offer: ToolOffer, hold_text: bool = False, envelope: dict[str, Any] | None = None) -> None:
        self.offer = offer
        self.hold_text = hold_text
        self.envelope = envelope  # id, object, created, model: the first upstream chunk's
        self._choices: dict[int, _Choice] = {}

    @property
    def called(self) -> bool:
        return any(choice.calls for choice in self._choices.values())

    @property
    def waiting(self) -> bool:
        """Text is held and no choice has called: a retry would hide this answer entirely."""
        return self.hold_text and not self.called

    def translate(self, payloads: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for payload in payloads:
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            choices = chunk.get("choices") if isinstance(chunk, dict) else None
            if not isinstance(choices, list) or not choices:
                out.append(payload)
                continue
            if self.envelope is None:
                self.envelope = {key: chunk.get(key) for key in ("id", "object", "created", "model")}
            for choice in choices:
                if isinstance(choice, dict):
                    self._choice(choice, out)
        return out

    def finish(self) -> list[bytes]:
        """The stream ended (or the caller gave up waiting for a call): release what every choice
        still holds, and what its scanner holds."""
        self.hold_text = False
        out: list[bytes] = []
        for index, state in self._choices.items():
            self._release(index, state, out)
            self._pieces(index, state, state.scanner.finish(), out)
            self._space(index, state, out)
        return out

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        index = choice.get("index", 0)
        if not isinstance(index, int):
            index = 0
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _Choice()
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if delta.get("role"):
                self._emit(index, {"role": delta["role"]}, None, out)
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(thought, str) and thought:
                self._emit(index, {"reasoning_content": thought}, None, out)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._pieces(index, state, state.scanner.feed(content), out)
        finish = choice.get("finish_reason")
        if finish is not None:
            self._pieces(index, state, state.scanner.finish(), out)
            self._space(index, state, out)
            ending = {"finish_reason": "tool_calls" if state.calls else finish}
            if "stop_reason" in choice:
                ending["stop_reason"] = choice["stop_reason"]
            self._text(index, state, {}, ending, out)

    def _pieces(self, index: int, state: _Choice, pieces: list[tuple[int, str, bool]], out: list[bytes]) -> None:
        for kind, text, closed in pieces:
            if kind == REASONING:
                self._emit(index, {"reasoning_content": text}, None, out)
            elif kind == TEXT:
                self._content(index, state, text, out)
            else:
                call = check_call(text, self.offer)
                if call is None:
                    self._content(index, state, block_text(text, closed), out)
                elif self.offer.parallel or not state.calls:
                    state.space = ""
                    state.calls += 1
                    self._release(index, state, out)
                    call["index"] = state.calls - 1
                    self._emit(index, {"tool_calls": [call]}, None, out)

    def _content(self, index: int, state: _Choice, text: str, out: list[bytes]) -> None:
        """Answer text; its trailing whitespace waits, as before a call it is not content (the
        newlines around calls, as a whole answer's content is stripped when it has calls)."""
        body = text.rstrip()
        if body:
            self._text(index, state, {"content": state.space + body}, None, out)
            state.space = text[len(body) :]
        else:
            state.space += text

    def _space(self, index: int, state: _Choice, out: list[bytes]) -> None:
        """The choice ends: whitespace still held is its content's end, unless it made a call."""
        if state.space and not state.calls:
            self._text(index, state, {"content": state.space}, None, out)
        state.space = ""

    def _text(
        self, index: int, state: _Choice, delta: dict[str, Any], ending: dict[str, Any] | None, out: list[bytes]
    ) -> None:
        if self.hold_text and not state.calls:
            state.held.append((delta, ending))
        else:
            self._emit(index, delta, ending, out)

    def _release(self, index: int, state: _Choice, out: list[bytes]) -> None:
        for delta, ending in state.held:
            self._emit(index, delta, ending, out)
        state.held.clear()

    def _emit(self, index: int, delta: dict[str, Any], ending: dict[str, Any] | None, out: list[bytes]) -> None:
        """One chunk of one choice; `ending` (its `finish_reason`, and `stop_reason` when the
        network sent one) on the chunk that finishes it."""
        chunk = dict(self.envelope or {})
        choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
        if ending is not None:
            choice.update(ending)
        chunk["choices"] = [choice]
        out.append(orjson.dumps(chunk))
