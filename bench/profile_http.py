"""Profile one service replica in-process (cProfile) while wrk drives POST /v1/chat.

    python -m bench.profile_http --backend redis --seconds 5 [--connections 16] [--top 25]

Starts its own redis-server (for the Redis backend) on a free loopback port; prints the self
time by category, a per-request breakdown of the chat turn, and the functions with the most
self and cumulative time. `bench.run` uses `profile()` for the report.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench import bench_redis
from bench.http_bench import SERVICE_ENV, wrk
from bench.store_bench import _category
from testsupport import LOOPBACK, free_port, wait_until

BREAKDOWN = (
    (
        "whole ASGI app (ServedByMiddleware and everything inside)",
        "chat_history_k8s/middleware.py",
        "__call__",
    ),
    ("  the chat handler", "chat_history_k8s/api/chat.py", "chat"),
    ("    history read (aget_window)", "chat_history_k8s/history/", "aget_window"),
    (
        "    model.ainvoke (built-in model + callback machinery)",
        "language_models/chat_models.py",
        "ainvoke",
    ),
    ("    history append (aappend_turn)", "chat_history_k8s/history/", "aappend_turn"),
    ("    metrics (prometheus observe/inc)", "prometheus_client/metrics.py", "observe"),
    ("  response serialisation", "fastapi/routing.py", "serialize_response"),
)


def request_breakdown(raw: dict[Any, Any], requests: int) -> dict[str, float]:
    """Cumulative microseconds per request in the functions that make up a chat turn."""
    out = {}
    for label, file_part, func_name in BREAKDOWN:
        # A coroutine counts once per resumption; summing cumulative time over them is fine.
        spent = sum(v[3] for f, v in raw.items() if file_part in f[0] and f[2] == func_name)
        out[label] = spent / requests * 1e6
    return out


def _http_category(func: tuple[str, int, str]) -> str:
    where = func[0]
    if "starlette" in where or "fastapi" in where:
        return "fastapi/starlette"
    if "uvicorn" in where or "asyncio" in where or "uvloop" in where or "httptools" in where:
        return "uvicorn/asyncio (incl. idle waits of the event loop)"
    if "prometheus_client" in where:
        return "prometheus_client"
    if "langsmith" in where or "callbacks" in where or "tracers" in where:
        return "langchain callbacks/tracing"
    if "language_models" in where or "chat_history_k8s/model.py" in where:
        return "chat model (built-in model + BaseChatModel machinery)"
    if "/chat_history_k8s/" in where:
        return "chat_history_k8s/ itself (handler, middleware, history classes)"
    category = _category(func)
    return "other (builtins, interpreter)" if category.startswith("other") else category


def profile(
    backend: str, *, seconds: int, connections: int, workdir: Path
) -> tuple[dict[str, Any], pstats.Stats]:
    """Serve one replica in this process under cProfile while wrk drives it; a summary and
    the raw statistics."""
    from chat_history_k8s.config import Settings
    from chat_history_k8s.main import create_app

    server = bench_redis(workdir / f"redis-profile-{backend}") if backend == "redis" else None
    try:
        settings = Settings(
            history_backend=backend,
            redis_url=server.url if server else "redis://127.0.0.1:1/0",
            pod_name="profiled",
            log_level="WARNING",
            history_max_messages=int(SERVICE_ENV["HISTORY_MAX_MESSAGES"]),
            history_window_messages=int(SERVICE_ENV["HISTORY_WINDOW_MESSAGES"]),
        )
        port = free_port()
        uv = uvicorn.Server(
            uvicorn.Config(create_app(settings), host=LOOPBACK, port=port, log_level="warning")
        )
        profiler = cProfile.Profile()

        def serve() -> None:
            profiler.enable()  # profiles this thread only: the event loop's
            uv.run()
            profiler.disable()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        url = f"http://{LOOPBACK}:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(ready, timeout_s=30, what="the profiled replica")
            result = wrk(url, connections=connections, seconds=seconds, tag=f"profile-{backend}")
        finally:
            uv.should_exit = True
            thread.join(timeout=30)
    finally:
        if server is not None:
            server.stop()
    stats = pstats.Stats(profiler)
    raw = stats.stats  # type: ignore[attr-defined]  # real, but missing from typeshed's pstats
    total = sum(v[2] for v in raw.values())
    requests = max(1, result["requests"])
    by_category: dict[str, float] = {}
    for func, v in raw.items():
        name = _http_category(func)
        by_category[name] = by_category.get(name, 0.0) + v[2]
    summary = {
        "backend": backend,
        "connections": connections,
        "requests": requests,
        "rps": result["rps"],
        "profiled_us_per_request": total / requests * 1e6,
        "by_category": {
            k: v / total for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])
        },
        "breakdown_us": request_breakdown(raw, requests),
    }
    return summary, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("memory", "redis"), default="redis")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chat-history-profile-") as tmp:
        summary, stats = profile(
            args.backend, seconds=args.seconds, connections=args.connections, workdir=Path(tmp)
        )
    print(
        f"{args.backend}: {summary['requests']} requests, {summary['rps']:.0f} req/s under the "
        f"profiler, {summary['profiled_us_per_request']:.0f} us of profiled time per request"
    )
    for name, share in summary["by_category"].items():
        print(f"  {share:6.1%}  {name}")
    print("\nper request, cumulative (profiled, so inflated; compare shares):")
    for label, us in summary["breakdown_us"].items():
        print(f"  {us:8.0f} us  {label}")
    for key, title in (("tottime", "self"), ("cumulative", "cumulative")):
        print(f"\ntop {args.top} by {title} time:")
        stats.sort_stats(key).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
