"""GET /docs: the API reference (Swagger UI) from files shipped in a Python package.

FastAPI's own /docs loads Swagger UI from a CDN, with no integrity hash, on the dashboard's
origin where a user's key sits in sessionStorage, and fails offline (#14 item 10). Here the
page, its script and its styles all come from this server: Swagger UI's files from the
`fastapi-offline` package, the page and the script that starts it from here. No inline script,
so the page's policy allows scripts from this origin only; Swagger UI sets inline styles, so
styles may be inline (ruling 9 of #23). The dashboard keeps its stricter policy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request, Response

from cocoon_platform.errors import NotFound

router = APIRouter(include_in_schema=False)

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
ASSET_PATH = "/docs/static/"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cocoon Platform API reference</title>
<link rel="stylesheet" href="{css}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{bundle}"></script>
<script src="{start}"></script>
</body>
</html>
"""

# Starts Swagger UI on this server's document; no validator (it would send the document to
# validator.swagger.io).
START = b"""window.ui = SwaggerUIBundle({
  url: "/openapi.json", dom_id: "#swagger-ui", layout: "BaseLayout", deepLinking: true,
  showExtensions: true, showCommonExtensions: true, validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]
});
"""


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    digest: str


def _asset(body: bytes, content_type: str) -> Asset:
    return Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])


@cache
def assets() -> dict[str, Asset]:
    """The page's files, read once (Swagger UI's from the installed package)."""
    shipped = resources.files("fastapi_offline").joinpath("static")
    return {
        "swagger-ui.css": _asset(shipped.joinpath("swagger-ui.css").read_bytes(), "text/css; charset=utf-8"),
        "swagger-ui-bundle.js": _asset(
            shipped.joinpath("swagger-ui-bundle.js").read_bytes(), "text/javascript; charset=utf-8"
        ),
        "start.js": _asset(START, "text/javascript; charset=utf-8"),
    }


def _url(name: str) -> str:
    return f"{ASSET_PATH}{name}?v={assets()[name].digest}"


@router.get("/docs")
async def docs_page() -> Response:
    page = PAGE.format(css=_url("swagger-ui.css"), bundle=_url("swagger-ui-bundle.js"), start=_url("start.js"))
    return Response(
        page, media_type="text/html; charset=utf-8", headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    )


@router.get(ASSET_PATH + "{name}")
async def docs_asset(name: str, request: Request) -> Response:
    asset = assets().get(name)
    if asset is None:
        raise NotFound(f"No file {name!r}")
    versioned = request.query_params.get("v") == asset.digest
    return Response(
        asset.body,
        media_type=asset.content_type,
        headers={
            **SECURITY_HEADERS,
            "Cache-Control": "public, max-age=31536000, immutable" if versioned else "no-cache",
        },
    )
