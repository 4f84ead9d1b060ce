"""Domain errors, each with its own status, and the one place that shapes their bodies.

Every error the platform returns has OpenAI's shape:
`{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`;
only request-validation failures keep FastAPI's `{"detail": [...]}` shape, as the spec says.
Under another API's paths (a dialect's: Anthropic's `/v1/messages` and everything below it) an
error is in that API's shape instead, whichever code raised it: that API's SDK reads no other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

if TYPE_CHECKING:
    from cocoon_platform.dialects import Dialect

logger = logging.getLogger(__name__)


class PlatformError(Exception):
    """Base of every error a client may see; subclasses fix status, type and code."""

    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"
    message: str = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if message is not None:
            self.message = message
        self.param = param
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.body())


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def validation_body(detail: list[dict[str, Any]]) -> dict[str, Any]:
    """A 422's body: the spec's `detail` list, and an OpenAI `error` object naming the first
    failure's field and rule, which the SDKs print (they print nothing of `detail`)."""
    first: dict[str, Any] = detail[0] if detail else {"loc": [], "msg": "Invalid request body", "type": "value_error"}
    param = field_path(first["loc"])
    where = f"'{param}'" if param else "request body"
    message = f"Invalid {where}: {first['msg']} ({first['type']})"
    if len(detail) > 1:
        message += f", and {len(detail) - 1} more (see detail)"
    return {"detail": detail, **error_body(message, "invalid_request_error", "validation_error", param)}


def field_path(loc: list[Any]) -> str | None:
    """`["body", "messages", 0, "role"]` as `messages[0].role`; None for the body itself."""
    path = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(part, int):
            path += f"[{part}]" if path else ""  # a leading position points into the raw body (bad JSON)
        else:
            path += f".{part}" if path else str(part)
    return path or None


class InvalidApiKey(PlatformError):
    status = 401
    type = "invalid_auth"
    code = "invalid_api_key"
    message = "Invalid API key"


class AdminTokenRequired(PlatformError):
    status = 403
    type = "auth_error"
    code = "forbidden"
    message = "Admin token required"


class InsufficientBalance(PlatformError):
    status = 402
    type = "insufficient_balance"
    code = "insufficient_balance"


class KeyLimitReached(PlatformError):
    """The key's own credit limit (not the account's balance) refuses the request."""

    status = 402
    type = "insufficient_balance"
    code = "key_limit_reached"


