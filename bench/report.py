"""Turn benchmark results into docs/benchmarks.md (tables, targets) and a PNG plot."""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import checkpoint_report, http_bench, store_bench
from bench.checkpoint_bench import CheckpointResults
from bench.http_bench import HttpResults
from bench.memory_bench import MemoryResults
from bench.store_bench import StoreResults
from chat_history_k8s.config import Settings

PLOT_NAME = "benchmarks-store.png"


# -- saving and loading raw results ------------------------------------------------------------
def _int_keys(value: Any) -> Any:
    # JSON object keys are strings; history lengths and concurrencies were ints.
    if isinstance(value, dict):
        return {int(k) if k.isdigit() else k: _int_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_int_keys(v) for v in value]
    return value


@dataclass
class Results:
    """One run's results, a part None when it was not run."""

    env: dict[str, Any]
    store: StoreResults | None = None
    http: HttpResults | None = None
    memory: MemoryResults | None = None
    checkpoint: CheckpointResults | None = None


def save(path: Path, results: Results) -> None:
    parts: dict[str, Any] = {"env": results.env}
    for name in ("store", "http", "memory", "checkpoint"):
        part = getattr(results, name)
        if part is not None:
            parts[name] = dataclasses.asdict(part)
    path.write_text(json.dumps(parts, indent=1))


def load(path: Path) -> Results:
    parts = _int_keys(json.loads(path.read_text()))
    store = http = memory = checkpoint = None
    if "store" in parts:
        store = StoreResults(**parts["store"])
        store.lengths = tuple(store.lengths)
    if "http" in parts:
        http = HttpResults(**parts["http"])
        http.concurrencies = tuple(http.concurrencies)
    if "memory" in parts:
        memory = MemoryResults(**parts["memory"])
    if "checkpoint" in parts:
        checkpoint = CheckpointResults(**parts["checkpoint"])
        checkpoint.lengths = tuple(checkpoint.lengths)
        checkpoint.peers = tuple(checkpoint.peers)
    return Results(parts["env"], store, http, memory, checkpoint)


@dataclass
class Target:
    name: str
    measured: str
    met: bool
    why: str = ""


def n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


# -- targets -----------------------------------------------------------------------------------
CPU = "cpu_ms_replicas"  # the replicas' CPU per request, ms


