"""The process's one Redis client, in the mode `REDIS_MODE` names (one server, the primary that
Sentinels name, or a Redis Cluster): how it is built, paced, warmed and checked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.observability import recorder
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisClusterException
from redis.maint_notifications import MaintNotificationsConfig

from chat_history_k8s.config import Settings
from chat_history_k8s.history.base import HistoryUnavailable
from chat_history_k8s.history.redis_mux import ConnectTimeout, MultiplexedConnection

logger = logging.getLogger(__name__)

AsyncClient = aredis.Redis | aredis.RedisCluster
# What a failing Redis raises, for every `except` that maps it to `HistoryUnavailable`: redis-py's
# cluster client raises RedisClusterException (no node reachable, a slot nobody serves), which is
# not a RedisError. Catching RedisError alone turned a lost cluster into a 500
# (tests/checkpoint/test_cluster.py).
REDIS_ERRORS = (redis.RedisError, RedisClusterException)

# Connections opened at once. Every connect races its own connect timeout, but the event loop
# completes connects one after another: opening 50 together under CPU contention took up to
# 0.5 s each (and timed out), 4 at a time took at most 80 ms each (docs/configuration.md,
# REDIS_WARM_CONNECTIONS). A burst meets a cold pool at startup and again after every Redis
# restart (every pooled connection is dead then), so the pool itself paces its connects.
CONNECT_CONCURRENCY = 4
WARM_CONCURRENCY = CONNECT_CONCURRENCY


class PacedConnectionPool(aredis.BlockingConnectionPool):
    """A `BlockingConnectionPool` that (re)connects at most `CONNECT_CONCURRENCY` connections
    at a time. A healthy pooled connection takes the usual path (one non-blocking check); only
    a connection that must be opened or reopened waits its turn, for at most `connect_wait`
    seconds, then fails with `redis.ConnectionError` like any failed connect (so a dead store
    still answers 503 fast instead of queueing every request behind timeouts).

    Checking a connection out and back in is the pool's own bookkeeping when nothing needs
    more: an idle connection is there and nobody waits for one. redis-py's path takes the
    pool's condition and lock, arms a timeout and records its OpenTelemetry metrics on every
    command, twice per command (out and in): measured side by side (one replica, wrk at
    concurrency 16), a Redis turn's replica CPU went from 0.68 to 0.59 ms with the short path.
    The short path is taken only when it does exactly what that path
    would: no task waits (else `release` must wake one), no maintenance notice is being
    handled, redis-py's metrics are off, and the connection has no pending re-authentication
    (the listener redis-py runs on release). Anything else takes redis-py's path unchanged.
    """

    def __init__(self, *, connect_wait: float, **options: Any) -> None:
        super().__init__(**options)
        self._connect_wait = connect_wait
        self._connecting = asyncio.Semaphore(CONNECT_CONCURRENCY)
        self._waiting = 0  # tasks in redis-py's checkout (one of them may wait for a release)

    def _short_path(self) -> bool:
        return (
            not self._waiting
            and not self._in_maintenance
            and recorder._get_or_create_collector() is None  # redis-py's metrics are off
        )

    async def get_connection(
        self, command_name: Any = None, *keys: Any, **options: Any
    ) -> AbstractConnection:
        if self._available_connections and self._short_path():
            connection: AbstractConnection = self._available_connections.pop()
            self._in_use_connections.add(connection)
            try:
                await self.ensure_connection(connection)
            except BaseException:
                await self.release(connection)
                raise
            return connection
        self._waiting += 1
        try:
            # The ignore: redis-py's deprecation decorator leaves get_connection untyped.
            checked_out: AbstractConnection = await super().get_connection()  # type: ignore[no-untyped-call]  # see above
            return checked_out
        finally:
            self._waiting -= 1

    async def release(self, connection: AbstractConnection) -> None:
        if connection._re_auth_token is None and self._short_path():
            self._in_use_connections.remove(connection)
            if connection.should_reconnect():  # type: ignore[no-untyped-call]  # untyped in redis-py
                await connection.disconnect()
            self._available_connections.append(connection)
            return
        await super().release(connection)

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        maint = self.maint_notifications_enabled()  # type: ignore[no-untyped-call]  # untyped in redis-py
        if connection.is_connected and not maint:
            try:
                if not await connection.can_read():
                    return  # open, nothing unread: ready to send
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                pass  # dead socket (e.g. Redis restarted): reopen it below, paced
        try:
            async with asyncio.timeout(self._connect_wait):
                await self._connecting.acquire()
        except TimeoutError as exc:
            raise redis.ConnectionError("too many Redis connections being opened") from exc
        try:
            await super().ensure_connection(connection)
        finally:
            self._connecting.release()


class RetriedConnect:
    """A redis-py connection whose connect that times out is retried like a refused one.

    redis-py (checked with 8.1) retries a refused connect `REDIS_RETRIES` times, but raises a
    connect that got no answer within `REDIS_CONNECT_TIMEOUT_SECONDS` as its `TimeoutError` at
    once, which its `Retry` (connection errors only: a *command* that timed out may have been
    applied) never retries. Nothing was sent on a connect, so that caution does not apply: a
    dropped SYN (a Redis pod just replaced, a Service or NetworkPolicy rule being programmed)
    cost a turn its 503 although the next connect would have gone through. Here it is a
    `ConnectTimeout`, a `redis.ConnectionError`, and redis-py's own connect retry takes it.
    """

    async def _connect(self) -> None:
        try:
            await super()._connect()  # type: ignore[misc]  # the redis-py class mixed in
        except TimeoutError as exc:  # asyncio's: the connect got no answer in time
            where = self._host_error()  # type: ignore[attr-defined]  # the redis-py class's
            raise ConnectTimeout(f"Timeout connecting to {where}") from exc


class TcpConnection(RetriedConnect, aredis.Connection):
    """redis-py's TCP connection, a timed-out connect retried (`RetriedConnect`)."""


