"""Agents and frameworks users run against the platform, with tools and structured output: the
OpenAI Agents SDK (a function-tool agent to its final answer, and an `output_type`), LangChain
(`bind_tools` in a tool-calling loop, `with_structured_output`), and the Node openai SDK
streaming a tool call. Platform + simulator, real processes; billing checked on both databases.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel
from support import Server, ledger_consistent, new_account

QWEN = "Qwen/Qwen3-32B"
TON = 1_000_000_000
NODE_DIR = Path(__file__).parent / "node"


def balance(server: Server, key: str) -> int:
    response = httpx.get(server.url + "/v1/balance", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return int(response.json()["balance_nanoton"])


class CityWeather(BaseModel):
    city: str
    celsius: int


def test_agents_sdk_function_tool_agent_and_output_type(platform: Server, database_url: str) -> None:
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        RunConfig,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    key = new_account(platform, database_url, TON)
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"{city}: 18 degrees, sunny"

    # The Agents SDK defaults to the Responses API; agents here run on Chat Completions.
    model = OpenAIChatCompletionsModel(
        model=QWEN, openai_client=AsyncOpenAI(base_url=platform.url + "/v1", api_key=key, max_retries=0, timeout=30)
    )
    agent = Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather], model=model)
    result = Runner.run_sync(
        agent, "What is the weather in Paris? [[sim:calls=1]]", run_config=RunConfig(tracing_disabled=True)
    )
    assert asked and all(isinstance(city, str) and city for city in asked)
    assert isinstance(result.final_output, str) and result.final_output.startswith("From the tool results:")
    reporter = Agent(name="report", instructions="Report the weather.", model=model, output_type=CityWeather)
    report = Runner.run_sync(reporter, "Weather in Oslo as data.", run_config=RunConfig(tracing_disabled=True))
    assert isinstance(report.final_output, CityWeather)

    # Streamed (run last: asyncio.run leaves run_sync's event loop behind).
    async def streamed() -> str:
        # A client of this event loop's own (the one above belongs to run_sync's loop).
        streaming = agent.clone(
            model=OpenAIChatCompletionsModel(
                model=QWEN,
                openai_client=AsyncOpenAI(base_url=platform.url + "/v1", api_key=key, max_retries=0, timeout=30),
            )
        )
        run = Runner.run_streamed(
            streaming, "And in Rome? [[sim:calls=1]]", run_config=RunConfig(tracing_disabled=True)
        )
        async for _event in run.stream_events():
            pass
        return str(run.final_output)

    calls_before = len(asked)
    assert asyncio.run(streamed()).startswith("From the tool results:")  # a streamed tool call, then the answer
    assert len(asked) > calls_before
    assert balance(platform, key) < TON
    assert not ledger_consistent(database_url)


def test_langchain_bind_tools_loop_and_structured_output(platform: Server, database_url: str) -> None:
    from langchain_core.messages import BaseMessage, HumanMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    key = new_account(platform, database_url, TON)
    asked: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"{city}: 18 degrees"

    llm = ChatOpenAI(model=QWEN, base_url=platform.url + "/v1", api_key=key, max_retries=0, timeout=30)  # type: ignore[arg-type]
    bound = llm.bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage("Weather in Lisbon and Porto? [[sim:calls=2]]")]
    for _turn in range(4):
        answer = bound.invoke(messages)
        messages.append(answer)
        if not answer.tool_calls:  # type: ignore[attr-defined]
            break
        for call in answer.tool_calls:  # type: ignore[attr-defined]
            messages.append(get_weather.invoke(call))
    assert len(asked) == 2
    assert not messages[-1].tool_calls and isinstance(messages[-1].content, str) and messages[-1].content  # type: ignore[attr-defined]
    structured = llm.with_structured_output(CityWeather).invoke("Weather in Faro as data.")
    assert isinstance(structured, CityWeather)
    assert not ledger_consistent(database_url)


def test_node_openai_sdk_streams_a_tool_call(platform: Server, database_url: str) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed: the Node openai SDK test cannot run")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        installed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300
        )
        if installed.returncode != 0:
            pytest.skip(f"npm install of the openai package failed: {installed.stderr[-300:]}")
    key = new_account(platform, database_url, TON)
    run = subprocess.run(
        [node, "tool_stream.mjs"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BASE_URL": platform.url + "/v1", "API_KEY": key},
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    choice = result["completion"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert len(calls) == 1 and calls[0]["id"].startswith("call_") and calls[0]["function"]["name"] == "get_weather"
    assert isinstance(json.loads(calls[0]["function"]["arguments"])["city"], str)
    assert result["done"] == ["get_weather"]
    assert result["completion"]["usage"]["cost_nanoton"] > 0
