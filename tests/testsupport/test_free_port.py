"""free_port: ports a server can bind, outside the range outgoing connections take theirs from."""

from __future__ import annotations

import random
import socket

from testsupport.procs import LOOPBACK, _ephemeral_ports, free_port


def test_free_ports_are_below_the_ephemeral_range_bindable_and_not_handed_out_twice() -> None:
    low, high = _ephemeral_ports()
    assert 1024 <= low <= high
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(port < low for port in ports)
    for port in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, port))


def test_a_port_something_listens_on_is_never_handed_out() -> None:
    low, _ = _ephemeral_ports()
    rng = random.Random(7)
    listening: list[socket.socket] = []
    try:
        # 500 ports of the ~22,000 held by listeners (not ones free_port handed out): 1,000
        # picks meet ~20 of them, and must pass them by.
        while len(listening) < 500:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((LOOPBACK, rng.randrange(10000, low)))
            except OSError:
                sock.close()
                continue
            sock.listen()
            listening.append(sock)
        held = {sock.getsockname()[1] for sock in listening}
        assert not held & {free_port() for _ in range(1000)}
    finally:
        for sock in listening:
            sock.close()
