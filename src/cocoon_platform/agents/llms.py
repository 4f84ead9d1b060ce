"""`/llms.txt`, `/llms-full.txt` and the Markdown pages they link to (llmstxt.org).

Rules:
- Generated per request from what the running platform publishes: every path and operation of its
  OpenAPI document (`app.openapi()`, itself generated from the routes), the prices `/v1/pricing`
  computes (the same function, so the two always agree), the limits from the settings and the
  models the network serves now. Nothing is written by hand that the code already knows.
- Links are absolute, on the address the caller used (an agent may fetch the file from anywhere).
- Markdown pages sit at the URL of the page they render plus `.md` (`/index.html.md` for `/`,
  `/docs.md` for `/docs`), as llmstxt.org asks.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from cocoon_platform.billing.endpoints import pricing
from cocoon_platform.billing.schemas import PricingResponse, TokenRate
from cocoon_platform.config import NANOTON_PER_TON, Settings
from cocoon_platform.deps import StateDep, get_state
from cocoon_platform.state import AppState

router = APIRouter(include_in_schema=False)

MARKDOWN = "text/markdown; charset=utf-8"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
MCP_GUIDE = (Path(__file__).resolve().parent / "mcp.md").read_text(encoding="utf-8")

TITLE = "Cocoon Platform"
SUMMARY = (
    "A paid, OpenAI-compatible API to COCOON, Telegram's decentralised AI inference network on TON: "
    "chat and text completions (Qwen3, Seed-X translation) billed per token from a balance prepaid "
    "in TON. Any OpenAI client works; AI agents can also use it through MCP."
)


def base_url(request: Request) -> str:
    """The address the caller used; behind a trusted proxy (TLS ends there) with the scheme it forwards."""
    base = str(request.base_url).rstrip("/")
    scheme = request.headers.get("x-forwarded-proto")
    if scheme in ("http", "https") and get_state(request).client_addresses.from_trusted_proxy(request.scope):
        base = f"{scheme}://{base.split('://', 1)[1]}"
    return base


def anchor(method: str, path: str) -> str:
    """The id of an operation's section in /docs.md, e.g. `post-v1-chat-completions`."""
    return re.sub(r"[^a-z0-9]+", "-", f"{method} {path}".lower()).strip("-")


def operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) for every operation of the document, in its order."""
    return [
        (method.upper(), path, operation)
        for path, item in openapi.get("paths", {}).items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


# --- what the platform says about itself now ----------------------------------------------------


def ton_text(nanoton: int) -> str:
    """An amount of TON without trailing zeros: 10000000 -> "0.01"."""
    return f"{Decimal(nanoton) / NANOTON_PER_TON:f}".rstrip("0").rstrip(".") if nanoton else "0"


def _per_million(rate: TokenRate) -> str:
    return ton_text(rate.effective_nanoton * 1_000_000)


def prices_section(prices: PricingResponse) -> str:
    rates = prices.rates
    lines = [
        (
            f"Per token, in nanoTON (1 TON = {NANOTON_PER_TON:,} nanoTON), the network's price x "
            f"{prices.markup_multiplier:g} markup (prices {prices.price_source}, as `GET /v1/pricing` reports):"
        ),
        "",
    ]
    for label, rate in (
        ("prompt token", rates.prompt_token),
        ("cached prompt token", rates.cached_prompt_token),
        ("completion token", rates.completion_token),
        ("reasoning token", rates.reasoning_token),
    ):
        lines.append(f"- {label}: {rate.effective_nanoton} nanoTON ({_per_million(rate)} TON per million)")
    lines += [
        "",
        (
            "A request costs its tokens at these rates, rounded up once; the cost is in every answer's "
            "`usage` (`cost_nanoton`, `cost_ton`) and in `GET /v1/usage`."
        ),
    ]
    return "\n".join(lines)


def limits_section(settings: Settings) -> str:
    def per_key(value: int, what: str) -> str:
        return f"{value} {what} per key" if value else f"no limit on {what}"

    return "\n".join(
        (
            (
                f"- Requests need a balance of at least {ton_text(settings.min_balance_nanoton)} TON (else 402 "
                "`insufficient_balance`); requests in flight may take it at most "
                f"{ton_text(settings.max_overdraft_nanoton)} TON below zero."
            ),
            f"- `max_tokens`: {settings.default_max_tokens} when absent, at most {settings.max_tokens_cap} (larger is capped).",
            (
                f"- Rate limits: {per_key(settings.rate_limit_rpm, 'requests a minute')}, "
                f"{per_key(settings.rate_limit_concurrent, 'requests at once')} (429 with `Retry-After`)."
            ),
            f"- Request bodies: at most {settings.max_body_bytes} bytes (413).",
            (
                "- Sign-up and sign-in (`POST /api/register`, `POST /api/login`, `POST /v1/keys`): "
                + (
                    f"{settings.rate_limit_signup_per_minute} requests a minute per client address."
                    if settings.rate_limit_signup_per_minute
                    else "no limit."
                )
            ),
        )
    )


def models_section(state: AppState) -> str:
    models = state.network.models
    if models is None:
        return "Not known yet: the COCOON network has not answered since start-up (see `GET /v1/models`)."
    aliases = {model_id: alias for alias, model_id in state.network.aliases.items()}
    lines = []
    for model in models:
        info = state.catalog.info(model.id)
        window = f", context {info.context_window} tokens" if info.context_window else ""
        alias = f" (also `{aliases[model.id]}`)" if model.id in aliases else ""
        lines.append(
            f"- `{model.id}`{alias}: {info.type}, `POST {info.endpoint}`{window}, {len(model.workers)} worker(s)"
        )
    return "\n".join(lines) or "None right now (see `GET /v1/models`)."


def quick_start(base: str) -> str:
    return f"""1. Create an account: `curl -X POST {base}/api/register` returns `api_key` (`ck_...`, shown once)
   and `deposit_code`.
