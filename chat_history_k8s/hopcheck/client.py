"""A client of the service's fixed HTTP contract: the hop check, the e2e suite, the demo and
the benchmarks all speak to the service through it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

Message = tuple[str, str]
"""One stored message as (type, content), e.g. ("human", "Hi")."""


class UnexpectedResponse(AssertionError):
    """The service answered something the contract does not allow at this point."""


@dataclass(frozen=True)
class Endpoint:
    """One address that speaks the contract: a single replica, or a load-balanced entry point.

    `httpx_options` carries what reaching it needs (TLS and credentials for an API-server proxy).
    `api_key` is sent as `Authorization: Bearer <key>` when the service has authentication on,
    or as `X-API-Key: <key>` with `api_key_header="x-api-key"` (through the Kubernetes API
    server's proxy, which strips `Authorization`).
    `fresh_connections` opens a new TCP connection per request, the way independent clients
    reach a Service. `connect_retries` retries a request whose connection could not be made
    (it never reached a replica, so sending it again cannot duplicate a turn).
    """

    name: str
    url: str
    httpx_options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    fresh_connections: bool = False
    connect_retries: int = 0
    api_key: str | None = field(default=None, compare=False, repr=False)
    api_key_header: Literal["authorization", "x-api-key"] = "authorization"


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
    """Calls one endpoint. Thread-safe: httpx clients may be shared across threads.

    One httpx client per `Api`, also with `fresh_connections` (its pool then keeps no
    connection after a request): a client per request would build a TLS context per request,
    loading the CA bundle even for plain http, which took ~70 ms of CPU on a 2 GHz CI machine
    and was most of the e2e failover test's own CPU."""

    def __init__(self, endpoint: Endpoint, *, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self._client = self._new_client(httpx.Timeout(timeout_s))

    def _new_client(self, timeout: httpx.Timeout) -> httpx.Client:
        options = dict(self.endpoint.httpx_options)
        headers = dict(options.pop("headers", {}))
        limits = httpx.Limits()
        if self.endpoint.fresh_connections:
            headers["Connection"] = "close"
            limits = httpx.Limits(max_keepalive_connections=0)
        if self.endpoint.api_key is not None:
            if self.endpoint.api_key_header == "x-api-key":
                headers["X-API-Key"] = self.endpoint.api_key
            else:
                headers["Authorization"] = f"Bearer {self.endpoint.api_key}"
        # httpx retries only connection failures (refused, connect timeout): never a request
        # that was sent.
        transport = httpx.HTTPTransport(
            retries=self.endpoint.connect_retries, verify=options.pop("verify", True), limits=limits
        )
        return httpx.Client(
            base_url=self.endpoint.url,
            timeout=timeout,
            headers=headers,
            transport=transport,
            **options,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._client.request(method, path, **kwargs)

    def close(self) -> None:
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
        return self.messages_served(session_id)[0]

    def messages_served(self, session_id: str) -> tuple[list[Message] | None, str]:
        """messages(), and the replica that answered (behind a load balancer, any of them)."""
        response = self.request("GET", f"/v1/sessions/{session_id}/messages")
        served_by = response.headers.get("x-served-by", "")
        if response.status_code == 404:
            code = _json(response, expected=404)["error"]["code"]
            if code != "session_not_found":
                raise UnexpectedResponse(f"404 with error code {code!r}")
            return None, served_by
        body = _json(response, expected=200)
        if body["served_by"] != served_by:
            raise UnexpectedResponse(f"X-Served-By {served_by!r} != body {body['served_by']!r}")
        return [(m["type"], m["content"]) for m in body["messages"]], served_by

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