class SslConnection(RetriedConnect, aredis.SSLConnection):
    """redis-py's TLS connection, a timed-out connect retried (`RetriedConnect`)."""


class SentinelPrimaryConnection(RetriedConnect, SentinelManagedConnection):
    """A connection to the primary that the Sentinels name *now*: every socket (re)connect asks
    them, including the reconnects of redis-py's own command retries.

    redis-py (checked with 8.1) asks the Sentinels only in `connect()`; a command retried after
    a connection error reconnects through `connect_check_health()` to the address it had, so
    after a failover every retry of that command knocks on the dead (or demoted) primary
    (redis-py #3874, #3560). Asking in `_connect`, the one place every path goes through, makes
    the retry itself reach the new primary. A demoted primary's `READONLY` reply already
    disconnects (redis-py turns it into a `ConnectionError`), so that path reconnects here too.
    """

    async def _connect_retry(self) -> None:
        if self._reader:
            return  # already connected
        # _connect asks the Sentinels: asking here as well would ask twice per connect.
        await self.connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )

    async def _connect(self) -> None:
        self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # RetriedConnect's, then redis-py's TCP connect


class Sentinels(aredis.Sentinel):
    """redis-py's `Sentinel`, its list of Sentinels safe under concurrent discoveries.

    redis-py (checked with 8.1) moves the Sentinel that answered to the front of its list by
    the index it had *before* awaiting its answer. Discoveries run concurrently (every pooled
    connection asks on connect): when another one has reordered the list meanwhile, that swap
    writes one Sentinel twice and drops another from the list for the life of the process
    (redis-py#4331 review). The dropped one is never asked again, and never closed: its sockets
    leaked (tests/history/test_redis_sentinel.py). Here the answering Sentinel is moved by
    identity, with no await in between, so the list stays a reordering of the configured one.
    """

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        errors = []
        for sentinel in list(self.sentinels):  # a reordering meanwhile skips none of them
            try:
                masters = await sentinel.sentinel_masters()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                errors.append(f"{sentinel} - {exc!r}")
                continue
            state = masters.get(service_name) if isinstance(masters, dict) else None
            if state and self.check_master_state(state, service_name):
                if self.sentinels[0] is not sentinel:  # asked first next time
                    self.sentinels.remove(sentinel)
                    self.sentinels.insert(0, sentinel)
                forced = self._force_master_ip
                return (state["ip"] if forced is None else forced), state["port"]
        detail = f" : {', '.join(errors)}" if errors else ""
        raise MasterNotFoundError(f"No master found for {service_name!r}{detail}")


