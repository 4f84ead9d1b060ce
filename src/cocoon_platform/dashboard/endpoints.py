"""The web dashboard: two HTML pages and their static files, served by the platform itself.

The pages are plain HTML with one stylesheet and one script; everything they show comes from the
platform's JSON API on the same origin. Static files are read once at import and served from memory
with a content-hash ETag; the pages reference them as `/static/NAME?v=HASH`, so those URLs can be
cached for a year while a new release still reaches every browser at once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cocoon_platform.errors import NotFound

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATE_DIR = HERE / "templates"

CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}

# The pages run no inline script or style and talk only to their own origin.
CSP = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

STATIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ASSET_REF = re.compile(r"\{\{\s*static:([A-Za-z0-9._-]+)\s*\}\}")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    digest: str

    @property
    def etag(self) -> str:
        return f'"{self.digest}"'


def _load_static() -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    if not STATIC_DIR.is_dir():
        return assets
    for path in sorted(STATIC_DIR.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if path.is_file() and content_type and STATIC_NAME.match(path.name):
            body = path.read_bytes()
            assets[path.name] = Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])
    return assets


STATIC = _load_static()


def asset_url(name: str) -> str:
    """The versioned URL of a static file; a template naming a missing file fails at import."""
    asset = STATIC.get(name)
    if asset is None:
        raise LookupError(f"dashboard template refers to a missing static file {name!r}")
    return f"/static/{name}?v={asset.digest}"


def _render(name: str) -> Asset:
    text = (TEMPLATE_DIR / name).read_text(encoding="utf-8")
    body = ASSET_REF.sub(lambda m: asset_url(m.group(1)), text).encode()
    return Asset(body, "text/html; charset=utf-8", hashlib.sha256(body).hexdigest()[:16])


PAGES = {"/": _render("index.html"), "/dashboard": _render("dashboard.html")}

router = APIRouter(include_in_schema=False)


def _not_modified(request: Request, asset: Asset) -> bool:
    tags = request.headers.get("if-none-match")
    if not tags:
        return False
    return tags.strip() == "*" or asset.etag in (t.strip().removeprefix("W/") for t in tags.split(","))


def _send(request: Request, asset: Asset, headers: dict[str, str]) -> Response:
    headers = {**headers, "ETag": asset.etag}
    if _not_modified(request, asset):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.body
    response = Response(body, media_type=asset.content_type, headers=headers)
    if request.method == "HEAD":
        response.headers["content-length"] = str(len(asset.body))
    return response


def _page(request: Request, path: str) -> Response:
    return _send(request, PAGES[path], {
        "Content-Security-Policy": CSP,
        "Cache-Control": REVALIDATE,
        **SECURITY_HEADERS,
    })


@router.api_route("/", methods=["GET", "HEAD"])
async def landing(request: Request) -> Response:
    """Landing page: sign up, sign in, network status, models and pricing."""
    return _page(request, "/")


@router.api_route("/dashboard", methods=["GET", "HEAD"])
async def dashboard(request: Request) -> Response:
    """The signed-in view; the key lives in the browser's sessionStorage only."""
    return _page(request, "/dashboard")


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
async def static_file(name: str, request: Request) -> Response:
    """One of the dashboard's static files; immutable when asked for by its current version."""
    asset = STATIC.get(name)
    if asset is None:
        raise NotFound(f"No static file {name!r}")
    versioned = request.query_params.get("v") == asset.digest
    return _send(request, asset, {
        "Cache-Control": IMMUTABLE if versioned else REVALIDATE,
        "X-Content-Type-Options": "nosniff",
    })
