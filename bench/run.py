"""Run the benchmarks and write docs/benchmarks.md (+ its plot).

    python -m bench.run                 # full run (~12 min): rewrites docs/benchmarks.md
    python -m bench.run --smoke         # tiny sizes (seconds), report in a temporary directory
    python -m bench.run --only store    # a subset: store, http, profile, memory, checkpoint
    python -m bench.run --only checkpoint   # updates only that section of docs/benchmarks.md

Every process it starts (redis-server, PostgreSQL, uvicorn replicas, nginx, wrk, the checkpoint
part's holders) listens on or talks to 127.0.0.1 only, and is stopped, with its temporary
directory removed, before it returns. The smoke mode also checks what is exact (round trips and
commands per turn, no HTTP errors, how storage grows) and exits non-zero when that is wrong.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import (
    checkpoint_bench,
    checkpoint_report,
    http_bench,
    memory_bench,
    profile_http,
    report,
    store_bench,
)
from bench.checkpoint_bench import CheckpointResults
from testsupport import ProcessError, require_tool

REPO_ROOT = Path(__file__).resolve().parent.parent
PARTS = ("store", "http", "profile", "memory", "checkpoint")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def environment() -> dict[str, Any]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    redis_version = (
        subprocess.run(
            [require_tool("redis-server"), "--version"], capture_output=True, text=True, check=True
        )
        .stdout.split()[2]
        .removeprefix("v=")
    )
    versions = {"Python": platform.python_version(), "redis-server": redis_version}
    for dist in ("redis", "langchain-core", "langchain-community", "fastapi", "uvicorn"):
        versions[dist] = importlib.metadata.version(dist)
    versions["wrk"] = subprocess.run(
        [require_tool("wrk"), "-v"], capture_output=True, text=True, check=False
    ).stdout.split()[1]
    return {
        "date": utc_now(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "versions": versions,
    }


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def smoke_checks(
    store: store_bench.StoreResults | None,
    http: http_bench.HttpResults | None,
    memory: memory_bench.MemoryResults | None,
    checkpoint: CheckpointResults | None = None,
) -> list[str]:
    """What must hold whatever the machine's speed; each failure as a sentence."""
    failures = [] if checkpoint is None else checkpoint_checks(checkpoint)
    if store is not None:
        for length in store.lengths:
            ours = store.counts["ours"][length]
            # LRANGE, EVALSHA and the script's RPUSH, LTRIM, EXPIRE (commandstats counts those).
            if ours["round_trips"] != 2 or ours["commands"] != 5:
                failures.append(
                    f"ours at {length}: {ours['round_trips']} round trips, "
                    f"{ours['commands']} commands (want 2 and 5)"
                )
            if store.counts["langchain"][length]["round_trips"] != 3:
                failures.append(f"langchain at {length}: not 3 round trips")
            if min(min(v[length]) for v in store.turns_per_s.values()) <= 0:
                failures.append(f"a turn rate at {length} is not positive")
    if http is not None:
        if http.errors():
            failures.append(f"{http.errors()} HTTP errors under load")
        if not http.redis_session_lengths or min(http.redis_session_lengths) < 2:
            failures.append(f"Redis sessions hold {http.redis_session_lengths} messages")
        if not http.langchain_session_lengths or min(http.langchain_session_lengths) < 2:
            failures.append(f"langchain peer sessions hold {http.langchain_session_lengths}")
    if memory is not None:
        cap = memory.bounds["sessions"] * memory.bounds["messages"]
        for row in memory.replicas:
            if row["variant"] == "unbounded" and row["held"] != row["offered"]:
                failures.append(f"unbounded replica holds {row['held']} of {row['offered']}")
            if row["variant"] == "bounded" and row["held"] > min(cap, row["offered"]):
                failures.append(f"bounded replica holds {row['held']} > its bounds")
    return failures


def checkpoint_checks(results: CheckpointResults) -> list[str]:
    """The checkpoint part's exact properties."""
    failures = []
    lengths = results.lengths
    trips = {L: results.counts["redis"][L]["round_trips"] for L in lengths}
    if set(trips.values()) != {8}:
        failures.append(f"RedisCheckpointSaver round trips per turn {trips} (want 8 at each)")
    history = {L: results.counts["history"][L]["round_trips"] for L in lengths}
    if set(history.values()) != {2}:
        failures.append(f"message-history round trips per turn {history} (want 2 at each)")
    stored = results.stored_bytes
    for small, large in itertools.pairwise(lengths):
        growth = large / small
        if stored["redis"][large] > 1.15 * growth * stored["redis"][small]:
            failures.append(
                f"RedisCheckpointSaver stores {stored['redis'][large]:.0f} B after {large} turns, "
                f"over 1.15 x {growth:g} x its {stored['redis'][small]:.0f} B after {small}"
            )
        if stored["memory"][large] <= growth * stored["memory"][small]:
            failures.append(f"InMemorySaver grows no faster than linearly from {small} to {large}")
    for row in results.delta:
        if row["max_checkpoints"] == 0 and not row["whole"]:
            failures.append("an unbounded DeltaChannel conversation does not read back whole")
    for peer, rates in results.turns_per_s.items():
        if min(min(runs) for runs in rates.values()) <= 0:
            failures.append(f"{peer}: a turn rate is not positive")
    held = {row["kind"]: row["messages"] for row in results.rss}
    offered = 2 * results.rss[0]["threads"] * results.rss[0]["turns"] if results.rss else 0
    if any(count != offered for count in held.values()):
        failures.append(f"RSS holders hold {held} messages, not {offered} each")
    return failures


