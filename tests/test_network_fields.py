"""Only what the COCOON network takes is forwarded (issue 23, ruling 7): the filter's rules, unit by unit."""

from __future__ import annotations

import orjson
import pytest

from cocoon_platform.errors import InvalidRequest, UnsupportedParameter
from cocoon_platform.proxy.network_fields import CHAT_FIELDS, COMPLETION_FIELDS, network_body
from cocoon_platform.proxy.request import CHAT_PATH, COMPLETIONS_PATH, parse_request

LIMITS = {"max_tokens_cap": 128000, "default_max_tokens": 4096, "max_coefficient": 1000}
USER = {"role": "user", "content": "x"}


def chat(**fields: object) -> dict[str, object]:
    body = {"model": "m", "messages": [USER], **fields}
    return parse_request(CHAT_PATH, orjson.dumps(body), **LIMITS).payload  # type: ignore[arg-type]


def test_fields_without_effect_and_a_chats_seed_are_dropped() -> None:
    payload = chat(
        user="u1",
        store=True,
        metadata={"a": "b"},
        service_tier="auto",
        safety_identifier="s",
        prompt_cache_key="k",
        prompt_cache_retention="24h",
        seed=7,
        temperature=0.5,
    )
    assert set(payload) == {
        "model",
        "messages",
        "max_tokens",
        "max_coefficient",
        "timeout",
        "temperature",
        "stream",
        "stream_options",
    }


def test_completions_keep_their_seed() -> None:
    body = {"model": "m", "prompt": "p", "seed": 7, "user": "u", "echo": False, "suffix": "s"}
    payload = parse_request(COMPLETIONS_PATH, orjson.dumps(body), **LIMITS).payload
    assert payload["seed"] == 7 and "user" not in payload and payload["suffix"] == "s"


def test_a_stop_string_becomes_a_list() -> None:
    assert chat(stop="END")["stop"] == ["END"]
    assert chat(stop=["a", "b"])["stop"] == ["a", "b"]


@pytest.mark.parametrize("stop", [5, True, {"a": "b"}, [1], ["a", None]])
def test_a_stop_that_is_not_text_is_a_400_not_forwarded(stop: object) -> None:
    # Forwarded, the network fails the whole request and the caller saw a 502 for its own input.
    with pytest.raises(InvalidRequest) as refused:
        chat(stop=stop)
    assert refused.value.status == 400 and refused.value.param == "stop"


def test_text_parts_become_one_string_and_developer_becomes_system() -> None:
    payload = chat(
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ]
    )
    assert payload["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a\nb"}]


def test_an_assistants_reasoning_is_dropped_and_nulls_are_not_refused() -> None:
    payload = chat(
        messages=[
            USER,
            {"role": "assistant", "content": "y", "reasoning_content": "r" * 1000, "reasoning": "r", "refusal": None},
            USER,
        ],
        logprobs=None,
        tools=None,
    )
    assert payload["messages"][1] == {"role": "assistant", "content": "y", "refusal": None}
    assert "logprobs" not in payload and "tools" not in payload


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"audio": {"voice": "x"}}, "audio"),
        ({"modalities": ["text"]}, "modalities"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"some_new_field": 1}, "some_new_field"),
        ({"stream": True, "stream_options": {"continuous_usage_stats": True}}, "stream_options.continuous_usage_stats"),
        ({"chat_template_kwargs": {"enable_thinking": False, "foo": 1}}, "chat_template_kwargs.foo"),
        ({"messages": [{"role": "user", "content": "x", "weight": 1}]}, "messages[0].weight"),
        (
            {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}]},
            "messages[1].tool_calls",
        ),
        ({"messages": [USER, {"role": "tool", "content": "r", "tool_call_id": "c"}]}, "messages[1].role"),
    ],
)
def test_result_bearing_and_unknown_fields_are_a_400_naming_the_field(fields: dict[str, object], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as refused:
        chat(**fields)
    assert refused.value.param == param and refused.value.status == 400
    assert refused.value.code == "unsupported_parameter" and param in refused.value.message
    assert refused.value.message.count("COCOON network") == 1, refused.value.message  # says why, not the same twice


def test_operators_extra_fields_pass_as_sent() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "assistant", "content": "y", "reasoning_content": "r"}],
        "seed": 7,
        "logprobs": True,
        "stop": "x",
    }
    payload = network_body(body, True, frozenset({"seed", "logprobs", "reasoning_content"}))
    assert payload["seed"] == 7 and payload["logprobs"] is True and payload["stop"] == ["x"]
    assert payload["messages"][0]["reasoning_content"] == "r"


def test_every_request_is_a_stream_with_usage_upstream() -> None:
    """A non-streamed answer is assembled from the network's stream, so a cut one is billed (ruling 1)."""
    assert chat(stream_options={"include_usage": False})["stream_options"] == {"include_usage": True}
    assert chat()["stream"] is True and chat()["stream_options"] == {"include_usage": True}
    assert chat(stream=True)["stream_options"] == {"include_usage": True}


def test_every_forwarded_field_is_on_both_builds_lists() -> None:
    """Kept in step with the reference's table: the older build's list (the stricter), plus the
    client's own knobs; the platform never forwards a field only the newer build takes."""
    older_chat = {
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
    }
    both_completions = {
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
    }
    client_knobs = {"max_coefficient", "timeout"}
    assert CHAT_FIELDS <= older_chat | client_knobs
    assert COMPLETION_FIELDS <= both_completions | client_knobs
