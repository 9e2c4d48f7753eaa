"""The route class of every router: strict JSON bodies, and HEAD wherever GET is."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from chat_history_k8s.errors import ApiError

_JSON = ("application/json",)


class JsonRequest(Request):
    """A request whose `json()` is orjson's: strict UTF-8, no lone surrogate (escaped or not,
    in keys or values), no NaN or Infinity, at most 1024 levels of nesting. Its errors subclass
    `json.JSONDecodeError`, which FastAPI answers as a validation error (422 `invalid_request`),
    never as a 400 or a `RecursionError`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in _JSON or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class ServiceRoute(APIRoute):
    """An `APIRoute` that parses JSON bodies with `JsonRequest`, refuses a body that does not
    say it is JSON (422 `invalid_request`, before reading it), and answers HEAD on a GET route
    as Starlette's own routes do (the OpenAPI document lists the GET only, see `api/openapi.py`)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.methods and "GET" in self.methods:
            self.methods.add("HEAD")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        takes_body = self.body_field is not None

        async def route(request: Request) -> Response:
            if takes_body and not _is_json(request.headers.get("content-type", "")):
                raise ApiError(422, "invalid_request", "Content-Type must be application/json")
            return await handle(JsonRequest(request.scope, request.receive))

        return route
