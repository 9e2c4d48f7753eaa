"""LangGraph checkpointers for the service's `checkpointer` API, and per-thread turn serialization.

- `RedisCheckpointSaver`: plain Redis/Valkey >= 7 (no modules), bounded, sliding TTL, one hash
  tag per thread, one round trip per checkpointer call; its `alease`/`lease` serialize the
  turns of a thread across replicas with a fenced lease.
- `LocalThreadLocks`: the in-process equivalent for `InMemorySaver`.
- Errors: `ThreadBusy` and `LeaseLost`, both `HistoryUnavailable` (503 unless mapped).
"""

from service.checkpoint.lease import (
    LEASE_CONFIG_KEY,
    LeaseLost,
    LocalThreadLocks,
    ThreadBusy,
    ThreadLease,
)
from service.checkpoint.saver import RedisCheckpointSaver

__all__ = [
    "LEASE_CONFIG_KEY",
    "LeaseLost",
    "LocalThreadLocks",
    "RedisCheckpointSaver",
    "ThreadBusy",
    "ThreadLease",
]
