"""What a chat request offers the model: its tools, `tool_choice` and `parallel_tool_calls`.

Rules (OpenAI's, so clients see what they expect):
- `tools` is a list of `{"type": "function", "function": {"name", "description"?, "parameters"?}}`;
  an empty list offers nothing. Each `parameters` must be a valid JSON Schema: a bad one is a
  400 here, before anything is reserved or forwarded, not a surprise when the answer is checked.
- `tool_choice`: `"none"` (the tools are not offered; the history still renders), `"auto"`
  (the default), `"required"` (at least one call), or `{"type": "function", "function":
  {"name": N}}` (a call to N, which must be offered). `"required"` or a name without tools is a 400.
- `parallel_tool_calls: false` keeps only the first call of an answer.

Rendering tools and compiling their schemas costs far more than using them, and agents send the
same tools on every turn: whole tool lists are cached, checked and compiled, by their JSON (a
`SchemaCache` per process, bounded), so a request pays one look-up. The key is the list's JSON
as the request sent it, when the body's reader kept it (`proxy.request.decode_chat_body`, which
finds a kept list in the body by its first bytes, `known_at`, and then does not decode it at
all), else orjson's encoding of the list. Each set also keeps the texts offering it, once made
(`texts`, filled by tools/hermes.py): the same tools are offered the same way turn after turn.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

from cocoon_platform.errors import InvalidRequest
from cocoon_platform.tools.schema import Check, compile_check, schema_problem, validator

AUTO = "auto"
NONE = "none"
REQUIRED = "required"
NAMED = "named"


@dataclass(frozen=True, slots=True)
class OfferedTool:
    name: str
    definition: dict[str, Any]  # the tool object as the caller sent it
    rendered: str  # its JSON as the chat template writes it (`tojson`)
    check: Check | None  # whether arguments satisfy its `parameters`; None when it has none


@dataclass(frozen=True, slots=True)
class ToolSet:
    """A request's `tools`, checked and compiled: what requests sending the same list share."""

    tools: tuple[OfferedTool, ...]
    by_name: dict[str, OfferedTool]
    lines: str  # each tool's rendered JSON on a line of its own, each line after a "\n"
    # The system text offering the set, and its UTF-8 size, by (choice, named, parallel): made by
    # tools/hermes.py on first use. Bounded: 3 choices and one per tool name, times 2.
    texts: dict[tuple[str, str | None, bool], tuple[str, int]] = field(default_factory=dict, compare=False)


@dataclass(slots=True)
class ToolOffer:
    """The tools of one request. `choice` is AUTO, NONE, REQUIRED or NAMED (then `named` is the one
    function the model must call). Not frozen: one is made per request, and a frozen dataclass's
    `__init__` costs four times as much (7.8k instructions against 1.9k, measured)."""

    tool_set: ToolSet
    choice: str
    parallel: bool
    named: str | None = None

    @property
    def tools(self) -> tuple[OfferedTool, ...]:
        return self.tool_set.tools

    @property
    def offered(self) -> tuple[OfferedTool, ...]:
        """What the model is shown: nothing with `tool_choice: none`."""
        return () if self.choice == NONE else self.tool_set.tools

    @property
    def must_call(self) -> bool:
        return self.choice not in (AUTO, NONE)

    def tool(self, name: str) -> OfferedTool | None:
        """The tool the model may call by this name under the request's choice."""
        if self.choice == NONE or (self.choice == NAMED and name != self.named):
            return None
        return self.tool_set.by_name.get(name)


class SchemaCache:
    """Tool lists, checked and compiled, keyed by their JSON; the oldest dropped first. A look-up
    costs a dictionary access (or orjson's encoding of the list, a microsecond for five tools,
    when its JSON as sent is not known), where rendering them with `json.dumps` and compiling
    their schemas takes tens of microseconds to milliseconds. Bounded by the keys' total size
    (a tool list may be megabytes), so memory stays bounded whatever is sent.

    Keys of at least HEAD bytes are also indexed by their first HEAD bytes, so that a body's
    reader can tell a kept list at a place in the body without knowing where it ends
    (`known_at`). At most HEAD_KEYS keys share a head (the oldest of them dropped), so that
    a look-up compares a few keys at most, however many lists begin alike."""

    HEAD = 64
    HEAD_KEYS = 8

    def __init__(self, budget_bytes: int = 4 << 20) -> None:
        self._budget = budget_bytes
        self._size = 0
        self._sets: dict[bytes, ToolSet] = {}
        self._heads: dict[bytes, list[bytes]] = {}

    def known(self, tools_json: bytes) -> ToolSet | None:
        """The set compiled from a list sent as exactly these JSON bytes, if one is kept."""
        return self._sets.get(tools_json)

    def known_at(self, raw: bytes, start: int) -> tuple[bytes, ToolSet] | None:
        """A kept list whose JSON `raw` holds from `start` (the key, and its set), if any."""
        for key in self._heads.get(raw[start : start + self.HEAD], ()):
            if raw.startswith(key, start):
                return key, self._sets[key]
        return None

    def tool_set(self, tools: list[Any], tools_json: bytes | None = None) -> ToolSet:
        """`tools` checked and compiled; `tools_json` is the list's JSON as sent, when known."""
        if tools_json is not None:
            key = tools_json
        else:
            try:
                key = orjson.dumps(tools)
            except orjson.JSONEncodeError:  # nested deeper than orjson writes (it reads deeper): compiled, not kept
                return _compile_tools(tools)
        cached = self.known(key)
        if cached is not None:
            return cached
        compiled = _compile_tools(tools)
        if len(key) <= self._budget // 8:  # a huge list is compiled for its request alone
            while self._sets and self._size + len(key) > self._budget:
                self._drop(next(iter(self._sets)))
            if len(key) >= self.HEAD:
                alike = self._heads.setdefault(key[: self.HEAD], [])
                if len(alike) >= self.HEAD_KEYS:
                    self._drop(alike[0])
                alike.append(key)
            self._sets[key] = compiled
            self._size += len(key)
        return compiled

    def _drop(self, key: bytes) -> None:
        del self._sets[key]
        self._size -= len(key)
        if len(key) >= self.HEAD:
            alike = self._heads[key[: self.HEAD]]
            alike.remove(key)
            if not alike:
                del self._heads[key[: self.HEAD]]


