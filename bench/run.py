"""Run the benchmarks and write docs/benchmarks.md (+ its plot).

    python -m bench.run                 # full run (~10 min): rewrites docs/benchmarks.md
    python -m bench.run --smoke         # tiny sizes (seconds), report in a temporary directory
    python -m bench.run --only store    # a subset: store, http, memory (comma-separated)

Every process it starts (redis-server, uvicorn replicas, nginx, wrk) listens on or talks to
127.0.0.1 only, and is stopped, with its temporary directory removed, before it returns. The
smoke mode also checks what is exact (round trips and commands per turn, no HTTP errors) and
exits non-zero when that is wrong.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import http_bench, memory_bench, profile_http, report, store_bench
from testsupport import ProcessError, require_tool

REPO_ROOT = Path(__file__).resolve().parent.parent
PARTS = ("store", "http", "profile", "memory")


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
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "versions": versions,
    }


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def smoke_checks(
    store: store_bench.StoreResults | None,
    http: http_bench.HttpResults | None,
    memory: memory_bench.MemoryResults | None,
) -> list[str]:
    """What must hold whatever the machine's speed; each failure as a sentence."""
    failures = []
    if store is not None:
        for length in store.lengths:
            ours = store.counts["ours"][length]
            if ours["round_trips"] != 2 or ours["commands"] != 6:
                failures.append(
                    f"ours at {length}: {ours['round_trips']} round trips, "
                    f"{ours['commands']} commands (want 2 and 6)"
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
    if memory is not None:
        cap = memory.bounds["sessions"] * memory.bounds["messages"]
        for row in memory.replicas:
            if row["variant"] == "unbounded" and row["held"] != row["offered"]:
                failures.append(f"unbounded replica holds {row['held']} of {row['offered']}")
            if row["variant"] == "bounded" and row["held"] > min(cap, row["offered"]):
                failures.append(f"bounded replica holds {row['held']} > its bounds")
    return failures


def write_report(
    out: Path,
    env: dict[str, Any],
    store: store_bench.StoreResults | None,
    http: http_bench.HttpResults | None,
    memory: memory_bench.MemoryResults | None,
) -> str:
    if store is not None:
        report.plot(store, out / "img" / report.PLOT_NAME)
    text = report.render(
        env=env, store=store, http=http, memory=memory, plot_rel=f"img/{report.PLOT_NAME}"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.md").write_text(text)
    return text


def render_saved(path: Path, out: Path) -> int:
    env, store, http, memory = report.load(path)
    write_report(out, env, store, http, memory)
    log(f"rendered {path} into {out / 'benchmarks.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="chat-history benchmarks")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; checks, no docs")
    parser.add_argument("--only", default=",".join(PARTS), help=",".join(PARTS))
    parser.add_argument("--out", type=Path, help="directory for benchmarks.md and img/")
    parser.add_argument("--save", type=Path, help="also write the raw results here (JSON)")
    parser.add_argument("--render", type=Path, help="measure nothing: render saved results")
    args = parser.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}: choose from {PARTS}")

    if args.render:
        return render_saved(args.render, args.out or REPO_ROOT / "docs")
    started = time.monotonic()
    env = environment()
    env["load_before"] = load_average()
    mode = "smoke" if args.smoke else "full"
    log(f"{mode} run of {', '.join(parts)}; load average {env['load_before']}")
    store = http = memory = None
    profiles: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="chat-history-bench-") as tmp:
        workdir = Path(tmp)
        try:
            if "store" in parts:
                config = store_bench.SMOKE if args.smoke else store_bench.FULL
                store = store_bench.run(config, workdir, log)
            if "http" in parts:
                http_config = http_bench.SMOKE if args.smoke else http_bench.FULL
                http = http_bench.run(http_config, workdir, log)
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
        except (ProcessError, TimeoutError) as exc:
            log(f"ERROR: {exc}")
            return 1
        env["load_after"] = load_average()
        env["wall_seconds"] = time.monotonic() - started
        env["smoke"] = args.smoke
        env["http_replicas"] = (http_bench.SMOKE if args.smoke else http_bench.FULL).replicas
        env["profiles"] = profiles
        if args.save:
            report.save(args.save, env=env, store=store, http=http, memory=memory)
        out = args.out or (workdir / "report" if args.smoke else REPO_ROOT / "docs")
        print(write_report(out, env, store, http, memory))
        log(
            f"wrote {out / 'benchmarks.md'}"
            + (" (temporary)" if args.out is None and args.smoke else "")
        )
    failures = smoke_checks(store, http, memory)
    for failure in failures:
        log(f"CHECK FAILED: {failure}")
    log(f"{mode} run took {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
