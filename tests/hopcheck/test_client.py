"""The contract client's connections, seen from a real HTTP server: `fresh_connections` opens
a new TCP connection per request (how independent clients reach a Service, and what lets a
load balancer spread one client's requests); without it one kept-alive connection serves all."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chat_history_k8s.hopcheck.client import Api, Endpoint

REQUESTS = 4


class _Server(ThreadingHTTPServer):
    peers: list[tuple[str, int]]  # each request's client (address, port): its connection


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client asks to close
    server: _Server

    def do_GET(self) -> None:
        self.server.peers.append(self.client_address)
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[tuple[str, int]]]]:
    peers: list[tuple[str, int]] = []
    httpd = _Server(("127.0.0.1", 0), _Recorder)
    httpd.peers = peers
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", peers
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(("fresh", "connections"), [(True, REQUESTS), (False, 1)])
def test_fresh_connections_open_one_connection_per_request(
    server: tuple[str, list[tuple[str, int]]], fresh: bool, connections: int
) -> None:
    url, peers = server
    with Api(Endpoint("test", url, fresh_connections=fresh)) as api:
        for _ in range(REQUESTS):
            assert api.request("GET", "/healthz").status_code == 200
    assert len(peers) == REQUESTS
    assert len(set(peers)) == connections  # a connection is its client (address, port)
