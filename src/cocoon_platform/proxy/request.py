"""Reading and checking an inference request body, by hand: this runs on every request.

Failures use the spec's shapes: a missing `model`/`messages`/`prompt` is a 400 in the
OpenAI error shape; a wrong type is a 422 in FastAPI's `detail` shape.

A `json_schema` response format's `schema` must be a valid JSON Schema, as a tool's `parameters`
must (tools/offer.py): forwarded, a bad one fails on the network, whose 400 names no field. Checking
a schema against its metaschema takes about a millisecond for a small one and tens for a larger one
(measured), and clients send the same schema on every request: results are kept by the schema's
JSON (`_kept_schema_problem`, at most RESPONSE_SCHEMAS_KEPT of at most RESPONSE_SCHEMA_KEPT_BYTES
each, so 4 MiB; a larger schema is checked for its request alone).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from cocoon_platform.billing import tokenizer
from cocoon_platform.billing.cost import chat_prompt_tokens, prompt_token_bound
from cocoon_platform.errors import InvalidRequest, PlatformError, validation_body
from cocoon_platform.proxy.network_fields import network_body
from cocoon_platform.tools.offer import SchemaCache, ToolOffer
from cocoon_platform.tools.request import apply_tools
from cocoon_platform.tools.schema import schema_problem

if TYPE_CHECKING:
    from cocoon_platform.dialects import Dialect, Translated

# Model names as the network and Hugging Face write them ("Qwen/Qwen3-32B").
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/:@+]*")
MAX_MODEL_LENGTH = 128
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"

# The COCOON client's own knobs: the platform sets the request's `timeout` itself (the operator's
# setting, below the platform's own deadline) and never exposes debug data.
CLIENT_CONTROL_FIELDS = ("timeout", "enable_debug", "request_guid")
DEFAULT_REQUEST_TIMEOUT = 120.0  # seconds: the COCOON client's own default
ROLES = frozenset(("system", "user", "assistant", "developer", "tool"))
MAX_N = 16
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
# A `json_schema` format's fields and what each holds, and its name's rule, as OpenAI checks them.
JSON_SCHEMA_FIELDS: dict[str, tuple[type[object], str]] = {
    "name": (str, "a string"),
    "description": (str, "a string"),
    "schema": (dict, "a JSON Schema object"),
    "strict": (bool, "a boolean"),
}
JSON_SCHEMA_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
RESPONSE_SCHEMAS_KEPT = 64
RESPONSE_SCHEMA_KEPT_BYTES = 64 << 10


class ValidationFailed(PlatformError):
    """A 422 with FastAPI's body shape, and the OpenAI error object beside it (`validation_body`)."""

    status = 422
    type = "invalid_request_error"
    code = "validation_error"

    def __init__(self, loc: list[str | int], msg: str, type_: str) -> None:
        super().__init__(msg)
        self.detail = [{"loc": ["body", *loc], "msg": msg, "type": type_}]

    def body(self) -> dict[str, Any]:
        return validation_body(self.detail)


@dataclass(slots=True)
class InferenceRequest:
    endpoint: str  # "chat" or "completions"
    model: str
    stream: bool
    include_usage: bool  # what the client asked for; the upstream is always asked for usage
    max_tokens: int
    choices: int
    payload: dict[str, Any]  # the body to forward, already adjusted
    payload_json: bytes  # the payload's JSON, as forwarded (`forwarded_json`); kept in step by set_model
    tools: ToolOffer | None = None  # the tools the answer is read against (tools/)
    added_prompt_bytes: int = 0  # prompt text the platform added (rendered tools), for the reservation
    attempts: int = 1  # 2 when tool_choice requires a call: one retry if the model made none
    dialect: Dialect | None = None  # the API the request came in (None: OpenAI's chat or completions)
    translated: Translated | None = None  # the dialect's request, which its answer is made from

    def prompt_bound(self, body_bytes: int) -> int:
        """Prompt bytes to reserve for (a token is never shorter than a byte), over every attempt."""
        return (body_bytes + self.added_prompt_bytes) * self.attempts

    def completion_bound(self) -> int:
        """Completion tokens to reserve for, over every choice and attempt."""
        return self.max_tokens * self.choices * self.attempts

    def set_model(self, model: str) -> None:
        """Name the model as the network does (an alias resolved)."""
        if model != self.model:
            self.model = self.payload["model"] = model
            self.payload_json = orjson.dumps(self.payload)

    def estimate_prompt_tokens(self) -> int:
        """The prompt's tokens for when the upstream never reported them: counted exactly with
        Qwen's vocabulary for a Qwen model (`billing/tokenizer.py`), else bounded from above by
        everything forwarded that the network renders (`billing.cost.prompt_token_bound`)."""
        chat = self.endpoint == "chat"
        if chat:
            messages = self.payload["messages"]
            # After the network filter every content is a string (or null).
            texts = [m.get("content") or "" for m in messages]
        else:
            prompt = self.payload["prompt"]
            texts = [prompt] if isinstance(prompt, str) else prompt
        if "qwen" in self.model.lower():
            counts = [tokenizer.count(text) for text in texts]
            if all(c is not None for c in counts):
                exact = [c for c in counts if c is not None]
                return chat_prompt_tokens(exact) if chat else sum(exact)
        if chat:
            return prompt_token_bound(len(orjson.dumps(messages)), True)
        return prompt_token_bound(sum(len(p.encode()) for p in texts), False)


