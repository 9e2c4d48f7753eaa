"""Hostile connections against real uvicorn processes started as the image starts them
(`--http chat_history_k8s.protocol:GuardedHttpProtocol`), over raw sockets: idle, slow and
half-sent requests are cut within the documented limits, an oversized head gets 431, a body
over the limit gets 413 while it streams in, chunked or not, with the replica's memory bounded,
and none of it stores anything."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from testsupport import LOOPBACK, RedisServer, Replica

HEAD_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5
KEEP_ALIVE_S = 1
MAX_HEAD_BYTES = 8192
MIB = 1 << 20
# How late a cut may come after its deadline on this shared 2-core machine.
SLACK_S = 1.5

SETTINGS = {
    "HTTP_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT_S),
    "HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_S),
    "HTTP_MAX_HEADER_BYTES": str(MAX_HEAD_BYTES),
}
TARGETS = [
    ("memory", "message-history"),
    ("memory", "checkpointer"),
    ("redis", "message-history"),
    ("redis", "checkpointer"),
]


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[dict[tuple[str, str], Replica]]:
    """One replica per backend and history API, with short limits."""
    workdir = tmp_path_factory.mktemp("connections")
    started = {}
    for backend, api in TARGETS:
        settings = SETTINGS | {"HISTORY_BACKEND": backend, "HISTORY_API": api}
        if backend == "redis":
            settings["REDIS_URL"] = redis_server.url
        name = f"{backend}-{api}"
        started[(backend, api)] = Replica(
            name,
            workdir,
            settings,
            access_log=False,
            uvicorn_args=("--timeout-keep-alive", str(KEEP_ALIVE_S)),
        )
    for replica in started.values():
        replica.start()
    try:
        for replica in started.values():
            replica.wait_ready()
        yield started
    finally:
        for replica in started.values():
            replica.stop()


@pytest.fixture
def replica(replicas: dict[tuple[str, str], Replica]) -> Replica:
    """Any one of them, for what does not depend on the backend."""
    return replicas[("memory", "message-history")]


@pytest.fixture(params=TARGETS, ids=["-".join(t) for t in TARGETS])
def target(request: pytest.FixtureRequest, replicas: dict[tuple[str, str], Replica]) -> Replica:
    return replicas[request.param]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, str]:
        error: dict[str, str] = json.loads(self.body)["error"]
        return error


def connect(replica: Replica) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, replica.port), timeout=30)
    return sock


def read_answer(sock: socket.socket) -> Answer | None:
    """The one response on `sock`, read until the peer closes it or its body is complete; None
    when the peer closed without answering."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            assert not data, f"connection closed inside a response head: {data!r}"
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a response body"
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body)


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the peer closes `sock` (reading and dropping whatever it sends)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def stored(replica: Replica, session_id: str) -> int:
    r = httpx.get(f"{replica.url}/v1/sessions/{session_id}/messages", timeout=10)
    assert r.status_code in (200, 404), r.text
    return len(r.json()["messages"]) if r.status_code == 200 else 0


def test_a_connection_that_sends_nothing_is_closed_after_the_head_timeout(
    replica: Replica,
) -> None:
    with connect(replica) as sock:
        took = closed_within(sock, HEAD_TIMEOUT_S + SLACK_S + 1)
    assert HEAD_TIMEOUT_S - 0.2 < took < HEAD_TIMEOUT_S + SLACK_S


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    replica: Replica,
) -> None:
    with connect(replica) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_answer(sock)
        assert answer is not None and answer.status == 200
        took = closed_within(sock, KEEP_ALIVE_S + SLACK_S + 1)
    assert KEEP_ALIVE_S - 0.2 < took < KEEP_ALIVE_S + SLACK_S