2. Fund it: `GET {base}/v1/deposit` (with `Authorization: Bearer ck_...`) returns the wallet, your memo
   and a `ton://transfer/...?text=MEMO` link. Send TON there with the memo as the comment; the balance
   (`GET /v1/balance`) is credited automatically within about 30 seconds.
3. Call the API with any OpenAI client:

```python
from openai import OpenAI
client = OpenAI(base_url="{base}/v1", api_key="ck_...")
answer = client.chat.completions.create(model="Qwen/Qwen3-32B",
                                        messages=[{{"role": "user", "content": "What is TON?"}}])
print(answer.choices[0].message.content, answer.usage.model_extra["cost_ton"], "TON")
```

4. Or give an AI agent the platform's tools over MCP: `{base}/mcp` (streamable HTTP, the key as a
   bearer token) or `cocoon-platform mcp` (stdio); see [{base}/docs/mcp.md]({base}/docs/mcp.md)."""


async def overview(state: AppState, base: str) -> str:
    """The landing page as Markdown: what the platform is, how to start, prices, limits, models."""
    return f"""# {TITLE}

> {SUMMARY}

Base URL: `{base}`. Authenticate with `Authorization: Bearer ck_...`. Errors have OpenAI's shape:
`{{"error": {{"message", "type", "param", "code"}}}}`.

## Quick start

{quick_start(base)}

## Prices now

{prices_section(await pricing(state))}

## Limits

{limits_section(state.settings)}

## Models now

{models_section(state)}

## More

- API reference: [{base}/docs.md]({base}/docs.md); OpenAPI document: [{base}/openapi.json]({base}/openapi.json)
- MCP server: [{base}/docs/mcp.md]({base}/docs/mcp.md)
"""


# --- the API reference, from the OpenAPI document -----------------------------------------------


def _resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The object schema behind references and an optional body's `anyOf: [X, null]`."""
    while True:
        if "$ref" in schema:
            schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        elif "anyOf" in schema and any("$ref" in s for s in schema["anyOf"]):
            schema = next(s for s in schema["anyOf"] if "$ref" in s)
        else:
            return schema


