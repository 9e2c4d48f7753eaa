"""uvicorn's HTTP/1.1 protocol (httptools) with the limits it lacks, for hostile clients:

    uvicorn chat_history_k8s.main:app --http chat_history_k8s.protocol:GuardedHttpProtocol

(the image's CMD and the chart's container command). uvicorn closes idle keep-alive
connections (`--timeout-keep-alive`, 5 s) but has no deadline for a request that is being sent,
and no limit on the size of its head. This class adds, from the settings
(`HTTP_HEADER_TIMEOUT_SECONDS`, `HTTP_BODY_TIMEOUT_SECONDS`, `HTTP_MAX_HEADER_BYTES`):

- a connection that sends nothing is closed after the head timeout;
- a request head must be complete within the head timeout of its first byte, else 408
  `request_timeout` and the connection is closed (slowloris);
- a request body must be complete within the body timeout of its head, else the connection is
  closed (the app sees a disconnect; a turn whose body never came stores nothing);
- a request head over the size limit is answered 431 `headers_too_large` and the connection
  closed, having held at most the limit plus one socket read (256 KiB);
- a request that is not valid HTTP gets uvicorn's 400, in the service's error body.

Every answer here has the service's error body and `X-Served-By`. The limits are per
connection: how many connections a replica holds is the business of its Service or proxy.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from chat_history_k8s.config import get_settings

logger = logging.getLogger(__name__)


class _Refused(Exception):
    """Raised inside a parser callback: httptools wraps it in an `HttpParserError`, on which
    uvicorn calls `send_400_response`, which sends this answer instead."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.answer = (status, code, message)


class GuardedHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with deadlines for the request head and body and a cap on the head's
    size (the module docstring says which and why)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.head_timeout = settings.http_header_timeout_seconds
        self.body_timeout = settings.http_body_timeout_seconds
        self.max_head_bytes = settings.http_max_header_bytes
        self._served_by = settings.pod_name.encode("latin-1", "replace")
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = False  # the first bytes of a request head came, not yet the last
        self._head_bytes = 0  # bytes received while in the head
        self._refusal: _Refused | None = None

    # -- deadlines ---------------------------------------------------------------------------
    def _arm(self, seconds: float, expired: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._in_head:
            logger.info(
                "closing %s: request head incomplete after %ss", self._peer(), self.head_timeout
            )
            self._answer(
                408, "request_timeout", f"request head not complete within {self.head_timeout:g} s"
            )
        else:  # nothing sent at all
            self.transport.close()

    def _body_expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        logger.info(
            "closing %s: request body incomplete after %ss", self._peer(), self.body_timeout
        )
        if self.cycle is not None and not self.cycle.response_started:
            self._answer(
                408, "request_timeout", f"request body not complete within {self.body_timeout:g} s"
            )
        else:  # answered already (e.g. 413) while the rest of the body trickles in
            self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    # -- answers -----------------------------------------------------------------------------
    def _answer(self, status: int, code: str, message: str) -> None:
        """Write an error answer straight to the socket and close it; the app, if a request is
        in flight, sees a disconnect."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        head = [
            STATUS_LINE[status],
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-served-by: " + self._served_by + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this for any parser error, our own refusals included.
        refusal, self._refusal = self._refusal, None
        if refusal is not None:
            self._answer(*refusal.answer)
        else:
            self._answer(400, "bad_request", "invalid HTTP request")

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._refusal = _Refused(status, code, message)
        raise self._refusal

    # -- protocol and parser callbacks -------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # The head is still incomplete after this read: count it, and refuse it once it
            # is too large (httptools would buffer a header of any size).
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._answer(*self._too_large())

    def _too_large(self) -> tuple[int, str, str]:
        return 431, "headers_too_large", f"request head over {self.max_head_bytes} bytes"

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._deadline is None:  # else: a new connection's, counted from its opening
            self._arm(self.head_timeout, self._head_expired)

    def on_headers_complete(self) -> None:
        self._in_head = False
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_head_bytes:  # a head that came in one read
            self._refuse(*self._too_large())
        self._arm(self.body_timeout, self._body_expired)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The app owes the next move now, not the client; once it has answered, uvicorn's
        # keep-alive timeout closes the connection if no new request begins.
        self._disarm()
        super().on_message_complete()
