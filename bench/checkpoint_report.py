"""The checkpoint part's section of docs/benchmarks.md and its plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.checkpoint_bench import CheckpointResults
from bench.checkpointers import LABELS, WINDOW

PLOT_NAME = "benchmarks-checkpoint.png"
# A partial run of this part replaces only what is between these lines (bench/run.py).
BEGIN = "<!-- checkpoint part: begin (bench/checkpoint_report.py) -->"
END = "<!-- checkpoint part: end -->"
AGENTS = ("redis", "memory", "sqlite", "postgres", "redis_delta")
STYLES = {
    "history": "k^--",
    "redis": "o-",
    "memory": "s-",
    "sqlite": "D-",
    "postgres": "v-",
    "redis_delta": "x:",
}


def n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def size(value: float) -> str:
    if value < 10_000:
        return f"{value:,.0f} B"
    if value < 10 * 2**20:
        return f"{value / 2**10:,.0f} KiB"
    return f"{value / 2**20:,.1f} MiB"


# -- plot --------------------------------------------------------------------------------------
def plot(results: CheckpointResults, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = list(results.lengths)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    for peer in results.peers:
        label = LABELS[peer]
        left.plot(
            lengths, [results.stored_bytes[peer][L] for L in lengths], STYLES[peer], label=label
        )
        right.plot(lengths, [results.median(peer, L) for L in lengths], STYLES[peer], label=label)
    left.set(
        xscale="log", yscale="log", xlabel="turns in the thread",
        ylabel="bytes stored per thread", title="Storage of one conversation",
    )  # fmt: skip
    right.set(
        xscale="log", yscale="log", xlabel="turns of history before the turn",
        ylabel="turns/s (median, one at a time)", title="Speed of a turn",
    )  # fmt: skip
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- markdown ----------------------------------------------------------------------------------
def section(results: CheckpointResults, plot_rel: str) -> list[str]:
    lines = [BEGIN, *_intro(results, results.env), *_summary(results), *_speed(results)]
    lines += _storage(results, plot_rel)
    lines += [*_counts(results), *_rss(results), *_delta(results), *_official_redis(), END, ""]
    return lines


def _intro(results: CheckpointResults, env: dict[str, Any]) -> list[str]:
    v = results.versions
    return [
        "## LangGraph checkpointers against what users would pick instead",
        "",
        f"Part `checkpoint` (`bench/checkpoint_bench.py`, `bench/checkpointers.py`): run of "
        f"{env['date']}, {env['wall_seconds']:.0f} s wall time, load average "
        f"{env['load_before']} before and {env['load_after']} after"
        + (" — **smoke run: tiny sizes, figures meaningless**" if env.get("smoke") else "")
        + ". Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + ".",
        "",
        "The conversation of `HISTORY_API=checkpointer`: `create_agent` with the service's "
        "built-in model and no tools, one thread per conversation; each turn is a "
        "~200-character user message (ordinary words) and the model's ~240-character answer. "
        "As LangChain's docs show it, every message of the thread goes to the model (no "
        "trimming middleware). The peers, side by side in one process and one event loop, one "
        "turn at a time:",
        "",
        f"- **{LABELS['redis']}**: the service's settings (keeps 4 checkpoints, 7-day sliding "
        "TTL), every turn inside the thread's lease as the service runs it (2 of its round "
        "trips; no peer guards a thread against concurrent turns);",
        f"- **{LABELS['memory']}**, as LangChain's docs show it;",
        f"- **{LABELS['sqlite']}**: a file in the run's directory, WAL journal as the saver sets "
        "it up;",
        f"- **{LABELS['postgres']}**: `from_conn_string` + `setup()` as its docs show, against "
        f"a PostgreSQL {v.get('PostgreSQL', '')} server the run starts (Debian's package, "
        "`initdb` into a temporary directory, `testsupport.PostgresServer`) and removes;",
        f"- **{LABELS['redis_delta']}**: LangGraph's beta `DeltaChannel` "
        "(`_messages_delta_reducer`, a snapshot every 100 updates of the channel: every 50 "
        "turns) on this project's saver with `max_checkpoints=0`: retention would drop the "
        "ancestors a delta is rebuilt from (see below);",
        f"- baseline, **{LABELS['history']}**: `aget_window({WINDOW})` + the model + "
        "`aappend_turn`, the cap lifted so it keeps the whole conversation as the checkpointers "
        "do.",
        "",
        "No store waits for the disk (the benchmark measures software, not this machine's "
        "disk): redis-server without AOF, PostgreSQL with `fsync`, `synchronous_commit` and "
        "`full_page_writes` off, SQLite with `synchronous=OFF`.",
        "",
    ]


def _summary(results: CheckpointResults) -> list[str]:
    """What the tables below show, in numbers taken from them."""
    first, last = results.lengths[0], results.lengths[-1]
    rate = {peer: results.median(peer, last) for peer in results.peers}
    agents = [rate[p] for p in AGENTS]
    sent = {L: results.counts["redis"][L]["bytes_written"] for L in (first, last)}
    history_sent = max(results.counts["history"][L]["bytes_written"] for L in results.lengths)
    growth = {p: results.stored_bytes[p][last] / results.stored_bytes[p][first] for p in AGENTS}
    growth["history"] = (
        results.stored_bytes["history"][last] / results.stored_bytes["history"][first]
    )
    share = results.serde_share
    serde = (
        f" (LangGraph's serializer, over every message object, takes {share['redis']:.0%} of a "
        f"turn of this project's saver and {share['memory']:.0%} of InMemorySaver's at {n(last)} "
        "turns, by cProfile)"
        if {"redis", "memory"} <= set(share)
        else ""
    )
    lines = [
        "What it shows:",
        "",
        f"- **Speed.** With {n(last)} turns of history a checkpointer turn runs at "
        f"{n(min(agents))}-{n(max(agents))} turns/s; the message-history path at "
        f"{n(rate['history'])}, {results.ratio('history', last, 'redis'):,.0f} x this project's "
        "checkpointer. Every agent turn loads the thread's whole message list and stores it "
        f"again{serde}: this project's saver sends {size(sent[first])} per turn at "
        f"{n(first)} turns and {size(sent[last])} at {n(last)}. The history path reads a "
        f"{WINDOW}-message window and appends two messages: at most {size(history_sent)} sent "
        "per turn, at any length.",
        f"- **Among checkpointers**, at {n(last)} turns: this project's runs at "
        f"{results.ratio('redis', last, 'sqlite'):.1f} x AsyncSqliteSaver's turns/s and "
        f"{results.ratio('redis', last, 'postgres'):.1f} x AsyncPostgresSaver's; InMemorySaver, "
        f"which does no I/O, at {results.ratio('memory', last, 'redis'):.2f} x this project's.",
        f"- **Storage** per thread, from {n(first)} to {n(last)} turns ({last / first:,.0f} x "
        f"the turns): this project's checkpointer x {growth['redis']:,.0f} and the history "
        f"x {growth['history']:,.0f}; InMemorySaver x {growth['memory']:,.0f}, AsyncSqliteSaver "
        f"x {growth['sqlite']:,.0f}, AsyncPostgresSaver x {growth['postgres']:,.0f}: they keep "
        "every checkpoint and the copy of the message list each one references.",
    ]
    by_kind = {row["kind"]: row for row in results.rss}
    if {"checkpointer", "history"} <= set(by_kind):
        ck, hi = by_kind["checkpointer"], by_kind["history"]
        ck_growth, hi_growth = ck["rss"] - ck["baseline_rss"], hi["rss"] - hi["baseline_rss"]
        lines.append(
            f"- **Memory.** A process holding {n(ck['threads'])} threads x {n(ck['turns'])} "
            f"turns in InMemorySaver grows by {size(ck_growth)}, "
            f"{ck_growth / max(1, hi_growth):,.0f} x the message-history memory store's "
            f"{size(hi_growth)} for the same messages."
        )
    return [*lines, ""]


def _speed(results: CheckpointResults) -> list[str]:
    lengths = results.lengths
    reps = results.settings["repeats"]
    spread = ", ".join(
        f"{results.settings['turns'][L]} turns over {results.threads[L]} thread"
        f"{'s' if results.threads[L] > 1 else ''} at {n(L)}"
        for L in lengths
    )
    lines = [
        "### Turns per second",
        "",
        f"Median of {reps} runs (min-max in brackets). Every repeat runs every peer at every "
        f"length in a rotating order; a run is {spread}, so that no thread grows by more than "
        "~10% during the runs (threads made beforehand by running their turns, untimed). "
        "*vs ours*: the median of per-repeat ratios to RedisCheckpointSaver.",
        "",
        "| peer | " + " | ".join(f"{n(L)} turns of history" for L in lengths) + " |",
        "|---|" + "---:|" * len(lengths),
    ]
    for peer in results.peers:
        cells = []
        for L in lengths:
            runs = results.turns_per_s[peer][L]
            vs = "" if peer == "redis" else f", {results.ratio(peer, L, 'redis'):.2f} x ours"
            cells.append(f"{n(statistics.median(runs))} [{n(min(runs))}-{n(max(runs))}]{vs}")
        lines.append(f"| {LABELS[peer]} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _storage(results: CheckpointResults, plot_rel: str) -> list[str]:
    lengths = results.lengths
    first, last = lengths[0], lengths[-1]
    lines = [
        "### Bytes stored per thread",
        "",
        "After N turns; the mean over the threads of that length. Redis (both savers and the "
        "history): `MEMORY USAGE <key> SAMPLES 0` summed over the thread's keys. InMemorySaver: "
        "the serialized bytes its dicts hold for the thread (checkpoints, metadata, pending "
        "writes, channel blobs; Python objects around them not counted — see RSS below). "
        "SQLite: pages in use (`page_count - freelist_count`, times `page_size`) after "
        "`PRAGMA wal_checkpoint(TRUNCATE)`, the difference over writing the threads of that "
        "length. PostgreSQL: `pg_total_relation_size` (heap, TOAST, indexes) of the three "
        "checkpoint tables, the same difference; large values are compressed there (pglz), and "
        "the model's answer quotes the user's message, which helps it.",
        "",
        "| peer | "
        + " | ".join(f"after {n(L)} turns" for L in lengths)
        + f" | x from {n(first)} to {n(last)} turns |",
        "|---|" + "---:|" * (len(lengths) + 1),
    ]
    for peer in results.peers:
        stored = results.stored_bytes[peer]
        cells = " | ".join(size(stored[L]) for L in lengths)
        lines.append(f"| {LABELS[peer]} | {cells} | {stored[last] / stored[first]:,.0f} x |")
    lines += [
        "",
        f"(Linear growth would be {last / first:,.0f} x.)",
        "",
        f"![bytes stored and turns/s against the thread's length]({plot_rel})",
        "",
    ]
    return lines


def _counts(results: CheckpointResults) -> list[str]:
    lengths = results.lengths
    turns = results.settings["count_turns"]
    what = {
        "round_trips": "round trips",
        "statements": "statements",
        "bytes_written": "bytes written",
        "bytes_read": "bytes read",
    }
    lines = [
        "### Per turn: round trips, statements, bytes written",
        "",
        f"The mean over {turns} more turns on a thread of each length, counted by witnesses "
        "outside the code under test. Redis: a redis-py connection class that counts "
        "`send_packed_command` calls (round trips) and the bytes that cross the socket "
        "(*written* = sent to Redis, reads included; *read* = received). PostgreSQL: "
        "statements from `pg_stat_statements` (the measuring queries left out; with its "
        "pipeline several are one round trip), bytes written = WAL generated "
        "(`pg_current_wal_insert_lsn` difference). SQLite: statements from the connection's "
        "trace callback, bytes written = the growth of its WAL file (emptied before, automatic "
        "checkpoints paused while counting: the pages it wrote, which a checkpoint later writes "
        "again into the database file). InMemorySaver: the growth of its serialized storage.",
        "",
        "| peer | counted | " + " | ".join(f"at {n(L)} turns" for L in lengths) + " |",
        "|---|---|" + "---:|" * len(lengths),
    ]
    for peer in results.peers:
        counts = results.counts[peer]
        for key, label in what.items():
            if key not in counts[lengths[0]]:
                continue
            cells = " | ".join(
                n(counts[L][key], 1)
                if key in ("round_trips", "statements")
                else size(counts[L][key])
                for L in lengths
            )
            lines.append(f"| {LABELS[peer]} | {label} | {cells} |")
    lines.append("")
    return lines


def _rss(results: CheckpointResults) -> list[str]:
    lines = [
        "### Resident memory of a memory-backend process",
        "",
        "Two child processes (`python -m bench.hold_threads`; the service cannot run "
        "`HISTORY_API=checkpointer` yet, so a process holding the threads stands in for a "
        "replica), each filled with the same turns, round robin over its threads: "
        "InMemorySaver under `create_agent`, and the message-history memory store with the "
        "service's default bounds (10,000 sessions, 1,000 messages each, 200,000 in all: "
        "they hold everything here). VmRSS from /proc after start-up and one forgotten turn "
        "(baseline), then once filled.",
        "",
        "| process | threads x turns | messages held | baseline RSS | RSS held "
        "| growth | growth per thread | serialized checkpoint bytes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"checkpointer": LABELS["memory"], "history": "message-history MemoryStore"}
    for row in results.rss:
        growth = row["rss"] - row["baseline_rss"]
        lines.append(
            f"| {names[row['kind']]} | {n(row['threads'])} x {n(row['turns'])} "
            f"| {n(row['messages'])} | {size(row['baseline_rss'])} | {size(row['rss'])} "
            f"| {size(growth)} | {size(growth / row['threads'])} "
            f"| {size(row['serialized']) if row['serialized'] else '-'} |"
        )
    lines.append("")
    return lines


def _delta(results: CheckpointResults) -> list[str]:
    rows = {row["max_checkpoints"]: row for row in results.delta}
    last = results.lengths[-1]
    lines = [
        "### DeltaChannel (beta) on RedisCheckpointSaver",
        "",
        "A conversation with the messages channel as a `DeltaChannel`, read back with "
        "`aget_state` after its turns:",
        "",
    ]
    for keep, row in sorted(rows.items(), reverse=True):
        trips = row["round_trips"]
        verdict = (
            "reads back whole"
            if row["whole"]
            else f"**does not read back whole**: {row['read_back']} messages of "
            f"{2 * row['turns']}, and in {row['turns_short']} of its turns the model saw fewer "
            "messages than the thread had"
        )
        lines.append(
            f"- `max_checkpoints={keep}`{' (the default)' if keep == 4 else ' (unbounded)'}, "
            f"{row['turns']} turns: {verdict}; round trips per turn {min(trips)} to "
            f"{max(trips)} (median {statistics.median(trips):g})."
        )
    delta, ours = "redis_delta", "redis"
    speed = results.ratio(delta, last, ours)
    stored = results.stored_bytes[delta][last] / results.stored_bytes[ours][last]
    lines += [
        "",
        "Reconstruction walks the parent chain back to the last snapshot, one `get_tuple` "
        "(one round trip here) per checkpoint: retention that keeps 4 checkpoints cuts that "
        "chain, and the saver then rebuilds the messages from whatever is left, silently. "
        "Unbounded, it reads back whole, but a turn's round trips grow with the distance to "
        "the last snapshot instead of staying fixed, and every checkpoint is kept. "
        f"At {n(last)} turns it runs at {speed:.2f} x the bounded saver's turns/s and stores "
        f"{stored:.2f} x its bytes per thread. ",
    ]
    wins = speed >= 1 and stored <= 1 and rows.get(4, {}).get("whole", False)
    lines[-1] += (
        "**It wins** on both and keeps the default retention."
        if wins
        else "**It does not win**: it needs unbounded retention"
        + (", is slower" if speed < 1 else "")
        + (", stores more" if stored > 1 else "")
        + " and gives up the fixed number of round trips per turn; the service keeps the "
        "plain messages channel."
    )
    lines.append("")
    return lines


def _official_redis() -> list[str]:
    return [
        "### The official Redis checkpointer",
        "",
        "`langgraph-checkpoint-redis` (0.5.2, tried once in a throwaway virtualenv, not a "
        "dependency) cannot run here: against Debian's redis-server 7.0 its `setup()` fails "
        "with `unknown command 'FT.INFO'` (no RediSearch), and with Debian's only module "
        "package, `redis-redisearch` 1.2.2, loaded it fails with `Could not parse field spec`: "
        "its indexes are `FT.CREATE ... ON JSON`, which needs RediSearch >= 2.2 and RedisJSON, "
        "neither of which Debian packages. It is not in the table for that reason.",
        "",
    ]
