"""The chat page at `/` and its own files at `/static/{name}`, shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

from chat_history_k8s.api.deps import SettingsDep
from chat_history_k8s.api.routing import ServiceRoute
from chat_history_k8s.config import Settings

router = APIRouter(include_in_schema=False, route_class=ServiceRoute)

STATIC = Path(__file__).resolve().parent / "static"
# Every file the page may load, with its type: nothing else under static/ is served.
FILES = {
    "app.css": "text/css",
    "app.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
# A new release changes these files under the same names: browsers revalidate every time.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def content_security_policy(settings: Settings) -> str:
    """The page's policy: its own files only, no inline code, and calls to its own origin plus
    the `CORS_ALLOW_ORIGINS` (the other service of the side-by-side mode)."""
    connect = " ".join(("'self'", *settings.cors_origins))
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@router.get("/")
async def chat_page(settings: SettingsDep) -> FileResponse:
    headers = _HEADERS | {
        "Content-Security-Policy": content_security_policy(settings),
        "Referrer-Policy": "no-referrer",
    }
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=headers)


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    media_type = FILES.get(name)
    if media_type is None:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(STATIC / name, media_type=media_type, headers=_HEADERS)
