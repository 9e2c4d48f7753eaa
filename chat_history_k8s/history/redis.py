"""Redis history: one LIST per session; two round trips per chat turn, whatever its length."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import redis
import redis.asyncio as aredis
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
from redis.exceptions import RedisClusterException

from chat_history_k8s.config import Settings
from chat_history_k8s.history.base import (
    ChatHistory,
    HistoryStore,
    HistoryUnavailable,
    whole_tool_groups,
)
from chat_history_k8s.history.redis_pool import AsyncClient, WarmedPool
from chat_history_k8s.history.redis_wait import (
    Command,
    WaitFor,
    asend_together,
    raise_first_error,
    send_together,
)

RoundTripHook = Callable[[str], None]


def _encode(message: BaseMessage) -> bytes:
    # message_to_dict keeps everything (tool calls, ids, metadata): full fidelity. orjson:
    # decoding the window is a visible share of a turn's CPU (docs/benchmarks.md).
    return orjson.dumps(message_to_dict(message), option=orjson.OPT_NON_STR_KEYS)


def _decode(raw: Iterable[bytes | str]) -> list[BaseMessage]:
    return whole_tool_groups(messages_from_dict([orjson.loads(item) for item in raw]))


class RedisChatHistory(ChatHistory):
    """A session stored as the Redis LIST `<key_prefix><session_id>`, oldest message first.

    Lift-and-use: `RedisChatHistory.from_url(session_id, url)` works from sync and async code
    alike (each client is built from the URL on first use; `close()`/`aclose()` release them).
    To share a pool, give it a `redis.asyncio.Redis` (the async methods), a `redis.Redis` (the
    sync ones), or both: an explicit client serves its own side only.

    Appending queues `RPUSH` (every message), `LTRIM` (keep the last `max_messages`) and
    `EXPIRE` (sliding TTL, when `ttl_seconds` > 0) in one `MULTI`/`EXEC` sent as a single round
    trip, so a turn is never half-written and concurrent writers never interleave inside a
    turn. With `wait_replicas` > 0, `WAIT` follows `EXEC` in that same round trip and an append
    that fewer replicas acknowledged raises `ReplicasBehind` (the write stays on the primary).
    Reading the model's window is one `LRANGE -n -1`. The async client may be a
    `redis.asyncio.RedisCluster`: a session is one key, so one slot.
    """

    def __init__(
        self,
        session_id: str,
        *,
        async_client: AsyncClient | None = None,
        client: redis.Redis | None = None,
        key_prefix: str = "chat-history:",
        max_messages: int = 0,
        ttl_seconds: int = 0,
        on_round_trip: RoundTripHook | None = None,
        url: str | None = None,
        wait_replicas: int = 0,
        wait_timeout_seconds: float = 0.5,
    ) -> None:
        super().__init__()
        if async_client is None and client is None and url is None:
            raise ValueError("RedisChatHistory needs async_client, client, both, or a url")
        self.session_id = session_id
        self._url = url
        self._owned: list[redis.Redis | aredis.Redis] = []  # built here from the URL
        self.key = f"{key_prefix}{session_id}"
        self.max_messages = max_messages
        self.ttl_seconds = ttl_seconds
        self._aclient = async_client
        self._client = client
        self._on_round_trip = on_round_trip
        self.wait = WaitFor.seconds(wait_replicas, wait_timeout_seconds)

    @classmethod
    def from_url(cls, session_id: str, url: str, **options: Any) -> RedisChatHistory:
        """A history usable from sync and async code: both clients come from `url` on first
        use (no I/O here). `options` are the other constructor arguments."""
        return cls(session_id, url=url, **options)

    def close(self) -> None:
        """Close the sync client built from the URL (an explicit client is the caller's)."""
        for client in self._owned:
            if isinstance(client, redis.Redis):
                client.close()

    async def aclose(self) -> None:
        """Close the async client built from the URL (an explicit client is the caller's)."""
        for client in self._owned:
            if isinstance(client, aredis.Redis):
                await client.aclose()

    # -- plumbing ----------------------------------------------------------------------------
    @contextmanager
    def _round_trip(self, op: str) -> Iterator[None]:
        """One round trip to Redis: counted, and its failures raised as `HistoryUnavailable`."""
        try:
            yield
        except (redis.RedisError, RedisClusterException) as exc:
            raise HistoryUnavailable.from_redis(exc) from exc
        finally:
            if self._on_round_trip is not None:
                self._on_round_trip(op)

    def _sync(self) -> redis.Redis:
        if self._client is None:
            if self._url is None:
                raise RuntimeError(
                    "this RedisChatHistory was built without a sync `client`: use the a* "
                    "methods, or build it with RedisChatHistory.from_url(...) to use both"
                )
            self._client = redis.Redis.from_url(self._url)
            self._owned.append(self._client)
        return self._client

    def _async(self) -> AsyncClient:
        if self._aclient is None:
            if self._url is None:
                raise RuntimeError(
                    "this RedisChatHistory was built without an `async_client`: use the sync "
                    "methods, or build it with RedisChatHistory.from_url(...) to use both"
                )
            self._aclient = aredis.Redis.from_url(self._url)
            self._owned.append(self._aclient)
        return self._aclient

    def _window_range(self, n: int) -> tuple[int, int]:
        return (-n if n else 0, -1)

    def _append_commands(self, messages: Sequence[BaseMessage]) -> list[Command]:
        """MULTI, RPUSH, LTRIM, EXPIRE, EXEC (queued explicitly, so that WAIT can follow EXEC
        in the same round trip), then WAIT when replicas must acknowledge."""
        commands: list[Command] = [("MULTI",), ("RPUSH", self.key, *map(_encode, messages))]
        if self.max_messages:
            commands.append(("LTRIM", self.key, -self.max_messages, -1))
        if self.ttl_seconds:
            commands.append(("EXPIRE", self.key, self.ttl_seconds))
        return [*commands, ("EXEC",), *self.wait.command()]

    def _stored_before(self, replies: list[Any], appended: int) -> int:
        written = replies[: len(replies) - len(self.wait.command())]
        raise_first_error(written)  # e.g. EXECABORT: nothing was written
        self.wait.check(replies)
        # RPUSH answers the length after the push and before the trim.
        return int(written[-1][0]) - appended

    # -- async (what the service uses) -------------------------------------------------------
    async def aget_window(self, n: int) -> list[BaseMessage]:
        with self._round_trip("read"):
            raw = await self._async().lrange(self.key, *self._window_range(n))
        return _decode(raw)

    async def aget_window_along(
        self, n: int, command: Sequence[Any]
    ) -> tuple[list[BaseMessage], Any]:
        """`aget_window(n)` and one more command (e.g. an admission script) sent in the same
        round trip, as a pipeline without MULTI; returns the window and the command's reply.
        The command runs first: when its reply refuses the turn, the window is not used."""
        with self._round_trip("read"):
            async with self._async().pipeline(transaction=False) as pipe:
                pipe.execute_command(*command)
                pipe.lrange(self.key, *self._window_range(n))
                reply, raw = await pipe.execute()
        return _decode(raw), reply

    async def aappend_turn(self, messages: Sequence[BaseMessage]) -> int:
        if not messages:
            return 0
        with self._round_trip("append"):
            replies = await asend_together(self._async(), self.key, self._append_commands(messages))
            return self._stored_before(replies, len(messages))

    async def aclear(self) -> None:
        with self._round_trip("clear"):
            await self._async().delete(self.key)

    # -- sync (BaseChatMessageHistory for sync LangChain code) -------------------------------
    def get_window(self, n: int) -> list[BaseMessage]:
        with self._round_trip("read"):
            raw = self._sync().lrange(self.key, *self._window_range(n))
        return _decode(raw)

    def append_turn(self, messages: Sequence[BaseMessage]) -> int:
        if not messages:
            return 0
        with self._round_trip("append"):
            replies = send_together(self._sync(), self._append_commands(messages))
            return self._stored_before(replies, len(messages))

    def clear(self) -> None:
        with self._round_trip("clear"):
            self._sync().delete(self.key)


class RedisStore(HistoryStore):
    """Redis-backed sessions sharing one async connection pool (built by the app's lifespan),
    warmed before the replica counts as ready (`WarmedPool`)."""

    backend = "redis"

    def __init__(
        self, client: AsyncClient, settings: Settings, on_round_trip: RoundTripHook | None = None
    ) -> None:
        self.client = client
        self._pool = WarmedPool(client, settings)
        self._settings = settings
        self._on_round_trip = on_round_trip

    def history(self, session_id: str) -> RedisChatHistory:
        return RedisChatHistory(
            session_id,
            async_client=self.client,
            key_prefix=self._settings.redis_key_prefix,
            max_messages=self._settings.history_max_messages,
            ttl_seconds=self._settings.history_ttl_seconds,
            on_round_trip=self._on_round_trip,
            wait_replicas=self._settings.redis_wait_replicas,
            wait_timeout_seconds=self._settings.redis_wait_timeout_seconds,
        )

    async def start(self) -> None:
        await self._pool.start()

    async def ping(self) -> None:
        await self._pool.ping()

    async def aclose(self) -> None:
        await self._pool.aclose()
