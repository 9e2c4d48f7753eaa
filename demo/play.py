"""The demo: one scripted conversation hops between replicas, once per history backend and
memory API (LangChain's `BaseChatMessageHistory`, and a LangGraph checkpointer under
`create_agent`), memory and Redis side by side for each API.

`python -m demo [--target local|kube]` (scripts/demo.sh runs it). Every number in the
tables is measured on the run: nothing is hard-coded.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from chat_history_k8s.hopcheck.client import Api, Turn
from testsupport.targets import Deployment, Target, TargetUnavailable, make_target
from testsupport.targets.base import BACKENDS, HISTORY_APIS, Backend, HistoryApi

NAME = "Ada"
QUESTION = "What is my name?"
COUNTED_TURNS = 20
ROUND_TRIPS = re.compile(r'^chat_history_redis_round_trips_total\{op="\w+"\} ([\d.e+]+)$', re.M)
# What keeps the history, per API and backend (the column headings).
STORES = {
    ("message-history", "memory"): "memory (in-process dict)",
    ("message-history", "redis"): "redis (one LIST/session)",
    ("checkpointer", "memory"): "memory (InMemorySaver)",
    ("checkpointer", "redis"): "redis (RedisCheckpointSaver)",
}
API_TITLES = {
    "message-history": "message-history API (BaseChatMessageHistory)",
    "checkpointer": "checkpointer API (LangGraph create_agent)",
}


@dataclass
class Row:
    """What the model saw on the turn after one event."""

    seen: int
    stored: int
    recalled: bool
    reply: str

    def __str__(self) -> str:
        memory = f"recalls {NAME}" if self.recalled else "forgot the name"
        return f"{self.seen} of {self.stored} msgs, {memory}"


@dataclass
class Result:
    backend: Backend
    history_api: HistoryApi
    description: str = ""
    rows: dict[str, Row] = field(default_factory=dict)
    served_by: list[str] = field(default_factory=list)
    round_trips_per_turn: float | None = None  # Redis only, from the replicas' /metrics


def progress(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)


def play(deployment: Deployment) -> Result:
    """The scripted conversation: introduce, hop, rolling restart, store restart."""
    result = Result(deployment.backend, deployment.history_api, deployment.description)
    label = f"{deployment.backend}/{deployment.history_api}"
    session = f"demo-{uuid.uuid4().hex[:12]}"
    stored = 0

    def turn(index: int, message: str) -> Turn:
        nonlocal stored
        replicas = deployment.replicas()
        with Api(replicas[index % len(replicas)]) as api:
            answer = api.chat(session, message)
        stored += 2
        result.served_by.append(answer.served_by)
        return answer

    def ask_after(event: str, index: int, disturb: Callable[[], None] | None = None) -> None:
        if disturb is not None:
            progress(f"{label}: {event}")
            disturb()
        before = stored
        answer = turn(index, QUESTION)
        result.rows[event] = Row(answer.history_length, before, NAME in answer.reply, answer.reply)

    turn(0, f"Hi, my name is {NAME}.")
    ask_after("after a hop to another replica", 1)
    ask_after("after a rolling restart", 2, deployment.rolling_restart)
    ask_after("after a store restart (SIGKILL)", 0, deployment.kill_history_store)

    # Redis round trips per turn, counted by the replicas themselves (/metrics). No latency:
    # one run of a few turns on a shared laptop measures the machine's noise, not the backend
    # (docs/benchmarks.md measures it side by side, with medians).
    if deployment.backend == "redis":
        progress(f"{label}: {COUNTED_TURNS} more turns to count Redis round trips")
        counted = f"demo-count-{uuid.uuid4().hex[:12]}"
        apis = [Api(endpoint) for endpoint in deployment.replicas()]
        try:
            before = round_trips(apis)
            for i, api in zip(range(COUNTED_TURNS), itertools.cycle(apis), strict=False):
                api.chat(counted, f"Message {i}.")
            result.round_trips_per_turn = (round_trips(apis) - before) / COUNTED_TURNS
        finally:
            for api in apis:
                api.close()
    return result


def round_trips(apis: list[Api]) -> float:
    """Redis round trips the replicas have counted so far (their /metrics, summed)."""
    total = 0.0
    for api in apis:
        text = api.request("GET", "/metrics").text
        total += sum(float(value) for value in ROUND_TRIPS.findall(text))
    return total


def short(name: str) -> str:
    """replica-0-2 (slot 0, second process) -> r0.2; a pod name -> its random suffix."""
    if match := re.fullmatch(r"replica-(\d+)-(\d+)", name):
        return f"r{match[1]}.{match[2]}"
    return name.rsplit("-", 1)[-1]


def table(target: Target, results: list[Result], elapsed_s: float) -> str:
    label_width, column = 34, 32
    lines = [
        f"chat-history demo: {target.description}",
        *(f"  {r.backend}, {r.history_api}: {r.description}" for r in results),
        "",
        "Turn 1 tells the name; each later turn asks it on another replica.",
    ]
    for history_api in HISTORY_APIS:
        by = {r.backend: r for r in results if r.history_api == history_api}
        backends = [b for b in BACKENDS if b in by]
        if not backends:
            continue
        lines += ["", API_TITLES[history_api]]
        heads = "".join(f"{STORES[history_api, b]:{column}}" for b in backends)
        lines.append(f"{'':{label_width}}{heads}")
        for event in by[backends[0]].rows:
            cells = "".join(f"{by[b].rows[event]!s:{column}}" for b in backends)
            lines.append(f"{event:{label_width}}{cells}")
        trips = "".join(
            (f"{n:g}" if (n := by[b].round_trips_per_turn) is not None else "-").ljust(column)
            for b in backends
        )
        lines.append(f"{'Redis round trips per turn':{label_width}}{trips}")
        served = "".join(
            " ".join(short(s) for s in by[b].served_by).ljust(column) for b in backends
        )
        lines.append(f"{'replica that served turns 1-4':{label_width}}{served}")
        first = next(iter(by[backends[0]].rows))
        lines.append(f'What the model answered "{QUESTION}" {first}:')
        lines += [f"  {b + ':':8}{by[b].rows[first].reply}" for b in backends]
    lines.append("")
    if any(re.fullmatch(r"replica-\d+-\d+", s) for r in results for s in r.served_by):
        lines.append("r0.2 = replica slot 0, second process: a restart starts a new process.")
    lines.append("The memory backend's store is each replica's heap: its store restart kills them.")
    for r in results:
        kept = sum(row.seen == row.stored for row in r.rows.values())
        lines.append(
            f"{r.backend}, {r.history_api}: the model saw the whole conversation after "
            f"{kept} of 3 events."
        )
    lines.append(f"(measured live in {elapsed_s:.0f}s)")
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("local", "kube"), default="local")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kube-context", default=None)
    parser.add_argument("--kube-values", action="append", default=[])
    parser.add_argument("--kube-set", action="append", default=[])
    args = parser.parse_args(argv)
    if args.replicas < 3:
        parser.error("the demo needs at least 3 replicas")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    started = time.monotonic()
    try:
        target = make_target(
            args.target,
            context=args.kube_context,
            values_files=args.kube_values,
            set_values=args.kube_set,
        )
    except TargetUnavailable as exc:
        print(f"demo: target {args.target} unavailable: {exc}", file=sys.stderr)
        return 2

    def deploy_and_play(history_api: HistoryApi, backend: Backend) -> Result:
        progress(f"{backend}/{history_api}: deploying {args.replicas} replicas on {args.target}")
        deployment = target.deploy(backend, args.replicas, history_api)
        try:
            return play(deployment)
        finally:
            deployment.close()

    # On a cluster the four releases at once, each in its own namespace: most of a release's
    # time is waiting (pods scheduled, probes, a rollout), which they then share
    # (Target.concurrent_deploys; local processes are made one deployment after the other).
    flavors = [(history_api, backend) for history_api in HISTORY_APIS for backend in BACKENDS]
    try:
        if target.concurrent_deploys:
            with ThreadPoolExecutor(max_workers=len(flavors), thread_name_prefix="demo") as pool:
                futures = [pool.submit(deploy_and_play, *flavor) for flavor in flavors]
                results = [future.result() for future in futures]
        else:
            results = [deploy_and_play(*flavor) for flavor in flavors]
    except TargetUnavailable as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    finally:
        target.close()
    print(table(target, results, time.monotonic() - started))
    return 0
