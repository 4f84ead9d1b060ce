"""`POST /v1/messages/count_tokens`: a prompt's tokens, counted without the network or a charge.

The count is a bound, never under what the model will be billed for: every byte of the chat
body the request becomes counts as a token (a byte-level BPE token covers at least one byte),
with the JSON around each message standing in for the chat template's tokens around it, and a
margin for the tools' instructions the template adds. Errors are in Anthropic's shape, as
under every /v1/messages path (`app.error_dialect`). The key is checked as at every other door
(`deps.authenticate`): an expired key is refused, and failures count toward the per-address
throttle, which refuses a blocked address before any database work.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from cocoon_platform.deps import StateDep, authenticate
from cocoon_platform.dialects.messages import COUNT_TOKENS_PATH, MessagesRequest
from cocoon_platform.proxy.asgi import request_headers
from cocoon_platform.proxy.request import decode_body, forwarded_json

router = APIRouter()

GENERATION_PROMPT_TOKENS = 3  # "<|im_start|>assistant\n"
TOOLS_INSTRUCTIONS_BOUND = 1024  # the tools section's fixed wording in Qwen3's template, and more


@router.post(
    COUNT_TOKENS_PATH,
    tags=["AI Inference"],
    summary="Count a Messages request's input tokens",
    responses={200: {"content": {"application/json": {"example": {"input_tokens": 42}}}}},
)
async def count_tokens(request: Request, state: StateDep) -> Response:
    """Anthropic's count_tokens: `{"input_tokens": N}`, N never under the real count; free."""
    authorization, _ = request_headers(dict(request.scope))  # `x-api-key` too, as Anthropic's SDK sends it
    async with state.sessionmaker() as session:
        await authenticate(state, request, session, authorization)  # throttled, expiry checked, as every door
    body = decode_body(await request.body())
    body.setdefault("max_tokens", 1)  # count_tokens takes none
    chat = MessagesRequest(body).chat
    try:
        tokens = len(orjson.dumps(chat["messages"])) + GENERATION_PROMPT_TOKENS
        if "tools" in chat:
            tokens += len(orjson.dumps(chat["tools"])) + TOOLS_INSTRUCTIONS_BOUND
    except orjson.JSONEncodeError:  # nested deeper than orjson writes, as /v1/messages refuses it
        forwarded_json(chat)  # raises the 400 naming the field
        raise
    return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json")
