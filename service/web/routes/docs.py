"""Swagger UI and ReDoc, with their JavaScript and CSS served by this service (no CDN)."""

from __future__ import annotations

import functools
from pathlib import Path

import flask_openapi3_redoc
import swagger_ui_bundle
from quart import Blueprint, Response, abort, render_template_string, send_file
from quart_schema import hide

blueprint = Blueprint("docs", __name__)

_SWAGGER_DIR = Path(str(swagger_ui_bundle.swagger_ui_path))
_REDOC_DIR = Path(flask_openapi3_redoc.__file__).parent / "templates" / "redoc" / "js"
_OWN_DIR = Path(__file__).parent.parent / "static"
ASSETS: dict[str, Path] = {
    "swagger-ui.css": _SWAGGER_DIR / "swagger-ui.css",
    "swagger-ui-bundle.js": _SWAGGER_DIR / "swagger-ui-bundle.js",
    "oauth2-redirect.html": _SWAGGER_DIR / "oauth2-redirect.html",
    "oauth2-redirect.js": _SWAGGER_DIR / "oauth2-redirect.js",
    "swagger-init.js": _OWN_DIR / "swagger-init.js",
    "favicon-32x32.png": _SWAGGER_DIR / "favicon-32x32.png",
}
# ReDoc 2's sidebar always shows "API docs by Redocly" with an <img> whose address is written
# into the bundle (no option turns it off, and a hidden <img> is still fetched): the CSP blocks
# it, with an error in the console. The bundle is served with that address replaced by a small
# image of our own, inline, so the page asks no other host for anything.
REDOC_BUNDLE = _REDOC_DIR / "redoc.standalone.js"
REDOC_REMOTE_LOGO = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'
REDOC_LOCAL_LOGO = (
    b'"data:image/svg+xml,'
    b"%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    b"%3Crect x='2' y='2' width='12' height='12' rx='2' fill='%2332329f'/%3E%3C/svg%3E\""
)
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>auth-service API: Swagger UI</title>
  <link rel="icon" href="{{ url_for('docs.asset', name='favicon-32x32.png') }}">
  <link rel="stylesheet" href="{{ url_for('docs.asset', name='swagger-ui.css') }}">
</head>
<body>
  <div id="swagger-ui"
       data-openapi-url="{{ url_for('openapi') }}"
       data-oauth2-redirect-url="{{ url_for('docs.asset', name='oauth2-redirect.html') }}"></div>
  <script src="{{ url_for('docs.asset', name='swagger-ui-bundle.js') }}"></script>
  <script src="{{ url_for('docs.asset', name='swagger-init.js') }}"></script>
</body>
</html>
"""

REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>auth-service API: ReDoc</title>
  <link rel="icon" href="{{ url_for('docs.asset', name='favicon-32x32.png') }}">
</head>
<body>
  <redoc spec-url="{{ url_for('openapi') }}"></redoc>
  <script src="{{ url_for('docs.asset', name='redoc.standalone.js') }}"></script>
</body>
</html>
"""


@functools.cache
def redoc_bundle() -> bytes:
    """ReDoc's bundle with no address of another host to load (a KeyError names a bundle that
    no longer has the address to replace: look for what it loads now)."""
    bundle = REDOC_BUNDLE.read_bytes()
    if bundle.count(REDOC_REMOTE_LOGO) != 1:
        raise KeyError(f"{REDOC_BUNDLE} no longer embeds {REDOC_REMOTE_LOGO.decode()} once")
    return bundle.replace(REDOC_REMOTE_LOGO, REDOC_LOCAL_LOGO)


async def _page(template: str) -> Response:
    body = await render_template_string(template)
    return Response(
        body,
        content_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": DOCS_CSP,
        },
    )


@blueprint.get("/docs")
@hide
async def swagger_ui() -> Response:
    return await _page(SWAGGER_PAGE)


@blueprint.get("/redocs")
@hide
async def redoc_ui() -> Response:
    return await _page(REDOC_PAGE)


@blueprint.get("/docs/assets/<name>")
@hide
async def asset(name: str) -> Response:
    if name == "redoc.standalone.js":
        return Response(
            redoc_bundle(),
            content_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "public, max-age=86400", "Content-Security-Policy": DOCS_CSP},
        )
    path = ASSETS.get(name)
    if path is None:
        abort(404)
    response = await send_file(path, cache_timeout=86_400)
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response
