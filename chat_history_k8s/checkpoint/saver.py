"""`RedisCheckpointSaver`: a LangGraph checkpointer on plain Redis/Valkey >= 7 (no modules)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio as aredis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from chat_history_k8s.checkpoint import ops
from chat_history_k8s.checkpoint.clients import AsyncClient, SyncClient, acall, call
from chat_history_k8s.checkpoint.leasing import RedisLeases
from chat_history_k8s.history.redis import RoundTripHook

T = TypeVar("T")


class RedisCheckpointSaver(RedisLeases, BaseCheckpointSaver[str]):
    """A LangGraph checkpointer whose threads live in plain Redis or Valkey (>= 7, no modules).

    Give it a `redis.asyncio` client (native async methods), a sync one, or both; standalone or
    `RedisCluster`, created with `decode_responses=False`. Contract, on top of
    `BaseCheckpointSaver` (it passes langgraph-checkpoint-conformance on every capability):

    - **Bounded**: at most `max_checkpoints` checkpoints per thread and namespace (0 = all).
      Each `put` drops, in the same atomic script, the oldest ones with their pending writes and
      the channel blobs no kept checkpoint references, so a thread's storage grows linearly with
      its messages. The trade-off: time travel and history browsing (`get_state_history`,
      resuming from a `checkpoint_id`) reach only the kept checkpoints; `create_agent` writes 3
      per turn, so the default 4 keeps the last turn. Parent links to dropped checkpoints dangle
      (`get_tuple` on them is None). `prune(strategy="keep_latest")` is the same rule with 1.
      Each subgraph task has a namespace of its own, bounded separately: a graph that runs
      subgraphs on every turn still grows with its turns. Not for `DeltaChannel` graphs, which
      rebuild state from ancestors that retention drops.
    - **Sliding TTL**: with `ttl_seconds` > 0 every key of a thread gets that TTL on every write,
      the same for all, so no key outlives the thread; 0 = never expire.
    - **One slot per thread**: every key carries the hash tag `{<thread_id>}` (escaped, see
      layout.py); no KEYS/SCAN on a turn's path (SCAN only in `list(None)` and
      `delete_for_runs`, admin calls that visit every thread).
    - **One round trip per call**: `put`, `put_writes`, `get_tuple` are one EVALSHA each
      (`create_agent`: 6 per turn, whatever the thread's length), each counted by
      `on_round_trip(op)`; a NOSCRIPT fallback to EVAL counts as a second one.
    - **Fenced**: a config from `lease.config()` carries the turn's lease; writes of a turn whose
      lease expired or was taken raise `LeaseLost`, writes without a lease are refused while
      another turn holds one. `alease`/`lease` serialize turns on a thread across replicas;
      `lease_seconds` must exceed the longest turn (model timeout included), and is how long a
      thread stays blocked when its holder dies. Admin calls (`delete_thread`, `prune`,
      `delete_for_runs`, `copy_thread`) are not fenced; deleting a thread also deletes its
      lease, so a turn still running on it cannot bring it back.
    - **Failures** of the store raise `HistoryUnavailable` (a subclass for the above); a refused
      or failed script has written nothing.

    Channel versions are strings `<counter>.<random>` like `InMemorySaver`'s, so two forks of a
    thread never overwrite each other's blobs.
    """

    def __init__(
        self,
        *,
        async_client: AsyncClient | None = None,
        client: SyncClient | None = None,
        key_prefix: str = "chat-history:ckpt:",
        max_checkpoints: int = 4,
        ttl_seconds: int = 0,
        lease_seconds: float = 30.0,
        lease_wait_seconds: float = 10.0,
        on_round_trip: RoundTripHook | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if async_client is None and client is None:
            raise ValueError("RedisCheckpointSaver needs async_client, client, or both")
        if max_checkpoints < 0 or ttl_seconds < 0 or lease_seconds <= 0:
            raise ValueError("max_checkpoints and ttl_seconds must be >= 0, lease_seconds > 0")
        if ttl_seconds and ttl_seconds < lease_seconds:
            # A lease must not outlive the thread it guards.
            raise ValueError("ttl_seconds must be 0 or at least lease_seconds")
        self._aclient = async_client
        self._client = client
        self._on_round_trip = on_round_trip
        self.lease_wait_seconds = lease_wait_seconds
        self._forgetting: set[asyncio.Task[None]] = set()
        self.settings = ops.Settings(
            prefix=key_prefix,
            keep=max_checkpoints,
            ttl_seconds=ttl_seconds,
            lease_ms=max(1, round(lease_seconds * 1000)),
            serde=self.serde,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        timeout_seconds: float = 5.0,
        connect_timeout_seconds: float = 2.0,
        retries: int = 1,
        **kwargs: Any,
    ) -> RedisCheckpointSaver:
        """A saver with sync and async clients of its own for `url` (`cluster=True`: any node of
        a Redis Cluster), `kwargs` for the constructor. Timeouts are explicit; only connection
        errors are retried (`retries` times; a timed-out script may have run), and a cluster
        client keeps its own retries, which follow failovers. No hidden PINGs (they would add
        round trips). Close it with `close()` and `aclose()`. The sync cluster client connects
        here, to learn the slots; nothing else does I/O before the first call."""
        options: dict[str, Any] = {
            "socket_timeout": timeout_seconds,
            "socket_connect_timeout": connect_timeout_seconds,
            "health_check_interval": 0,
        }
        if cluster:
            return cls(
                client=redis.cluster.RedisCluster.from_url(url, **options),
                async_client=aredis.cluster.RedisCluster.from_url(url, **options),
                **kwargs,
            )
        backoff = ExponentialBackoff(cap=1.0, base=0.05)
        errors = (redis.ConnectionError,)
        return cls(
            client=redis.Redis.from_url(
                url, retry=Retry(backoff, retries, supported_errors=errors), **options
            ),
            async_client=aredis.Redis.from_url(
                url, retry=AsyncRetry(backoff, retries, supported_errors=errors), **options
            ),
            **kwargs,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Stop the background releases of unknown leases, then close the async client."""
        for task in list(self._forgetting):
            task.cancel()
        await asyncio.gather(*self._forgetting, return_exceptions=True)
        if self._aclient is not None:
            await self._aclient.aclose()

    # -- drivers: run an ops generator over one client -----------------------------------------
    def _run(self, op: ops.Op[T]) -> T:
        if self._client is None:
            raise RuntimeError("this RedisCheckpointSaver was built without a sync `client`")
        reply: Any = None
        try:
            while True:
                reply = call(self._client, op.send(reply), self._on_round_trip)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]  # StopIteration.value is Any

    async def _arun(self, op: ops.Op[T]) -> T:
        if self._aclient is None:
            raise RuntimeError("this RedisCheckpointSaver was built without an `async_client`")
        reply: Any = None
        try:
            while True:
                reply = await acall(self._aclient, op.send(reply), self._on_round_trip)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]  # StopIteration.value is Any

    # -- BaseCheckpointSaver, async ---------------------------------------------------------
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._arun(ops.get_tuple(self.settings, config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await self._arun(ops.list_(self.settings, config, filter, before, limit)):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._arun(ops.put(self.settings, config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._arun(ops.put_writes(self.settings, config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(ops.delete_thread(self.settings, str(thread_id)))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._arun(ops.delete_for_runs(self.settings, run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun(ops.copy_thread(self.settings, source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._arun(ops.prune(self.settings, thread_ids, strategy))

    # -- BaseCheckpointSaver, sync ----------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(ops.get_tuple(self.settings, config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        return iter(self._run(ops.list_(self.settings, config, filter, before, limit)))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(ops.put(self.settings, config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._run(ops.put_writes(self.settings, config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(ops.delete_thread(self.settings, str(thread_id)))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(ops.delete_for_runs(self.settings, run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(ops.copy_thread(self.settings, source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._run(ops.prune(self.settings, thread_ids, strategy))

    def get_next_version(self, current: str | None, channel: None) -> str:
        # `<counter>.<random>` as InMemorySaver: ordered by the counter, unique per fork.
        if current is None:
            counter = 0
        elif isinstance(current, int):
            counter = current
        else:
            counter = int(current.split(".")[0])
        return f"{counter + 1:032}.{random.random():016}"
