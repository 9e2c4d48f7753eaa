"""The OpenAPI document, as the service really answers: FastAPI's, with every status each
operation can return and the one error body, the session-id rule and the message rules of the
running settings, and `/metrics` as Prometheus text. tests/api/test_openapi.py holds it to the
service's behaviour, and Schemathesis (tests/fuzz) judges it against real replicas."""

from __future__ import annotations

import copy
import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from chat_history_k8s.api.session_ids import (
    MAX_SESSION_ID_LENGTH,
    SESSION_ID_RULE,
    SESSION_ID_SCHEMA,
)
from chat_history_k8s.config import Settings

ERROR_REF = "#/components/schemas/Error"

# Every error code an operation may answer, per status. Codes every operation shares: a body
# over the size limit (413), a path or query that is not valid UTF-8 (422), a bug (500).
_COMMON: dict[int, tuple[str, ...]] = {
    413: ("message_too_large",),
    422: ("invalid_request",),
    500: ("internal_error",),
}
_SESSION = {
    # 404 not_found: an empty id or one holding "/" (percent-encoded too) matches no route.
    404: ("session_not_found", "not_found"),
    503: ("history_unavailable",),
}
_ERRORS: dict[tuple[str, str], dict[int, tuple[str, ...]]] = {
    ("/v1/chat", "post"): {502: ("model_error",), 503: ("history_unavailable",)},
    ("/v1/sessions/{session_id}/messages", "get"): _SESSION,
    ("/v1/sessions/{session_id}", "delete"): {404: ("not_found",), 503: _SESSION[503]},
    ("/healthz", "get"): {},
    ("/readyz", "get"): {},  # its 503 has a body of its own (NotReady)
    ("/metrics", "get"): {},
    ("/v1/info", "get"): {},
}
# With API keys on (AUTH_ENABLED): the operations that act for a principal, and what they add.
_PRINCIPAL_OPERATIONS = (
    ("/v1/chat", "post"),
    ("/v1/sessions/{session_id}/messages", "get"),
    ("/v1/sessions/{session_id}", "delete"),
)
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key"},
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same API key, for paths that drop Authorization (kubectl proxy)",
    },
}
_EXTRA_HEADERS = {
    401: {
        "WWW-Authenticate": {
            "description": "`Bearer`: how to authenticate.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds until the principal's budget allows a turn again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}
_MEANING = {
    401: "No valid API key (API keys are on)",
    429: "Over the principal's rate limit or session quota; the turn stored nothing",
    404: "No such session here, or no such route",
    413: "The request body or the message is too large",
    422: "Invalid request: body, session id, encoding of the path or query",
    500: "Internal error",
    502: "The chat model failed; the turn stored nothing",
    503: "The history store is unavailable (or the session is busy: see Retry-After); "
    "the turn stored nothing",
}
_SERVED_BY = {
    "X-Served-By": {
        "description": "The pod (replica) that answered.",
        "required": True,
        "schema": {"type": "string"},
    }
}
_ERROR_OBJECT = {
    "type": "object",
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    "required": ["code", "message"],
    "additionalProperties": False,
}
_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "The body of every error answer.",
        "properties": {"error": _ERROR_OBJECT},
        "required": ["error"],
        "additionalProperties": False,
    },
    "Check": {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "backend": {"type": "string", "enum": ["memory", "redis"]},
            "error": {"type": "string"},
        },
        "required": ["ok", "backend"],
        "additionalProperties": False,
    },
    "Ready": {
        "type": "object",
        "properties": {
            "status": {"const": "ready"},
            "checks": {
                "type": "object",
                "properties": {"history": {"$ref": "#/components/schemas/Check"}},
                "required": ["history"],
            },
        },
        "required": ["status", "checks"],
        "additionalProperties": False,
    },
    "NotReady": {
        "type": "object",
        "properties": {
            "error": _ERROR_OBJECT,
            "checks": {
                "type": "object",
                "properties": {"history": {"$ref": "#/components/schemas/Check"}},
                "required": ["history"],
            },
        },
        "required": ["error", "checks"],
        "additionalProperties": False,
    },
}


