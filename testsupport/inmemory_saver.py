"""What LangGraph's `InMemorySaver` holds, in serialized bytes: the checkpoint tests compare the
Redis checkpointer's footprint with it, and the benchmarks report it."""

from __future__ import annotations

from langgraph.checkpoint.memory import InMemorySaver


def inmemory_thread_bytes(saver: InMemorySaver, thread: str) -> int:
    """The serialized bytes an InMemorySaver holds for `thread` (checkpoints with their
    metadata, pending writes, channel blobs): what its dicts keep alive, objects not counted."""
    total = sum(
        len(cp[1]) + len(md[1])
        for checkpoints in saver.storage.get(thread, {}).values()
        for cp, md, _ in checkpoints.values()
    )
    total += sum(
        len(w[2][1]) for key, writes in saver.writes.items() if key[0] == thread
        for w in writes.values()
    )  # fmt: skip
    return total + sum(len(blob[1]) for key, blob in saver.blobs.items() if key[0] == thread)


def inmemory_bytes(saver: InMemorySaver) -> int:
    """The serialized bytes an InMemorySaver holds over every thread, including writes and blobs
    of threads that have no checkpoint (left)."""
    threads = (
        set(saver.storage) | {key[0] for key in saver.writes} | {key[0] for key in saver.blobs}
    )
    return sum(inmemory_thread_bytes(saver, thread) for thread in threads)
