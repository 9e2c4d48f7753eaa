"""A small client for the service's fixed HTTP contract, used by the suite and the demo."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

Message = tuple[str, str]
"""One stored message as (type, content), e.g. ("human", "Hi")."""


class UnexpectedResponse(AssertionError):
    """The service answered something the contract does not allow at this point."""


@dataclass(frozen=True)
class Endpoint:
    """One address that speaks the contract: a single replica, or a load-balanced entry point.

    `httpx_options` carries what reaching it needs (TLS and credentials for an API-server proxy).
    `fresh_connections` opens a new TCP connection per request, the way independent clients
    reach a Service.
    """

    name: str
    url: str
    httpx_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    fresh_connections: bool = False


@dataclass(frozen=True)
class Turn:
    """One acknowledged chat turn, as the replica that served it reported it."""

    session_id: str
    message: str
    reply: str
    served_by: str
    backend: str
    history_length: int
    latency_s: float


class Api:
    """Calls one endpoint. Thread-safe: httpx clients may be shared across threads."""

    def __init__(self, endpoint: Endpoint, *, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self._timeout = httpx.Timeout(timeout_s)
        self._client: httpx.Client | None = None
        if not endpoint.fresh_connections:
            self._client = self._new_client()

    def _new_client(self) -> httpx.Client:
        options = dict(self.endpoint.httpx_options)
        headers = dict(options.pop("headers", {}))
        if self.endpoint.fresh_connections:
            headers["Connection"] = "close"
        return httpx.Client(
            base_url=self.endpoint.url, timeout=self._timeout, headers=headers, **options
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._client is not None:
            return self._client.request(method, path, **kwargs)
        with self._new_client() as client:
            return client.request(method, path, **kwargs)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the contract -----------------------------------------------------------------------

    def chat(self, session_id: str, message: str) -> Turn:
        started = time.perf_counter()
        response = self.chat_response(session_id, message)
        latency = time.perf_counter() - started
        body = _json(response, expected=200)
        if response.headers.get("x-served-by") != body["served_by"]:
            raise UnexpectedResponse(
                f"X-Served-By {response.headers.get('x-served-by')!r} != body {body['served_by']!r}"
            )
        return Turn(
            session_id=body["session_id"],
            message=message,
            reply=body["reply"],
            served_by=body["served_by"],
            backend=body["backend"],
            history_length=body["history_length"],
            latency_s=latency,
        )

    def chat_response(self, session_id: str, message: str) -> httpx.Response:
        """The raw answer, for cases where an error is the expected outcome."""
        return self.request("POST", "/v1/chat", json={"session_id": session_id, "message": message})

    def messages(self, session_id: str) -> list[Message] | None:
        """The session's transcript as this endpoint sees it; None when it has no such session."""
        response = self.request("GET", f"/v1/sessions/{session_id}/messages")
        if response.status_code == 404:
            code = _json(response, expected=404)["error"]["code"]
            if code != "session_not_found":
                raise UnexpectedResponse(f"404 with error code {code!r}")
            return None
        body = _json(response, expected=200)
        return [(m["type"], m["content"]) for m in body["messages"]]

    def delete(self, session_id: str) -> None:
        response = self.request("DELETE", f"/v1/sessions/{session_id}")
        if response.status_code != 204:
            raise UnexpectedResponse(f"DELETE answered {response.status_code}: {response.text}")

    def ready(self) -> bool:
        try:
            return self.request("GET", "/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def readyz_status(self) -> int | None:
        try:
            return self.request("GET", "/readyz").status_code
        except httpx.HTTPError:
            return None

    def info(self) -> dict[str, Any]:
        return _json(self.request("GET", "/v1/info"), expected=200)


def _json(response: httpx.Response, *, expected: int) -> dict[str, Any]:
    if response.status_code != expected:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}, expected {expected}: {response.text[:300]}"
        )
    body: dict[str, Any] = response.json()
    return body


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.1
) -> None:
    """Poll `condition` until it holds; fail with `what` when the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
