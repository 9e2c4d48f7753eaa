"""Store level: "load the context + append one turn", side by side on one redis-server.

Implementations, each with its own sync redis-py client (same settings) to the same server:

- `ours`: `RedisChatHistory.get_window(20)` + `append_turn([human, ai])`, configured like the
  service: cap and sliding TTL (the append script's LTRIM and EXPIRE; the cap raised above the
  longest history so nothing is trimmed away), and a session's reads sharing its decoded
  messages (`share_decoded`, as `RedisStore` builds its histories);
- `langchain`: langchain-community's `RedisChatMessageHistory` (its defaults: no TTL), used the
  way its users do: `.messages` (its only read: the full history) + `.add_messages([human, ai])`;
- `langchain_ttl`: the same with `ttl=` set (the sliding TTL ours has); counted only;
- `raw`: the same two Redis operations as `ours` (`LRANGE`, `EVALSHA` of its append script)
  issued with redis-py on pre-encoded bytes (the ceiling: no JSON, no message objects);
- `raw_json`: `raw` plus JSON decoding of the window and encoding of the two messages (to
  split the cost of `ours` between the wire, JSON, and langchain-core message objects);
- `ours_stock`, `ours_copies`, `ours_nocache`, `ours_before`: what each change to
  `RedisChatHistory` bought, measured side by side: `ours` with its commands sent through
  redis-py's `execute_command` (as before `chat_history_k8s.history.redis.execute`), that
  with every read getting copies of its own (the class's default), that with every stored
  message decoded on every read (no `DecodeCache`), and that with the append as it was before
  the script (a MULTI/RPUSH/LTRIM/EXPIRE/EXEC pipeline).

Runs are interleaved: every repeat runs every implementation at every history length, in a
rotating order. Each run uses fresh sessions preloaded (untimed) to the history length, and
spreads its turns over enough sessions that no history grows by more than ~10% during the run.
Every session's messages and every run's turns are stored bytes of their own, as in real
conversations: a cache keyed by bytes gets no hit from another session.
"""

from __future__ import annotations

import cProfile
import csv as csv_module
import gc
import json
import pstats
import statistics
import subprocess
import time
import tracemalloc
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, message_to_dict

from bench import bench_redis
from bench.counting import WireStats, calls_delta, command_calls, counted
from chat_history_k8s import gc_tuning
from chat_history_k8s.history.codec import DecodeCache
from chat_history_k8s.history.redis import APPEND_SCRIPT, APPEND_SHA, RedisChatHistory
from chat_history_k8s.history.redis_wait import raise_first_error, send_together
from testsupport import LOOPBACK, RedisServer, require_tool

WINDOW = 20  # the service's HISTORY_WINDOW_MESSAGES default
TTL_SECONDS = 7 * 24 * 3600  # the service's HISTORY_TTL_SECONDS default
CAP = 1_000_000  # above every history length measured: LTRIM is sent but trims nothing

# A realistic turn: a short question and a longer answer, plain text.
HUMAN_TEXT = (
    "Could you remind me what we decided about the retention policy for the chat "
    "logs, and whether it applies to EU users? "
)[:120]
AI_TEXT = (
    "We agreed to keep conversation history for seven days after the last message, with a "
    "sliding expiry, and to cap each session at one thousand messages. The policy applies to "
    "every region, EU users included; exports go through the same pipeline and are deleted "
    "with the session. If you need a longer window for an audit, we can raise the TTL for "
    "that tenant only, but that needs a ticket and sign-off from the data protection team."
)[:480]

IMPLS = (
    "ours",
    "langchain",
    "raw",
    "raw_json",
    "ours_stock",
    "ours_copies",
    "ours_nocache",
    "ours_before",
)
LABELS = {
    "ours": "this project: RedisChatHistory, as the service reads (shared)",
    "ours_stock": "RedisChatHistory, commands through redis-py's execute_command",
    "ours_copies": "RedisChatHistory, every read its own copies (its default)",
    "ours_nocache": "RedisChatHistory without its decode cache",
    "ours_before": "RedisChatHistory before (no decode cache, MULTI pipeline)",
    "langchain": "langchain-community RedisChatMessageHistory",
    "langchain_ttl": "langchain-community RedisChatMessageHistory(ttl=7d)",
    "raw": "raw redis-py, same 2 operations (ceiling)",
    "raw_json": "raw redis-py + JSON codec",
}


