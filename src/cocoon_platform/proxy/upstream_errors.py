"""What an upstream failure means to the platform's user, in the OpenAI error shape.

The COCOON client answers errors as plain text, JSON `{"error_code": N, "error": "..."}`
or, from a proxy in front of it, anything at all; none of it may crash the platform.
"""

from __future__ import annotations

import re

import orjson

from cocoon_platform.errors import InvalidRequest, PlatformError, UpstreamError

COEFFICIENT = re.compile(rb"can run with coefficient\s*(\d+)")
UNKNOWN_MODEL = re.compile(rb"unknown model", re.IGNORECASE)


def _message(body: bytes) -> tuple[bool, str]:
    """Whether the body is the client's JSON error, and its text: short, printable, no debug objects."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        return True, error[:300] if isinstance(error, str) else ""
    text = body[:300].decode("utf-8", "replace").strip()
    return False, "" if text.startswith("<") else text  # an HTML page says nothing useful


def map_upstream_error(status: int, body: bytes, model: str, max_coefficient: int) -> PlatformError:
    match = COEFFICIENT.search(body)
    if match:
        return UpstreamError(
            503,
            f"No worker for {model} is available at the platform's price cap (max_coefficient "
            f"{max_coefficient}); the cheapest can run with coefficient {int(match.group(1))}. Try again later.",
            "coefficient",
        )
    if status == 400 and UNKNOWN_MODEL.search(body):
        return InvalidRequest(
            f"Unknown model '{model}'. See GET /v1/models for the models on the network.", param="model"
        )
    is_json, detail = _message(body)
    if status == 400:
        return InvalidRequest(f"The COCOON network rejected the request: {detail or 'bad request'}")
    if status == 503:
        return UpstreamError(
            503,
            "The COCOON network is unavailable right now (no working proxy connection). Try again shortly.",
            "no_proxy",
        )
    if status == 502 and is_json:
        return UpstreamError(
            502,
            f"No COCOON workers are available for {model} right now. Try again shortly."
            + (f" ({detail})" if detail else ""),
            "no_workers",
        )
    if status == 504:
        return UpstreamError(504, "The COCOON network timed out on this request.", "timeout")
    if status == 500 and b"balance" in body.lower():
        return UpstreamError(
            503, "The platform cannot pay the COCOON network right now. Try again later.", "client_balance"
        )
    return UpstreamError(502, f"Bad response from the COCOON network (status {status}).", "bad_response")
