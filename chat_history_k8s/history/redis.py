"""Redis history: one LIST per session; two round trips per chat turn, whatever its length."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio as aredis
from langchain_core.messages import BaseMessage
from redis.exceptions import NoScriptError

from chat_history_k8s.config import Settings
from chat_history_k8s.history.base import ChatHistory, HistoryStore, HistoryUnavailable
from chat_history_k8s.history.codec import DECODED, DecodeCache
from chat_history_k8s.history.redis_mux import MultiplexedConnection
from chat_history_k8s.history.redis_pool import (
    REDIS_ERRORS,
    AsyncClient,
    WarmedPool,
    build_multiplexed,
)
from chat_history_k8s.history.redis_sync import execute
from chat_history_k8s.history.redis_wait import (
    Command,
    WaitFor,
    asend_together,
    raise_first_error,
    send_together,
)

RoundTripHook = Callable[[str], None]

# The append, atomic as a script is: RPUSH the messages (ARGV[3..], in slices that Lua's
# unpack can take), LTRIM to the cap (ARGV[1], 0 = none), EXPIRE (ARGV[2] seconds, 0 = none).
# Returns the length after the push and before the trim. One EVALSHA and one integer reply
# instead of a MULTI/RPUSH/LTRIM/EXPIRE/EXEC pipeline and its five replies to parse: the
# client's CPU per append fell by ~40% (bench/client_bench.py, docs/benchmarks.md).
APPEND_SCRIPT = """#!lua
local key, n = KEYS[1], 0
for i = 3, #ARGV, 1000 do
  n = redis.call('RPUSH', key, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local cap, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
if cap > 0 then redis.call('LTRIM', key, -cap, -1) end
if ttl > 0 then redis.call('EXPIRE', key, ttl) end
return n
"""
APPEND_SHA = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()  # noqa: S324 - EVALSHA's name


class _RoundTrip:
    """One round trip to Redis (a context manager): counted, and its failures raised as
    `HistoryUnavailable`. A class, not a generator: a turn enters two, and this costs a third."""

    __slots__ = ("hook", "op")

    def __init__(self, op: str, hook: RoundTripHook | None) -> None:
        self.op = op
        self.hook = hook

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if self.hook is not None:
            self.hook(self.op)
        # NOSCRIPT is not a failure: the caller sends the script's source.
        if isinstance(exc, REDIS_ERRORS) and not isinstance(exc, NoScriptError):
            raise HistoryUnavailable.from_redis(exc) from exc


class RedisChatHistory(ChatHistory):
    """A session stored as the Redis LIST `<key_prefix><session_id>`, oldest message first.

    Lift-and-use: `RedisChatHistory.from_url(session_id, url)` works from sync and async code
    alike (each client is built from the URL on first use; `close()`/`aclose()` release them).
    To share a pool, give it a `redis.asyncio.Redis` (the async methods), a `redis.Redis` (the
    sync ones), or both: an explicit client serves its own side only.

    Appending is one `EVALSHA` of `APPEND_SCRIPT`: `RPUSH` (every message), `LTRIM` (keep the
    last `max_messages`) and `EXPIRE` (sliding TTL, when `ttl_seconds` > 0), atomic as a script
    is, in a single round trip, so a turn is never half-written and concurrent writers never
    interleave inside a turn. A server that does not have the script (restarted, failed over,
    `SCRIPT FLUSH`) answers NOSCRIPT and the append is sent again as `EVAL` with the source,
    which caches it: one more round trip, once per server. With `wait_replicas` > 0, `WAIT`
    follows the script in that same round trip and an append that fewer replicas acknowledged
    raises `ReplicasBehind` (the write stays on the primary). Reading the model's window is one
    `LRANGE -n -1`, decoded through `decode_cache` (by default the process's: each stored
    message decoded once, and one this process appended not at all, see
    chat_history_k8s/history/codec.py). The async client may be a
    `redis.asyncio.RedisCluster`: a session is one key, so one slot. Given a `multiplexed`
    connection (the service's, chat_history_k8s/history/redis_mux.py), the async window read
    and the append without `WAIT` go through it instead of the client's pool.

    Every read returns messages of its own, unless `share_decoded`: then the reads of this
    session in this process share the decoded messages (no copy each read; another session
    never sees them), as the memory backend's reads share its stored objects. For a caller that
    never changes a message it read, such as the service's turn (`RedisStore`).
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
        decode_cache: DecodeCache = DECODED,
        multiplexed: MultiplexedConnection | None = None,
        share_decoded: bool = False,
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
        self.decoded = decode_cache
        # The decode cache's scope: this session's reads share their messages (see the class).
        self._scope = self.key if share_decoded else None
        self._mux = multiplexed

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
    def _round_trip(self, op: str) -> _RoundTrip:
        return _RoundTrip(op, self._on_round_trip)

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

    def _read_command(self, n: int) -> Command:
        """The window read: `LRANGE key -n -1` (the whole list for n = 0)."""
        return ("LRANGE", self.key, *self._window_range(n))

    def _append_args(self, messages: Sequence[BaseMessage]) -> tuple[Any, ...]:
        """The script's keys and arguments (after its name): `numkeys key cap ttl *messages`.
        Encoded through the decode cache, which keeps them: this process reads them back free."""
        encoded = [self.decoded.encode(message, self._scope) for message in messages]
        return (1, self.key, self.max_messages, self.ttl_seconds, *encoded)

    def _append_commands(self, command: str, args: tuple[Any, ...]) -> list[Command]:
        """The script by SHA (`EVALSHA`) or by source (`EVAL`), then WAIT when replicas must
        acknowledge (in the same round trip, on the same connection)."""
        script = APPEND_SHA if command == "EVALSHA" else APPEND_SCRIPT
        return [(command, script, *args), *self.wait.command()]

    def _stored_before(self, replies: list[Any], appended: int) -> int:
        raise_first_error(replies[:1])  # NOSCRIPT included: the caller sends the source
        self.wait.check(replies)
        # The script answers the length after the push and before the trim.
        return int(replies[0]) - appended

    # -- async (what the service uses) -------------------------------------------------------
    async def aget_window(self, n: int) -> list[BaseMessage]:
        with self._round_trip("read"):
            if self._mux is not None:
                (raw,) = await self._mux.execute([self._read_command(n)], idempotent=True)
                raise_first_error([raw])
            else:
                raw = await self._async().lrange(self.key, *self._window_range(n))
        return self.decoded.decode(raw, self._scope)

    async def aget_window_along(
        self, n: int, command: Sequence[Any]
    ) -> tuple[list[BaseMessage], Any]:
        """`aget_window(n)` and one more command (e.g. an admission script) sent in the same
        round trip, as a pipeline without MULTI; returns the window and the command's reply.
        The command runs first: when its reply refuses the turn, the window is not used."""
        with self._round_trip("read"):
            if self._mux is not None:
                # Not idempotent: the command (an admission) may write.
                commands = [command, self._read_command(n)]
                reply, raw = await self._mux.execute(commands, idempotent=False)
                raise_first_error([reply, raw])
            else:
                async with self._async().pipeline(transaction=False) as pipe:
                    pipe.execute_command(*command)
                    pipe.lrange(self.key, *self._window_range(n))
                    reply, raw = await pipe.execute()
        return self.decoded.decode(raw, self._scope), reply

    async def aappend_turn(self, messages: Sequence[BaseMessage]) -> int:
        if not messages:
            return 0
        args = self._append_args(messages)
        for command in ("EVALSHA", "EVAL"):
            try:
                with self._round_trip("append"):
                    if self.wait.replicas:
                        commands = self._append_commands(command, args)
                        replies = await asend_together(self._async(), self.key, commands)
                    elif self._mux is not None:
                        commands = self._append_commands(command, args)
                        replies = await self._mux.execute(commands, idempotent=False)
                    else:  # no pipeline to build: the command alone (a cluster routes it by key)
                        script = APPEND_SHA if command == "EVALSHA" else APPEND_SCRIPT
                        replies = [await self._async().execute_command(command, script, *args)]
                    return self._stored_before(replies, len(messages))
            except NoScriptError:
                continue  # a restarted or failed-over server: EVAL sends the source
        raise AssertionError("unreachable: EVAL never answers NOSCRIPT")

    async def aclear(self) -> None:
        with self._round_trip("clear"):
            await self._async().delete(self.key)

    # -- sync (BaseChatMessageHistory for sync LangChain code) -------------------------------
    def get_window(self, n: int) -> list[BaseMessage]:
        with self._round_trip("read"):
            raw = execute(self._sync(), self._read_command(n), idempotent=True)
        return self.decoded.decode(raw, self._scope)

    def append_turn(self, messages: Sequence[BaseMessage]) -> int:
        if not messages:
            return 0
        args = self._append_args(messages)
        for command in ("EVALSHA", "EVAL"):
            try:
                with self._round_trip("append"):
                    if self.wait.replicas:
                        commands = self._append_commands(command, args)
                        replies = send_together(self._sync(), commands)
                    else:
                        script = APPEND_SHA if command == "EVALSHA" else APPEND_SCRIPT
                        replies = [
                            execute(self._sync(), (command, script, *args), idempotent=False)
                        ]
                    return self._stored_before(replies, len(messages))
            except NoScriptError:
                continue  # a restarted or failed-over server: EVAL sends the source
        raise AssertionError("unreachable: EVAL never answers NOSCRIPT")

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
        self.multiplexed = build_multiplexed(client, settings)
        self._pool = WarmedPool(client, settings, self.multiplexed)
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
            multiplexed=self.multiplexed,
            # The turn hands the window to the model and drops it: it never changes a message
            # (tests/conversation/test_shared_window.py checks the model and LangChain's path).
            share_decoded=True,
        )

    async def start(self) -> None:
        await self._pool.start()

    async def ping(self) -> None:
        await self._pool.ping()

    async def aclose(self) -> None:
        await self._pool.aclose()
