"""Answers with a shape: what vLLM serving Qwen3 does with `n`, `stop`, `response_format` and a
system prompt that offers tools (`<tools>`), where a client depends on the answer's text.

Plain requests keep the fast word stream of `cocoon_infer`; a chat request with any of these is
"scripted": each of its `n` choices is a list of tokens (pieces of text), planned here.

- `response_format` `json_object`: a JSON object; `json_schema`: JSON that satisfies the schema
  (vLLM's guided decoding), made by `instance_of`.
- `stop`: vLLM's rule: after each token, the stop strings are looked for, in the request's order,
  where that token's text could complete one; the first found ends the text before it (the stop
  string not included), with finish_reason `stop` and the string as the choice's `stop_reason`
  (None when the answer ended by itself or at the token limit).
- Tools (Qwen3's Hermes format, as its chat template writes them into the system message):
  the answer is text and/or `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>` blocks
  whose arguments satisfy the tool's schema. Deterministic per prompt: after a tool response the
  model answers in words; when the system prompt says a call is required, it calls; otherwise
  the prompt's checksum picks none, one or two calls. `[[sim:calls=N]]` in the last user message
  forces N calls (0: none, even when one is required, to test a retry). For some prompts the
  `<think>` block is written inline in the content (a deployment without a reasoning parser),
  and tags are split across two chunks, as a server may split them.
- Every choice is cut at the request's token limit (finish_reason `length`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from cocoon_simulator.cocoon_text import WordCycle

_TOOLS_BLOCK = re.compile(r"<tools>\n(.*?)\n</tools>", re.DOTALL)
_NAMED = re.compile(r'You must call the function "([^"]+)"')
_REQUIRED = "You must call at least one of these functions"
_PIECE = 4  # characters per token of generated JSON


@dataclass(slots=True)
class ChoiceScript:
    """One choice: reasoning tokens (sent as `reasoning_content`) and content tokens."""

    reasoning: list[str]
    content: list[str]
    finish_reason: str
    stop_reason: str | None = None  # the stop string that ended it


def scripted(request: dict[str, Any]) -> bool:
    """Whether a chat request needs a planned answer rather than the plain word stream."""
    if request.get("n") not in (None, 1) or request.get("stop"):
        return True
    response_format = request.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        return True
    messages = request.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    return isinstance(first, dict) and first.get("role") == "system" and "<tools>" in str(first.get("content"))


def _pieces(text: str, size: int = _PIECE) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    """A local `$ref` (`#/$defs/X`, `#/definitions/X`) followed to its schema."""
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/"):
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        schema = target
    return schema


def instance_of(schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A value that satisfies `schema` (the subset models are offered: objects, arrays, scalars,
    enums, consts, anyOf/oneOf/allOf, local refs, numeric and length bounds)."""
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or depth > 8:
        return None if depth > 8 else "value"
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            options = [s for s in schema[key] if _resolve(s, root).get("type") != "null"] or schema[key]
            return instance_of(options[0], root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part, root))
        return instance_of(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            properties = {}
        return {name: instance_of(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [instance_of(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1 if "exclusiveMinimum" in schema else 1)
        return int(max(low, min(schema.get("maximum", low), low)))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 0.5 if "exclusiveMinimum" in schema else 1.5)
        return max(low, min(schema.get("maximum", low), low))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = "Paris"
    minimum = schema.get("minLength")
    if isinstance(minimum, int) and minimum > len(text):
        text += "x" * (minimum - len(text))
    maximum = schema.get("maxLength")
    if isinstance(maximum, int):
        text = text[:maximum]
    return text


def _valid(value: Any, schema: Any) -> bool:
    try:
        return bool(Draft202012Validator(schema).is_valid(value))
    except (SchemaError, TypeError):
        return False


@lru_cache(maxsize=256)
def _offered_tools(system: str) -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """The tools a system prompt offers: (name, its call's tokens, the same with split tags).
    Agents send the same prompt turn after turn: planned once (the bench measures the platform)."""
    block = _TOOLS_BLOCK.search(system)
    if not block:
        return ()
    tools = []
    for line in block.group(1).split("\n"):
        try:
            tool = json.loads(line)
        except ValueError:
            continue
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            tools.append((function["name"], _call_tokens(function, False), _call_tokens(function, True)))
    return tuple(tools)


def _call_tokens(function: dict[str, Any], split_tags: bool) -> tuple[str, ...]:
    schema = function.get("parameters") or {"type": "object"}
    arguments = instance_of(schema)
    if not isinstance(arguments, dict) or not _valid(arguments, schema):
        arguments = {}
    body = json.dumps({"name": function["name"], "arguments": arguments}, ensure_ascii=False)
    open_tag = ["<tool", "_call>"] if split_tags else ["<tool_call>"]
    close_tag = ["</tool_", "call>"] if split_tags else ["</tool_call>"]
    return (*open_tag, "\n", *_pieces(body), "\n", *close_tag)


def word_tokens(words: WordCycle, offset: int, count: int) -> list[str]:
    """`count` word tokens from `offset`, as the plain word stream sends them."""
    return [words.text(offset + i, 1) for i in range(count)]


def _tool_content(
    messages: list[dict[str, Any]],
    system: str,
    seed: int,
    calls_marker: int | None,
    words: WordCycle,
    offset: int,
    length: int,
) -> list[str]:
    tools = _offered_tools(system)
    last = messages[-1] if messages else {}
    last_text = str(last.get("content") or "")
    if last.get("role") == "user" and last_text.startswith("<tool_response>"):
        return ["From", " the", " tool", " results:", *word_tokens(words, offset, length)]
    named = _NAMED.search(system)
    if calls_marker is not None:
        count = calls_marker
    elif named or _REQUIRED in system:
        count = 1 + (seed >> 3) % 2
    else:
        count = (0, 1, 1, 2)[seed % 4]
    if named:
        chosen = [tool for tool in tools if tool[0] == named.group(1)] * count
    else:
        chosen = [tools[((seed >> 5) + i) % len(tools)] for i in range(count)] if tools else []
    if not chosen:
        return word_tokens(words, offset, length)
    split_tags = bool(seed & 0x40)
    tokens: list[str] = []
    if seed & 0x80:
        tokens.extend(_pieces("I will look that up.\n"))
    for index, (_name, whole, split) in enumerate(chosen):
        if index:
            tokens.append("\n")
        tokens.extend(split if split_tags else whole)
    return tokens


def _apply_stop(tokens: list[str], stops: list[str]) -> tuple[list[str], str | None]:
    """Tokens up to the stop string that ended them (excluded), and that string (None: none did).
    As vLLM checks: after each token, each stop string in order, where the token could end it."""
    text = ""
    for token in tokens:
        text += token
        for stop in stops:
            if stop and (cut := text.find(stop, max(0, len(text) - len(token) - len(stop)))) >= 0:
                return _cut_tokens(tokens, cut), stop
    return tokens, None


def _cut_tokens(tokens: list[str], cut: int) -> list[str]:
    """The tokens' first `cut` characters, as tokens (the last one shortened)."""
    kept: list[str] = []
    used = 0
    for token in tokens:
        if used + len(token) >= cut:
            if cut > used:
                kept.append(token[: cut - used])
            break
        kept.append(token)
        used += len(token)
    return kept


def plan_choices(
    request: dict[str, Any],
    system: str,
    seed: int,
    calls_marker: int | None,
    thinking: bool,
    words: WordCycle,
    offset: int,
    natural: int,
    limit: int,
) -> list[ChoiceScript]:
    """The `n` choices of a scripted chat answer."""
    count = request.get("n") or 1
    messages = request.get("messages") or []
    response_format = request.get("response_format")
    if not isinstance(response_format, dict):
        response_format = {}
    kind = response_format.get("type")
    stops = request.get("stop") or []
    if isinstance(stops, str):
        stops = [stops]
    choices = []
    # As the plain word stream: a quarter of the tokens the limit lets through are reasoning.
    completion = min(natural, limit)
    thought = (max(1, completion // 4) if completion >= 2 else 0) if thinking else 0
    for index in range(count):
        choice_seed = seed + index * 7919
        start = offset + index * 97
        reasoning = word_tokens(words, start, thought)
        length = max(1, natural - thought)
        if kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            content = _pieces(json.dumps(instance_of(spec.get("schema") or {"type": "object"}), ensure_ascii=False))
        elif kind == "json_object":
            content = _pieces(json.dumps({"answer": words.text(start + thought, min(length, 8)).strip()}))
        elif "<tools>" in system:
            content = _tool_content(messages, system, choice_seed, calls_marker, words, start + thought, length)
            if reasoning and choice_seed & 0x100:
                # No reasoning parser in this deployment: the think block arrives inline.
                content = ["<think>", "\n", reasoning[0].lstrip(), *reasoning[1:], "\n", "</think>", "\n\n", *content]
                reasoning = []
        else:
            content = word_tokens(words, start + thought, length)
        finish, stopped_by = "stop", None
        if stops:
            content, stopped_by = _apply_stop(content, stops)
        room = limit - len(reasoning)
        if room < len(content) or len(reasoning) >= limit:
            reasoning, content, finish, stopped_by = reasoning[:limit], content[: max(room, 0)], "length", None
        choices.append(ChoiceScript(reasoning, content, finish, stopped_by))
    return choices