def _int_field(body: dict[str, Any], name: str, minimum: int, maximum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed([name], "Input should be a valid integer", "int_type")
    if value < minimum:
        raise ValidationFailed([name], f"Input should be greater than or equal to {minimum}", "greater_than_equal")
    if maximum is not None and value > maximum:
        raise ValidationFailed([name], f"Input should be less than or equal to {maximum}", "less_than_equal")
    return value


def _check_messages(messages: Any) -> bool:
    """Check the messages' shapes; True when they carry tool calls or tool results."""
    if not isinstance(messages, list):
        raise ValidationFailed(["messages"], "Input should be a valid list", "list_type")
    if not messages:
        raise InvalidRequest("messages must contain at least one message", param="messages")
    history = False
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValidationFailed(["messages", index], "Input should be a valid dictionary", "dict_type")
        role = message.get("role")
        if not isinstance(role, str):
            raise ValidationFailed(["messages", index, "role"], "Input should be a valid string", "string_type")
        if role not in ROLES:
            raise ValidationFailed(
                ["messages", index, "role"],
                "Input should be 'system', 'developer', 'user', 'assistant' or 'tool'",
                "enum",
            )
        if role == "tool" or "tool_calls" in message:
            history = True
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise ValidationFailed(["messages", index, "content"], "Input should be a valid string", "string_type")
        for part_index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(
                    f"messages[{index}].content[{part_index}]: only text parts "
                    '({"type": "text", "text": "..."}) are supported by the COCOON network',
                    param="messages",
                )
    return history


def check_response_format(value: Any) -> None:
    """`response_format` as OpenAI takes it: `{"type": "text"}`, `{"type": "json_object"}`, or
    `{"type": "json_schema", "json_schema": {...}}` (`check_json_schema`); else a 400 naming it.
    Forwarded unchecked, a bad one fails the whole request on the network, which the caller
    would read as the network's failure rather than its own input's."""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in RESPONSE_FORMAT_TYPES:
        raise InvalidRequest(
            "'response_format' must be an object whose 'type' is 'text', 'json_object' or 'json_schema'",
            param="response_format",
        )
    if kind == "json_schema":
        if "json_schema" not in value:
            raise InvalidRequest(
                "'response_format.json_schema' is required when the type is 'json_schema'", param="response_format"
            )
        check_json_schema(value["json_schema"], "response_format.json_schema", "response_format")
    only_fields(value, ("type", "json_schema") if kind == "json_schema" else ("type",), "response_format")


def check_json_schema(spec: Any, where: str, param: str) -> None:
    """A `json_schema` response format's object (at `where` in the request; a 400 names `param`):
    a `name` of 1-64 letters, digits, `_` or `-`, and optionally a `description` string, a
    `schema` object and a `strict` boolean (null: not set). A `schema` that is not a valid JSON
    Schema is a 400 naming `<where>.schema` itself, and the rule it breaks."""
    if not isinstance(spec, dict):
        raise InvalidRequest(f"'{where}' must be an object with a 'name'", param=param)
    only_fields(spec, JSON_SCHEMA_FIELDS, where, param)
    for field, (kind, what) in JSON_SCHEMA_FIELDS.items():
        value = spec.get(field)
        if value is not None and not isinstance(value, kind):
            raise InvalidRequest(f"'{where}.{field}' must be {what}", param=param)
    name = spec.get("name")
    if not isinstance(name, str) or not JSON_SCHEMA_NAME.fullmatch(name):
        raise InvalidRequest(f"'{where}.name' is required: 1-64 letters, digits, underscores or dashes", param=param)
    schema = spec.get("schema")
    if schema is not None:
        try:
            key = orjson.dumps(schema)
        except orjson.JSONEncodeError:  # nested deeper than orjson writes: checked, then refused (forwarded_json)
            problem = schema_problem(schema)
        else:
            problem = _kept_schema_problem(key) if len(key) <= RESPONSE_SCHEMA_KEPT_BYTES else schema_problem(schema)
        if problem is not None:
            raise InvalidRequest(f"'{where}.schema' is not a valid JSON Schema: {problem}", param=f"{where}.schema")


@lru_cache(maxsize=RESPONSE_SCHEMAS_KEPT)
def _kept_schema_problem(key: bytes) -> str | None:
    """`schema_problem` of the schema whose JSON is `key`, kept (see the module's docstring)."""
    return schema_problem(orjson.loads(key))


def only_fields(value: dict[str, Any], fields: Collection[str], where: str, param: str | None = None) -> None:
    """A 400 naming the first field of the object at `where` that is not one of `fields`."""
    for field in value:
        if field not in fields:
            raise InvalidRequest(
                f"'{where}.{field}' is not a known field (expected {', '.join(fields)})", param=param or where
            )


def _check_prompt(prompt: Any) -> None:
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return
    raise ValidationFailed(["prompt"], "Input should be a valid string", "string_type")


def decode_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object (a 422 otherwise)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed([0], "JSON decode error", "json_invalid") from None
    if not isinstance(body, dict):
        raise ValidationFailed(
            [], "Input should be a valid dictionary or object to extract fields from", "model_attributes_type"
        )
    return body


_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
# Where a `tools` key's list may begin: a `"tools"` key (no JSON string holds an unescaped quote,
# so these bytes are a key, at some depth), its colon, and the list's bracket.
_TOOLS_KEY = re.compile(rb'"tools"[ \t\n\r]*:[ \t\n\r]*\[')
# What stands in a body for a kept tool list while the rest is decoded: a string no body holds
# but by chance (one in 2^64), made anew by each process.
_TOOLS_MARK = "\x00tools " + secrets.token_hex(8)
_TOOLS_MARK_JSON = orjson.dumps(_TOOLS_MARK)


def decode_chat_body(raw: bytes, schemas: SchemaCache | None) -> tuple[dict[str, Any], bytes | None]:
    """`decode_body` for a chat body, and its `tools` list's JSON as sent (None without one).

    Agents send the same tools on every turn, and decoding them (then encoding them again for the
    cache key) costs more than the rest of the body. So the first list under a `"tools"` key is
    looked for among the lists `schemas` has compiled (`known_at`, by its first bytes, then
    whole). When one is there, its bytes are replaced by a marker string, the rest is decoded with
    orjson, and if the marker is what the body's own `tools` field then holds, that ToolSet stands
    in for it: the list is never decoded. That is exact. The marker can only be the top-level
    field's value if the list was (it occurs nowhere else), and a complete JSON value replaced by
    another at a value's place leaves everything around it read as before: a key sent twice keeps
    its last value, and an earlier value orjson cannot read still fails the body. Otherwise (no
    list, one not kept, one elsewhere in the body) the body is decoded whole, and msgspec finds the
    field's JSON (its fields split as raw JSON, no objects made) to key the cache with."""
    if schemas is None:
        return decode_body(raw), None
    key = _TOOLS_KEY.search(raw)
    if key is None:
        return decode_body(raw), None  # no list under a `tools` key anywhere: none at the top
    start = key.end() - 1
    found = schemas.known_at(raw, start)
    if found is not None:
        tools_json, tool_set = found
        body = decode_body(raw[:start] + _TOOLS_MARK_JSON + raw[start + len(tools_json) :])
        if body.get("tools") == _TOOLS_MARK:
            body["tools"] = tool_set
            return body, tools_json
    body = decode_body(raw)
    if not isinstance(body.get("tools"), list):
        return body, None
    try:
        tools = _decode_fields(raw).get("tools")
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # msgspec recurses per level
        return body, None
    return body, None if tools is None else bytes(tools)


def forwarded_json(payload: dict[str, Any]) -> bytes:
    """The JSON a payload is forwarded as. orjson reads a body nested up to 1,024 levels deep but
    writes at most 254, so a value the body nests deeper (in `top_p`, a response format's schema,
    ...) cannot be forwarded: a 400 naming its field, before anything is held. Written when the
    request was forwarded, it was a 500, billed as an aborted request."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        for name, value in payload.items():
            try:
                orjson.dumps({name: value})
            except orjson.JSONEncodeError:
                raise InvalidRequest(f"'{name}' is nested too deeply to be forwarded", param=name) from None
        raise


def parse_request(
    path: str,
    raw: bytes,
    *,
    max_tokens_cap: int,
    default_max_tokens: int,
    max_coefficient: int,
    extra_fields: Collection[str] = (),
    tool_format_of: Callable[[str], str | None] | None = None,
    schemas: SchemaCache | None = None,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> InferenceRequest:
    """Validate a body and prepare what is forwarded upstream (only what the network takes:
    `network_fields.network_body`, with the operator's `extra_fields`). With `tool_format_of`
    (model -> the catalog's tool format), tools and tool history are rendered for the model."""
    chat = path == CHAT_PATH
    body, tools_json = decode_chat_body(raw, schemas) if chat else (decode_body(raw), None)
    return prepare_request(
        body,
        chat,
        max_tokens_cap=max_tokens_cap,
        default_max_tokens=default_max_tokens,
        max_coefficient=max_coefficient,
        extra_fields=extra_fields,
        tool_format_of=tool_format_of,
        schemas=schemas,
        request_timeout=request_timeout,
        tools_json=tools_json,
    )


def prepare_request(
    body: dict[str, Any],
    chat: bool,
    *,
    max_tokens_cap: int,
    default_max_tokens: int,
    max_coefficient: int,
    extra_fields: Collection[str] = (),
    tool_format_of: Callable[[str], str | None] | None = None,
    schemas: SchemaCache | None = None,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    tools_json: bytes | None = None,
) -> InferenceRequest:
    """Check a decoded chat or completions body and prepare it for forwarding; the dialects call
    this with the chat body they translated, so every way in meets the same checks, tools and filter.
    `tools_json` is the `tools` list's JSON as sent, when known (`decode_chat_body`)."""
    required = "messages" if chat else "prompt"
    model = body.get("model")
    if model is None or body.get(required) is None:
        raise InvalidRequest(f"model and {required} are required")
    if not isinstance(model, str):
        raise ValidationFailed(["model"], "Input should be a valid string", "string_type")
    if not model.strip():
        raise InvalidRequest("model must not be empty", param="model")
    if len(model) > MAX_MODEL_LENGTH or not MODEL_NAME.fullmatch(model):
        # Checked before anything logs it: a newline would forge log lines, a long one fill the log.
        raise InvalidRequest(
            f"model must be 1-{MAX_MODEL_LENGTH} characters: letters, digits and . _ - / : @ +", param="model"
        )
    history = False
    if chat:
        history = _check_messages(body["messages"])
        if body.get("response_format") is not None:
            check_response_format(body["response_format"])
    else:
        _check_prompt(body["prompt"])
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ValidationFailed(["stream"], "Input should be a valid boolean", "bool_type")
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise ValidationFailed(["temperature"], "Input should be a valid number", "float_type")
        if not 0 <= temperature <= 2:
            rule = "greater_than_equal" if temperature < 0 else "less_than_equal"
            raise ValidationFailed(["temperature"], "Input should be between 0 and 2", rule)
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise ValidationFailed(["stream_options"], "Input should be a valid dictionary", "dict_type")
    include_usage = bool(stream_options and stream_options.get("include_usage"))

    requested = _int_field(body, "max_completion_tokens", 1) if chat else None
    if requested is None:
        requested = _int_field(body, "max_tokens", 1)
    max_tokens = min(requested if requested is not None else default_max_tokens, max_tokens_cap)
    choices = _int_field(body, "n", 1, MAX_N) or 1
    if not chat:
        choices = max(choices, _int_field(body, "best_of", 1, MAX_N) or 1)
        if isinstance(body["prompt"], list):
            choices *= len(body["prompt"])  # a list of prompts is a batch: each gets its completions

    # Sent explicitly so the upstream never falls back to its own (larger) default.
    body.pop("max_completion_tokens", None)
    for name in CLIENT_CONTROL_FIELDS:
        body.pop(name, None)
    body["max_tokens"] = max_tokens
    body["max_coefficient"] = max_coefficient
    body["timeout"] = request_timeout
    # Always a stream upstream, with usage: a non-streamed answer is assembled from it, so what the
    # network generated is known however the request ends (proxy/assemble.py).
    body["stream"] = True
    body["stream_options"] = {**(stream_options or {}), "include_usage": True} if stream else {"include_usage": True}
    tools, added = (None, 0)
    if chat and tool_format_of is not None:
        tools, added = apply_tools(
            body, tool_format_of, schemas if schemas is not None else SchemaCache(), history, tools_json
        )
    network_body(body, chat, extra_fields)
    return InferenceRequest(
        endpoint="chat" if chat else "completions",
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        choices=choices,
        payload=body,
        payload_json=forwarded_json(body),
        tools=tools,
        added_prompt_bytes=added,
        attempts=2 if tools is not None and tools.must_call else 1,
    )