def write_report(out: Path, results: report.Results, parts: list[str]) -> str:
    """docs/benchmarks.md (+ plots) in `out`. A run of the checkpoint part alone updates only
    its section of an existing report; any other run rewrites the file, carrying over the
    checkpoint section it did not measure."""
    if results.store is not None:
        report.plot(results.store, out / "img" / report.PLOT_NAME)
    if results.checkpoint is not None:
        checkpoint_report.plot(results.checkpoint, out / "img" / checkpoint_report.PLOT_NAME)
    text = report.render(
        results,
        plot_rel=f"img/{report.PLOT_NAME}",
        checkpoint_plot_rel=f"img/{checkpoint_report.PLOT_NAME}",
    )
    path = out / "benchmarks.md"
    existing = path.read_text() if path.exists() else None
    if existing is not None and parts == ["checkpoint"]:
        block = report.checkpoint_block(text)
        assert block is not None
        text = report.splice_checkpoint(existing, block)
    elif existing is not None and "checkpoint" not in parts:
        kept = report.checkpoint_block(existing)
        text = text if kept is None else report.splice_checkpoint(text, kept)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def render_saved(path: Path, out: Path) -> int:
    results = report.load(path)
    parts = [p for p in PARTS if getattr(results, p, None) is not None]
    write_report(out, results, parts)
    log(f"rendered {path} into {out / 'benchmarks.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="chat-history benchmarks")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; checks, no docs")
    parser.add_argument("--only", default=",".join(PARTS), help=",".join(PARTS))
    parser.add_argument("--out", type=Path, help="directory for benchmarks.md and img/")
    parser.add_argument("--save", type=Path, help="also write the raw results here (JSON)")
    parser.add_argument("--render", type=Path, help="measure nothing: render saved results")
    parser.add_argument(
        "--before",
        metavar="REV",
        help="http: also run the Redis backend as of this git revision (what a change bought)",
    )
    parser.add_argument(
        "--step",
        metavar="REV",
        help="http, with --before: also run the Redis backend as of a revision in between",
    )
    args = parser.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}: choose from {PARTS}")

    if args.render:
        return render_saved(args.render, args.out or REPO_ROOT / "docs")
    started = time.monotonic()
    env = environment()
    for key, rev in (("before", args.before), ("step", args.step)):
        if rev:
            env[f"{key}_rev"], env[f"{key}_subject"] = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%h%n%s", rev],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()[:2]
    env["load_before"] = load_average()
    mode = "smoke" if args.smoke else "full"
    log(f"{mode} run of {', '.join(parts)}; load average {env['load_before']}")
    store = http = memory = checkpoint = None
    profiles: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chat-history-bench-") as tmp:
        workdir = Path(tmp)
        try:
            if "store" in parts:
                config = store_bench.SMOKE if args.smoke else store_bench.FULL
                store = store_bench.run(config, workdir, log)
            if "http" in parts:
                http_config = http_bench.SMOKE if args.smoke else http_bench.FULL
                http = http_bench.run(http_config, workdir, log, before=args.before, step=args.step)
            if "profile" in parts:
                profiles = [
                    profile_http.profile(
                        backend,
                        seconds=1 if args.smoke else 4,
                        connections=4 if args.smoke else 16,
                        workdir=workdir,
                    )[0]
                    for backend in ("memory", "redis")
                ]
                log("profile: profiled a memory and a Redis replica under wrk")
            if "memory" in parts:
                memory_config = memory_bench.SMOKE if args.smoke else memory_bench.FULL
                memory = memory_bench.run(memory_config, workdir, log)
            if "checkpoint" in parts:
                part_env = {"date": utc_now(), "load_before": load_average()}
                part_started = time.monotonic()
                checkpoint_config = checkpoint_bench.SMOKE if args.smoke else checkpoint_bench.FULL
                checkpoint = checkpoint_bench.run(checkpoint_config, workdir, log)
                checkpoint.env = part_env | {
                    "load_after": load_average(),
                    "wall_seconds": time.monotonic() - part_started,
                    "smoke": args.smoke,
                }
        except (ProcessError, TimeoutError) as exc:
            log(f"ERROR: {exc}")
            return 1
        env["load_after"] = load_average()
        env["wall_seconds"] = time.monotonic() - started
        env["smoke"] = args.smoke
        env["http_replicas"] = (http_bench.SMOKE if args.smoke else http_bench.FULL).replicas
        env["profiles"] = profiles
        results = report.Results(env, store, http, memory, checkpoint)
        if args.save:
            report.save(args.save, results)
        out = args.out or (workdir / "report" if args.smoke else REPO_ROOT / "docs")
        print(write_report(out, results, parts))
        log(
            f"wrote {out / 'benchmarks.md'}"
            + (" (temporary)" if args.out is None and args.smoke else "")
        )
    failures = smoke_checks(store, http, memory, checkpoint)
    for failure in failures:
        log(f"CHECK FAILED: {failure}")
    log(f"{mode} run took {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
