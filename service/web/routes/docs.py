"""Swagger UI and ReDoc, with their JavaScript and CSS served by this service (no CDN)."""

from __future__ import annotations

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
    "redoc.standalone.js": _REDOC_DIR / "redoc.standalone.js",
    "swagger-init.js": _OWN_DIR / "swagger-init.js",
    "favicon-32x32.png": _SWAGGER_DIR / "favicon-32x32.png",
}
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
    path = ASSETS.get(name)
    if path is None:
        abort(404)
    response = await send_file(path, cache_timeout=86_400)
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response
