"""The kube target's port-forward relay, against a stand-in for the API server.

The stand-in speaks the API server's port-forward websocket protocol (v4.channel.k8s.io) and
connects each forward to a small HTTP server per "pod", so the relay and the Kubernetes Python
client's port-forward code run for real on any target, without a cluster.
"""

from __future__ import annotations

import functools
import gc
import http.server
import json
import re
import socket
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress

import httpx
import pytest
from kubernetes import client
from websockets.exceptions import ConnectionClosed
from websockets.sync import server as ws_server
from websockets.typing import Subprotocol

from testsupport.targets.kube import PortForwardRelay, open_port_forward

POD_PORT = 8000
PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/portforward\?ports=8000$")


class _PodServer(http.server.ThreadingHTTPServer):
    """One "pod": answers every GET with its name."""

    daemon_threads = True

    def __init__(self, pod_name: str) -> None:
        super().__init__(("127.0.0.1", 0), _PodHandler)
        self.pod_name = pod_name


class _PodHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like uvicorn
    server: _PodServer

    def do_GET(self) -> None:
        body = json.dumps({"served_by": self.server.pod_name, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", self.server.pod_name)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def fake_pod(name: str) -> Iterator[int]:
    server = _PodServer(name)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def fake_api_server(pods: dict[str, int]) -> Iterator[str]:
    """Port-forward endpoint only: frames are <channel byte><payload>, as the kubelet sends."""

    def handler(ws: ws_server.ServerConnection) -> None:
        assert ws.request is not None  # set once the handshake is done, before the handler
        match = PATH.match(ws.request.path)
        if match is None or match["pod"] not in pods:
            ws.close(code=1008, reason="no such pod")
            return
        port_bytes = POD_PORT.to_bytes(2, "little")
        ws.send(b"\x00" + port_bytes)  # data channel of the port
        ws.send(b"\x01" + port_bytes)  # error channel of the port
        upstream = socket.create_connection(("127.0.0.1", pods[match["pod"]]))

        def downstream() -> None:
            # The pod closed the connection: end the forward, as the kubelet does.
            with suppress(OSError, ConnectionClosed):
                while data := upstream.recv(65536):
                    ws.send(b"\x00" + data)
                ws.close()

        reader = threading.Thread(target=downstream, daemon=True)
        reader.start()
        try:
            with suppress(OSError, ConnectionClosed):
                for frame in ws:
                    assert isinstance(frame, bytes) and frame[0] == 0
                    upstream.sendall(frame[1:])
        finally:
            with suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)  # wakes the downstream reader
            reader.join(timeout=5)
            upstream.close()

    with ws_server.serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=[Subprotocol("v4.channel.k8s.io")],
        compression=None,
        close_timeout=1,
    ) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.socket.getsockname()[1]}"
        finally:
            server.shutdown()


# kubernetes.stream's PortForward can drop its websocket without closing the socket (a leak in
# the client library, not in the relay); the garbage collector reports it as a ResourceWarning.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_port_forward_relay_reaches_each_pod_on_its_own_through_the_kubernetes_client() -> None:
    names = ["chat-history-abc-1", "chat-history-abc-2"]
    with ExitStack() as stack:
        pods = {name: stack.enter_context(fake_pod(name)) for name in names}
        host = stack.enter_context(fake_api_server(pods))
        configuration = client.Configuration()
        configuration.host = host
        api_client = stack.enter_context(client.ApiClient(configuration))
        core = client.CoreV1Api(api_client)
        lock = threading.Lock()
        relays = {
            name: PortForwardRelay(
                functools.partial(open_port_forward, core, lock, name, "ns", POD_PORT),
                POD_PORT,
                name,
            )
            for name in names
        }
        for relay in relays.values():
            stack.callback(relay.close)

        for name, relay in relays.items():
            url = f"http://127.0.0.1:{relay.port}"
            # Several requests on one kept-alive connection.
            with httpx.Client(base_url=url, timeout=5) as kept_alive:
                for i in range(3):
                    answer = kept_alive.get(f"/v1/info?i={i}")
                    assert answer.json() == {"served_by": name, "path": f"/v1/info?i={i}"}
            # Many connections at once, each a new port-forward.

            def fresh(i: int, url: str = url) -> str:
                headers = {"Connection": "close"}
                with httpx.Client(base_url=url, timeout=5, headers=headers) as one_shot:
                    return one_shot.get(f"/readyz?i={i}").headers["x-served-by"]

            with ThreadPoolExecutor(max_workers=6) as pool:
                assert list(pool.map(fresh, range(12))) == [name] * 12
    # Sockets the stand-in server still held when it was shut down are not the relay's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