def install_openapi(app: FastAPI) -> None:
    """Serve `build_openapi(app, settings)` as `app.openapi()` (built once, after the lifespan
    has read the settings: the message limit comes from them)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, app.state.runtime.settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customize


def _error_response(status: int, codes: tuple[str, ...]) -> dict[str, Any]:
    schema = {
        "allOf": [
            {"$ref": ERROR_REF},
            {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
        ]
    }
    return {
        "description": f"{_MEANING[status]}: {', '.join(f'`{c}`' for c in codes)}",
        "headers": _SERVED_BY | _EXTRA_HEADERS.get(status, {}),
        "content": {"application/json": {"schema": schema}},
    }


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The document for `app` as it runs with `settings`."""
    with warnings.catch_warnings():
        # HEAD shares its GET's operation id; its operations are dropped below (HEAD is answered
        # wherever GET is, as HTTP defines it: api/routing.py). tests/api/test_openapi.py checks
        # that the ids left are unique.
        warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=_description(settings),
            routes=app.routes,
        )
    for operations in document["paths"].values():
        operations.pop("head", None)
    schemas = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.update(copy.deepcopy(_SCHEMAS))
    _message_rules(schemas["ChatRequest"], settings)

    if settings.auth_enabled:
        document["components"]["securitySchemes"] = copy.deepcopy(_SECURITY_SCHEMES)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            errors = _COMMON | _ERRORS[(path, method)] | _principal_errors(path, method, settings)
            if settings.auth_enabled and (path, method) in _PRINCIPAL_OPERATIONS:
                operation["security"] = [{name: []} for name in _SECURITY_SCHEMES]
            responses = operation["responses"]
            responses.pop("422", None)
            for success in responses.values():
                success["headers"] = _SERVED_BY
            for status, codes in sorted(errors.items()):
                responses[str(status)] = _error_response(status, codes)
            for parameter in operation.get("parameters", ()):
                if parameter["name"] == "session_id":
                    parameter["schema"] = {"title": "Session Id", **SESSION_ID_SCHEMA}
                    parameter["description"] = f"{SESSION_ID_RULE}."
    _ops(document)
    return document


def _principal_errors(path: str, method: str, settings: Settings) -> dict[int, tuple[str, ...]]:
    """401 on the operations that act for a principal when API keys are on; 429 on a turn when
    the per-principal limits are on."""
    errors: dict[int, tuple[str, ...]] = {}
    if settings.auth_enabled and (path, method) in _PRINCIPAL_OPERATIONS:
        errors[401] = ("unauthorized",)
    if settings.limits_enabled and (path, method) == ("/v1/chat", "post"):
        errors[429] = ("rate_limited",)
    return errors


def _message_rules(chat_request: dict[str, Any], settings: Settings) -> None:
    properties = chat_request["properties"]
    properties["session_id"] = {
        "title": "Session Id",
        "description": f"{SESSION_ID_RULE}; absent or null: a new UUID4.",
        "anyOf": [SESSION_ID_SCHEMA, {"type": "null"}],
    }
    limit = settings.max_message_chars
    properties["message"] = {
        "title": "Message",
        "description": f"Not blank; at most {limit} characters (Unicode code points): a longer "
        "one is answered 413 `message_too_large`.",
        "type": "string",
        "minLength": 1,
        "maxLength": limit,
        "pattern": r"\S",
    }


def _links(paths: dict[str, Any]) -> None:
    """How a session's operations follow one another (OpenAPI links): a turn's `session_id`
    addresses its transcript and its deletion; a deletion is followed by a 404 transcript.
    Stateful clients and fuzzers (Schemathesis) walk them."""
    chat = paths["/v1/chat"]["post"]
    read = paths["/v1/sessions/{session_id}/messages"]["get"]
    delete = paths["/v1/sessions/{session_id}"]["delete"]

    def link(target: dict[str, Any], source: str, what: str) -> dict[str, Any]:
        return {
            "operationId": target["operationId"],
            "parameters": {"session_id": source},
            "description": what,
        }

    chat["responses"]["200"]["links"] = {
        "ReadTranscript": link(read, "$response.body#/session_id", "The session's transcript"),
        "DeleteSession": link(delete, "$response.body#/session_id", "Forget the session"),
    }
    read["responses"]["200"]["links"] = {
        "DeleteSession": link(delete, "$request.path.session_id", "Forget the session"),
    }
    delete["responses"]["204"]["links"] = {
        "ReadTranscript": link(read, "$request.path.session_id", "Now 404 `session_not_found`"),
    }


def _ops(document: dict[str, Any]) -> None:
    paths = document["paths"]
    _links(paths)
    paths["/metrics"]["get"]["responses"]["200"]["content"] = {
        "text/plain": {"schema": {"type": "string", "description": "Prometheus text format"}}
    }
    ready = paths["/readyz"]["get"]["responses"]
    ready["200"]["content"] = {
        "application/json": {"schema": {"$ref": "#/components/schemas/Ready"}}
    }
    ready["503"] = {
        "description": "The history store does not answer: `history_unavailable`",
        "headers": _SERVED_BY,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NotReady"}}},
    }


def _description(settings: Settings) -> str:
    return (
        "Chat turns whose history survives pod hops when kept in Redis. Every error answer is "
        '`{"error": {"code", "message"}}`. Besides the statuses listed per operation: 405 '
        "`method_not_allowed` (with `Allow`) for a method a path does not take (HEAD is "
        "answered wherever GET is), 404 `not_found` for an unknown path; and, when the replica "
        "runs with its connection protection (the image and the chart do), 400 `bad_request` "
        "for a request that is not valid HTTP, 408 `request_timeout` when a request head takes "
        f"over {settings.http_header_timeout_seconds:g} s or a body over "
        f"{settings.http_body_timeout_seconds:g} s, 431 `headers_too_large` above "
        f"{settings.http_max_header_bytes} bytes of head. Request bodies: at most "
        f"{settings.max_body_bytes} bytes (413). Session ids: at most "
        f"{MAX_SESSION_ID_LENGTH} characters."
    )