def test_a_head_sent_byte_by_byte_is_cut_at_the_head_deadline_with_408(replica: Replica) -> None:
    """Slowloris: a byte every 0.2 s keeps every idle timer happy, not the head's deadline."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    with connect(replica) as sock:
        started = time.monotonic()
        sent = 0
        while select.select([sock], [], [], 0.2)[0] == [] and sent < len(head):
            sock.sendall(head[sent : sent + 1])
            sent += 1
        answer = read_answer(sock)
        took = time.monotonic() - started
        assert closed_within(sock, 2) < 2
    assert answer is not None and answer.status == 408
    assert answer.error()["code"] == "request_timeout"
    assert answer.headers["x-served-by"] == replica.name
    assert HEAD_TIMEOUT_S - 0.2 < took < HEAD_TIMEOUT_S + SLACK_S


def test_a_half_sent_body_gets_408_and_stores_nothing(target: Replica) -> None:
    body = json.dumps({"session_id": "half", "message": "hello"}).encode()
    with connect(target) as sock:
        sock.sendall(
            b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:-5])
        )
        started = time.monotonic()
        answer = read_answer(sock)
        took = time.monotonic() - started
    assert answer is not None and answer.status == 408, answer
    assert answer.error() == {
        "code": "request_timeout",
        "message": f"request body not complete within {BODY_TIMEOUT_S:g} s",
    }
    assert BODY_TIMEOUT_S - 0.2 < took < BODY_TIMEOUT_S + SLACK_S
    assert stored(target, "half") == 0


@pytest.mark.parametrize("size", [MAX_HEAD_BYTES + 100, 10 * MIB])
def test_an_oversized_head_gets_431_and_is_not_buffered(replica: Replica, size: int) -> None:
    """In one read (the head's size is known when it completes) or 10 MB streaming in (refused
    once the limit is passed, not buffered whole as httptools would)."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    replica.process.reset_peak_rss()
    before = replica.process.peak_rss_bytes()
    with connect(replica) as sock:
        sender = threading.Thread(target=_send_until_refused, args=(sock, head))
        sender.start()
        answer = read_answer(sock)
        sender.join()
    assert answer is not None and answer.status == 431
    assert answer.error()["code"] == "headers_too_large"
    assert answer.headers["connection"] == "close"
    assert replica.process.peak_rss_bytes() - before < 4 * MIB


def test_a_head_under_the_limit_is_served(replica: Replica) -> None:
    with connect(replica) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 7000 + b"\r\n\r\n")
        answer = read_answer(sock)
    assert answer is not None and answer.status == 200


def test_a_request_that_is_not_http_gets_400_in_the_error_body(replica: Replica) -> None:
    for request in (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01 hello\r\n\r\n"):
        with connect(replica) as sock:
            sock.sendall(request)
            answer = read_answer(sock)
        assert answer is not None and answer.status == 400
        assert answer.error() == {"code": "bad_request", "message": "invalid HTTP request"}
        assert answer.headers["x-served-by"] == replica.name


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_96_mib_body_is_refused_as_it_streams_with_memory_bounded(
    target: Replica, chunked: bool
) -> None:
    """The 413 comes once the body passes the limit (the sender sees it long before the end),
    the replica's peak memory grows by far less than the body, and nothing is stored. Without
    a Content-Length it is counted as it comes; with one, it is refused before it is read."""
    total, chunk = 96 * MIB, b"x" * MIB
    start = b'{"session_id": "flood", "message": "'
    framing = (
        b"Transfer-Encoding: chunked\r\n"
        if chunked
        else b"Content-Length: %d\r\n" % (len(start) + total)
    )
    target.process.reset_peak_rss()
    before = target.process.peak_rss_bytes()
    with connect(target) as sock:
        sock.sendall(
            b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + framing
            + b"\r\n"
            + (b"%x\r\n%s\r\n" % (len(start), start) if chunked else start)
        )
        sent, answered_after = 0, None
        while sent < total:
            if answered_after is None and select.select([sock], [], [], 0)[0]:
                answered_after = sent
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            sent += len(chunk)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        answer = read_answer(sock)
        # The connection stays usable: the rest of the body was read and dropped.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        after = read_answer(sock)
    grew = target.process.peak_rss_bytes() - before
    print(
        f"\n{target.name}: 413 after {(answered_after or 0) / MIB:.1f} MiB sent of 96, "
        f"peak RSS +{grew / MIB:.1f} MiB"
    )
    assert answer is not None and answer.status == 413
    assert answer.error() == {"code": "message_too_large", "message": "request body too large"}
    assert answered_after is not None and answered_after < 16 * MIB, answered_after
    assert grew < 16 * MIB, f"peak RSS grew by {grew / MIB:.1f} MiB"
    assert after is not None and after.status == 200
    assert stored(target, "flood") == 0


def test_head_is_answered_on_get_routes_and_405_names_the_allowed_methods(
    replica: Replica,
) -> None:
    with connect(replica) as sock:
        sock.sendall(b"HEAD /v1/info HTTP/1.1\r\nHost: x\r\n\r\n")
        head = read_answer_head_only(sock)
        sock.sendall(b"PUT /v1/info HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        refused = read_answer(sock)
    assert head.status == 200 and int(head.headers["content-length"]) > 0
    assert refused is not None and refused.status == 405
    assert refused.headers["allow"] == "GET, HEAD"
    assert refused.error()["code"] == "method_not_allowed"


def read_answer_head_only(sock: socket.socket) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    assert rest == b"", "a HEAD answer has no body"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return Answer(int(status_line.split()[1]), headers, b"")


def _send_until_refused(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    try:
        for offset in range(0, len(view), 65536):
            sock.sendall(view[offset : offset + 65536])
    except (BrokenPipeError, ConnectionResetError):
        pass  # the replica answered and closed: what the test expects
