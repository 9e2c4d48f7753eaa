"""Writes that are acknowledged only once N replicas have them: the write and `WAIT N` sent
together, in one round trip, on one connection to the node that owns the key.

`WAIT` counts the replicas that acknowledged every write *of its own connection*, so it must
follow the write on that connection (after `EXEC`: inside `MULTI` or a script it cannot block
and answers at once). redis-py's pipelines send commands together on one connection; a cluster
pipeline may split them over nodes, so on a cluster the commands go to the key's node through
that node's own pipeline, with no redirection (a moved slot fails the write: the caller answers
503 and the next turn finds the slot's new owner).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import PipelineCommand
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    TryAgainError,
)

from chat_history_k8s.history.base import HistoryUnavailable

Command = tuple[str | bytes | int | float, ...]
# Replies that mean the cluster's layout may have changed under the write: re-learn it (a
# connection lost while reading a reply too, as redis-py's cluster client does).
_LAYOUT_CHANGED = (
    MovedError, AskError, ClusterDownError, TryAgainError, RedisClusterException,
    redis.ConnectionError, redis.TimeoutError,
)  # fmt: skip


class ReplicasBehind(HistoryUnavailable):
    """The write was applied on the primary but fewer replicas than required acknowledged it
    in time. It is *not* undone: it stays on the primary and, like any write there, reaches the
    replicas later or is lost if the primary is lost before. The turn is reported as failed
    (503): its outcome is unknown, as after a timeout."""


@dataclass(frozen=True)
class WaitFor:
    """`WAIT replicas timeout_ms` after a write; `replicas == 0` sends no WAIT at all."""

    replicas: int = 0
    timeout_ms: int = 500

    @classmethod
    def seconds(cls, replicas: int, timeout_seconds: float) -> WaitFor:
        return cls(replicas, max(1, round(timeout_seconds * 1000)))

    def command(self) -> list[Command]:
        return [("WAIT", self.replicas, self.timeout_ms)] if self.replicas else []

    def check(self, replies: list[Any]) -> list[Any]:
        """The write's replies without WAIT's; `ReplicasBehind` when too few acknowledged.
        Call it after the write's own replies were checked (a failed write is not "behind")."""
        if not self.replicas:
            return replies
        acknowledged = replies[-1]
        if isinstance(acknowledged, BaseException):
            # E.g. a demoted primary: "WAIT cannot be used with replica instances".
            raise HistoryUnavailable.from_redis(acknowledged) from acknowledged
        if int(acknowledged) < self.replicas:
            detail = (
                f"{acknowledged} of {self.replicas} replicas acknowledged the write within "
                f"{self.timeout_ms} ms; it is on the primary and may still be kept"
            )
            raise ReplicasBehind(f"redis: {detail}", public=f"redis: WAIT: {detail}")
        return replies[:-1]


async def asend_together(
    client: aredis.Redis | aredis.RedisCluster, key: str, commands: Sequence[Command]
) -> list[Any]:
    """Send `commands` in one round trip, on one connection to the node that owns `key`;
    their replies in order, an error reply as its exception. A connection failure raises."""
    if isinstance(client, aredis.RedisCluster):
        return await _acluster_send(client, key, commands)
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


async def _acluster_send(
    client: aredis.RedisCluster, key: str, commands: Sequence[Command]
) -> list[Any]:
    if client._initialize:  # redis-py's own "learn the slots first" flag
        await client.initialize()
    node = client.get_node_from_key(key)
    if node is None:
        client._initialize = True
        raise RedisClusterException("no primary serves the session's slot now")
    queued = [PipelineCommand(i, *command) for i, command in enumerate(commands)]
    try:
        await node.execute_pipeline(queued)
    except (redis.ConnectionError, redis.TimeoutError):
        # What redis-py's cluster client does after a connection error: re-learn the layout
        # before the next command (a failed-over primary's slots now have another owner).
        client._initialize = True
        raise
    replies = [command.result for command in queued]
    if any(isinstance(reply, _LAYOUT_CHANGED) for reply in replies):
        client._initialize = True
    return replies


def send_together(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    """The sync twin of `asend_together`, for a standalone client."""
    with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]  # untyped in redis-py
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies


def raise_first_error(replies: Sequence[Any]) -> None:
    """Raise the first error reply, as redis-py's `raise_on_error` would."""
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
