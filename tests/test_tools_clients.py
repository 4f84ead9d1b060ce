"""Tool calling and structured output end to end: platform + simulator, with the clients users run
(the openai SDK, the OpenAI Agents SDK, LangChain), on both databases.

The simulator answers like Qwen3 behind vLLM (cocoon_simulator/cocoon_script.py): `[[sim:calls=N]]`
in the last user message makes it call N tools (0: none), otherwise its choice is fixed per prompt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import ServerFactory
from pydantic import BaseModel
from support import Server, Simulator, db_rows, ledger_consistent, new_account, start_simulator

from cocoon_simulator.cocoon_infer import chat_prompt

QWEN = "Qwen/Qwen3-32B"
TON = 1_000_000_000

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "minLength": 3}},
            "required": ["zone"],
        },
    },
}


def client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def balance(server: Server, key: str) -> int:
    response = httpx.get(server.url + "/v1/balance", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return int(response.json()["balance_nanoton"])


def last_forwarded(simulator: Simulator) -> dict[str, Any]:
    return simulator.stats()["last_requests"][-1]  # type: ignore[index, no-any-return]


def forwarded_with(simulator: Simulator, text: str) -> list[dict[str, Any]]:
    """The forwarded requests whose last message holds `text`."""
    return [
        r
        for r in simulator.stats()["last_requests"]  # type: ignore[attr-defined]
        if r.get("messages") and text in str(r["messages"][-1].get("content"))
    ]


def test_tool_call_non_streamed(platform: Server, database_url: str, simulator: Simulator) -> None:
    key = new_account(platform, database_url, TON)
    completion = client(platform, key).chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Weather in Paris? [[sim:calls=2]]"}],
        tools=[WEATHER, CLOCK],
        max_tokens=400,
    )  # type: ignore[list-item]
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 2
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
        if call.function.name == "get_weather":  # type: ignore[union-attr]
            assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("celsius", "fahrenheit")
        else:
            assert len(arguments["zone"]) >= 3
    assert calls[0].id != calls[1].id
    assert "<tool_call>" not in (choice.message.content or "")
    # The network saw plain messages: the tools in the system prompt, no `tools` field.
    sent = last_forwarded(simulator)
    assert "tools" not in sent["fields"] and "tool_choice" not in sent["fields"]
    usage = completion.usage
    assert usage is not None and (usage.model_extra or {})["cost_nanoton"] > 0
    assert balance(platform, key) == TON - (usage.model_extra or {})["cost_nanoton"]


def test_tool_call_streamed_through_the_sdk_accumulator(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    with client(platform, key).chat.completions.stream(
        model=QWEN,
        messages=[{"role": "user", "content": "Time in Tokyo and weather? [[sim:calls=2]]"}],
        tools=[WEATHER, CLOCK],
        max_tokens=400,
        stream_options={"include_usage": True},  # type: ignore[list-item]
    ) as stream:
        events = [event.type for event in stream]
        completion = stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 2
    for call in choice.message.tool_calls:
        json.loads(call.function.arguments)
    assert "tool_calls.function.arguments.done" in events
    assert completion.usage is not None and (completion.usage.model_extra or {})["cost_nanoton"] > 0


def test_second_turn_with_the_tool_result(platform: Server, database_url: str, simulator: Simulator) -> None:
    key = new_account(platform, database_url, TON)
    openai_client = client(platform, key)
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo? [[sim:calls=1]]"},
    ]
    first = openai_client.chat.completions.create(model=QWEN, messages=messages, tools=[WEATHER], max_tokens=300)  # type: ignore[list-item]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 4}'})
    second = openai_client.chat.completions.create(model=QWEN, messages=messages, tools=[WEATHER], max_tokens=300)  # type: ignore[list-item]
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert second.choices[0].message.content
    sent = last_forwarded(simulator)
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][3]["content"] == '<tool_response>\n{"temperature": 4}\n</tool_response>'
    assert '<tool_call>\n{"name": "get_weather", "arguments": ' in sent["messages"][2]["content"]


def test_tool_choice_none_required_and_named(platform: Server, database_url: str, simulator: Simulator) -> None:
    key = new_account(platform, database_url, 10 * TON)
    openai_client = client(platform, key)
    none = openai_client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Weather? [[sim:calls=1]]"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=200,
    )
    assert not none.choices[0].message.tool_calls and none.choices[0].finish_reason != "tool_calls"
    named = openai_client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Anything."}],
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=300,
    )
    assert {c.function.name for c in named.choices[0].message.tool_calls or []} == {"get_time"}  # type: ignore[union-attr]
    required = openai_client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Anything at all."}],
        tools=[WEATHER, CLOCK],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=300,
    )
    assert required.choices[0].finish_reason == "tool_calls"
    assert len(required.choices[0].message.tool_calls or []) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_required_call_retried_once_and_both_attempts_billed(
    platform: Server, database_url: str, simulator: Simulator, stream: bool
) -> None:
    key = new_account(platform, database_url, TON)
    question = f"No call from me, {key[-8:]}. [[sim:calls=0]]"
    raw = client(platform, key).chat.completions.with_raw_response.create(
        model=QWEN,
        messages=[{"role": "user", "content": question}],
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=300,
        stream=stream,  # type: ignore[list-item]
        **({"stream_options": {"include_usage": True}} if stream else {}),
    )
    if stream:
        chunks = list(raw.parse())
        usage = chunks[-1].usage
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["stop"]  # the retry's answer only: the first was held back
    else:
        completion = raw.parse()
        usage = completion.usage
        text = completion.choices[0].message.content or ""
    assert text and "<tool_call>" not in text
    attempts = forwarded_with(simulator, question)
    assert len(attempts) == 2 and attempts[0]["messages"] == attempts[1]["messages"]
    assert usage is not None
    # One charge for both attempts: their tokens added up, the cost of both.
    assert usage.prompt_tokens == 2 * chat_prompt(QWEN, attempts[0]["messages"]).tokens
    cost = (usage.model_extra or {})["cost_nanoton"]
    assert balance(platform, key) == TON - cost
    request_id = raw.headers["x-request-id"]
    rows = db_rows(
        database_url, "SELECT prompt_tokens, cost_nanoton FROM usage_records WHERE request_id = :r", {"r": request_id}
    )
    assert rows == [(usage.prompt_tokens, cost)]
    assert not ledger_consistent(database_url)


def required_call(question: str, stream: bool) -> dict[str, Any]:
    """A request that must call the weather tool, asking `question` (with its simulator markers)."""
    return {
        "model": QWEN,
        "messages": [{"role": "user", "content": question}],
        "tools": [WEATHER],
        "tool_choice": "required",
        "max_tokens": 300,
        "stream": stream,
    }


def settled_record(server: Server, database_url: str, key: str) -> tuple[object, ...]:
    """The usage record of the one request made with a fresh account's key, once it is written
    (a request its caller left settles after the caller is gone)."""
    deadline = time.monotonic() + 10
    records: list[dict[str, Any]] = []
    while not records and time.monotonic() < deadline:
        records = httpx.get(server.url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()[
            "data"
        ]
        time.sleep(0.1)
    assert len(records) == 1, records
    return db_rows(
        database_url,
        "SELECT status, http_status, prompt_tokens, completion_tokens, cost_nanoton, estimated "
        "FROM usage_records WHERE request_id = :r",
        {"r": records[0]["request_id"]},
    )[0]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("ending", "recorded"),
    [
        # The network drops the connection half way through the second answer.
        ("cut", {False: ("upstream_cut", 200), True: ("upstream_cut", 502)}),
        # It stops sending half way: the platform's idle timeout (3 s here) gives up on it.
        ("stall", {False: ("upstream_cut", 200), True: ("upstream_cut", 504)}),
        # The caller gives up (1 s without a byte) while the second answer is stalled.
        ("left", {False: ("client_disconnected", 499), True: ("client_disconnected", 499)}),
    ],
)
def test_a_retry_that_breaks_off_is_billed_with_the_first_attempt(
    platform: Server,
    database_url: str,
    simulator: Simulator,
    stream: bool,
    ending: str,
    recorded: dict[bool, tuple[str, int]],
) -> None:
    """Both attempts of a required call are billed however the second ends (ruling 1 of #23): the
    first's exact usage plus what the second generated, estimated from what arrived (its prompt
    is the first's, reported). A non-streamed caller gets the whole first answer; a streamed one
    has seen part of the second, then the error."""
    key = new_account(platform, database_url, TON)
    fault = "cut" if ending == "cut" else "stall"
    question = f"No call, {key[-8:]}. [[sim:calls=0]] [[sim:tokens=40]] [[sim:fault={fault}]] [[sim:fault_attempt=2]]"
    body = required_call(question, stream)
    url, headers = platform.url + "/v1/chat/completions", {"Authorization": f"Bearer {key}"}
    answer = b""
    if ending == "left":
        with pytest.raises(httpx.ReadTimeout), httpx.stream("POST", url, headers=headers, json=body, timeout=1) as r:
            r.read()
    else:
        with httpx.stream("POST", url, headers=headers, json=body, timeout=30) as r:
            assert r.status_code == 200
            answer = r.read()
    status, http_status, prompt, completion, cost, estimated = settled_record(platform, database_url, key)
    attempts = forwarded_with(simulator, key[-8:])
    assert len(attempts) == 2 and attempts[0]["messages"] == attempts[1]["messages"]
    # The network's own answer to the same prompt: what the first attempt generated.
    limits = {name: attempts[0][name] for name in ("max_tokens", "max_completion_tokens") if attempts[0][name]}
    whole = httpx.post(
        simulator.url + "/v1/chat/completions",
        json={"model": QWEN, "messages": attempts[0]["messages"], **limits},
        timeout=30,
    ).json()["usage"]
    assert (status, http_status) == recorded[stream] and estimated
    assert prompt == 2 * whole["prompt_tokens"]
    assert whole["completion_tokens"] < int(completion) < 2 * whole["completion_tokens"]  # type: ignore[call-overload]
    assert int(cost) > 0 and balance(platform, key) == TON - int(cost)  # type: ignore[call-overload]
    assert not ledger_consistent(database_url)
    if ending != "left" and not stream:
        document = json.loads(answer)  # the first answer, whole, with what both attempts cost
        message = document["choices"][0]["message"]
        assert message["content"] and not message.get("tool_calls")
        usage = document["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"], usage["cost_nanoton"]) == (prompt, completion, cost)
    elif ending != "left":
        events = [e[6:] for e in answer.decode().split("\n\n") if e.startswith("data: ")]
        assert any('"delta"' in e for e in events) and '"error"' in events[-1] and "[DONE]" not in events


@pytest.fixture(scope="module")
def slow_heads(server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A platform with a 3 s deadline (a 2 s timeout sent, the 1 s margin) before a network that
    takes 1.7 s to an answer's first byte: a retry is left about 0.3 s, too little for its head."""
    sim = start_simulator(tmp_path_factory.mktemp("slow-heads"), "--ttft-ms", "1700")
    try:
        yield server_factory(upstream_url=sim.url, upstream_request_timeout="2", upstream_deadline_margin="1")
    finally:
        sim.stop()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "never_taken",
    [
        "",  # the network's own timeout (the time the retry was given) ends it first: a 504
        "[[sim:fault=hang]] [[sim:fault_attempt=2]]",  # a network that hangs: the request's deadline ends it
    ],
)
def test_a_retry_with_no_time_left_leaves_the_first_answer_standing(
    slow_heads: Server, database_url: str, stream: bool, never_taken: str
) -> None:
    """The network never takes the retry, out of time before its answer's head: it costs
    nothing, and the first answer stands (it is whole and paid for) whether the caller streams or
    not. Seen: a streamed caller got only a 504 error event, its first answer held back, and paid
    for it."""
    key = new_account(slow_heads, database_url, TON)
    raw = client(slow_heads, key).chat.completions.with_raw_response.create(
        model=QWEN,
        messages=[{"role": "user", "content": f"No call, {key[-8:]}. [[sim:calls=0]] {never_taken}"}],
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=100,
        stream=stream,  # type: ignore[list-item]
        **({"stream_options": {"include_usage": True}} if stream else {}),
    )
    if stream:
        chunks = list(raw.parse())
        usage = chunks[-1].usage
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        completion = raw.parse()
        usage = completion.usage
        text = completion.choices[0].message.content or ""
    assert text and "<tool_call>" not in text and usage is not None  # the first answer, whole
    cost = (usage.model_extra or {})["cost_nanoton"]
    rows = db_rows(
        database_url,
        "SELECT status, http_status, completion_tokens, estimated, cost_nanoton FROM usage_records "
        "WHERE request_id = :r",
        {"r": raw.headers["x-request-id"]},
    )
    assert rows == [("ok", 200, usage.completion_tokens, False, cost)]  # the first attempt's exact usage
    assert balance(slow_heads, key) == TON - cost and not ledger_consistent(database_url)


