"""The platform's MCP tools (official `mcp` SDK), each one call or two of the public HTTP API.

Rules:
- A tool is a client of the public API (`PlatformClient`) with the caller's key; which client, and
  so which key and which platform, is decided per call by `client_for` (the environment's key over
  stdio, the request's bearer token on `/mcp`). Inference therefore goes through the platform's
  own front door: the same checks, field filter, holds and settlement as any API call, and the
  same line in `/v1/usage`.
- Each description says when to use the tool; every input has a JSON schema with limits; answers
  are the platform's JSON (structured content), with what the model needs first.
- A refused or failed call is a tool error (`isError`) whose text is the platform's message (a 402
  also says how to top up), never an exception that ends the session.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from cocoon_platform import __version__
from cocoon_platform.agents.client import ApiError, PlatformClient

ClientFor = Callable[[Context], PlatformClient]
ToolFunction = TypeVar("ToolFunction", bound=Callable[..., Awaitable[dict[str, Any]]])

INSTRUCTIONS = """Cocoon Platform: paid AI inference on Telegram's COCOON network (Qwen3 chat, Seed-X
translation), billed per token in TON from the user's prepaid balance. Every chat or translate call
costs money and returns its cost. Check `balance` before long work; when a call fails with HTTP 402,
call `deposit_instructions` and show the user the ton:// link to top up."""

# Seed-X's target-language tags (the model card's list), with the names used in its prompt.
SEED_X_LANGUAGES = {
    "ar": "Arabic",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "hr": "Croatian",
    "hu": "Hungarian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "ms": "Malay",
    "nb": "Norwegian Bokmal",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sv": "Swedish",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "vi": "Vietnamese",
    "zh": "Chinese",
}
LanguageCode = Literal[
    "ar",
    "cs",
    "da",
    "de",
    "en",
    "es",
    "fi",
    "fr",
    "hr",
    "hu",
    "id",
    "it",
    "ja",
    "ko",
    "ms",
    "nb",
    "nl",
    "no",
    "pl",
    "pt",
    "ro",
    "ru",
    "sv",
    "th",
    "tr",
    "uk",
    "vi",
    "zh",
]

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
SPENDS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)


class Message(BaseModel):
    role: Literal["system", "user", "assistant"] = Field(description="Who said it.")
    content: str = Field(description="The text of the message.")


def _cost(answer: dict[str, Any]) -> dict[str, Any]:
    usage = answer.get("usage") or {}
    return {
        "cost_ton": usage.get("cost_ton"),
        "cost_nanoton": usage.get("cost_nanoton"),
        "usage": {key: usage.get(key) for key in ("prompt_tokens", "completion_tokens", "total_tokens")},
        "request_id": answer.get("id"),
        "model": answer.get("model"),
    }


async def _translation_model(client: PlatformClient) -> str:
    models = (await client.get("/v1/models"))["data"]
    for model in models:
        if model.get("type") == "translation":
            return str(model["id"])
    raise ToolError("No translation model is on the COCOON network right now (see the list_models tool).")


