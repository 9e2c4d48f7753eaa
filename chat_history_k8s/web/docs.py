"""Swagger UI at `/docs` with no CDN: its assets come from the `fastapi-offline` package
(Swagger UI 5, which renders the OpenAPI 3.1 that FastAPI writes) and are served at
`/docs/assets/{name}`, so the page works on an air-gapped cluster. The OpenAPI document it shows
is served here too, as a route of its own: FastAPI's built-in one leaves no route template for
`/metrics` (it would count as `unmatched`).

No ReDoc: the same package ships its bundle, but ReDoc still loads its logo from its CDN (a
real browser showed it), so `/redoc` stays off rather than half offline."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from chat_history_k8s.api.routing import ServiceRoute

router = APIRouter(include_in_schema=False, route_class=ServiceRoute)

OPENAPI_URL = "/openapi.json"

# The files of the package's `static` folder that /docs uses; nothing else of it is served.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _assets_dir() -> Path:
    return Path(str(files("fastapi_offline").joinpath("static")))


def _prefix(request: Request) -> str:
    # Behind a proxy that strips a path prefix (uvicorn --root-path), links keep the prefix.
    return str(request.scope.get("root_path", "")).rstrip("/")


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    """`page` with a Content-Security-Policy: same-origin files, the page's own inline script
    by its hash, inline styles (Swagger UI sets them from code), data: images (its icons)."""
    script_src = "'self'"
    body = bytes(page.body).decode()
    for script in _INLINE_SCRIPT.findall(body):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        script_src += f" 'sha256-{digest}'"
    page.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src {script_src}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    prefix = _prefix(request)
    page = get_swagger_ui_html(
        openapi_url=f"{prefix}{OPENAPI_URL}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{prefix}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{prefix}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{prefix}/docs/assets/favicon.png",
        # No badge from the public validator service: it is not reachable offline.
        swagger_ui_parameters={"validatorUrl": None},
    )
    return _with_policy(page)


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    schema = request.app.openapi()
    prefix = _prefix(request)
    # As FastAPI's own route does: behind a prefix, "Try it out" calls go through it.
    return JSONResponse({**schema, "servers": [{"url": prefix}]} if prefix else schema)


@router.get("/docs/assets/{name}")
async def docs_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"no docs asset {name!r}")
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return FileResponse(_assets_dir() / name, media_type=media_type, headers=headers)