@pytest.fixture(scope="module")
def paced(
    server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Simulator]]:
    """A platform with a 5 s deadline (a 4 s timeout sent, the 1 s margin) before a network that
    sends ten tokens a second: a first answer of 20 tokens takes over 2 s of the deadline."""
    sim = start_simulator(tmp_path_factory.mktemp("paced"), "--ttft-ms", "100", "--tpt-ms", "100")
    try:
        yield server_factory(upstream_url=sim.url, upstream_request_timeout="4", upstream_deadline_margin="1"), sim
    finally:
        sim.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_a_retry_is_sent_the_time_left_so_the_network_ends_it_first(
    paced: tuple[Server, Simulator], database_url: str, stream: bool
) -> None:
    """Ruling 1 of #23: the network always ends first, and says what it generated. A retry's
    `timeout` is what is left of the request's deadline less the margin the first request keeps,
    so a second answer that stalls is ended by the network, not cut by the platform's deadline.
    Seen: the retry was sent the whole 4 s with 3 s of the deadline left, and the platform cut
    it (a 504 to a streamed caller)."""
    platform, sim = paced
    key = new_account(platform, database_url, TON)
    cut_by_the_platform = sim.stats()["streams_disconnected"]
    question = f"No call, {key[-8:]}. [[sim:calls=0]] [[sim:tokens=20]] [[sim:fault=stall]] [[sim:fault_attempt=2]]"
    body = required_call(question, stream)
    url, headers = platform.url + "/v1/chat/completions", {"Authorization": f"Bearer {key}"}
    with httpx.stream("POST", url, headers=headers, json=body, timeout=30) as r:
        assert r.status_code == 200
        answer = r.read()
    status, http_status, _, _, cost, estimated = settled_record(platform, database_url, key)
    first, second = (attempt["timeout"] for attempt in forwarded_with(sim, key[-8:]))
    assert first == 4 and 0 < second <= 5 - 1 - 2.0  # the first answer took over 2 s
    assert sim.stats()["streams_disconnected"] == cut_by_the_platform  # the network ended the retry
    # Billed for what the retry generated too; a streamed caller is told the network ended its
    # stream early (502), not that time ran out (504); a non-streamed one has the first answer.
    assert (status, http_status) == ("upstream_cut", 502 if stream else 200) and estimated
    assert int(cost) > 0 and balance(platform, key) == TON - int(cost)  # type: ignore[call-overload]
    if stream:
        events = [e[6:] for e in answer.decode().split("\n\n") if e.startswith("data: ")]
        assert "ended the stream early" in events[-1]
    else:
        message = json.loads(answer)["choices"][0]["message"]
        assert message["content"] and not message.get("tool_calls")


