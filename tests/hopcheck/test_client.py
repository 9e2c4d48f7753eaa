"""The contract client's connections, seen from a real HTTP server: `fresh_connections` opens
a new TCP connection per request (how independent clients reach a Service, and what lets a
load balancer spread one client's requests); without it one kept-alive connection serves all."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chat_history_k8s.hopcheck.client import Api, Endpoint

REQUESTS = 4


class _Server(ThreadingHTTPServer):
    connections: itertools.count[int]  # numbers the connections accepted
    seen: list[int]  # each request's connection number


class _Recorder(BaseHTTPRequestHandler):
    """One instance per accepted connection, serving every request sent on it."""

    protocol_version = "HTTP/1.1"  # keep-alive unless the client asks to close
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection_number = next(self.server.connections)

    def do_GET(self) -> None:
        self.server.seen.append(self.connection_number)
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    seen: list[int] = []
    httpd = _Server(("127.0.0.1", 0), _Recorder)
    httpd.connections, httpd.seen = itertools.count(), seen
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(("fresh", "connections"), [(True, REQUESTS), (False, 1)])
def test_fresh_connections_open_one_connection_per_request(
    server: tuple[str, list[int]], fresh: bool, connections: int
) -> None:
    url, seen = server
    with Api(Endpoint("test", url, fresh_connections=fresh)) as api:
        for _ in range(REQUESTS):
            assert api.request("GET", "/healthz").status_code == 200
    assert len(seen) == REQUESTS
    assert len(set(seen)) == connections
