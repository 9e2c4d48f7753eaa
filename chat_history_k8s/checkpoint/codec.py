"""Bytes in, bytes out: how checkpoints, channel values and writes are stored.

Values go through the saver's serde exactly as `InMemorySaver` uses it (one `dumps_typed` per
checkpoint, metadata, channel value and write), so any `SerializerProtocol` works, encrypted
ones included. What surrounds them is a length-prefixed frame of our own: no second
serialization pass over data that is already bytes. Lua never looks inside these values.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from chat_history_k8s.checkpoint.layout import SEP

_LEN = struct.Struct(">I")


def frame(parts: Sequence[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(p)) + p for p in parts)


def unframe(raw: bytes) -> list[bytes]:
    parts, at = [], 0
    while at < len(raw):
        (size,) = _LEN.unpack_from(raw, at)
        at += _LEN.size
        parts.append(raw[at : at + size])
        at += size
    return parts


def pack_typed(serde: SerializerProtocol, value: Any) -> bytes:
    kind, data = serde.dumps_typed(value)
    return frame([kind.encode(), data])


def unpack_typed(serde: SerializerProtocol, raw: bytes) -> Any:
    kind, data = unframe(raw)
    return serde.loads_typed((kind.decode(), data))


def pack_record(
    serde: SerializerProtocol, checkpoint: Checkpoint, metadata: CheckpointMetadata, parent: str
) -> bytes:
    """A checkpoint without its channel values (those are blobs), its metadata, its parent."""
    bare = {k: v for k, v in checkpoint.items() if k != "channel_values"}
    return frame([pack_typed(serde, bare), pack_typed(serde, metadata), parent.encode()])


def pack_write(serde: SerializerProtocol, channel: str, value: Any, task_path: str) -> bytes:
    return frame([channel.encode(), task_path.encode(), pack_typed(serde, value)])


def blob_ref(channel: str, version: Any) -> str:
    """How a checkpoint names the blob of one channel version (`info.b`, `blobs` fields)."""
    return f"{channel}{SEP}{version}"


def thread_config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def build_tuple(
    serde: SerializerProtocol, thread_id: str, record_reply: Sequence[Any]
) -> CheckpointTuple:
    """A `CheckpointTuple` from the Lua reply `[member, record, refs, blob values, write
    fields, write values]`; pending writes in `writes_sort_key` order, as the contract asks."""
    member, record, refs, blob_values, write_fields, write_values = record_reply
    ns, checkpoint_id = bytes(member).decode().split(SEP)
    bare_raw, metadata_raw, parent_raw = unframe(record)
    checkpoint = cast(Checkpoint, unpack_typed(serde, bare_raw))
    checkpoint["channel_values"] = {
        bytes(ref).decode().split(SEP)[0]: unpack_typed(serde, value)
        for ref, value in zip(refs, blob_values, strict=True)
        if value is not None  # a channel with no value at that version (e.g. cleared)
    }
    keyed: list[tuple[tuple[str, str, int], PendingWrite]] = []
    for field, raw in zip(write_fields, write_values, strict=True):
        if raw is None:
            continue
        task_id, idx = bytes(field).decode().split(SEP)[2:]
        channel, task_path, value = unframe(raw)
        write = (task_id, channel.decode(), unpack_typed(serde, value))
        keyed.append((writes_sort_key(task_path.decode(), task_id, int(idx)), write))
    keyed.sort(key=lambda item: item[0])
    parent = parent_raw.decode()
    return CheckpointTuple(
        config=thread_config(thread_id, ns, checkpoint_id),
        checkpoint=checkpoint,
        metadata=cast(CheckpointMetadata, unpack_typed(serde, metadata_raw)),
        parent_config=thread_config(thread_id, ns, parent) if parent else None,
        pending_writes=[write for _, write in keyed],
    )


def record_metadata(serde: SerializerProtocol, record: bytes) -> CheckpointMetadata:
    """Only the metadata of a record (what `list` filters on before fetching blobs)."""
    return cast(CheckpointMetadata, unpack_typed(serde, unframe(record)[1]))