class PacedSentinelPool(SentinelConnectionPool, PacedConnectionPool):
    """`PacedConnectionPool` (bounded, paced connects) whose connections go to the primary the
    Sentinels name; idle connections to a former primary are closed when the address changes."""


class ClusterConnection(RetriedConnect, aredis.Connection):
    """redis-py's async connection for the cluster client, except that a command whose
    connection another task closed under it fails with `redis.ConnectionError`.

    redis-py's cluster client (checked with 8.1) closes *every* node's connections, the ones
    other tasks are using included, when one command meets `CLUSTERDOWN` or an uncovered slot
    (`RedisCluster.aclose()`) or a re-initialization fails. A write checks that its connection
    is open, then writes in a task of its own (`asyncio.wait_for`): closed in between, the bare
    `AttributeError` ("'NoneType' object has no attribute 'writelines'") escaped. It is not a
    `RedisError`, so neither redis-py's retry nor the service's 503 applied and the turn answered
    500 (seen under Cluster failovers; redis-py#3546, #4287). As a `ConnectionError` the client
    re-learns the layout and retries the command like any lost connection, and what still fails
    is a 503. Only that signature (an operation on `None`) is translated. A read needs nothing:
    a closed connection's parser answers `ConnectionError` itself.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except (AttributeError, TypeError) as exc:
            if "NoneType" not in str(exc):
                raise
            raise redis.ConnectionError(
                f"Error while writing to {self.host}:{self.port}: another task closed the "
                f"connection under the command ({exc})"
            ) from exc


def _retry(settings: Settings, retries: int | None = None) -> AsyncRetry:
    return AsyncRetry(
        ExponentialBackoff(cap=1.0, base=settings.redis_retry_backoff_seconds),
        settings.redis_retries if retries is None else retries,
        supported_errors=(redis.ConnectionError,),
    )


def build_async_client(settings: Settings) -> AsyncClient:
    """One pooled async client per process for `REDIS_MODE`, every timeout and retry taken from
    settings. Does no I/O.

    Only connection errors are retried: a write that timed out may have been applied, and
    retrying it could store the turn twice; the caller gets a 503 and may resend the turn.
    (redis-py's cluster client also retries timeouts, and follows failovers that way.)
    """
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    options: dict[str, Any] = {
        "password": password,
        "socket_timeout": settings.redis_socket_timeout_seconds,
        "socket_connect_timeout": settings.redis_connect_timeout_seconds,
        "health_check_interval": 0,  # no hidden PINGs: they would add round trips to a turn
    }
    if settings.redis_mode == "cluster":
        cluster = aredis.RedisCluster.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,  # per node
            retry=_retry(settings),
            **options,
        )
        # No connection exists yet. redis-py's from_url takes no connection class: set it
        # where redis-py keeps it, for the startup nodes and for every node found later.
        cluster.nodes_manager.connection_kwargs["connection_class"] = ClusterConnection
        for node in cluster.nodes_manager.startup_nodes.values():
            node.connection_class = ClusterConnection
        return cluster
    pooled: dict[str, Any] = options | {
        # Maintenance notifications (CLIENT MAINT_NOTIFICATIONS, RESP3 pushes announcing a
        # managed service's node moves) are off: open-source Redis and Sentinel send none, and
        # redis-py's "auto" default made every checkout take the pool's reconnect path (a
        # semaphore, a timeout and redis-py's own checks: 73 -> 61 us of client CPU per turn,
        # measured alone) and every connect try the handshake.
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        # Waiting for a turn to connect: the same budget as one command (connect + reply).
        "connect_wait": settings.redis_connect_timeout_seconds
        + settings.redis_socket_timeout_seconds,
        "max_connections": settings.redis_max_connections,
        "timeout": settings.redis_connect_timeout_seconds,  # wait for a free pooled connection
        "retry": _retry(settings),
        "retry_on_timeout": False,
    }
    if settings.redis_mode == "sentinel":
        sentinel_password = settings.redis_sentinel_password
        sentinels = Sentinels(  # type: ignore[no-untyped-call]  # untyped in redis-py
            settings.sentinel_addresses,
            sentinel_kwargs={
                "password": sentinel_password.get_secret_value() if sentinel_password else None,
                "socket_timeout": settings.redis_socket_timeout_seconds,
                "socket_connect_timeout": settings.redis_connect_timeout_seconds,
                # One try per Sentinel: discovery moves on to the next one itself.
                "retry": _retry(settings, retries=0),
            },
        )
        pool: aredis.ConnectionPool = PacedSentinelPool(  # type: ignore[no-untyped-call]  # untyped in redis-py
            settings.redis_sentinel_master,
            sentinels,
            connection_class=SentinelPrimaryConnection,
            **pooled,
        )
    else:
        pool = PacedConnectionPool.from_url(settings.redis_url, **pooled)
        # from_url picks the class from the URL's scheme; a Unix socket's connect does not
        # time out that way and keeps redis-py's.
        retried: dict[type[AbstractConnection], type[AbstractConnection]] = {
            aredis.Connection: TcpConnection,
            aredis.SSLConnection: SslConnection,
        }
        pool.connection_class = retried.get(pool.connection_class, pool.connection_class)
    return aredis.Redis(connection_pool=pool)


def build_multiplexed(client: AsyncClient, settings: Settings) -> MultiplexedConnection | None:
    """The turn's own connection (chat_history_k8s/history/redis_mux.py) to the node `client`
    talks to, with its credentials and timeouts: to the server of `REDIS_URL`, or to the
    primary the Sentinels name on every connect. None where redis-py's connection classes do
    more than plain TCP (TLS, a Unix socket) and for a Redis Cluster (a session's node depends
    on its slot): those turns take the client's pool."""
    if not isinstance(client, aredis.Redis):
        return None
    pool = client.connection_pool
    options = pool.connection_kwargs
    address: Callable[[], Awaitable[tuple[str, int]]]
    if isinstance(pool, SentinelConnectionPool):
        address = pool.get_master_address
    elif pool.connection_class is TcpConnection:
        fixed = (str(options["host"]), int(options["port"]))

        async def address() -> tuple[str, int]:
            return fixed

    else:
        return None
    return MultiplexedConnection(
        address,
        socket_timeout=settings.redis_socket_timeout_seconds,
        connect_timeout=settings.redis_connect_timeout_seconds,
        password=options.get("password"),
        username=options.get("username"),
        db=int(options.get("db") or 0),
        retries=settings.redis_retries,
        backoff_seconds=settings.redis_retry_backoff_seconds,
    )


async def warm_pool(
    pool: aredis.ConnectionPool, connections: int, concurrency: int = WARM_CONCURRENCY
) -> None:
    """Make `pool` hold at least `connections` open connections (idle ones count), opening
    at most `concurrency` at a time, and leave them idle in the pool.

    Raises the first error (`redis.RedisError`) and stops there; whatever was opened stays in
    the pool. Cancelling it is safe: no connection is left checked out.
    """
    held: list[AbstractConnection] = []
    try:
        while len(held) < connections:
            batch = min(concurrency, connections - len(held))
            opened = await asyncio.gather(
                *(_checkout(pool) for _ in range(batch)), return_exceptions=True
            )
            held += [c for c in opened if isinstance(c, AbstractConnection)]
            for outcome in opened:
                if isinstance(outcome, BaseException):
                    raise outcome
    finally:
        for connection in held:
            await pool.release(connection)


async def _checkout(pool: aredis.ConnectionPool) -> AbstractConnection:
    # The ignore: redis-py's deprecation decorator leaves get_connection untyped.
    connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]  # see above
    return connection


