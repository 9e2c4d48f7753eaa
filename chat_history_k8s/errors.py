"""One error body for every failure: `{"error": {"code", "message"}}`, counted in /metrics."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from chat_history_k8s.checkpoint import ThreadBusy
from chat_history_k8s.conversation import ModelFailed
from chat_history_k8s.history import HistoryUnavailable
from chat_history_k8s.limits.base import RateLimited

logger = logging.getLogger(__name__)

# The start of the record logged (with its traceback) for a request answered 500; the e2e harness
# finds those records by it (testsupport/targets/base.py).
UNHANDLED_ERROR = "unhandled error on "

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "message_too_large"}
# How much of a client's own input (a field name) an error message repeats, at most.
_MAX_ECHO = 80


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message"}}` with `status`; raised by routes
    for failures the HTTP contract names (422, 413, 404, and when enabled 401, 429), with
    `headers` added to the answer (e.g. `WWW-Authenticate` on 401)."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        runtime.metrics.errors.labels(code).inc()
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        if err.get("type") == "json_invalid":
            # orjson's reason (e.g. "no low surrogate in string: line 1 column 14") names only
            # the input's own position: no internal detail.
            reason = str(err.get("ctx", {}).get("error", ""))[:_MAX_ECHO]
            return "request body is not valid JSON" + (f": {reason}" if reason else "")
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where[:_MAX_ECHO]}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        response = error_response(request, exc.status, exc.code, exc.message)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RateLimited)
    async def _rate_limited(request: Request, exc: RateLimited) -> JSONResponse:
        # Raised by the limits inside a turn, before anything was stored.
        return await _api_error(
            request,
            ApiError(429, "rate_limited", str(exc), {"Retry-After": str(exc.retry_after_s)}),
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, "invalid_request", _describe(exc))

    @app.exception_handler(ModelFailed)
    async def _model_failed(request: Request, exc: ModelFailed) -> JSONResponse:
        logger.warning("%s", exc)
        return error_response(request, 502, "model_error", str(exc))

    @app.exception_handler(ThreadBusy)
    async def _busy(request: Request, exc: ThreadBusy) -> JSONResponse:
        # The store is fine but another turn held the session for the whole wait: nothing was
        # read or written, and the same request may be sent again.
        response = error_response(
            request, 503, "history_unavailable", f"session busy, retry later: {exc}"
        )
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(HistoryUnavailable)
    async def _unavailable(request: Request, exc: HistoryUnavailable) -> JSONResponse:
        # Never fall back to memory: the client must know its turn was not stored.
        logger.warning("history store unavailable: %s", exc)
        return error_response(
            request, 503, "history_unavailable", f"history store unavailable: {exc.public}"
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        response = error_response(request, exc.status_code, code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            if name.lower() == "allow":  # on a 405, as RFC 9110 requires; a stable order
                value = ", ".join(sorted(method.strip() for method in value.split(",")))
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception(UNHANDLED_ERROR + "%s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "internal error")
