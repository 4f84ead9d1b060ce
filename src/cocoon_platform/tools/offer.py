"""What a chat request offers the model: its tools, `tool_choice` and `parallel_tool_calls`.

Rules (OpenAI's, so clients see what they expect):
- `tools` is a list of `{"type": "function", "function": {"name", "description"?, "parameters"?}}`;
  an empty list offers nothing. Each `parameters` must be a valid JSON Schema: a bad one is a
  400 here, before anything is reserved or forwarded, not a surprise when the answer is checked.
- `tool_choice`: `"none"` (the tools are not offered; the history still renders), `"auto"`
  (the default), `"required"` (at least one call), or `{"type": "function", "function":
  {"name": N}}` (a call to N, which must be offered). `"required"` or a name without tools is a 400.
- `parallel_tool_calls: false` keeps only the first call of an answer.

Compiling a schema costs far more than using it, and agents send the same tools on every turn:
validators are cached by the tool's rendered text (a `SchemaCache` per process, bounded), so a
request pays one dictionary look-up per tool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from cocoon_platform.errors import InvalidRequest

AUTO = "auto"
NONE = "none"
REQUIRED = "required"
NAMED = "named"


@dataclass(frozen=True, slots=True)
class OfferedTool:
    name: str
    definition: dict[str, Any]  # the tool object as the caller sent it
    rendered: str  # its JSON as the chat template writes it (`tojson`)
    validator: Validator | None  # of its `parameters`; None when it has none


@dataclass(frozen=True, slots=True)
class ToolOffer:
    """The tools of one request. `choice` is AUTO, NONE, REQUIRED or NAMED (then `named` is the one
    function the model must call)."""

    tools: tuple[OfferedTool, ...]
    choice: str
    parallel: bool
    named: str | None = None

    @property
    def offered(self) -> tuple[OfferedTool, ...]:
        """What the model is shown: nothing with `tool_choice: none`."""
        return () if self.choice == NONE else self.tools

    @property
    def must_call(self) -> bool:
        return self.choice not in (AUTO, NONE)

    def tool(self, name: str) -> OfferedTool | None:
        """The tool the model may call by this name under the request's choice."""
        if self.choice == NONE or (self.choice == NAMED and name != self.named):
            return None
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None


class SchemaCache:
    """Compiled argument validators keyed by the tool's rendered JSON, oldest dropped first."""

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._validators: dict[str, Validator | None] = {}

    def validator(self, rendered: str, schema: Any, index: int) -> Validator | None:
        try:
            return self._validators[rendered]
        except KeyError:
            pass
        validator = _compile(schema, index)
        if len(self._validators) >= self._capacity:
            del self._validators[next(iter(self._validators))]
        self._validators[rendered] = validator
        return validator


def _compile(schema: Any, index: int) -> Validator | None:
    if schema is None:
        return None
    param = f"tools[{index}].function.parameters"
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON Schema object", param=param)
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequest(f"{param} is not a valid JSON Schema: {exc.message}", param=param) from None
    return cls(schema)


def tojson(value: Any) -> str:
    """The chat template's `tojson` (transformers'): `json.dumps` with its default separators,
    non-ASCII kept, keys in the order given."""
    return json.dumps(value, ensure_ascii=False)


def read_tool_offer(body: dict[str, Any], schemas: SchemaCache) -> ToolOffer | None:
    """Take `tools`, `tool_choice` (and, with tools, `parallel_tool_calls`) out of a chat body;
    None when it offers no tools. Raises InvalidRequest for anything malformed."""
    tools_value = body.pop("tools", None)
    choice_value = body.pop("tool_choice", None)
    if tools_value is None or tools_value == []:
        if choice_value is None or choice_value in (NONE, AUTO):
            return None
        raise InvalidRequest("tool_choice needs tools: the request offers none", param="tool_choice")
    if not isinstance(tools_value, list):
        raise InvalidRequest("tools must be an array of function tools", param="tools")
    parallel = body.pop("parallel_tool_calls", None)
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidRequest("parallel_tool_calls must be a boolean", param="parallel_tool_calls")
    tools = []
    names = set()
    for index, definition in enumerate(tools_value):
        function = definition.get("function") if isinstance(definition, dict) else None
        if not isinstance(function, dict) or definition.get("type", "function") != "function":
            raise InvalidRequest(f'tools[{index}] must be {{"type": "function", "function": {{...}}}}',
                                 param=f"tools[{index}]")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"tools[{index}].function.name must be a non-empty string",
                                 param=f"tools[{index}].function.name")
        if name in names:
            raise InvalidRequest(f"tools[{index}]: a second function named {name!r}", param=f"tools[{index}]")
        names.add(name)
        rendered = tojson(definition)
        tools.append(OfferedTool(name, definition, rendered,
                                 schemas.validator(rendered, function.get("parameters"), index)))
    choice, named = _choice(choice_value, names)
    return ToolOffer(tuple(tools), choice, parallel is not False, named)


def _choice(value: Any, names: set[str]) -> tuple[str, str | None]:
    if value is None:
        return AUTO, None
    if value in (AUTO, NONE, REQUIRED):
        return str(value), None
    function = value.get("function") if isinstance(value, dict) and value.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest('tool_choice must be "none", "auto", "required" or '
                             '{"type": "function", "function": {"name": ...}}', param="tool_choice")
    if name not in names:
        raise InvalidRequest(f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    return NAMED, name