class WarmedPool:
    """The lifecycle of the process's one client, whichever API uses it: warmed at start, pinged
    by readiness, closed at shutdown.

    A fresh replica's pool is warmed before the replica counts as ready: `start()` opens
    `REDIS_WARM_CONNECTIONS` connections a few at a time, so a burst of turns on a replica that
    has just started (scale-up, rolling restart) does not open them all at once, each against
    the connect timeout. Until a warm-up has succeeded, `ping()` (readiness) tries it again
    first.
    """

    def __init__(
        self,
        client: AsyncClient,
        settings: Settings,
        multiplexed: MultiplexedConnection | None = None,
    ) -> None:
        self.client = client
        self.multiplexed = multiplexed
        # A cluster client's warm-up is learning the slots (its pools are per node).
        self._warm_connections = min(
            settings.redis_warm_connections, settings.redis_max_connections
        )
        if isinstance(client, aredis.RedisCluster):
            self._warm_connections = 1
        self._warmed = self._warm_connections == 0
        self._warming: asyncio.Task[None] | None = None
        # What readiness allows a healthy Redis to take: connect, then answer.
        self._answer_budget = (
            settings.redis_connect_timeout_seconds + settings.redis_socket_timeout_seconds
        )

    async def start(self) -> None:
        """Warm the pool, waiting for it at most the readiness budget (connect + socket
        timeout): a reachable Redis is warm before the first request, an unreachable one
        delays startup by that much at most and never fails it."""
        if not self._warmed:
            await asyncio.wait([self._warm_in_background()], timeout=self._answer_budget)

    def _warm_in_background(self) -> asyncio.Task[None]:
        if self._warming is None or self._warming.done():
            self._warming = asyncio.create_task(self._warm(), name="redis-pool-warm-up")
        return self._warming

    async def _warm(self) -> None:
        try:
            if isinstance(self.client, aredis.RedisCluster):
                await self.client.initialize()
            else:
                await warm_pool(self.client.connection_pool, self._warm_connections)
                if self.multiplexed is not None:
                    await self._ping_multiplexed()
        except Exception as exc:  # a warm-up is an optimisation: it must never break startup
            logger.info("Redis pool not warmed (readiness will retry): %s", exc)
        else:
            self._warmed = True

    async def ping(self) -> None:
        """Return when Redis answers and the pool is warm; raise `HistoryUnavailable` otherwise."""
        if not self._warmed:
            # asyncio.wait: a probe that gives up does not cancel the warm-up it waited for.
            await asyncio.wait([self._warm_in_background()])
        try:
            if isinstance(self.client, aredis.RedisCluster):
                # Ready when every primary answers: then every session's slot can be served.
                await self.client.ping(target_nodes=aredis.RedisCluster.PRIMARIES)
            else:
                await self.client.ping()
                if self.multiplexed is not None:  # the turns' own connection answers too
                    await self._ping_multiplexed()
        except REDIS_ERRORS as exc:
            raise HistoryUnavailable.from_redis(exc) from exc

    async def _ping_multiplexed(self) -> None:
        assert self.multiplexed is not None
        (reply,) = await self.multiplexed.execute([("PING",)], idempotent=True)
        if isinstance(reply, redis.RedisError):
            raise reply

    async def aclose(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.wait([self._warming])
        closing: list[Callable[[], Awaitable[Any]]] = [self.client.aclose]
        if self.multiplexed is not None:
            closing.append(self.multiplexed.aclose)
        if isinstance(self.client, aredis.Redis):
            pool = self.client.connection_pool
            closing.append(pool.disconnect)
            if isinstance(pool, SentinelConnectionPool):  # its clients of the Sentinels
                closing += [sentinel.aclose for sentinel in pool.sentinel_manager.sentinels]
        for close in closing:  # every one, whatever an earlier one raised
            try:
                await close()
            except (redis.RedisError, OSError) as exc:
                # redis-py waits at most REDIS_CONNECT_TIMEOUT_SECONDS for each socket to
                # close (a starved CPU can take longer); the sockets are closed either way.
                # Shutting down goes on: nothing is left to lose, and a crash here would hide
                # the real exit.
                logger.warning("closing the Redis connections: %s (shutting down anyway)", exc)
