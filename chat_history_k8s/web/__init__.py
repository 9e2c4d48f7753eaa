"""What a browser gets from the service: the chat page at `/` (with its files under
`/static/{name}`), Swagger UI at `/docs` with its assets served from a Python package (it works
offline), and CORS for the origins in `CORS_ALLOW_ORIGINS`.

Every route here has a template, so `/metrics` counts these requests by route (`/`,
`/static/{name}`, `/docs`, `/docs/assets/{name}`, ...), never as `unmatched`.
"""

from __future__ import annotations

from fastapi import FastAPI

from chat_history_k8s.web import docs, page
from chat_history_k8s.web.cors import CorsMiddleware


def install_web(app: FastAPI) -> None:
    """Adds the page and docs routes, and the CORS middleware. Call it before
    `install_middleware`, so that CORS sits inside the request counter and `X-Served-By`:
    preflights are counted and stamped like any other response."""
    app.include_router(page.router)
    app.include_router(docs.router)
    app.add_middleware(CorsMiddleware)