@dataclass(frozen=True)
class StoreConfig:
    lengths: tuple[int, ...]
    repeats: int
    turns: Callable[[str, int], int]  # turns per timed run, by implementation and length
    count_turns: int
    profile_turns: int
    profile_length: int
    rb_requests: int  # per redis-benchmark run


def _full_turns(impl: str, length: int) -> int:
    if impl.startswith("langchain"):
        # It reads the whole history every turn: ~2 ms at 10 messages, ~0.3 s at 10,000.
        return {10: 300}.get(length, max(3, 30_000 // length))
    return 500


FULL = StoreConfig(
    lengths=(10, 1000, 10_000),
    repeats=7,
    turns=_full_turns,
    count_turns=10,
    profile_turns=1500,
    profile_length=1000,
    rb_requests=20_000,
)
SMOKE = StoreConfig(
    lengths=(10, 100),
    repeats=2,
    turns=lambda impl, length: 20,
    count_turns=3,
    profile_turns=50,
    profile_length=100,
    rb_requests=500,
)


def make_pair(i: int, where: str = "") -> list[BaseMessage]:
    """Turn `i`: shaped like what the service stores (the model's reply carries a run id). With
    `where` (a session or a run), stored bytes that nothing else has, as in real conversations:
    the same bytes in every session would flatter a cache keyed by bytes."""
    tag = f"#{i} {where}" if where else f"#{i}"
    run_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{where}/{i}") if where else uuid.UUID(int=i)
    return [
        HumanMessage(content=f"{HUMAN_TEXT} {tag}"),
        AIMessage(content=f"{AI_TEXT} {tag}", id=f"lc_run--{run_id}-0"),
    ]


def encode_ours(message: BaseMessage) -> bytes:
    # Same encoding as chat_history_k8s.history.redis (compact JSON, UTF-8).
    return json.dumps(message_to_dict(message), ensure_ascii=False, separators=(",", ":")).encode()


def encode_langchain(message: BaseMessage) -> bytes:
    # Same encoding as langchain-community's add_message.
    return json.dumps(message_to_dict(message)).encode()


# -- implementations ---------------------------------------------------------------------------
class Impl:
    """One way to do a turn; `sessions()` prepares handles, `turn(i, pair)` does one turn."""

    prefix: str
    newest_first = False  # langchain-community LPUSHes: its list is newest first

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def encode(self, message: BaseMessage) -> bytes:
        return encode_ours(message)

    def key(self, session: str) -> str:
        return f"{self.prefix}{session}"

    def sessions(self, ids: Sequence[str]) -> None:
        self.ids = list(ids)

    def prepare_pairs(self, pairs: list[list[BaseMessage]]) -> list[Any]:
        return pairs

    def turn(self, index: int, pair: Any) -> None:
        raise NotImplementedError


class MultiAppendHistory(RedisChatHistory):
    """`RedisChatHistory.append_turn` as it was before the script: MULTI, RPUSH, LTRIM, EXPIRE,
    EXEC sent together in one round trip, five replies to parse."""

    def append_turn(self, messages: Sequence[BaseMessage]) -> int:
        encoded = self._append_args(messages)[4:]
        commands: list[tuple[Any, ...]] = [
            ("MULTI",),
            ("RPUSH", self.key, *encoded),
            ("LTRIM", self.key, -self.max_messages, -1),
            ("EXPIRE", self.key, self.ttl_seconds),
            ("EXEC",),
        ]
        with self._round_trip("append"):
            replies = send_together(self._sync(), commands)
            raise_first_error(replies)
            return int(replies[-1][0]) - len(messages)


class StockCommands(redis.Redis):
    """A client with an `execute_command` of its own (redis-py's, called as is): the history's
    sync commands then take redis-py's per-command path, as before `redis.execute`."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]  # untyped in redis-py


class Ours(Impl):
    prefix = "bench:ours:"
    history_class: type[RedisChatHistory] = RedisChatHistory
    decode_cache: DecodeCache | None = None  # None: the process's, as the service uses it
    share_decoded = True  # as the service's turn reads (RedisStore)
    stock_commands = False  # True: through redis-py's execute_command (StockCommands)

    def sessions(self, ids: Sequence[str]) -> None:
        cache = {} if self.decode_cache is None else {"decode_cache": self.decode_cache}
        client = self.client
        if self.stock_commands:
            client = StockCommands(connection_pool=self.client.connection_pool)
        self.histories = [
            self.history_class(
                s,
                client=client,
                key_prefix=self.prefix,
                max_messages=CAP,
                ttl_seconds=TTL_SECONDS,
                share_decoded=self.share_decoded,
                **cache,  # type: ignore[arg-type]  # only decode_cache, a DecodeCache
            )
            for s in ids
        ]

    def turn(self, index: int, pair: Any) -> None:
        history = self.histories[index]
        history.get_window(WINDOW)
        history.append_turn(pair)


class OursStock(Ours):
    prefix = "bench:ours-stock:"
    stock_commands = True


class OursCopies(OursStock):
    prefix = "bench:ours-copies:"
    share_decoded = False  # RedisChatHistory's default: every read gets copies of its own


class OursNoCache(OursStock):
    prefix = "bench:ours-nocache:"
    decode_cache = DecodeCache(max_messages=0)


class OursBefore(OursNoCache):
    prefix = "bench:ours-before:"
    history_class = MultiAppendHistory


class LangChain(Impl):
    prefix = "bench:lc:"
    newest_first = True
    ttl: int | None = None

    def encode(self, message: BaseMessage) -> bytes:
        return encode_langchain(message)

    def sessions(self, ids: Sequence[str]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # langchain-community announces its sunset
            from langchain_community.chat_message_histories import RedisChatMessageHistory

        self.histories = []
        for s in ids:
            history = RedisChatMessageHistory(
                s, url=f"redis://{LOOPBACK}:{self._port()}/0", key_prefix=self.prefix, ttl=self.ttl
            )
            # Its constructor connected and sent `INFO cluster` on a client of its own; share
            # the benchmark's client instead (same settings, counted connections) so that a
            # turn is measured without that: the class's own code still issues every command.
            history.redis_client.close()
            history.redis_client = self.client
            self.histories.append(history)

    def _port(self) -> int:
        return int(self.client.connection_pool.connection_kwargs["port"])

    def turn(self, index: int, pair: Any) -> None:
        history = self.histories[index]
        history.messages  # noqa: B018 - the read its users do: the whole history
        history.add_messages(pair)


class LangChainTTL(LangChain):
    ttl = TTL_SECONDS


class Raw(Impl):
    prefix = "bench:raw:"

    def prepare_pairs(self, pairs: list[list[BaseMessage]]) -> list[Any]:
        return [[encode_ours(m) for m in pair] for pair in pairs]

    def turn(self, index: int, pair: Any) -> None:
        key = self.key(self.ids[index])
        self.client.lrange(key, -WINDOW, -1)
        self.append(key, pair)

    def append(self, key: str, encoded: Sequence[bytes | str]) -> None:
        try:
            self.client.evalsha(APPEND_SHA, 1, key, CAP, TTL_SECONDS, *encoded)
        except redis.exceptions.NoScriptError:
            self.client.eval(APPEND_SCRIPT, 1, key, CAP, TTL_SECONDS, *encoded)


class RawJson(Raw):
    prefix = "bench:rawjson:"

    def prepare_pairs(self, pairs: list[list[BaseMessage]]) -> list[Any]:
        return [[message_to_dict(m) for m in pair] for pair in pairs]

    def turn(self, index: int, pair: Any) -> None:
        key = self.key(self.ids[index])
        [json.loads(item) for item in self.client.lrange(key, -WINDOW, -1)]
        self.append(key, [json.dumps(d, ensure_ascii=False, separators=(",", ":")) for d in pair])


IMPL_CLASSES: dict[str, type[Impl]] = {
    "ours": Ours,
    "ours_stock": OursStock,
    "ours_copies": OursCopies,
    "ours_nocache": OursNoCache,
    "ours_before": OursBefore,
    "langchain": LangChain,
    "langchain_ttl": LangChainTTL,
    "raw": Raw,
    "raw_json": RawJson,
}


# -- one run -----------------------------------------------------------------------------------
def turns_per_session(length: int) -> int:
    """Turns a session of `length` messages gets in a run: no history grows by more than ~10%."""
    return max(1, length // 20)


def session_count(turns: int, length: int) -> int:
    """Sessions to spread `turns` over, `turns_per_session(length)` each."""
    return -(-turns // turns_per_session(length))


def preload(admin: redis.Redis, impl: Impl, ids: Sequence[str], length: int) -> None:
    """Fresh sessions of `length` messages (alternating human/ai), in `impl`'s own encoding."""
    with admin.pipeline(transaction=False) as pipe:
        for s in ids:
            history = [impl.encode(m) for i in range(length // 2) for m in make_pair(i, s)]
            if impl.newest_first:
                history.reverse()
            key = impl.key(s)
            pipe.delete(key)
            for start in range(0, len(history), 1000):
                pipe.rpush(key, *history[start : start + 1000])
        pipe.execute()


def drop(admin: redis.Redis, impl: Impl, ids: Sequence[str]) -> None:
    admin.delete(*[impl.key(s) for s in ids])


_run_counter = 0


def run_turns(admin: redis.Redis, impl: Impl, length: int, turns: int) -> float:
    """Seconds for `turns` turns on fresh sessions of `length` messages."""
    global _run_counter
    _run_counter += 1
    ids = [f"r{_run_counter}s{i}" for i in range(session_count(turns, length))]
    preload(admin, impl, ids, length)
    impl.sessions(ids)
    n = len(ids)
    pairs = impl.prepare_pairs([make_pair(k, f"r{_run_counter}") for k in range(turns)])
    gc.collect()
    started = time.perf_counter()
    for k in range(turns):
        impl.turn(k % n, pairs[k])
    elapsed = time.perf_counter() - started
    drop(admin, impl, ids)
    return elapsed


# -- counting pass -----------------------------------------------------------------------------
def count_per_turn(server: RedisServer, name: str, length: int, turns: int) -> dict[str, Any]:
    """Round trips, commands and bytes per turn, from the wire and from the server."""
    stats = WireStats()
    client = counted(server.client(socket_timeout=30), stats)
    admin = server.client(socket_timeout=30)
    impl = IMPL_CLASSES[name](client)
    # Session 0 takes the first turn (connecting: HELLO etc.) outside the count; the counted
    # turns are spread like the timed ones, so each sees a history of about `length`.
    spread = session_count(turns, length)
    ids = [f"count-{name}-{length}-{i}" for i in range(1 + spread)]
    preload(admin, impl, ids, length)
    impl.sessions(ids)
    impl.turn(0, impl.prepare_pairs([make_pair(0, "count")])[0])
    pairs = impl.prepare_pairs([make_pair(k, "count") for k in range(1, turns + 1)])
    before_wire, before_cmds = stats.snapshot(), command_calls(admin)
    for k, pair in enumerate(pairs):
        impl.turn(1 + k % spread, pair)
    wire, cmds = stats.minus(before_wire), calls_delta(before_cmds, command_calls(admin))
    drop(admin, impl, ids)
    client.close()
    admin.close()
    return {
        "round_trips": wire.round_trips / turns,
        "commands": sum(cmds.values()) / turns,
        "command_mix": {c: n / turns for c, n in cmds.items()},
        "bytes_read": wire.bytes_read / turns,
        "bytes_sent": wire.bytes_sent / turns,
    }


# -- redis-benchmark ---------------------------------------------------------------------------
def redis_benchmark(server: RedisServer, requests: int, clients: int = 1) -> dict[str, float]:
    """LRANGE -20 -1 on a 20-message list and RPUSH of a (human, ai) pair, from C, in rps."""
    admin = server.client(socket_timeout=30)
    admin.delete("bench:rb:window", "bench:rb:push")
    admin.rpush(
        "bench:rb:window", *[encode_ours(m) for i in range(WINDOW // 2) for m in make_pair(i)]
    )
    human, ai = (encode_ours(m).decode() for m in make_pair(0))
    out: dict[str, float] = {}
    for name, command in (
        ("lrange", ["LRANGE", "bench:rb:window", str(-WINDOW), "-1"]),
        ("rpush", ["RPUSH", "bench:rb:push", human, ai]),
    ):
        argv = [
            require_tool("redis-benchmark"),
            "-h",
            LOOPBACK,
            "-p",
            str(server.port),
            "-c",
            str(clients),
            "-n",
            str(requests),
            "--csv",
            *command,
        ]
        csv = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout
        # Columns: test, rps, avg, min, p50, p95, p99, max; the test name is the command line.
        row = next(csv_module.reader([csv.strip().splitlines()[-1]]))
        out[name] = float(row[-7])
        admin.delete("bench:rb:push")
    admin.delete("bench:rb:window")
    admin.close()
    # A turn is one of each, back to back: its rate is the harmonic combination.
    out["turn"] = 1.0 / (1.0 / out["lrange"] + 1.0 / out["rpush"])
    return out


# -- profile -----------------------------------------------------------------------------------
_CATEGORIES = (
    ("socket I/O and waiting for Redis", ("recv_into", "sendall", "'poll'", "select.poll")),
    ("redis-py (commands, pipeline, replies)", ("/redis/", "hiredis")),
    ("pydantic (message validation, model_dump)", ("pydantic",)),
    ("langchain-core messages (to/from dict)", ("langchain_core",)),
    ("JSON encode/decode", ("json",)),
    (
        "the commands' own path (redis_sync.py: pool checkout, checks, send, read)",
        ("/chat_history_k8s/history/redis_sync.py",),
    ),
    ("RedisChatHistory itself", ("/chat_history_k8s/",)),
)


def _category(func: tuple[str, int, str]) -> str:
    where = f"{func[0]}:{func[2]}"
    for name, needles in _CATEGORIES:
        if any(n in where for n in needles):
            return name
    return "other (interpreter, benchmark loop)"


def profile_ours(server: RedisServer, length: int, turns: int) -> dict[str, Any]:
    """cProfile of `turns` turns of `ours`: self time by category, and key cumulative times."""
    client, admin = server.client(socket_timeout=30), server.client(socket_timeout=30)
    impl = Ours(client)
    ids = [f"profile-{i}" for i in range(session_count(turns, length))]
    preload(admin, impl, ids, length)
    impl.sessions(ids)
    pairs = [make_pair(k, "profile") for k in range(turns)]
    impl.turn(0, make_pair(0, "profile"))
    profiler = cProfile.Profile()
    profiler.enable()
    for k in range(turns):
        impl.turn(k % len(ids), pairs[k])
    profiler.disable()
    drop(admin, impl, ids)
    client.close()
    admin.close()
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]  # real, but missing from typeshed's pstats
    total = sum(v[2] for v in raw.values())
    by_category: dict[str, float] = {}
    for func, (_cc, _nc, tottime, _ct, _callers) in raw.items():
        by_category[_category(func)] = by_category.get(_category(func), 0.0) + tottime

    def cumulative(file_part: str, func_name: str, caller: str | None = None) -> float:
        """Cumulative seconds of `func_name` (in a file whose path holds `file_part`); with
        `caller`, only of its calls from the function of that name."""
        return float(
            sum(
                (v[3] if caller is None else sum(c[3] for g, c in v[4].items() if g[2] == caller))
                for f, v in raw.items()
                if file_part in f[0] and f[2] == func_name
            )
        )

    execute = "chat_history_k8s/history/redis_sync.py", "execute"  # the sync commands' one path
    per_turn_us = {
        "get_window": cumulative("chat_history_k8s/history/redis.py", "get_window"),
        "  LRANGE (redis-py, wire)": cumulative(*execute, caller="get_window"),
        "  decode (DecodeCache: JSON and the message on a miss, a lookup on a hit)": cumulative(
            "chat_history_k8s/history/codec.py", "decode"
        ),
        "append_turn": cumulative("chat_history_k8s/history/redis.py", "append_turn"),
        "  encode (message_to_dict + JSON, the message kept)": cumulative(
            "chat_history_k8s/history/codec.py", "encode"
        ),
        "  EVALSHA (redis-py, wire)": cumulative(*execute, caller="append_turn"),
    }
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    return {
        "turns": turns,
        "length": length,
        "total_s": total,
        "by_category": {
            k: v / total for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])
        },
        "per_turn_us": {k: v / turns * 1e6 for k, v in per_turn_us.items()},
        "top_self": [
            {
                "function": f"{f[0].split('site-packages/')[-1]}:{f[1]}({f[2]})",
                "self_share": v[2] / total,
            }
            for f, v in top
        ],
    }


def decode_cache_memory() -> dict[str, float]:
    """Bytes a full default-sized DecodeCache holds (tracemalloc), with this benchmark's turns."""
    cache = DecodeCache()
    raw = [encode_ours(m) for i in range(cache.max_messages // 2) for m in make_pair(i)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(0, len(raw), WINDOW):
        cache.decode(raw[start : start + WINDOW])
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    # Then as many new messages appended (encoded) as it keeps until they are read back.
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(cache.max_messages, cache.max_messages * 2):
        for message in make_pair(i):
            cache.encode(message)
    gc.collect()
    kept_bytes = tracemalloc.get_traced_memory()[0] - before
    # Then more sessions read than it remembers (their keys as the service names them).
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(cache.max_messages):
        cache.decode([], f"chat:history:{uuid.uuid4()}")
    gc.collect()
    scopes_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    info = cache.info()
    return {
        "entries": info["entries"],
        "bytes": held,
        "per_entry": held / max(1, info["entries"]),
        "kept": info["kept"],
        "kept_bytes": kept_bytes,
        "scopes": info["scopes"],
        "scopes_bytes": scopes_bytes,
    }


# -- the whole store benchmark -----------------------------------------------------------------
@dataclass
class StoreResults:
    lengths: tuple[int, ...]
    turns_per_s: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    counts: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    redis_benchmark: list[dict[str, float]] = field(default_factory=list)
    redis_benchmark_c32: dict[str, float] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    redis_version: str = ""
    decode_cache: dict[str, float] = field(default_factory=dict)

    def median(self, impl: str, length: int) -> float:
        return statistics.median(self.turns_per_s[impl][length])

    def ratio(self, impl: str, length: int, other: str, other_length: int | None = None) -> float:
        """Median over repeats of turns/s of (impl, length) / (other, other_length): runs of
        one repeat are close in time, so pairing them cancels most of the machine's drift."""
        mine = self.turns_per_s[impl][length]
        theirs = self.turns_per_s[other][length if other_length is None else other_length]
        return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))


def run(config: StoreConfig, workdir: Any, log: Callable[[str], None]) -> StoreResults:
    # This process's collector tuned as a replica's is (every implementation runs under it).
    gc_tuning.tune()
    server = bench_redis(workdir / "redis-store")
    try:
        return _run(server, config, log)
    finally:
        server.stop()


def _run(server: RedisServer, config: StoreConfig, log: Callable[[str], None]) -> StoreResults:
    results = StoreResults(lengths=config.lengths, redis_version=server.version)
    admin = server.client(socket_timeout=30)
    clients = {name: server.client(socket_timeout=30) for name in IMPLS}
    impls = {name: IMPL_CLASSES[name](clients[name]) for name in IMPLS}
    for name in IMPLS:
        results.turns_per_s[name] = {length: [] for length in config.lengths}
        run_turns(admin, impls[name], config.lengths[0], 5)  # warm up: connect, import, JIT-less
    for rep in range(config.repeats):
        order = IMPLS[rep % len(IMPLS) :] + IMPLS[: rep % len(IMPLS)]
        for length in config.lengths:
            for name in order:
                turns = config.turns(name, length)
                elapsed = run_turns(admin, impls[name], length, turns)
                results.turns_per_s[name][length].append(turns / elapsed)
        results.redis_benchmark.append(redis_benchmark(server, config.rb_requests))
        log(f"store: repeat {rep + 1}/{config.repeats} done")
    results.redis_benchmark_c32 = redis_benchmark(server, config.rb_requests * 5, clients=32)
    for name in ("ours", "langchain", "langchain_ttl", "raw", "ours_before"):
        results.counts[name] = {
            length: count_per_turn(server, name, length, config.count_turns)
            for length in config.lengths
        }
    log("store: counted round trips, commands and bytes")
    results.profile = profile_ours(server, config.profile_length, config.profile_turns)
    log("store: profiled a turn")
    results.decode_cache = decode_cache_memory()
    for client in clients.values():
        client.close()
    admin.close()
    return results
