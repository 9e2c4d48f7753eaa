"""HTTP level: `POST /v1/chat` under wrk, for the memory backend, the Redis backend, the common
way a user would write it instead (`bench/langchain_app.py`: `RunnableWithMessageHistory` over
langchain-community's `RedisChatMessageHistory`), a bare FastAPI endpoint (the framework's
ceiling) and the memory backend waiting for two empty round trips to the same redis-server
(`bench/handoff_app.py`: the floor of any store a turn waits on twice).

Each target is 3 uvicorn replicas (the image's command line, on loopback) behind its own nginx
doing round robin with keep-alive upstream connections; wrk drives nginx. All targets run at the
same time (those that talk to Redis on one redis-server) and the runs are interleaved (every round
runs every concurrency on every target, in a rotating order), so they share the machine's noise.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import bench_redis
from testsupport import Nginx, ProcessError, RedisServer, Replica, require_tool

TARGETS = ("memory", "redis", "langchain", "bare", "handoff")
LABELS = {
    "memory": "service, HISTORY_BACKEND=memory",
    "redis": "service, HISTORY_BACKEND=redis",
    "langchain": "RunnableWithMessageHistory + RedisChatMessageHistory",
    "bare": "bare FastAPI endpoint (ceiling)",
    "handoff": "service, HISTORY_BACKEND=memory + 2 empty round trips (PING) to redis-server",
    "redis_before": "service before this change, HISTORY_BACKEND=redis",
    "redis_step": "service at an intermediate revision, HISTORY_BACKEND=redis",
}
APPS = {
    "memory": "chat_history_k8s.main:app",
    "redis": "chat_history_k8s.main:app",
    "langchain": "bench.langchain_app:app",
    "bare": "bench.bare_app:app",
    "handoff": "bench.handoff_app:app",
    "redis_before": "chat_history_k8s.main:app",
    "redis_step": "chat_history_k8s.main:app",
}
# The targets that talk to the benchmark's redis-server (its CPU is measured with theirs).
REDIS_TARGETS = ("redis", "langchain", "handoff", "redis_before", "redis_step")
WRK_SCRIPT = Path(__file__).parent / "wrk" / "chat.lua"
# Histories are capped so that every run, whatever its length, sees the same per-turn work.
SERVICE_ENV = {"HISTORY_MAX_MESSAGES": "100", "HISTORY_WINDOW_MESSAGES": "20"}


@dataclass(frozen=True)
class HttpConfig:
    replicas: int
    concurrencies: tuple[int, ...]
    rounds: int
    seconds: int
    warmup_seconds: int


# 9 rounds: here one round's ratio of two targets at concurrency 16 ranges over +-20% around the
# median (the machine's speed moves within seconds), so the median needs that many.
FULL = HttpConfig(replicas=3, concurrencies=(1, 16, 64), rounds=9, seconds=4, warmup_seconds=2)
SMOKE = HttpConfig(replicas=1, concurrencies=(1, 4), rounds=1, seconds=1, warmup_seconds=1)


@dataclass
class Deployment:
    name: str
    replicas: list[Replica]
    nginx: Nginx
    store: RedisServer | None = None

    def cpu_seconds(self) -> dict[str, float]:
        """CPU used so far by the replicas, by redis-server and by nginx."""
        return {
            "replicas": sum(r.process.cpu_seconds() for r in self.replicas),
            "redis": self.store.process.cpu_seconds() if self.store else 0.0,
            "nginx": self.nginx.process.cpu_seconds(),
        }

    def context_switches(self) -> int:
        """Times the replicas left the CPU so far (to wait for I/O, or preempted)."""
        return sum(r.process.context_switches() for r in self.replicas)


def start_deployment(
    name: str,
    app: str,
    env: dict[str, str],
    config: HttpConfig,
    workdir: Path,
    stops: list[Callable[[], None]],
    source: Path | None = None,
) -> list[Replica]:
    """`config.replicas` replicas of `app`; with `source`, from that directory's copy of the
    package (the first entry of a `python -m` process's path is its working directory)."""
    replicas = []
    for i in range(config.replicas):
        replica = Replica(f"{name}-{i}", workdir, env, app=app)
        if source is not None:
            replica.process.cwd = source
        stops.append(replica.stop)
        replica.start()
        replicas.append(replica)
    return replicas


def front(
    name: str, replicas: list[Replica], workdir: Path, stops: list[Callable[[], None]]
) -> Deployment:
    for replica in replicas:
        # Up to 15 replicas import at once on a shared 2-core machine: give them time.
        path = "/healthz" if name in ("langchain", "bare") else "/readyz"
        replica.wait_ready(path, timeout_s=180)
    nginx = Nginx(workdir / name, [r.port for r in replicas], keepalive=128)
    stops.append(nginx.stop)
    nginx.start()
    return Deployment(name, replicas, nginx)


def wrk(
    url: str,
    *,
    connections: int,
    seconds: int,
    tag: str,
    sessions: int = 0,
    quota: int = 0,
    until: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """One wrk run over `sessions` session ids (default: one per connection); its BENCH_JSON
    line as a dict, plus rps and milliseconds.

    Fill mode: with `quota`, each wrk thread stops after its share of `quota` responses, and
    wrk itself is interrupted (SIGINT: it still prints its summary) once `until()` is true.
    """
    threads = 1 if connections == 1 else 2
    per_thread = max(1, (sessions or connections) // threads)
    argv = [
        require_tool("wrk"),
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        tag,
        str(per_thread),
    ]
    if quota:
        argv.append(str(-(-quota // threads)))
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            if until is not None:
                deadline = time.monotonic() + seconds
                while proc.poll() is None and time.monotonic() < deadline and not until():
                    time.sleep(0.25)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=seconds + 60)
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0:
        raise ProcessError(f"wrk failed ({proc.returncode}): {stderr or stdout}")
    line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise ProcessError(f"wrk printed no BENCH_JSON line:\n{stdout}\n{stderr}")
    out: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
    out["p50_ms"] = out["p50_us"] / 1000
    out["p99_ms"] = out["p99_us"] / 1000
    return out


@dataclass
class HttpResults:
    concurrencies: tuple[int, ...]
    seconds: int
    runs: dict[str, dict[int, list[dict[str, Any]]]] = field(default_factory=dict)
    redis_session_lengths: list[int] = field(default_factory=list)
    langchain_session_lengths: list[int] = field(default_factory=list)

    def median(self, target: str, c: int, metric: str) -> float:
        return float(statistics.median(run[metric] for run in self.runs[target][c]))

    def ratio(self, target: str, base: str, c: int, metric: str = "rps") -> float:
        """The median over rounds of `target`'s `metric` over `base`'s in the same round: runs
        of one round are seconds apart, so pairing them cancels the machine's drift between
        rounds (a ratio of the two medians would divide figures of different rounds)."""
        return float(statistics.median(t / b for t, b in self._paired(target, base, c, metric)))

    def difference(self, target: str, base: str, c: int, metric: str) -> float:
        """The median over rounds of `target`'s `metric` minus `base`'s in the same round."""
        return float(statistics.median(t - b for t, b in self._paired(target, base, c, metric)))

    def _paired(self, target: str, base: str, c: int, metric: str) -> list[tuple[float, float]]:
        """`metric` of `target` and of `base`, round by round."""
        pairs = zip(self.runs[target][c], self.runs[base][c], strict=True)
        return [(t[metric], b[metric]) for t, b in pairs]

    def has(self, metric: str) -> bool:
        """Whether every run measured `metric` (results saved by an older version may not)."""
        return all(metric in run for t in self.runs.values() for rs in t.values() for run in rs)

    def errors(self) -> int:
        return sum(
            r["non2xx"] + r["socket_errors"]
            for t in self.runs.values()
            for rs in t.values()
            for r in rs
        )


def export_source(rev: str, workdir: Path, name: str = "before-src") -> Path:
    """`chat_history_k8s/` as of git revision `rev`, in a directory of its own."""
    out = workdir / name
    out.mkdir(parents=True)
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", rev, "chat_history_k8s"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def run(
    config: HttpConfig,
    workdir: Path,
    log: Callable[[str], None],
    before: str | None = None,
    step: str | None = None,
) -> HttpResults:
    """With `before` (a git revision), the Redis backend as of that revision is a target too:
    what the changes since bought, measured side by side; with `step` as well, the Redis
    backend as of a revision in between (what the changes up to it bought, and after it).

    Every round runs on replicas started for it (and stopped after it): here one start of a
    process runs steadily faster or slower than the next by up to ~10% (identical deployments
    side by side differed that much over ten rounds), so a deployment kept for the whole run
    would lend its luck to every one of its target's figures; fresh ones make it noise that
    the median over rounds takes out."""
    stops: list[Callable[[], None]] = []
    targets = TARGETS + (("redis_before",) if before else ()) + (("redis_step",) if step else ())
    try:
        server = bench_redis(workdir / "redis-http")
        stops.append(server.stop)
        envs = {
            "memory": {**SERVICE_ENV, "HISTORY_BACKEND": "memory"},
            "redis": {**SERVICE_ENV, "HISTORY_BACKEND": "redis", "REDIS_URL": server.url},
            "langchain": {"REDIS_URL": server.url},
            "bare": {},
            "handoff": {
                **SERVICE_ENV,
                "HISTORY_BACKEND": "memory",
                "HANDOFF_REDIS_URL": server.url,
            },
        }
        envs["redis_before"] = envs["redis"] | {"REDIS_KEY_PREFIX": "before:"}
        envs["redis_step"] = envs["redis"] | {"REDIS_KEY_PREFIX": "step:"}
        sources = {
            "redis_before": export_source(before, workdir) if before else None,
            "redis_step": export_source(step, workdir, "step-src") if step else None,
        }
        results = HttpResults(config.concurrencies, config.seconds)
        for rnd in range(config.rounds):
            round_stops: list[Callable[[], None]] = []
            try:
                # Start every replica first, then wait: they import in parallel.
                where = workdir / f"round-{rnd}"
                where.mkdir()
                started = {
                    name: start_deployment(
                        name, APPS[name], envs[name], config, where, round_stops, sources.get(name)
                    )
                    for name in targets
                }
                deployments = {
                    name: front(name, started[name], where, round_stops) for name in targets
                }
                for name in REDIS_TARGETS:
                    if name in deployments:
                        deployments[name].store = server
                _round(rnd, config, deployments, results)
                if rnd == config.rounds - 1:
                    _check_redis_target(deployments["redis"])
            finally:
                for stop in reversed(round_stops):
                    stop()
            log(
                f"http: round {rnd + 1}/{config.rounds} done ({len(targets)} targets of "
                f"{config.replicas} replica(s) + nginx, started for it)"
            )
        _count_sessions(server, results)
        return results
    finally:
        for stop in reversed(stops):
            stop()


def _round(
    rnd: int, config: HttpConfig, deployments: dict[str, Deployment], results: HttpResults
) -> None:
    """One round: every target warmed up, then every concurrency on every target, in an order
    that rotates from round to round."""
    for name, deployment in deployments.items():
        results.runs.setdefault(name, {c: [] for c in config.concurrencies})
        wrk(
            deployment.nginx.url,
            connections=16,
            seconds=config.warmup_seconds,
            tag=f"warmup-r{rnd}-{name}",
        )
    for c in config.concurrencies:
        names = tuple(deployments)
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in order:
            before = deployments[name].cpu_seconds()
            switches = deployments[name].context_switches()
            result = wrk(
                deployments[name].nginx.url,
                connections=c,
                seconds=config.seconds,
                tag=f"r{rnd}-c{c}-{name}",
            )
            after = deployments[name].cpu_seconds()
            for part, used in after.items():
                result[f"cpu_ms_{part}"] = (used - before[part]) / result["requests"] * 1e3
            switches = deployments[name].context_switches() - switches
            result["switches_replicas"] = switches / result["requests"]
            results.runs[name][c].append(result)


def _check_redis_target(deployment: Deployment) -> None:
    reply = httpx.post(
        f"{deployment.nginx.url}/v1/chat",
        json={"session_id": "sanity", "message": "hi"},
        timeout=5,
    )
    if reply.status_code != 200:
        raise ProcessError(f"redis target answered {reply.status_code}: {reply.text}")


def _count_sessions(server: RedisServer, results: HttpResults) -> None:
    """Sanity: the Redis backend really kept histories, up to the cap."""
    client = server.client(socket_timeout=30)
    keys = [k for k in client.scan_iter(match="chat-history:r*", count=1000)][:50]
    results.redis_session_lengths = sorted(int(client.llen(k)) for k in keys)
    keys = [k for k in client.scan_iter(match="message_store:r*", count=1000)][:50]
    results.langchain_session_lengths = sorted(int(client.llen(k)) for k in keys)
    client.close()
