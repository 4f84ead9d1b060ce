"""ASGI plumbing of the lean inference handler: reading the request, sending answers.

Kept apart from the handler so that the handler reads as the metered path's steps. Everything
here runs per request: no parsing beyond what the handler needs, one write per answer part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from cocoon_platform.errors import PayloadTooLarge, PlatformError

if TYPE_CHECKING:
    from cocoon_platform.dialects import Dialect

Scope = dict[str, Any]
Receive = Any
Send = Any

JSON_TYPE = (b"content-type", b"application/json")
# Every answer: no content sniffing, and no cache keeps it (answers are per account).
NOSNIFF = (b"x-content-type-options", b"nosniff")
NO_STORE = (b"cache-control", b"no-store")
JSON_HEADERS = (JSON_TYPE, NOSNIFF, NO_STORE)
SSE_HEADERS = [(b"content-type", b"text/event-stream"), NOSNIFF, NO_STORE, (b"x-accel-buffering", b"no")]


def request_headers(scope: Scope) -> tuple[str | None, int | None]:
    """The request's Authorization header and announced Content-Length (None when absent or
    unreadable). A key in `x-api-key` (as Anthropic's clients send it) reads as a bearer key."""
    authorization = None
    length = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"x-api-key" and authorization is None:
            authorization = "Bearer " + value.decode("latin-1")
    return authorization, length


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; PayloadTooLarge as soon as it passes `limit` bytes."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def wait_disconnect(receive: Receive) -> None:
    """Return once the client has gone (the request body was already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def send_error(send: Send, exc: PlatformError, request_id: str, dialect: Dialect | None = None) -> None:
    """A whole error answer in the platform's error shape (or the dialect's), with the error's
    own headers."""
    headers = [*JSON_HEADERS, (b"x-request-id", request_id.encode())]
    headers.extend((k.lower().encode(), v.encode()) for k, v in exc.headers.items())
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": exc.to_bytes() if dialect is None else dialect.error(exc)})


def with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """`send` adding `headers` to the answer's head."""

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *headers]
        await send(message)

    return sending


def with_common_headers(send: Send, request_id: bytes) -> Send:
    """`send` adding to the answer's head what every answer carries: `x-request-id`,
    `x-content-type-options: nosniff`, and `cache-control: no-store` unless the answer sets its
    own (the dashboard's pages and files); keys and balances must never sit in a cache."""

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), (b"x-request-id", request_id)]
            names = {name.lower() for name, _ in headers}
            if b"x-content-type-options" not in names:
                headers.append(NOSNIFF)
            if b"cache-control" not in names:
                headers.append(NO_STORE)
            message["headers"] = headers
        await send(message)

    return sending


async def send_json(send: Send, document: Any, request_id: str) -> None:
    """A whole 200 JSON answer."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*JSON_HEADERS, (b"x-request-id", request_id.encode())],
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps(document)})


async def start_sse(send: Send, request_id: str) -> None:
    """The head of a 200 event stream."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*SSE_HEADERS, (b"x-request-id", request_id.encode())],
        }
    )


def sse(payload: bytes) -> bytes:
    """One server-sent event carrying `payload`."""
    return b"data: " + payload + b"\n\n"
