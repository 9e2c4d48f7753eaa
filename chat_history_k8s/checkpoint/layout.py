"""Where a thread lives in Redis: a fixed set of keys that share one hash tag.

Every key of a thread is `<prefix>{<tag>}:<name>`, where `<tag>` is the thread id with `%`, `{`
and `}` percent-escaped (and `%` alone for the empty id). Redis Cluster hashes only what is
between the first `{` and the next `}`, so all of a thread's keys land in one slot and one Lua
script can touch them all; the escaping keeps the tag non-empty and free of a `}` that would
cut it short, and it is reversible, so an admin SCAN can name the threads it finds.

The set of keys is fixed (it never depends on the number of checkpoints), so every script
declares all of them up front, a sliding TTL is one EXPIRE per key, and deleting a thread is
one DEL. Inside them, checkpoints, blobs and writes are hash fields and sorted-set members
whose names start with `<checkpoint_ns>\\0`: NUL separates the parts of a name and therefore
may not appear in a namespace, a channel name or a task id.
"""

from __future__ import annotations

from dataclasses import dataclass

SEP = "\0"

# Order matters: the Lua scripts address the keys by position (chat_history_k8s/checkpoint/lua.py).
KEY_NAMES = ("cp", "info", "idx", "blobs", "writes", "widx", "fence", "lease")


def tag(thread_id: str) -> str:
    """The hash tag of a thread (injective: distinct threads never share keys)."""
    return thread_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D") or "%"


def untag(value: str) -> str:
    """The thread id back from its tag."""
    if value == "%":
        return ""
    return value.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


def checked(part: str, what: str) -> str:
    """`part` unchanged, or ValueError when it holds the separator."""
    if SEP in part:
        raise ValueError(f"{what} may not contain NUL: {part!r}")
    return part


@dataclass(frozen=True)
class ThreadKeys:
    """The keys of one thread under `prefix`, in the order the scripts expect them.

    - `cp`     HASH  `<ns>\\0<checkpoint_id>` -> the checkpoint record (codec.pack_record)
    - `info`   HASH  same field -> JSON `{"b": [<channel>\\0<version>, ...], "r": <run_id>}`,
               the blobs a checkpoint references and its run, read by the Lua scripts
    - `idx`    ZSET  same field as members, score 0: lexicographic = checkpoint id order
    - `blobs`  HASH  `<ns>\\0<channel>\\0<version>` -> a channel value (codec.pack_typed)
    - `writes` HASH  `<ns>\\0<checkpoint_id>\\0<task_id>\\0<idx>` -> a pending write
    - `widx`   ZSET  the `writes` fields, score 0, so one checkpoint's writes are a lex range
    - `fence`  STRING the lease counter (INCR on every acquire)
    - `lease`  STRING `<fence>:<nonce>` of the turn holding the thread, with its own PX expiry
    """

    prefix: str
    thread_id: str

    def key(self, name: str) -> str:
        return f"{self.prefix}{{{tag(self.thread_id)}}}:{name}"

    @property
    def all(self) -> list[str]:
        return [self.key(name) for name in KEY_NAMES]


def index_pattern(prefix: str) -> str:
    """A SCAN MATCH pattern for every thread's `idx` key under `prefix` (admin paths only)."""
    escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix)
    return f"{escaped}{{*}}:idx"


def thread_of_index_key(prefix: str, key: str) -> str:
    """The thread id of an `idx` key found by SCAN."""
    return untag(key[len(prefix) + 1 : -len("}:idx")])
