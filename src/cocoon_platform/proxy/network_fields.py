"""Only what the COCOON network takes reaches it (issue 23, ruling 7).

The network checks every body against a fixed field list and fails the whole request on
anything else; two generations of that check are public (the older in the worker, the newer
in the client; both tables are in the COCOON client reference). The platform
forwards what both accept, so a request that works here works on any deployment:

- Fields with no effect on the answer (`user`, `store`, `metadata`, ...) are dropped, and so is
  a chat's `seed` (the older build refuses it; completions take it in both).
- `stop` as a string becomes a one-element list (the newer build takes lists only); a `stop`
  that is neither a string nor a list of strings is a 400.
- Chat messages: `developer` becomes `system` (Qwen3's template drops a role it does not know);
  a text-only content array becomes one string, its parts joined by a newline (as vLLM joins
  them; one newer build misreads text parts); an assistant's `reasoning_content` (or
  `reasoning`), echoed back by many apps, is dropped (the template renders it only inside a
  tool loop, and the newer build refuses it). Any other field a message may not carry is a 400.
- A field whose result the caller would read (`logprobs`, `audio`, ...) or that the network
  refuses (`tools`, `logit_bias`, ...) gets a 400 naming it, as does any field not known here.
- An operator whose client build accepts more lists those fields in
  `COCOON_UPSTREAM_EXTRA_FIELDS`: they are forwarded as sent, in the body and in messages.

`network_body` is the one filter: every dialect (chat, completions, and anything translated into
a chat body) runs it last, on the body about to be forwarded.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from cocoon_platform.errors import InvalidRequest, UnsupportedParameter

# What both builds accept, besides the fields the platform sets itself (max_tokens, max_coefficient,
# stream_options, timeout). Values are checked by parse_request or left to the model.
CHAT_FIELDS = frozenset(
    (
        "model",
        "messages",
        "max_tokens",
        "n",
        "temperature",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "response_format",
        "reasoning_effort",
        "verbosity",
        "parallel_tool_calls",
        "stream",
        "stream_options",
        "stop",
        "chat_template_kwargs",
        "max_coefficient",
        "timeout",
    )
)
COMPLETION_FIELDS = frozenset(
    (
        "model",
        "prompt",
        "best_of",
        "echo",
        "frequency_penalty",
        "max_tokens",
        "n",
        "presence_penalty",
        "stop",
        "stream",
        "stream_options",
        "suffix",
        "temperature",
        "top_p",
        "skip_special_tokens",
        "max_coefficient",
        "timeout",
        "seed",
    )
)
# No effect on the answer (or, for `seed`, an effect neither build promises): dropped.
DROPPED_FIELDS = frozenset(
    (
        "user",
        "store",
        "metadata",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "seed",
    )
)
STREAM_OPTIONS = frozenset(("include_usage", "include_obfuscation"))
CHAT_TEMPLATE_KWARGS = frozenset(("enable_thinking",))
# The fields OpenAI defines for each message role, as the newer build checks them. A tool call's
# fields are translated into text before this filter (or refused): the network runs no tools.
MESSAGE_FIELDS = {
    "system": frozenset(("role", "content", "name")),
    "user": frozenset(("role", "content", "name")),
    "assistant": frozenset(("role", "content", "name", "refusal")),
}
DROPPED_MESSAGE_FIELDS = frozenset(("reasoning_content", "reasoning"))
# Why a field is refused, read after "'<field>' is not supported by the COCOON network": in general,
# and for the fields with a reason of their own.
UNLISTED = "its field check refuses any field it does not list"
_WHY = {
    "logprobs": "it returns no log probabilities",
    "top_logprobs": "it returns no log probabilities",
    "tools": "it runs no tools",
    "tool_choice": "it runs no tools",
    "functions": "it runs no tools",
    "function_call": "it runs no tools",
    "tool_calls": "it runs no tools",
}


def network_body(body: dict[str, Any], chat: bool, extra_fields: Collection[str] = ()) -> dict[str, Any]:
    """The body to forward: `body` changed in place as the module's rules say. Raises
    UnsupportedParameter (a 400 naming the field) for anything the network would refuse or
    the caller would miss."""
    accepted = CHAT_FIELDS if chat else COMPLETION_FIELDS
    for name in list(body):
        if name in accepted or name in extra_fields:
            continue
        if name in DROPPED_FIELDS or body[name] is None:
            del body[name]  # a null is "not set" to every OpenAI client: nothing to refuse
            continue
        if name == "top_logprobs" and body[name] == 0 and not body.get("logprobs"):
            del body[name]
            continue
        raise UnsupportedParameter(name, _WHY.get(name, UNLISTED))
    stop = body.get("stop")
    if isinstance(stop, str):
        body["stop"] = [stop]
    elif stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        # Forwarded, it fails the whole request upstream: the caller would see a 502 for its own input.
        raise InvalidRequest("'stop' must be a string or a list of strings", param="stop")
    if "stream_options" not in extra_fields:
        _check_keys(body, "stream_options", STREAM_OPTIONS)
    if chat:
        if "chat_template_kwargs" not in extra_fields:
            _check_keys(body, "chat_template_kwargs", CHAT_TEMPLATE_KWARGS)
        body["messages"] = [_network_message(m, i, extra_fields) for i, m in enumerate(body["messages"])]
    return body


def _check_keys(body: dict[str, Any], name: str, allowed: frozenset[str]) -> None:
    value = body.get(name)
    if isinstance(value, dict):
        for key in value:
            if key not in allowed:
                raise UnsupportedParameter(f"{name}.{key}", UNLISTED)


def _network_message(message: dict[str, Any], index: int, extra_fields: Collection[str]) -> dict[str, Any]:
    """One message as the network takes it (roles and contents already checked by parse_request)."""
    role = message["role"]
    if role == "developer":
        role = "system"
    allowed = MESSAGE_FIELDS.get(role)
    if allowed is None:
        raise UnsupportedParameter(f"messages[{index}].role", f"a '{role}' message needs a model that can call tools")
    out = {}
    for name, value in message.items():
        if name in allowed or name in extra_fields:
            out[name] = value
        elif (name in DROPPED_MESSAGE_FIELDS and role == "assistant") or value is None:
            continue
        else:
            raise UnsupportedParameter(
                f"messages[{index}].{name}",
                _WHY.get(name, f"a {role} message may carry only {', '.join(sorted(allowed))}"),
            )
    out["role"] = role
    content = out.get("content")
    if isinstance(content, list):
        out["content"] = "\n".join(part["text"] for part in content)
    return out