def _compile_tools(tools: list[Any]) -> ToolSet:
    """Check each tool, render it, compile its schema; raises InvalidRequest."""
    compiled: dict[str, OfferedTool] = {}
    for index, definition in enumerate(tools):
        function = definition.get("function") if isinstance(definition, dict) else None
        if not isinstance(function, dict) or definition.get("type", "function") != "function":
            raise InvalidRequest(
                f'tools[{index}] must be {{"type": "function", "function": {{...}}}}', param=f"tools[{index}]"
            )
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                f"tools[{index}].function.name must be a non-empty string", param=f"tools[{index}].function.name"
            )
        if name in compiled:
            raise InvalidRequest(f"tools[{index}]: a second function named {name!r}", param=f"tools[{index}]")
        check = _compile(function.get("parameters"), index)  # first: it names what is wrong in a schema
        compiled[name] = OfferedTool(name, definition, tojson(definition, f"tools[{index}]"), check)
    ordered = tuple(compiled.values())
    lines = "".join("\n" + tool.rendered for tool in ordered)
    return ToolSet(ordered, compiled, lines)


def _compile(schema: Any, index: int) -> Check | None:
    if schema is None:
        return None
    param = f"tools[{index}].function.parameters"
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON Schema object", param=param)
    problem = schema_problem(schema)
    if problem is not None:
        raise InvalidRequest(f"{param} is not a valid JSON Schema: {problem}", param=param)
    return compile_check(schema, validator(schema))


def tojson(value: Any, param: str) -> str:
    """The chat template's `tojson` (transformers'): `json.dumps` with its default separators,
    non-ASCII kept, keys in the order given. `value` is part of the request, at `param`: one nested
    deeper than `json.dumps` recurses (orjson reads a body up to 1,024 levels deep) is a 400."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except RecursionError:
        raise InvalidRequest(f"{param} is nested too deeply", param=param) from None


def read_tool_offer(body: dict[str, Any], schemas: SchemaCache, tools_json: bytes | None = None) -> ToolOffer | None:
    """Take `tools`, `tool_choice` (and, with tools, `parallel_tool_calls`) out of a chat body;
    None when it offers no tools. `tools` is a list, or the ToolSet already compiled from its
    JSON (`tools_json`, the list as sent, when known). Raises InvalidRequest for anything malformed."""
    tools_value = body.pop("tools", None)
    choice_value = body.pop("tool_choice", None)
    if isinstance(tools_value, ToolSet):
        pass
    elif tools_value is None or tools_value == []:
        if choice_value is None or choice_value in (NONE, AUTO):
            return None
        raise InvalidRequest("tool_choice needs tools: the request offers none", param="tool_choice")
    elif not isinstance(tools_value, list):
        raise InvalidRequest("tools must be an array of function tools", param="tools")
    parallel = body.pop("parallel_tool_calls", None)
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidRequest("parallel_tool_calls must be a boolean", param="parallel_tool_calls")
    tool_set = tools_value if isinstance(tools_value, ToolSet) else schemas.tool_set(tools_value, tools_json)
    if choice_value is None:
        return ToolOffer(tool_set, AUTO, parallel is not False)
    choice, named = _choice(choice_value, tool_set.by_name)
    return ToolOffer(tool_set, choice, parallel is not False, named)


def _choice(value: Any, names: Collection[str]) -> tuple[str, str | None]:
    if value is None:
        return AUTO, None
    if value in (AUTO, NONE, REQUIRED):
        return str(value), None
    function = value.get("function") if isinstance(value, dict) and value.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest(
            'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    if name not in names:
        raise InvalidRequest(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    return NAMED, name