class ModelNotAllowed(PlatformError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class KeyExpired(InvalidApiKey):
    """A failed authentication like an invalid key (the same throttle counts it), with its own code."""

    code = "key_expired"


# Ruling 5 of #23: a key with restrictions manages nothing, or a capped key could lift its own cap.
RESTRICTED_KEY = "This key has restrictions (a credit limit, a model allow-list or an expiry), so it cannot"
UNRESTRICTED_KEY = "Use an unrestricted key, such as the one from registration."


class KeyManagementNotAllowed(PlatformError):
    status = 403
    type = "permission_error"
    code = "key_management_not_allowed"
    message = f"{RESTRICTED_KEY} create, change or delete keys. {UNRESTRICTED_KEY}"


class AccountManagementNotAllowed(PlatformError):
    status = 403
    type = "permission_error"
    code = "account_management_not_allowed"
    message = f"{RESTRICTED_KEY} change the account's settings. {UNRESTRICTED_KEY}"


class InvalidRequest(PlatformError):
    status = 400
    type = "invalid_request_error"
    code: str | None = None


class UnsupportedParameter(InvalidRequest):
    """A request field the COCOON network would refuse, or whose result it cannot give."""

    code = "unsupported_parameter"

    def __init__(self, name: str, why: str) -> None:
        super().__init__(
            f"'{name}' is not supported by the COCOON network ({why}); remove it from the request", param=name
        )


class NotFound(PlatformError):
    status = 404
    type = "invalid_request_error"
    code: str | None = None
    message = "Not found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(PlatformError):
    status = 405
    type = "invalid_request_error"
    code = None
    message = "Method not allowed"


class PayloadTooLarge(PlatformError):
    status = 413
    type = "invalid_request_error"
    code = None


class RateLimited(PlatformError):
    status = 429
    type = "invalid_request_error"
    code = "rate_limit_exceeded"


class UpstreamError(PlatformError):
    """The COCOON network could not serve a request; the status says how."""

    type = "server_error"
    code: str | None = None

    def __init__(self, status: int, message: str, kind: str) -> None:
        self.status = status
        self.kind = kind
        super().__init__(message)


class UpstreamBusy(UpstreamError):
    """Every connection to the COCOON client was in use for the whole wait
    (`COCOON_UPSTREAM_POOL_WAIT_SECONDS`): refused before anything was sent, so not billed."""

    code = "upstream_busy"
    RETRY_AFTER_SECONDS = 1

    def __init__(self) -> None:
        super().__init__(503, "The COCOON network is busy: no connection came free in time. Try again shortly.", "busy")
        self.headers = {"Retry-After": str(self.RETRY_AFTER_SECONDS)}


class RequestTimeout(PlatformError):
    """A request's head or body did not arrive in time (the server protocol closes the connection)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class HeadersTooLarge(PlatformError):
    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"


class ServiceUnavailable(PlatformError):
    status = 503
    type = "server_error"
    code = None


# The seed's error types and codes (ruling 3 of #23: they keep their meaning; new conditions add to them).
SEED_ERROR_TYPES = ("invalid_request_error", "invalid_auth", "insufficient_balance", "auth_error", "server_error")
SEED_ERROR_CODES = ("invalid_api_key", "insufficient_balance", "forbidden", "internal_error")


def published_error_enums() -> tuple[list[str], list[str]]:
    """Every error type and code the platform's errors declare, the seed's first: the enums of the
    published `Error` schema."""
    types, codes = list(SEED_ERROR_TYPES), list(SEED_ERROR_CODES)
    pending: list[type[PlatformError]] = [PlatformError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.type not in types:
            types.append(cls.type)
        if cls.code is not None and cls.code not in codes:
            codes.append(cls.code)
    return types, codes


def openapi_responses(*errors: PlatformError) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries made from the errors an operation returns, so the published
    document says what the code answers: per status, the errors' messages as its description,
    the shared `Error` schema, and each error's body as an example (named by its code)."""
    by_status: dict[int, list[PlatformError]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error)
    return {
        str(status): {
            "description": " / ".join(dict.fromkeys(error.message for error in group)),
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"},
                    "examples": {error.code or error.type: {"value": error.body()} for error in group},
                }
            },
        }
        for status, group in sorted(by_status.items())
    }


def error_response(exc: PlatformError, dialect: Dialect | None = None) -> Response:
    """A whole error answer in the platform's error shape (or the dialect's), with the error's own headers."""
    body = exc.to_bytes() if dialect is None else dialect.error(exc)
    return Response(body, status_code=exc.status, media_type="application/json", headers=exc.headers)


def install_handlers(app: FastAPI, dialect_of: Callable[[str], Dialect | None]) -> None:
    """Shape every failure FastAPI can see into the platform's error bodies, in the dialect
    `dialect_of` gives for the request's path (None: OpenAI's shape). Request-validation
    failures keep FastAPI's shape: no route under a dialect's paths validates with FastAPI."""

    @app.exception_handler(PlatformError)
    async def _platform(request: Request, exc: PlatformError) -> Response:
        return error_response(exc, dialect_of(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        dialect = dialect_of(request.url.path)
        if exc.status_code == 404:
            # Say what was asked for, as OpenAI's "Invalid URL (GET /v1/x)" does: an SDK prints only this.
            where = f"{request.method} {request.url.path[:200]}"
            return error_response(NotFound(f"No endpoint {where} on this platform (its API: /openapi.json)"), dialect)
        if exc.status_code == 405:
            return error_response(MethodNotAllowed(headers=dict(exc.headers or {})), dialect)
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error", None), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's shape, as the spec's ValidationError schema; drop `input`/`ctx`, which may echo secrets.
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse(validation_body(detail), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(PlatformError(), dialect_of(request.url.path))