def _type(openapi: dict[str, Any], schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        ref: str = schema["$ref"]
        return ref.rsplit("/", 1)[1]
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " | ".join(_type(openapi, s) for s in schema[combinator])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        return " | ".join(kind)
    if kind == "array":
        return f"array of {_type(openapi, schema.get('items', {}))}"
    return str(kind)


def _fields(openapi: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    schema = _resolve(openapi, schema)
    required = set(schema.get("required", ()))
    lines = []
    for name, field in schema.get("properties", {}).items():
        note = field.get("description") or _resolve(openapi, field).get("description", "")
        mark = ", required" if name in required else ""
        lines.append(f"- `{name}` ({_type(openapi, field)}{mark}){': ' + note if note else ''}")
    return lines


def _operation(openapi: dict[str, Any], method: str, path: str, operation: dict[str, Any]) -> str:
    lines = [f'<a id="{anchor(method, path)}"></a>', f"### {method} {path}", ""]
    if operation.get("summary"):
        lines += [f"**{operation['summary']}.**", ""]
    if operation.get("description"):
        lines += [operation["description"].strip(), ""]
    responses = operation.get("responses", {})
    if operation.get("security"):
        lines += ["Needs `Authorization: Bearer ck_...`.", ""]
    parameters = [p for p in operation.get("parameters", ()) if p.get("in") in ("query", "path")]
    if parameters:
        lines.append("Parameters:")
        for p in parameters:
            mark = ", required" if p.get("required") else ""
            note = p.get("description") or p.get("schema", {}).get("description", "")
            lines.append(
                f"- `{p['name']}` ({p['in']}, {_type(openapi, p.get('schema', {}))}{mark}){': ' + note if note else ''}"
            )
        lines.append("")
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body:
        lines += ["Request body (JSON):", *_fields(openapi, body), ""]
    if responses:
        lines.append("Responses:")
        for status, response in responses.items():
            lines.append(f"- {status}: {response.get('description', '')}")
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if status.startswith("2") and schema:
                lines += [f"  {line}" for line in _fields(openapi, schema)]
        lines.append("")
    return "\n".join(lines)


def mcp_guide(base: str) -> str:
    return MCP_GUIDE.replace("{base_url}", base)


def reference(openapi: dict[str, Any], base: str) -> str:
    """Every operation of the OpenAPI document: what it does, its inputs and its answers."""
    lines = [
        f"# {TITLE} API reference",
        "",
        (
            f"> Every endpoint at `{base}`, generated from the OpenAPI document the server publishes at "
            f"[{base}/openapi.json]({base}/openapi.json)."
        ),
        "",
        openapi.get("info", {}).get("description", "").strip(),
        "",
    ]
    tags: dict[str, list[str]] = {}
    for method, path, operation in operations(openapi):
        tag = (operation.get("tags") or ["Other"])[0]
        tags.setdefault(tag, []).append(_operation(openapi, method, path, operation))
    for tag, sections in tags.items():
        lines += [f"## {tag}", "", *sections]
    return "\n".join(lines).rstrip() + "\n"


# --- llms.txt -----------------------------------------------------------------------------------


async def llms_index(state: AppState, openapi: dict[str, Any], base: str) -> str:
    """The llmstxt.org index: title, summary, free text (no headings), then sections of links."""
    api_links = [
        f"- [{method} {path}]({base}/docs.md#{anchor(method, path)}): {operation.get('summary', '')}"
        for method, path, operation in operations(openapi)
    ]
    return f"""# {TITLE}

> {SUMMARY}

Base URL: `{base}`; send `Authorization: Bearer ck_...` to every endpoint that can answer 401 (the API
reference lists each one's answers). Amounts are integers of nanoTON (1 TON = {NANOTON_PER_TON:,} nanoTON); every
answer's `usage` carries its `cost_nanoton` and `cost_ton`.

**Get a key and fund it; quick start.**

{quick_start(base)}

**Prices now.** {prices_section(await pricing(state))}

**Limits.**

{limits_section(state.settings)}

**Models now.**

{models_section(state)}

## Docs

- [Overview and quick start]({base}/index.html.md): what the platform is, how to start, prices, limits, models
- [API reference]({base}/docs.md): every endpoint with its parameters and answers
- [OpenAPI document]({base}/openapi.json): the machine-readable contract
- [MCP server]({base}/docs/mcp.md): the platform's tools for Claude Desktop and other MCP clients, at `{base}/mcp`

## API

{chr(10).join(api_links)}

## Optional

- [Everything in one file]({base}/llms-full.txt): this index with the overview, the API reference and the MCP guide
- [Dashboard]({base}/dashboard): balance, deposits, keys and usage in a browser
"""


def _markdown(text: str) -> PlainTextResponse:
    return PlainTextResponse(text, media_type=MARKDOWN)


@router.get("/llms.txt")
async def llms_txt(request: Request, state: StateDep) -> PlainTextResponse:
    """The index for language models (llmstxt.org), with live prices, limits and every endpoint."""
    return _markdown(await llms_index(state, request.app.openapi(), base_url(request)))


@router.get("/llms-full.txt")
async def llms_full_txt(request: Request, state: StateDep) -> PlainTextResponse:
    """The index followed by every page it links to, for a model that reads one file."""
    base = base_url(request)
    openapi = request.app.openapi()
    parts = [
        await llms_index(state, openapi, base),
        await overview(state, base),
        reference(openapi, base),
        mcp_guide(base),
    ]
    return _markdown("\n\n".join(part.rstrip() for part in parts) + "\n")


@router.get("/index.html.md")
async def overview_md(request: Request, state: StateDep) -> PlainTextResponse:
    """The landing page as Markdown."""
    return _markdown(await overview(state, base_url(request)))


@router.get("/docs.md")
async def reference_md(request: Request) -> PlainTextResponse:
    """The API reference (/docs) as Markdown."""
    return _markdown(reference(request.app.openapi(), base_url(request)))


@router.get("/docs/mcp.md")
async def mcp_md(request: Request) -> PlainTextResponse:
    """How to connect MCP clients to the platform's tools."""
    return _markdown(mcp_guide(base_url(request)))
