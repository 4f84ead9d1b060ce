"""A client of the platform's public HTTP API, as the MCP tools use it.

Rules:
- Only public endpoints, with the user's own key as a bearer token: whatever a tool does, any
  other client could do the same way, and is authenticated, filtered and billed the same way.
- Any answer other than 2xx becomes an `ApiError` carrying the platform's own message (its error
  shape `{"error": {"message", "code"}}`, or FastAPI's `{"detail": [...]}` for a malformed query),
  so the tool can hand it to the model as it is; a 402 also says how to top up.
- Nothing here logs: requests carry a key, prompts and answers.
"""

from __future__ import annotations

from typing import Any

import httpx

USER_AGENT = "cocoon-platform-mcp"
# Inference may run as long as the network lets it (the platform's own deadline ends it first).
TIMEOUT = httpx.Timeout(900.0, connect=10.0)


class ApiError(Exception):
    """The platform refused or failed a call: its status, error code and message."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        hint = ""
        if self.status == 402:
            hint = (
                " Add funds with the deposit_instructions tool: it gives the wallet, your memo and a "
                "ton:// link; the balance is credited within about 30 seconds of the transfer."
            )
        if not self.status:  # no answer at all
            return self.message
        return f"HTTP {self.status}{f' ({self.code})' if self.code else ''}: {self.message}{hint}"


def _error_from(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        return ApiError(response.status_code, response.text.strip()[:500] or response.reason_phrase)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return ApiError(response.status_code, str(error.get("message") or response.reason_phrase), error.get("code"))
    if isinstance(body, dict) and isinstance(body.get("detail"), list):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg', '')}"
            for item in body["detail"]
            if isinstance(item, dict)
        )
        return ApiError(response.status_code, problems or response.reason_phrase)
    return ApiError(response.status_code, response.reason_phrase)


class PlatformClient:
    """The API calls the tools make, on an `httpx.AsyncClient` whose base URL is the platform."""

    def __init__(self, http: httpx.AsyncClient, api_key: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: dict[str, Any] | None = None
    ) -> Any:
        try:
            response = await self.http.request(
                method, path, params=params, json=body, headers=self.headers, timeout=TIMEOUT
            )
        except httpx.HTTPError as exc:
            raise ApiError(0, f"the platform at {self.http.base_url} could not be reached: {exc!r}") from None
        if response.status_code >= 400:
            raise _error_from(response)
        return response.json()

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("POST", path, body=body)