def build_server(client_for: ClientFor) -> MCPServer:
    """The MCP server with every tool; `client_for` gives the API client for the call at hand."""
    # The SDK sets up the root logger at this level (when nothing else has): warnings only, so that no
    # per-call line (a tool's refusal, an HTTP request's URL) is written.
    server: MCPServer = MCPServer(
        "cocoon-platform", title="Cocoon Platform", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )

    def tool(annotations: ToolAnnotations) -> Callable[[ToolFunction], ToolFunction]:
        """Register a tool; its description is its docstring without the source's indentation."""

        def register(function: ToolFunction) -> ToolFunction:
            server.add_tool(function, description=inspect.cleandoc(function.__doc__ or ""), annotations=annotations)
            return function

        return register

    async def call(ctx: Context, method: str, path: str, **arguments: Any) -> Any:
        client = client_for(ctx)
        try:
            if method == "GET":
                return await client.get(path, **arguments)
            return await client.post(path, arguments)
        except ApiError as exc:
            raise ToolError(str(exc)) from None

    @tool(SPENDS)
    async def chat(
        model: Annotated[str, Field(description="Model id from list_models, e.g. 'Qwen/Qwen3-32B'.")],
        messages: Annotated[list[Message], Field(min_length=1, description="The conversation, oldest first.")],
        ctx: Context,
        max_tokens: Annotated[
            int | None,
            Field(
                ge=1, description="Most tokens to generate (platform default when absent). Lower it to cap the cost."
            ),
        ] = None,
        temperature: Annotated[float | None, Field(ge=0, le=2, description="Sampling temperature.")] = None,
    ) -> dict[str, Any]:
        """Ask a chat model on the COCOON network and get its answer with what the call cost.

        Use it to get a second model's answer, to delegate a text task to Qwen3, or whenever the user asks
        to use COCOON. Paid: billed per token from the user's TON balance; the cost is in the result."""
        body: dict[str, Any] = {"model": model, "messages": [m.model_dump() for m in messages]}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        answer = await call(ctx, "POST", "/v1/chat/completions", **body)
        choice = answer["choices"][0]
        message = choice.get("message") or {}
        result = {"answer": message.get("content"), "finish_reason": choice.get("finish_reason"), **_cost(answer)}
        if message.get("reasoning_content"):
            result["reasoning"] = message["reasoning_content"]
        return result

    @tool(SPENDS)
    async def translate(
        text: Annotated[str, Field(min_length=1, description="The text to translate.")],
        target_language: Annotated[LanguageCode, Field(description="Language to translate into (ISO 639-1).")],
        ctx: Context,
        source_language: Annotated[LanguageCode | None, Field(description="Language of the text, if known.")] = None,
        model: Annotated[
            str | None, Field(description="Translation model id (default: the network's translation model, Seed-X).")
        ] = None,
        max_tokens: Annotated[int | None, Field(ge=1, description="Most tokens of translation.")] = None,
    ) -> dict[str, Any]:
        """Translate text with the Seed-X translation model on the COCOON network.

        Use it for translation between the 28 languages Seed-X knows; cheaper and more faithful than asking
        a chat model. Paid: billed per token from the user's TON balance; the cost is in the result."""
        client = client_for(ctx)
        try:
            model = model or await _translation_model(client)
            source = f"{SEED_X_LANGUAGES[source_language]} " if source_language else ""
            prompt = (
                f"Translate the following {source}sentence into {SEED_X_LANGUAGES[target_language]}:\n"
                f"{text} <{target_language}>"
            )
            body: dict[str, Any] = {"model": model, "prompt": prompt, "temperature": 0}  # greedy, as Seed-X advises
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            answer = await client.post("/v1/completions", body)
        except ApiError as exc:
            raise ToolError(str(exc)) from None
        choice = answer["choices"][0]
        return {
            "translation": str(choice.get("text", "")).strip(),
            "finish_reason": choice.get("finish_reason"),
            **_cost(answer),
        }

    @tool(READ_ONLY)
    async def list_models(ctx: Context) -> dict[str, Any]:
        """List the models on the COCOON network now: id, type ('chat' or 'translation'), endpoint, context
        window and each worker's load. Use it to pick a model for chat or translate. Free."""
        return {"models": (await call(ctx, "GET", "/v1/models"))["data"]}

    @tool(READ_ONLY)
    async def network_status(ctx: Context) -> dict[str, Any]:
        """The COCOON network's state: per model, workers, requests running and capacity, and whether the
        data is live ('online'), stale ('cached') or missing ('offline'). Use it when calls fail or are
        slow, or to choose the least loaded model. Free."""
        return dict(await call(ctx, "GET", "/api/stats"))

    @tool(READ_ONLY)
    async def pricing(ctx: Context) -> dict[str, Any]:
        """Current per-token prices in nanoTON (1 TON = 1e9 nanoTON) for prompt, cached prompt, completion
        and reasoning tokens, the minimum balance and how to pay. Use it to estimate a task's cost. Free."""
        return dict(await call(ctx, "GET", "/v1/pricing"))

    @tool(READ_ONLY)
    async def balance(ctx: Context) -> dict[str, Any]:
        """The user's balance in TON and nanoTON (and USD when a rate is known), and how much is held for
        requests in flight. Use it before paid work or when a call failed with HTTP 402. Free."""
        return dict(await call(ctx, "GET", "/v1/balance"))

    @tool(READ_ONLY)
    async def deposit_instructions(ctx: Context) -> dict[str, Any]:
        """How to add funds: the platform's TON wallet, the user's memo (deposit code) and a ton://transfer
        link that opens a TON wallet with both filled in. Use it when the balance is low or a call failed
        with HTTP 402, and show the link to the user: only they can send TON. Free."""
        return dict(await call(ctx, "GET", "/v1/deposit"))

    @tool(READ_ONLY)
    async def usage_history(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=200, description="How many requests, newest first.")] = 20,
        before: Annotated[int | None, Field(description="Continue a page: the next_before of the last result.")] = None,
    ) -> dict[str, Any]:
        """The user's recent paid requests, newest first (model, tokens by type, cost, status) and totals
        per day and model for the last 30 days. Use it to answer what was spent, on what and when. Free."""
        return dict(await call(ctx, "GET", "/v1/usage", limit=limit, before=before))

    @tool(READ_ONLY)
    async def get_generation(
        ctx: Context,
        id: Annotated[
            str,
            Field(
                min_length=1,
                description="The request id a chat or translate result gave (request_id), or an API answer's id.",
            ),
        ],
    ) -> dict[str, Any]:
        """Look up one past request by its id: model, tokens, cost, status and timing. Use it to check
        what a particular call cost or how it ended. Free."""
        return dict(await call(ctx, "GET", "/v1/generation", id=id))

    return server