def targets(store: StoreResults | None, http: HttpResults | None) -> list[Target]:
    out: list[Target] = []
    if store is not None:
        lengths = store.lengths
        trips = {L: store.counts["ours"][L]["round_trips"] for L in lengths}
        alt = {L: store.counts["langchain"][L]["round_trips"] for L in lengths}
        alt_ttl = {L: store.counts["langchain_ttl"][L]["round_trips"] for L in lengths}
        out.append(
            Target(
                "2 round trips per turn, at every history length",
                ", ".join(f"{n(trips[L], 1)} at {n(L)}" for L in lengths)
                + f" (alternative: {n(max(alt.values()), 0)} without TTL,"
                f" {n(max(alt_ttl.values()), 0)} with a TTL)",
                all(t == 2 for t in trips.values()),
            )
        )
        small, large = lengths[0], lengths[-1]
        flat = store.ratio("ours", large, "ours", small)
        # From the window's length on, every turn reads the same number of messages.
        full = [L for L in lengths if L >= store_bench.WINDOW]
        full_flat = store.ratio("ours", full[-1], "ours", full[0])
        raw_flat = store.ratio("raw", large, "raw", small)
        out.append(
            Target(
                f"turns/s at {n(large)} messages >= 0.8 x turns/s at {n(small)}",
                f"{flat:.2f} x ({n(store.median('ours', large))} vs "
                f"{n(store.median('ours', small))} turns/s); "
                f"{n(full[-1])} vs {n(full[0])} messages (window full at both): "
                f"{full_flat:.2f} x; raw redis-py {n(large)} vs {n(small)}: {raw_flat:.2f} x",
                flat >= 0.8,
                f"at {n(small)} messages the window holds only the {n(small)}-{n(small + 2)} "
                f"messages there are, from {n(store_bench.WINDOW)} "
                "on it holds 20, so the read decodes up to twice as many; with the window "
                "full the cost is flat",
            )
        )
        mid = 1000 if 1000 in lengths else lengths[len(lengths) // 2]
        vs_alt = store.ratio("ours", mid, "langchain")
        out.append(
            Target(
                f">= 3 x the alternative's turns/s at {n(mid)} messages",
                f"{vs_alt:.1f} x",
                vs_alt >= 3,
            )
        )
        fractions = {L: store.ratio("ours", L, "raw") for L in lengths}
        worst_length = min(fractions, key=lambda L: fractions[L])
        worst = fractions[worst_length]
        json_only = store.ratio("raw_json", worst_length, "raw")
        nocache = store.ratio("ours_nocache", worst_length, "raw")
        stock = (
            f"; with its commands sent through redis-py's `execute_command`, as the ceiling "
            f"sends its own, {store.ratio('ours_stock', worst_length, 'raw'):.0%} (its own "
            f"path skips redis-py's per-command layers), and {nocache:.0%} without its decode "
            "cache as well"
            if "ours_stock" in store.turns_per_s
            else f", {nocache:.0%} without its decode cache"
        )
        out.append(
            Target(
                ">= 70% of the raw redis-py ceiling",
                ", ".join(f"{f:.0%} at {n(L)}" for L, f in fractions.items()),
                worst >= 0.7,
                "the ceiling sends pre-encoded bytes and decodes nothing; at "
                f"{n(worst_length)} messages adding just the JSON codec (parsing only, no "
                f"message objects) brings raw redis-py to {json_only:.0%} of itself, and this "
                f"store (full message objects) reaches {worst:.0%}{stock}. "
                + (
                    "There every session gets one turn (so that no history grows by more "
                    "than ~10%): every read is a session's first in the process, which "
                    "caches nothing and decodes every message"
                    if store_bench.turns_per_session(worst_length) == 1
                    else "There a session's reads from its third on decode nothing (what it "
                    "read or wrote is cached): what is left is this client's own work per "
                    "turn, encoding the turn and finding the window in the cache (see the "
                    "profile)"
                ),
            )
        )
    if http is not None and 16 in http.concurrencies:
        ratio = http.ratio("redis", "memory", 16)
        cpu_memory = http.median("memory", 16, CPU)
        cpu_redis = http.median("redis", 16, CPU)
        extra = http.difference("redis", "memory", 16, CPU)
        common = http.ratio("langchain", "memory", 16)
        out.append(
            Target(
                "Redis backend HTTP throughput >= 0.8 x memory backend at concurrency 16",
                f"{ratio:.2f} x (replica CPU per request: {cpu_redis:.2f} ms vs "
                f"{cpu_memory:.2f} ms, ratio {http.ratio('memory', 'redis', 16, CPU):.2f}); the "
                "common way "
                f"(RunnableWithMessageHistory + RedisChatMessageHistory): {common:.2f} x"
                + _handoff(http),
                ratio >= 0.8,
                "the replicas are CPU-bound here (2 cores for the replicas, nginx, wrk and "
                "Redis), so throughput follows CPU per request, and a Redis turn still costs "
                f"the replica {extra:.2f} ms more CPU than a dict lookup (the median of the "
                "rounds' differences)"
                + _floor_share(http, extra)
                + ". With the collector tuned, the turn's commands multiplexed on one connection "
                "(a loop iteration's round trips in one write, replies parsed as they arrive) "
                "and a session's decoded messages shared by its reads, what a Redis turn adds "
                "is of two kinds: the two round trips, each a send, a wake-up of redis-server "
                "and another of the replica (a memory turn has no wake-up between request and "
                "response), which the floor peer pays alone; and the data, the window's bytes "
                "received and matched to the messages already decoded, each message another "
                "replica wrote decoded once per replica (with round robin every replica reads "
                "every session; the replica that wrote a message keeps it and decodes "
                "nothing), the turn encoded, the script run by redis-server" + _switches(http),
            )
        )
    return out


def _handoff(http: HttpResults) -> str:
    """The memory backend plus the two round trips carrying nothing (bench/handoff_app.py)."""
    if "handoff" not in http.runs:
        return ""
    handoff = http.ratio("handoff", "memory", 16)
    return (
        f"; the memory backend waiting for two empty round trips to the same redis-server "
        f"(the floor of any store a turn waits on twice, `bench/handoff_app.py`): "
        f"{handoff:.2f} x"
    )


def _floor_share(http: HttpResults, extra: float) -> str:
    """How much extra replica CPU the two empty round trips cost alone, and what share they are
    of the Redis turn's `extra`."""
    if "handoff" not in http.runs:
        return ""
    floor = http.difference("handoff", "memory", 16, CPU)
    share = (
        f": the round trips are {floor / extra:.0%} of the Redis turn's extra replica CPU in "
        "this run, the data the rest"
        if extra > 0
        else ""
    )
    return (
        f"; the floor peer's turn, waiting twice for another process with no data, "
        f"{floor:.2f} ms more{share}"
    )


def _switches(http: HttpResults) -> str:
    if not http.has("switches_replicas"):
        return ""
    memory = http.median("memory", 16, "switches_replicas")
    redis = http.median("redis", 16, "switches_replicas")
    return (
        f". Measured: a request made the replicas leave the CPU {redis:.1f} times (to wait, or "
        f"preempted) against {memory:.1f} for a memory request; on 2 busy cores every such "
        "switch also runs another process (redis-server, nginx, wrk, another replica) before "
        "it comes back, to caches it has cooled"
    )


# -- plot --------------------------------------------------------------------------------------
def plot(store: StoreResults, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = list(store.lengths)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"ours": "o-", "langchain": "s-", "raw": "^--", "raw_json": "v:"}
    for impl, style in styles.items():
        cost = [1e6 / store.median(impl, L) for L in lengths]
        left.plot(lengths, cost, style, label=store_bench.LABELS[impl])
    left.set(
        xscale="log",
        yscale="log",
        xlabel="history length (messages)",
        ylabel="microseconds per turn (median)",
        title="Load the context + append one turn",
    )
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    for impl, style in (("ours", "o-"), ("langchain", "s-")):
        read = [store.counts[impl][L]["bytes_read"] for L in lengths]
        right.plot(lengths, read, style, label=store_bench.LABELS[impl])
    right.set(
        xscale="log",
        yscale="log",
        xlabel="history length (messages)",
        ylabel="bytes read from Redis per turn",
        title="Bytes read per turn",
    )
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- markdown ----------------------------------------------------------------------------------
def store_section(store: StoreResults, plot_rel: str) -> list[str]:
    lines = [
        "## Store level: load the context + append one turn",
        "",
        f"One `redis-server` {store.redis_version} on loopback, one sync redis-py client per "
        "implementation, runs interleaved (see Method). Turns/s is the median of "
        f"{len(next(iter(next(iter(store.turns_per_s.values())).values())))} runs "
        "(min-max in brackets); the ratios are medians of per-repeat ratios (runs of one "
        "repeat are seconds apart, so pairing them cancels most of the machine's drift). "
        "Round trips are counted by a redis-py connection class that "
        "counts `send_packed_command` calls; commands by `INFO commandstats` deltas on the "
        "server; bytes are what crossed the client's socket.",
        "",
        "| history | implementation | turns/s | vs alternative | of raw ceiling "
        "| round trips | commands (server) | bytes read | bytes sent |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for L in store.lengths:
        for impl in (
            "ours", "ours_stock", "ours_copies", "ours_nocache", "ours_before", "langchain", "raw",
            "raw_json", "langchain_ttl",
        ):  # fmt: skip
            counts = store.counts.get(impl, {}).get(L)
            if impl not in store.turns_per_s and not counts:
                continue  # not measured in this run (saved results of an older one)
            if impl in store.turns_per_s:
                runs = store.turns_per_s[impl][L]
                med = statistics.median(runs)
                rate = f"{n(med)} [{n(min(runs))}-{n(max(runs))}]"
                vs_alt = f"{store.ratio(impl, L, 'langchain'):.1f} x"
                of_raw = f"{store.ratio(impl, L, 'raw'):.0%}"
            else:
                rate = vs_alt = of_raw = "(counted only)"
            if counts:
                mix = ", ".join(f"{c.upper()} {v:g}" for c, v in counts["command_mix"].items())
                cells = [
                    n(counts["round_trips"], 1),
                    f"{n(counts['commands'], 1)} ({mix})",
                    n(counts["bytes_read"]),
                    n(counts["bytes_sent"]),
                ]
            else:
                cells = ["same as raw"] + [""] * 3 if impl == "raw_json" else [""] * 4
            lines.append(
                f"| {n(L)} | {store_bench.LABELS[impl]} | {rate} | {vs_alt} | {of_raw} | "
                + " | ".join(cells)
                + " |"
            )
    rb = store.redis_benchmark
    rb_med = {k: statistics.median(r[k] for r in rb) for k in ("lrange", "rpush", "turn")}
    ours_small = store.median("ours", store.lengths[-1])
    lines += [
        "",
        f"`redis-benchmark` (C client, 1 connection, no pipelining; median of {len(rb)} runs): "
        f"`LRANGE key -20 -1` {n(rb_med['lrange'])}/s, "
        f"`RPUSH key human ai` {n(rb_med['rpush'])}/s, "
        f"so one of each back to back: {n(rb_med['turn'])} turns/s — this project's store reaches "
        f"{ours_small / rb_med['turn']:.0%} of that at {n(store.lengths[-1])} messages; raw "
        f"redis-py reaches {store.median('raw', store.lengths[-1]) / rb_med['turn']:.0%}. With 32 "
        f"connections the server does {n(store.redis_benchmark_c32['lrange'])} LRANGE/s and "
        f"{n(store.redis_benchmark_c32['rpush'])} RPUSH/s: Redis is not the bottleneck.",
        "",
        f"![cost per turn against history length]({plot_rel})",
        "",
    ]
    return lines


def profile_section(store: StoreResults) -> list[str]:
    p = store.profile
    lines = [
        "### Profile of a turn (this project's store)",
        "",
        f"cProfile over {n(p['turns'])} turns at {n(p['length'])} messages "
        "(`bench/store_bench.py:profile_ours`). Self time by where it is spent:",
        "",
        "| share | where |",
        "|---:|---|",
    ]
    lines += [f"| {share:.0%} | {name} |" for name, share in p["by_category"].items()]
    lines += [
        "",
        "Cumulative per turn (the profiler inflates Python-heavy parts; read the proportions):",
        "",
        "| µs per turn | call |",
        "|---:|---|",
    ]
    lines += [f"| {n(us)} | {name.strip()} |" for name, us in p["per_turn_us"].items()]
    share = p["by_category"]
    codec = sum(v for k, v in share.items() if k.startswith(("JSON", "langchain", "pydantic")))
    wire = sum(v for k, v in share.items() if k.startswith(("redis-py", "socket", "the commands")))
    per = p["per_turn_us"]
    decode = next(us for name, us in per.items() if name.strip().startswith("decode"))
    parts = {
        "turning stored JSON into langchain-core messages and back (JSON, langchain-core, "
        "pydantic)": codec,
        "the commands' path and the socket (redis-py, redis_sync.py: packing commands, "
        "parsing replies, waiting for Redis)": wire,
    }
    (top, top_share), (second, second_share) = sorted(parts.items(), key=lambda kv: -kv[1])
    lines += [
        "",
        f"**What dominates a turn:** {top} takes {top_share:.0%} of the self time, then "
        f"{second} {second_share:.0%}. Decoding the 20-message window "
        f"({n(decode)} µs) costs {decode / per['  LRANGE (redis-py, wire)']:.1f} x the LRANGE "
        f"that fetched it ({n(per['  LRANGE (redis-py, wire)'])} µs, round trip included). "
        "Redis itself is cheap: see redis-server's CPU per request in the HTTP table.",
        "",
    ]
    return lines


def short(subject: str, limit: int = 72) -> str:
    """A commit subject cut to `limit` characters."""
    return subject if len(subject) <= limit else subject[: limit - 1].rstrip() + "…"


def bought_section(
    store: StoreResults | None, http: HttpResults | None, env: dict[str, Any]
) -> list[str]:
    """What each change to the Redis path bought, from variants measured side by side."""
    before_rev = env.get("before_rev")
    lines = ["## What each change bought (before/after in this run)", ""]
    has_store = store is not None and "ours_before" in store.turns_per_s
    has_http = http is not None and "redis_before" in http.runs
    if not (has_store or has_http):
        return []
    if store is not None and has_store:
        lines += [
            "Store level, turns/s ratios (medians of per-repeat ratios, same run as the table "
            "below): *script* = the append as one EVALSHA instead of the MULTI pipeline (no "
            "decode cache on either side); *decode cache* = each stored message decoded once "
            "(`chat_history_k8s/history/codec.py`), every read getting copies of its own, on "
            "top of the script; *shared reads* = a session's reads sharing its decoded "
            "messages instead, as the service's turn reads (no copy per read), cached from "
            "its second read on (a first read decodes without caching anything), and from its "
            "third found by position in its last window (stored bytes compared, not hashed "
            "and looked up); *own "
            "commands* = the two commands sent by "
            "`chat_history_k8s.history.redis_sync.execute` on a connection it takes off the "
            "client's pool under the pool's lock, packed by hiredis and read by the "
            "connection's own hiredis reader, instead of redis-py's `execute_command` (its "
            "pool checkout, observability hooks, argument filters, event dispatch and "
            "per-command layers skipped; the columns before it all go through "
            "`execute_command`).",
            "",
            "| history | script | decode cache | shared reads | own commands "
            "| all: after / before | before, of raw ceiling | after, of raw ceiling |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        stock = "ours_stock" if "ours_stock" in store.turns_per_s else "ours"
        for L in store.lengths:
            own = f"{store.ratio('ours', L, stock):.2f} x" if stock != "ours" else "-"
            lines.append(
                f"| {n(L)} | {store.ratio('ours_nocache', L, 'ours_before'):.2f} x "
                f"| {store.ratio('ours_copies', L, 'ours_nocache'):.2f} x "
                f"| {store.ratio(stock, L, 'ours_copies'):.2f} x "
                f"| {own} "
                f"| {store.ratio('ours', L, 'ours_before'):.2f} x "
                f"| {store.ratio('ours_before', L, 'raw'):.0%} "
                f"| {store.ratio('ours', L, 'raw'):.0%} |"
            )
        mem = store.decode_cache
        if mem:
            lines += [
                "",
                f"The decode cache's price: full (its default {n(mem['entries'])} messages, each "
                f"~450 B stored), it holds {mib(mem['bytes'])} per process "
                f"({n(mem['per_entry'])} B per message: the stored bytes as the key and the "
                "decoded message; tracemalloc). Its hit rate follows the window: a turn reads "
                "the 18 messages it read last turn and the 2 it wrote, which the process kept "
                "when it encoded them (no decode at all).",
            ]
            if "kept" in mem:
                lines[-1] += (
                    f" Appended messages not read back yet are kept up to {n(mem['kept'])} "
                    f"(a quarter of the cache): {mib(mem['kept_bytes'])} when full."
                )
            if "scopes" in mem:
                lines[-1] += (
                    f" The sessions read are remembered up to {n(mem['scopes'])} (a session is "
                    f"cached from its second read on): {mib(mem['scopes_bytes'])} when full."
                )
        lines.append("")
    if http is not None and has_http:
        lines += [
            f"HTTP level: the service as of `{before_rev}` (before these changes, "
            "`python -m bench.run --before REV` runs it from a `git archive` of that revision) "
            "as a fifth target, on the same redis-server, measured in the same rotation.",
            "",
            "| concurrency | req/s before | req/s after | after / before "
            "| replica CPU ms/req before | after | before, x memory | after, x memory |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in http.concurrencies:
            b, a = http.median("redis_before", c, "rps"), http.median("redis", c, "rps")
            lines.append(
                f"| {c} | {n(b)} | {n(a)} | {http.ratio('redis', 'redis_before', c):.2f} x "
                f"| {http.median('redis_before', c, CPU):.2f} "
                f"| {http.median('redis', c, CPU):.2f} "
                f"| {http.ratio('redis_before', 'memory', c):.2f} x "
                f"| {http.ratio('redis', 'memory', c):.2f} x |"
            )
        lines.append("")
    if http is not None and has_http and "redis_step" in http.runs:
        c16 = 16 if 16 in http.concurrencies else http.concurrencies[-1]
        lines += [
            f"Step by step at concurrency {c16} (the same run; a sixth target runs the service "
            "as of an intermediate revision, `--step REV`):",
            "",
            "| the Redis backend as of | req/s | x memory | replica CPU ms/req "
            "| redis-server CPU ms/req |",
            "|---|---:|---:|---:|---:|",
        ]
        for target, label in (
            ("redis_before", f"`{before_rev}` {short(env.get('before_subject', ''))}"),
            ("redis_step", f"`{env.get('step_rev')}` {short(env.get('step_subject', ''))}"),
            ("redis", "this revision"),
        ):
            rps = http.median(target, c16, "rps")
            lines.append(
                f"| {label} | {n(rps)} | {http.ratio(target, 'memory', c16):.2f} x "
                f"| {http.median(target, c16, CPU):.2f} "
                f"| {http.median(target, c16, 'cpu_ms_redis'):.3f} |"
            )
        lines.append("")
    return lines


def http_section(http: HttpResults, replicas: int) -> list[str]:
    rounds = len(http.runs["redis"][http.concurrencies[0]])
    lines = [
        "## HTTP level: `POST /v1/chat`",
        "",
        f"Each target: {replicas} uvicorn replica(s) started with the image's command line "
        "(access log on), behind its own nginx (round robin, keep-alive upstreams); wrk "
        f"drives nginx for {http.seconds} s per run, median of {rounds} interleaved runs (a "
        "ratio, *vs* or *x* another target, is the median of the per-round ratios: the runs "
        "of a round are seconds apart, rounds minutes), each "
        "round on replicas and nginx started for it (one start of a process runs steadily "
        "faster or slower than the next here, by up to ~10%: a deployment kept for the whole "
        "run would lend its luck to all of its target's figures)."
        " Each connection has its own session (history grows turn after "
        "turn, capped at HISTORY_MAX_MESSAGES=100, window 20). CPU per request is the "
        "replicas' (and redis-server's) user+system CPU time over the run divided by requests;"
        " context switches per request, the times the replicas' threads left the CPU over the "
        "run (to wait for I/O, or preempted: `/proc/PID/task/*/status`) divided by requests.",
        "",
        "| concurrency | target | req/s | p50 ms | p99 ms | vs memory | vs bare "
        "| replica CPU ms/req | redis-server CPU ms/req | replica context switches/req "
        "| errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def switched(target: str, c: int) -> str:
        if not http.has("switches_replicas"):
            return ""
        return f"{http.median(target, c, 'switches_replicas'):.1f}"

    for c in http.concurrencies:
        for target in http.runs:
            rps = http.median(target, c, "rps")
            errors = sum(r["non2xx"] + r["socket_errors"] for r in http.runs[target][c])
            redis_cpu = (
                f"{http.median(target, c, 'cpu_ms_redis'):.3f}"
                if target in http_bench.REDIS_TARGETS
                else ""
            )
            lines.append(
                f"| {c} | {http_bench.LABELS[target]} | {n(rps)} "
                f"| {http.median(target, c, 'p50_ms'):.1f} "
                f"| {http.median(target, c, 'p99_ms'):.1f} "
                f"| {http.ratio(target, 'memory', c):.2f} x "
                f"| {http.ratio(target, 'bare', c):.2f} x "
                f"| {http.median(target, c, CPU):.2f} | {redis_cpu} "
                f"| {switched(target, c)} | {errors} |"
            )
    lens = http.redis_session_lengths
    if lens:
        lines += [
            "",
            f"Redis sessions after the runs hold {min(lens)}-{max(lens)} messages "
            "(capped at 100), so the Redis backend really kept every history.",
        ]
    lens = http.langchain_session_lengths
    if lens:
        lines += [
            "",
            f"The langchain-community peer's sessions hold {min(lens)}-{max(lens)} messages "
            "(no cap: each of its turns read, and gave the model, the whole history so far, "
            "and built a new Redis client as its `get_session_history` factory does).",
        ]
    lines.append("")
    return lines


def request_profile_section(profiles: list[dict[str, Any]]) -> list[str]:
    by_backend = {p["backend"]: p for p in profiles}
    backends = list(by_backend)
    lines = [
        "### Profile of a request (one replica in-process under cProfile, wrk at concurrency 16)",
        "",
        "`bench/profile_http.py`. Cumulative µs per request in the parts of a chat turn "
        "(inflated by the profiler; compare the backends):",
        "",
        "| part | " + " | ".join(backends) + " |",
        "|---|" + "---:|" * len(backends),
    ]
    for label in next(iter(by_backend.values()))["breakdown_us"]:
        cells = " | ".join(n(by_backend[b]["breakdown_us"][label]) for b in backends)
        lines.append(f"| {label.strip()} | {cells} |")
    categories = list(next(iter(by_backend.values()))["by_category"])
    lines += [
        "",
        "Self time by where it is spent:",
        "",
        "| where | " + " | ".join(backends) + " |",
        "|---|" + "---:|" * len(backends),
    ]
    for cat in categories:
        cells = " | ".join(f"{by_backend[b]['by_category'].get(cat, 0):.0%}" for b in backends)
        lines.append(f"| {cat} | {cells} |")
    lines.append("")
    return lines


def memory_section(memory: MemoryResults) -> list[str]:
    lines = [
        "## Memory",
        "",
        "### Redis: bytes per stored message",
        "",
        "Sessions written by `RedisChatHistory.append_turn` (the service's encoding; the AI "
        "message carries a run id as the built-in model's replies do). `MEMORY USAGE` is "
        "exact (`SAMPLES 0`); `used_memory` delta also counts the key, its TTL entry and the "
        "allocator's slack.",
        "",
        "| sessions x messages | payload (text) B/msg | encoded JSON B/msg "
        "| MEMORY USAGE B/msg | used_memory delta B/msg | MEMORY USAGE / payload |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in memory.redis:
        lines.append(
            f"| {n(row['sessions'])} x {n(row['per_session'])} | {n(row['payload_per_message'])} "
            f"| {n(row['encoded_per_message'])} | {n(row['memory_usage_per_message'])} "
            f"| {n(row['used_memory_per_message'])} "
            f"| {row['memory_usage_per_message'] / row['payload_per_message']:.2f} x |"
        )
    b = memory.bounds
    lines += [
        "",
        "### A memory-backend replica: resident memory",
        "",
        "One replica per variant, filled over HTTP by wrk with the same turns spread over the "
        "same sessions. *bounded*: MEMORY_MAX_SESSIONS="
        f"{n(b['sessions'])}, HISTORY_MAX_MESSAGES={n(b['messages'])}; *unbounded*: caps "
        "lifted and no TTL (the naive in-process dict). Each turn is wrk's 117-character "
        "question and the built-in model's ~160-character answer. Held messages from "
        "`/metrics`; baseline is the replica's RSS after start-up and one forgotten turn.",
        "",
        "| variant | messages offered | messages held | RSS | growth over baseline "
        "| growth per held message |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    per_message = 0.0
    for row in memory.replicas:
        per = row["growth_per_held"]
        if row["variant"] == "unbounded" and per:
            per_message = per
        lines.append(
            f"| {row['variant']} | {n(row['offered'])} | {n(row['held'])} | {mib(row['rss'])} "
            f"| {mib(row['rss'] - row['baseline_rss'])} | {n(per) + ' B' if per else '-'} |"
        )
    defaults = Settings.model_fields
    sessions = defaults["memory_max_sessions"].default
    messages = defaults["history_max_messages"].default
    total = defaults["memory_max_messages"].default
    if not per_message:
        return [*lines, ""]
    lines += [
        "",
        f"The bounds bind: past them, RSS stops growing with traffic. Sessions and the "
        f"per-session cap alone (MEMORY_MAX_SESSIONS={n(sessions)} x "
        f"HISTORY_MAX_MESSAGES={n(messages)}) would allow {n(sessions * messages)} messages per "
        f"replica, about {sessions * messages * per_message / 2**30:,.0f} GiB at the "
        f"{n(per_message)} B per held message measured above: that stops a leak, not bloat. "
        f"So the total cap MEMORY_MAX_MESSAGES={n(total)} is what bounds a replica: about "
        f"{total * per_message / 2**20:,.0f} MiB by default.",
        "",
    ]
    return lines


def render(results: Results, *, plot_rel: str, checkpoint_plot_rel: str) -> str:
    env, store, http, memory = results.env, results.store, results.http, results.memory
    smoke, wall_seconds, http_replicas = env["smoke"], env["wall_seconds"], env["http_replicas"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench.sh` (`python -m bench.run`); do not edit by hand. "
        + ("**Smoke run: tiny sizes, figures meaningless.** " if smoke else "")
        + f"Run of {env['date']}, {wall_seconds:.0f} s wall time.",
        "",
        f"Machine: {env['cpus']} CPUs ({env['cpu_model']}), load average {env['load_before']} "
        f"before and {env['load_after']} after the run (the machine is shared with other "
        "jobs: absolute figures are noisy; every comparison below was measured side by side, "
        "interleaved, in one run). Versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + ".",
        "",
    ]
    found = targets(store, http)
    if found:
        lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        for t in found:
            verdict = "yes" if t.met else f"**no** — {t.why}" if t.why else "**no**"
            lines.append(f"| {t.name} | {t.measured} | {verdict} |")
        lines.append("")
    lines += bought_section(store, http, env)
    if store is not None:
        lines += store_section(store, plot_rel) + profile_section(store)
    if http is not None:
        lines += http_section(http, http_replicas)
    if env.get("profiles"):
        lines += request_profile_section(env["profiles"])
    if memory is not None:
        lines += memory_section(memory)
    if results.checkpoint is not None:
        lines += checkpoint_report.section(results.checkpoint, checkpoint_plot_rel)
    lines += METHOD
    return "\n".join(lines).rstrip() + "\n"


def checkpoint_block(text: str) -> str | None:
    """The checkpoint part's section in a rendered report, markers included, if it has one."""
    begin, end = text.find(checkpoint_report.BEGIN), text.find(checkpoint_report.END)
    if begin < 0 or end < begin:
        return None
    return text[begin : end + len(checkpoint_report.END)]


def splice_checkpoint(text: str, block: str) -> str:
    """`text` with its checkpoint section replaced by `block`, or `block` inserted before the
    Method section when it has none: how a run of that part alone updates an existing report
    without dropping the other parts' figures."""
    old = checkpoint_block(text)
    if old is not None:
        return text.replace(old, block)
    at = text.find("\n## Method")
    at = len(text) if at < 0 else at + 1
    return text[:at] + block + "\n\n" + text[at:]


METHOD = [
    "## Method",
    "",
    "- A *turn* is what the chat handler does with its history: load the context, append "
    "the (human, ai) pair. For this project: `get_window(20)` (one `LRANGE -20 -1`) + "
    "`append_turn([human, ai])` (one `EVALSHA` of the append script: RPUSH, LTRIM, EXPIRE), "
    "with the service's TTL and a cap above every length measured, and the process's decode "
    "cache as the service has it (each timed run's sessions are fresh, so a run starts with "
    "their preloaded messages undecoded). For langchain-community's "
    "`RedisChatMessageHistory`: `.messages` — its only read, the full history, which is "
    "what `RunnableWithMessageHistory` and its users load — then `.add_messages([human, "
    "ai])`, which its base class turns into one `LPUSH` per message (plus one `EXPIRE` each "
    "with `ttl=`). Its default (no TTL) is the row timed; the TTL variant is counted. Its "
    "constructor also opens a connection and sends `INFO cluster`; users who build one per "
    "request (the usual `get_session_history` factory) pay that on every turn, which is "
    "left out here: the alternative's figures are its best case.",
    "- *Raw ceiling*: the same `LRANGE` and `EVALSHA` issued with redis-py on "
    "pre-encoded bytes (so the ceiling got faster with the script too). *raw + JSON* adds "
    "`json.loads` of the window and `json.dumps` of the "
    "two message dicts, so `ours` minus `raw + JSON` is the cost of langchain-core message "
    "objects.",
    "- *Before* variants, to show what each change bought: `RedisChatHistory` with a "
    "disabled decode cache, and that with the append as the MULTI/RPUSH/LTRIM/EXPIRE/EXEC "
    "pipeline it was (`bench/store_bench.py`: `OursNoCache`, `OursBefore`); at the HTTP "
    "level, `--before REV` runs the service as of that revision as a fifth target, and "
    "`--step REV` one as of a revision in between as a sixth.",
    "- The store part runs in a process whose garbage collector is tuned as a replica's is "
    "(`chat_history_k8s/gc_tuning.py`: the startup heap frozen, the young threshold at "
    "10,000); every implementation, the ceiling included, runs under it.",
    "- Redis clients: `bench/client_bench.py` measures redis-py (hiredis and Python parsers), "
    "coredis and valkey-glide on the same two operations, MULTI pipeline against EVALSHA: "
    "[benchmarks-clients.md](benchmarks-clients.md).",
    "- Every timed run starts from fresh sessions preloaded (untimed) to the history length "
    "and spreads its turns over enough sessions that no history grows by more than ~10%. "
    "No two sessions or runs store the same bytes (as in real conversations), so a cache "
    "keyed by bytes gets no help from another session. Each repeat runs every "
    "implementation at every length in a rotating order, so they "
    "share the machine's noise; medians are reported.",
    "- HTTP: wrk with `bench/wrk/chat.lua`, 1 thread at concurrency 1 and 2 threads above. "
    "All the targets run at once and are measured in rotation. The bare endpoint "
    "(`bench/bare_app.py`) parses the same request model and returns the same response "
    "model, and touches nothing else. The common way (`bench/langchain_app.py`) is what a "
    "user would write instead: the same request and response models and the same built-in "
    "model under LangChain's `RunnableWithMessageHistory`, its `get_session_history` "
    "returning langchain-community's `RedisChatMessageHistory(session_id, url=...)` as "
    "LangChain's docs show it, on the same redis-server as the Redis backend. The floor "
    "(`bench/handoff_app.py`) is the service with the memory backend whose turn also waits "
    "for two round trips carrying nothing (`PING`) to that redis-server, where the Redis "
    "backend waits for its window read and its append, on the same multiplexed connection.",
    "- Reproduce: `scripts/bench.sh` (full, ~30 min, rewrites this file and "
    f"`docs/img/{PLOT_NAME}`, `docs/img/{checkpoint_report.PLOT_NAME}`); `scripts/bench.sh "
    "--only checkpoint` (~6 min) re-measures the checkpoint part and rewrites only its "
    "section; `scripts/bench.sh --smoke` (seconds, writes to a temporary directory, checks "
    "the counts); `python -m bench.profile_http --backend redis` profiles one replica under "
    "wrk.",
    "",
]
