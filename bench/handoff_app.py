"""The floor of any store a turn waits on: the service with the memory backend, whose turn also
makes the Redis backend's two round trips, to the same redis-server, carrying nothing (`PING`
where the window is read, `PING` where the turn is appended; each awaited where the Redis
backend awaits its command, on the service's own multiplexed connection). Served exactly like
the service: `uvicorn bench.handoff_app:app` with the same flags (testsupport/replicas.py).

What it costs the memory backend is what two waits for another process cost in this harness
(a send, a wake-up of redis-server, a wake-up of the replica, each time) with no data and no
decoding: the part of the Redis backend's price that no client-side change removes.
`HANDOFF_REDIS_URL` names the server (`redis://host:port`, no password).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import urlsplit

from langchain_core.messages import BaseMessage

import chat_history_k8s.history as history_module
from chat_history_k8s.config import Settings
from chat_history_k8s.history.memory import MemoryChatHistory, MemoryStore
from chat_history_k8s.history.redis_mux import MultiplexedConnection
from chat_history_k8s.main import create_app

_url = urlsplit(os.environ.get("HANDOFF_REDIS_URL", "redis://127.0.0.1:6379"))
_HOST, _PORT = _url.hostname or "127.0.0.1", _url.port or 6379


async def _address() -> tuple[str, int]:
    return _HOST, _PORT


# The timeouts and retries the service's multiplexed connection has by default.
_defaults = Settings.model_fields
_wire = MultiplexedConnection(
    _address,
    socket_timeout=_defaults["redis_socket_timeout_seconds"].default,
    connect_timeout=_defaults["redis_connect_timeout_seconds"].default,
    retries=_defaults["redis_retries"].default,
)


async def _round_trip() -> None:
    (reply,) = await _wire.execute([("PING",)], idempotent=True)
    if reply != b"PONG":
        raise RuntimeError(f"PING answered {reply!r}")


class _WaitingHistory(MemoryChatHistory):
    async def aget_window(self, n: int) -> list[BaseMessage]:
        await _round_trip()
        return await super().aget_window(n)

    async def aappend_turn(self, messages: Sequence[BaseMessage]) -> int:
        await _round_trip()
        return await super().aappend_turn(messages)


class _WaitingStore(MemoryStore):
    def history(self, session_id: str) -> MemoryChatHistory:
        return _WaitingHistory(self, session_id)


# `build_store` (chat_history_k8s/history/__init__.py) builds the app's store in its lifespan
# from this name: in this benchmark process, ours.
setattr(history_module, "MemoryStore", _WaitingStore)  # noqa: B010 - a module global, on purpose

app = create_app()
