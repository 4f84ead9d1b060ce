"""The COCOON client's request validator, as the two public builds apply it.

Every request body is checked against a fixed field list and fails whole on anything else
(the reference's table, `shared/reference/cocoon-client.md`). The older build (the default: the
stricter, and what tests run against) checks top-level fields only; the newer one accepts a
few more fields, takes `stop` only as a list of strings, and checks each message's fields.
Both take only `include_usage` and `include_obfuscation` in `stream_options`, and stream any
request that carries `stream_options`.
"""

from __future__ import annotations

from typing import Any

from cocoon_simulator.cocoon_infer import error_json

DEFAULT_TIMEOUT_SECONDS = 120.0
NETWORK_SHARE = 0.95  # of a request's timeout, the part the client gives the network

# The client's own request fields, in every build.
_CLIENT_FIELDS = frozenset(("max_coefficient", "timeout", "enable_debug", "request_guid"))
_CHAT_BOTH = (
    frozenset(
        (
            "messages",
            "model",
            "max_tokens",
            "max_completion_tokens",
            "n",
            "temperature",
            "top_p",
            "frequency_penalty",
            "presence_penalty",
            "response_format",
            "reasoning_effort",
            "verbosity",
            "parallel_tool_calls",
            "top_logprobs",
            "stream",
            "chat_template_kwargs",
            "stream_options",
            "stop",
        )
    )
    | _CLIENT_FIELDS
)
_CHAT_NEWER_ONLY = frozenset(
    (
        "seed",
        "logprobs",
        "user",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "audio",
        "modalities",
        "skip_special_tokens",
    )
)
_COMPLETION_BOTH = (
    frozenset(
        (
            "model",
            "prompt",
            "best_of",
            "echo",
            "frequency_penalty",
            "max_tokens",
            "n",
            "presence_penalty",
            "seed",
            "stop",
            "stream",
            "stream_options",
            "suffix",
            "temperature",
            "top_p",
            "skip_special_tokens",
        )
    )
    | _CLIENT_FIELDS
)
_COMPLETION_NEWER_ONLY = frozenset(("logprobs", "user"))
_STREAM_OPTIONS = frozenset(("include_usage", "include_obfuscation"))
# The newer build's message check: the fields OpenAI defines for each role.
_MESSAGE_FIELDS = {
    "developer": frozenset(("role", "content", "name")),
    "system": frozenset(("role", "content", "name")),
    "user": frozenset(("role", "content", "name")),
    "assistant": frozenset(("role", "content", "name", "refusal", "tool_calls", "function_call", "audio")),
    "tool": frozenset(("role", "content", "tool_call_id")),
    "function": frozenset(("role", "content", "name")),
}


def _unknown(build: str, name: str) -> Exception:
    """The client's answer to a field it does not take, in each build's words."""
    if build == "older":
        return error_json(400, f"unknown option '{name}' in request")
    return error_json(400, f" has unknown field '{name}'")


def check_fields(request: dict[str, Any], chat: bool, build: str) -> None:
    """Refuse what the client build refuses (RequestError); a request carrying `stream_options`
    becomes a stream, as the client makes it."""
    accepted = _CHAT_BOTH if chat else _COMPLETION_BOTH
    if build == "newer":
        accepted = accepted | (_CHAT_NEWER_ONLY if chat else _COMPLETION_NEWER_ONLY)
    for name in request:
        if name not in accepted:
            raise _unknown(build, name)
    n = request.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise error_json(400, "field n must be at least 1")
    penalty = request.get("frequency_penalty")
    if penalty is not None and (not isinstance(penalty, int | float) or not -2 <= penalty <= 2):
        raise error_json(400, "field frequency_penalty must be between -2 and 2")
    options = request.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise error_json(400, "field stream_options must be an object")
        for name in options:
            if name not in _STREAM_OPTIONS:
                raise _unknown(build, f"stream_options.{name}")
        request["stream"] = True
    kwargs = request.get("chat_template_kwargs")
    if isinstance(kwargs, dict):
        for name in kwargs:
            if name != "enable_thinking":
                raise _unknown(build, f"chat_template_kwargs.{name}")
    timeout_seconds(request)
    if chat:
        _refuse_tool_history(request.get("messages"))
    if build == "newer":
        stop = request.get("stop")
        if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise error_json(400, "field stop must be an array of strings")
        if chat:
            _check_messages(request.get("messages"))


def _refuse_tool_history(messages: Any) -> None:
    """Whether the network takes `tool` messages or an assistant's `tool_calls` is not known (it
    runs no tools), so the platform must never send them: refused in every build, so that a
    regression shows."""
    if not isinstance(messages, list):
        return
    for message in messages:
        if isinstance(message, dict) and (message.get("role") == "tool" or "tool_calls" in message):
            raise error_json(400, "tool messages and tool_calls are not accepted by the COCOON network")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        return  # read_job says what is wrong with it
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        allowed = _MESSAGE_FIELDS.get(role) if isinstance(role, str) else None
        if allowed is None:
            raise error_json(400, f"unknown message role '{message.get('role')}'")
        for name in message:
            if name not in allowed:
                raise _unknown("newer", name)
        if message["role"] == "tool" and "tool_call_id" not in message:
            raise error_json(400, "a tool message needs tool_call_id")


def timeout_seconds(request: dict[str, Any]) -> float:
    """The request's `timeout` (default 120 s): a positive number of seconds."""
    value = request.get("timeout")
    if value is None:
        return DEFAULT_TIMEOUT_SECONDS
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise error_json(400, "field timeout must be a positive number")
    return float(value)
