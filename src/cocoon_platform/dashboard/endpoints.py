"""The web dashboard: two HTML pages and their static files, served by the platform itself.

The pages are Jinja2 templates sharing one layout (`templates/base.html`), rendered once at import:
they hold no per-user data, since everything they show comes from the platform's JSON API on the
same origin. The script is a set of ES modules (`static/app.js` and `static/js/`), loaded as they
are, with no bundler and nothing from another origin.

Static files are read once at import and served from memory with a content-hash ETag; the pages
reference them as `/static/NAME?v=HASH`, so those URLs can be cached for a year while a new release
still reaches every browser at once. A module's relative imports are rewritten to their versioned
URLs too, so its hash covers the modules it imports (imports must not form a cycle).

The deposit QR code is drawn here (segno), never by an outside service. It encodes the same
`ton://transfer/<wallet>?text=<code>` link as `/v1/deposit`, for any well-formed deposit code: an
`<img>` can't send the key, and the platform's wallet and a code reveal nothing. It is never cached,
so a changed wallet reaches every page at once.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import segno
from fastapi import APIRouter, Request
from fastapi.responses import Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from cocoon_platform.accounts.keys import DEPOSIT_CODE_ALPHABET, DEPOSIT_CODE_LENGTH
from cocoon_platform.billing.endpoints import payment_link
from cocoon_platform.deps import StateDep
from cocoon_platform.errors import InvalidRequest, NotFound

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
CSP = "; ".join(
    (
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
    )
)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

DEPOSIT_CODE = re.compile(f"^[{DEPOSIT_CODE_ALPHABET}]{{{DEPOSIT_CODE_LENGTH}}}$")
# The QR image alone: nothing in it may run or load anything.
QR_HEADERS = {
    "Content-Security-Policy": "default-src 'none'",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# A static file's name relative to STATIC_DIR: at most one folder deep, no dot files, no "..".
STATIC_NAME = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")
# A static import in a module: `import ... from "./x.js"` or `import "./x.js"` (no dynamic imports).
MODULE_IMPORT = re.compile(r"""(\bfrom\s*|^\s*import\s*)(["'])(\.{1,2}/[^"'?#]+)\2""", re.M)


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    digest: str
    imports: tuple[str, ...] = ()  # for a module, the static names of the modules it imports

    @property
    def etag(self) -> str:
        return f'"{self.digest}"'


def _asset(body: bytes, content_type: str, imports: tuple[str, ...] = ()) -> Asset:
    return Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16], imports)


def _resolve(importer: str, specifier: str) -> str:
    """The static name a relative import specifier of module `importer` points at."""
    parts: list[str] = list(PurePosixPath(importer).parent.parts)
    for part in PurePosixPath(specifier).parts:
        if part == "..":
            if not parts:
                raise LookupError(f"{importer} imports {specifier!r}, outside the static folder")
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def _load_static() -> dict[str, Asset]:
    sources: dict[str, tuple[bytes, str]] = {}
    if STATIC_DIR.is_dir():
        for path in sorted(STATIC_DIR.rglob("*")):
            name = path.relative_to(STATIC_DIR).as_posix()
            content_type = CONTENT_TYPES.get(path.suffix.lower())
            if path.is_file() and content_type and STATIC_NAME.match(name):
                sources[name] = (path.read_bytes(), content_type)

    assets: dict[str, Asset] = {}

    def load(name: str, chain: tuple[str, ...]) -> Asset:
        if name in assets:
            return assets[name]
        if name in chain:
            raise LookupError(f"dashboard modules import each other in a cycle: {' -> '.join((*chain, name))}")
        if name not in sources:
            raise LookupError(f"{chain[-1]} imports a missing static file {name!r}")
        body, content_type = sources[name]
        if not name.endswith(".js"):
            assets[name] = _asset(body, content_type)
            return assets[name]
        imports: list[str] = []

        def versioned(match: re.Match[str]) -> str:
            target = _resolve(name, match.group(3))
            imports.append(target)
            digest = load(target, (*chain, name)).digest
            return f"{match.group(1)}{match.group(2)}{match.group(3)}?v={digest}{match.group(2)}"

        text = MODULE_IMPORT.sub(versioned, body.decode("utf-8"))
        assets[name] = _asset(text.encode(), content_type, tuple(imports))
        return assets[name]

    for name in sources:
        load(name, ())
    return assets


STATIC = _load_static()


def asset_url(name: str) -> str:
    """The versioned URL of a static file; a template naming a missing file fails at import."""
    asset = STATIC.get(name)
    if asset is None:
        raise LookupError(f"dashboard template refers to a missing static file {name!r}")
    return f"/static/{name}?v={asset.digest}"


def module_urls(entry: str) -> list[str]:
    """The versioned URLs of every module `entry` imports, directly or not, for modulepreload
    (the browser fetches them at once rather than one level of imports at a time)."""
    seen: dict[str, None] = {}
    pending = list(STATIC[entry].imports)
    while pending:
        name = pending.pop(0)
        if name not in seen:
            seen[name] = None
            pending.extend(STATIC[name].imports)
    return [asset_url(name) for name in seen]


TEMPLATES = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.globals.update(static=asset_url, module_urls=module_urls)


def _render(name: str) -> Asset:
    return _asset(TEMPLATES.get_template(name).render().encode(), "text/html; charset=utf-8")


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
    return _send(
        request,
        PAGES[path],
        {
            "Content-Security-Policy": CSP,
            "Cache-Control": REVALIDATE,
            **SECURITY_HEADERS,
        },
    )


@router.api_route("/", methods=["GET", "HEAD"])
async def landing(request: Request) -> Response:
    """Landing page: sign up, sign in, network status, models and pricing."""
    return _page(request, "/")


@router.api_route("/dashboard", methods=["GET", "HEAD"])
async def dashboard(request: Request) -> Response:
    """The signed-in view; the key lives in the browser's sessionStorage only."""
    return _page(request, "/dashboard")


@router.api_route("/static/{name:path}", methods=["GET", "HEAD"])
async def static_file(name: str, request: Request) -> Response:
    """One of the dashboard's static files; immutable when asked for by its current version."""
    asset = STATIC.get(name)
    if asset is None:
        raise NotFound(f"No static file {name!r}")
    versioned = request.query_params.get("v") == asset.digest
    return _send(
        request,
        asset,
        {
            "Cache-Control": IMMUTABLE if versioned else REVALIDATE,
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/dashboard/deposit-qr.svg")
async def deposit_qr(state: StateDep, code: str = "") -> Response:
    """The deposit link of `code` as a QR code (SVG), for a wallet app's camera."""
    if not DEPOSIT_CODE.match(code):
        raise InvalidRequest("code must be a deposit code: 8 characters, as /v1/deposit gives it", param="code")
    qr = segno.make(payment_link(state.settings.deposit_wallet, code), error="m", micro=False)
    svg = io.BytesIO()
    # omitsize: a viewBox and no size of its own, so the page draws it at whatever size it sets.
    qr.save(
        svg,
        kind="svg",
        border=4,
        omitsize=True,
        xmldecl=False,
        dark="#000",
        light="#fff",
        title="QR code of the TON payment link with deposit code " + code,
    )
    return Response(svg.getvalue(), media_type="image/svg+xml", headers=QR_HEADERS)