class Weather(BaseModel):
    city: str
    celsius: int
    windy: bool


def test_parse_with_a_pydantic_response_format_and_tool(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    openai_client = client(platform, key)
    parsed = openai_client.chat.completions.parse(
        model=QWEN,
        messages=[{"role": "user", "content": "Weather in Rome as JSON."}],
        response_format=Weather,
        max_tokens=300,
    )
    weather = parsed.choices[0].message.parsed
    assert isinstance(weather, Weather)
    tool = openai.pydantic_function_tool(Weather, name="report")
    called = openai_client.chat.completions.parse(
        model=QWEN, messages=[{"role": "user", "content": "Report. [[sim:calls=1]]"}], tools=[tool], max_tokens=300
    )
    arguments = called.choices[0].message.tool_calls[0].function.parsed_arguments  # type: ignore[index, union-attr]
    assert isinstance(arguments, Weather)


def test_refused_shapes_get_clear_errors(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    openai_client = client(platform, key)
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.chat.completions.create(
            model=QWEN,
            messages=[{"role": "user", "content": "x"}],
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert refused.value.body["param"] == "tool_choice"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad_schema:
        openai_client.chat.completions.create(
            model=QWEN,
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}],
        )
    assert "not a valid JSON Schema" in bad_schema.value.body["message"]  # type: ignore[index]
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(150):
        deep = {"type": "object", "properties": {"a": deep}}
    for parameters, rule in (({"$schema": []}, "'$schema' must be a string"), (deep, "nested too deeply")):
        with pytest.raises(openai.BadRequestError) as unusable:  # once a 500: jsonschema raised, unchecked
            openai_client.chat.completions.create(
                model=QWEN,
                messages=[{"role": "user", "content": "x"}],
                tools=[{"type": "function", "function": {"name": "f", "parameters": parameters}}],
            )
        assert unusable.value.body["param"] == "tools[0].function.parameters"  # type: ignore[index]
        assert rule in unusable.value.body["message"]  # type: ignore[index]
    assert balance(platform, key) == TON
