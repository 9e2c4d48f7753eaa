"""The saver's operations, written once for both sync and async clients (sans I/O).

Each operation is a generator that yields the Redis calls it needs (`Eval`, `Scan`, `Delete`)
and receives their replies; `RedisCheckpointSaver` drives it with a sync or an async client. The
per-turn operations (`put`, `put_writes`, `get_tuple`) yield exactly one call each; only admin
operations (`list` without a thread, `delete_for_runs`) SCAN.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from chat_history_k8s.checkpoint import codec, lua
from chat_history_k8s.checkpoint.layout import (
    SEP,
    ThreadKeys,
    checked,
    index_pattern,
    thread_of_index_key,
)
from chat_history_k8s.checkpoint.lease import LEASE_CONFIG_KEY

T = TypeVar("T")


@dataclass(frozen=True)
class Eval:
    script: lua.Script
    keys: list[str]
    args: list[str | bytes | int]


@dataclass(frozen=True)
class Scan:
    """Every key matching `match`, on every node (admin paths only)."""

    match: str


@dataclass(frozen=True)
class Delete:
    keys: list[str]


Call = Eval | Scan | Delete
Op = Generator[Call, Any, T]


@dataclass(frozen=True)
class Settings:
    """What the operations need from the saver."""

    prefix: str
    keep: int
    ttl_seconds: int
    lease_ms: int
    serde: SerializerProtocol

    def keys(self, thread_id: str) -> list[str]:
        return ThreadKeys(self.prefix, thread_id).all


def _target(config: RunnableConfig) -> tuple[str, str, str]:
    conf = config["configurable"]
    ns = checked(str(conf.get("checkpoint_ns") or ""), "checkpoint_ns")
    return str(conf["thread_id"]), ns, str(conf.get(LEASE_CONFIG_KEY) or "")


def put(
    s: Settings,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
) -> Op[RunnableConfig]:
    thread_id, ns, token = _target(config)
    metadata = get_serializable_checkpoint_metadata(config, metadata)
    refs = [
        codec.blob_ref(checked(ch, "channel"), v)
        for ch, v in checkpoint["channel_versions"].items()
    ]
    info = json.dumps({"b": refs, "r": str(metadata.get("run_id") or "")}, ensure_ascii=False)
    values = checkpoint["channel_values"]
    blobs: list[str | bytes | int] = []
    for channel, version in new_versions.items():
        if channel in values:  # absent: the channel is empty at this version, nothing to load
            blobs += [codec.blob_ref(channel, version), codec.pack_typed(s.serde, values[channel])]
    parent = str(config["configurable"].get("checkpoint_id") or "")
    record = codec.pack_record(s.serde, checkpoint, metadata, parent)
    args = [token, s.ttl_seconds, s.keep, ns, checkpoint["id"], record, info, *blobs]
    yield Eval(lua.PUT, s.keys(thread_id), args)
    return codec.thread_config(thread_id, ns, checkpoint["id"])


def put_writes(
    s: Settings,
    config: RunnableConfig,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
) -> Op[None]:
    thread_id, ns, token = _target(config)
    checkpoint_id = str(config["configurable"]["checkpoint_id"])
    args: list[str | bytes | int] = [token, s.ttl_seconds, s.keep, ns, checkpoint_id]
    for idx, (channel, value) in enumerate(writes):
        slot = WRITES_IDX_MAP.get(channel, idx)  # special channels: fixed negative slots
        write = codec.pack_write(s.serde, channel, value, task_path)
        args += [f"{checked(task_id, 'task_id')}{SEP}{slot}", write, "1" if slot < 0 else "0"]
    if len(args) > 5:
        yield Eval(lua.PUT_WRITES, s.keys(thread_id), args)


def get_tuple(s: Settings, config: RunnableConfig) -> Op[CheckpointTuple | None]:
    thread_id, ns, _ = _target(config)
    reply = yield Eval(lua.GET, s.keys(thread_id), [ns, get_checkpoint_id(config) or ""])
    return codec.build_tuple(s.serde, thread_id, reply) if reply else None


def list_(
    s: Settings,
    config: RunnableConfig | None,
    filter: dict[str, Any] | None,
    before: RunnableConfig | None,
    limit: int | None,
) -> Op[list[CheckpointTuple]]:
    """Newest first within each thread; two round trips per thread (records, then the values
    of those that match), one SCAN first when no thread is given."""
    if config is None:
        found = yield Scan(index_pattern(s.prefix))
        threads = sorted({thread_of_index_key(s.prefix, k) for k in found})
        ns: str | None = None
    else:
        threads = [str(config["configurable"]["thread_id"])]
        ns = config["configurable"].get("checkpoint_ns")
    only_id = get_checkpoint_id(config) if config else None
    before_id = get_checkpoint_id(before) if before else None
    results: list[CheckpointTuple] = []
    for thread_id in threads:
        if limit is not None and len(results) >= limit:
            break
        flat = yield Eval(lua.LIST, s.keys(thread_id), [ns or "", "1" if ns is None else "0"])
        records = sorted(
            ((bytes(m).decode().split(SEP), r) for m, r in zip(flat[::2], flat[1::2], strict=True)),
            key=lambda item: (item[0][1], item[0][0]),
            reverse=True,
        )
        wanted: list[str | bytes | int] = []
        for (m_ns, m_id), record in records:
            if (only_id and m_id != only_id) or (before_id and m_id >= before_id):
                continue
            if filter:
                metadata = codec.record_metadata(s.serde, record)
                if not all(metadata.get(k) == v for k, v in filter.items()):
                    continue
            wanted += [m_ns, f"{m_ns}{SEP}{m_id}"]
            if limit is not None and len(results) + len(wanted) // 2 >= limit:
                break
        if wanted:
            replies = yield Eval(lua.FETCH, s.keys(thread_id), wanted)
            results += [codec.build_tuple(s.serde, thread_id, r) for r in replies if r]
    return results


def delete_thread(s: Settings, thread_id: str) -> Op[None]:
    # The lease too: a turn still running on the deleted thread must not bring it back.
    yield Delete(s.keys(thread_id))


def delete_for_runs(s: Settings, run_ids: Sequence[str]) -> Op[None]:
    if not run_ids:
        return
    found = yield Scan(index_pattern(s.prefix))
    for thread_id in sorted({thread_of_index_key(s.prefix, k) for k in found}):
        yield Eval(lua.DELETE_RUNS, s.keys(thread_id), [str(r) for r in run_ids])


def prune(s: Settings, thread_ids: Sequence[str], strategy: str) -> Op[None]:
    if strategy not in ("keep_latest", "delete"):
        raise ValueError(f"unknown prune strategy {strategy!r}: keep_latest or delete")
    for thread_id in thread_ids:
        if strategy == "delete":
            yield from delete_thread(s, thread_id)
        else:
            yield Eval(lua.PRUNE, s.keys(thread_id), [1])


def copy_thread(s: Settings, source: str, target: str) -> Op[None]:
    """Merge a copy of `source` into `target` (two threads may live in two slots: a read
    there, then one atomic write here); retention then applies to the target."""
    hashes = yield Eval(lua.DUMP, s.keys(source), [])
    if not hashes[0]:
        return
    counts = [len(h) // 2 for h in hashes]
    pairs = [item for h in hashes for item in h]
    yield Eval(lua.LOAD, s.keys(target), [s.ttl_seconds, s.keep, *counts, *pairs])


def try_acquire(s: Settings, thread_id: str, nonce: str) -> Op[str | None]:
    token = yield Eval(lua.ACQUIRE, s.keys(thread_id), [nonce, s.lease_ms, s.ttl_seconds])
    return bytes(token).decode() if token is not None else None


def release(s: Settings, thread_id: str, nonce: str) -> Op[None]:
    yield Eval(lua.RELEASE, s.keys(thread_id), [nonce])
