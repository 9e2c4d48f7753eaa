"""The hop check: one conversation through a load-balanced URL, a new connection per request.

Used by the chart's `helm test` pod (and runnable anywhere) to show, from inside a cluster,
what the chart is about: the turns of one session land on different pods, and with the Redis
backend every pod sees the whole history, while with the memory backend history is lost on a hop.

    python -m service.hopcheck --url http://chat-history --turns 12 --backend redis

Exit status: 0 when the check holds, 1 when it does not (the reason is logged), 2 on bad usage.
Standard library only, so it runs from the service image with nothing else installed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger("hopcheck")


class CheckFailed(Exception):
    """The deployment does not behave as the check requires; the message says how."""


@dataclass(frozen=True)
class Reply:
    status: int
    served_by: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Turn:
    index: int
    served_by: str
    history_length: int
    expected: int


class Client:
    """Speaks the service's HTTP contract over a fresh TCP connection for every request, the way
    independent clients reach a Service: kube-proxy picks a backend pod per connection."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url must be http(s)://host[:port], got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._base = parts.path.rstrip("/")
        self._timeout = timeout_s

    def request(self, method: str, path: str, payload: object = None) -> Reply:
        """One request on a new connection. Retries only when the connection was refused, so a
        request that may have reached a pod is never sent twice (a chat turn is not idempotent)."""
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Connection": "close", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(1, 4):
            conn_class = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = conn_class(self._host, self._port, timeout=self._timeout)
            try:
                conn.request(method, self._base + path, body=body, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                served_by = response.getheader("X-Served-By", "")
                status = response.status
            except ConnectionRefusedError:
                if attempt == 3:
                    raise
                time.sleep(0.5 * attempt)
                continue
            finally:
                conn.close()
            try:
                parsed = json.loads(raw) if raw else {}
            except ValueError:
                parsed = {"raw": raw[:200].decode(errors="replace")}
            return Reply(status, served_by, parsed if isinstance(parsed, dict) else {})
        raise AssertionError("unreachable")


def wait_ready(client: Client, deadline_s: float) -> None:
    """Waits until the Service answers /readyz with 200 (a fresh install may still be starting)."""
    deadline = time.monotonic() + deadline_s
    last = "no answer"
    while True:
        try:
            reply = client.request("GET", "/readyz")
            if reply.status == 200:
                return
            last = f"HTTP {reply.status} {json.dumps(reply.body)[:200]}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise CheckFailed(f"the service was not ready within {deadline_s:.0f}s: {last}")
        time.sleep(1)


def run_turns(client: Client, session_id: str, turns: int, backend: str, cap: int) -> list[Turn]:
    """Sends the conversation; checks every answer against the contract as it goes."""
    done: list[Turn] = []
    for index in range(turns):
        message = f"turn {index + 1} of {turns}: my name is Hop"
        reply = client.request("POST", "/v1/chat", {"session_id": session_id, "message": message})
        if reply.status != 200:
            raise CheckFailed(
                f"turn {index + 1}: HTTP {reply.status} from {reply.served_by or 'unknown pod'}: "
                f"{json.dumps(reply.body)[:300]}"
            )
        body = reply.body
        if body.get("backend") != backend:
            raise CheckFailed(
                f"turn {index + 1}: pod {body.get('served_by')} reports backend "
                f"{body.get('backend')!r}, expected {backend!r}"
            )
        if reply.served_by != body.get("served_by"):
            raise CheckFailed(
                f"turn {index + 1}: X-Served-By {reply.served_by!r} differs from "
                f"served_by {body.get('served_by')!r}"
            )
        expected = min(2 * index, cap)
        done.append(Turn(index + 1, str(body["served_by"]), int(body["history_length"]), expected))
        logger.info(
            "turn %2d  served_by=%-40s history_length=%3d (whole history: %d)",
            index + 1,
            body["served_by"],
            body["history_length"],
            expected,
        )
    return done


def check_spread(done: list[Turn], min_pods: int) -> Counter[str]:
    pods = Counter(turn.served_by for turn in done)
    if len(pods) < min_pods:
        raise CheckFailed(
            f"only {len(pods)} pod(s) served the {len(done)} turns ({dict(pods)}), expected at "
            f"least {min_pods}: are that many replicas ready, and does the Service balance new "
            "connections over them?"
        )
    return pods


def check_redis(client: Client, session_id: str, done: list[Turn], reads: int, cap: int) -> None:
    """Every pod that served a turn saw every earlier message; then every read sees them all."""
    short = [t for t in done if t.history_length != t.expected]
    if short:
        lines = "; ".join(
            f"turn {t.index} on {t.served_by} saw {t.history_length} of {t.expected}" for t in short
        )
        raise CheckFailed(f"history is not shared by every pod: {lines}")
    whole = min(2 * len(done), cap)
    for _ in range(reads):
        reply = client.request("GET", f"/v1/sessions/{session_id}/messages")
        got = len(reply.body.get("messages", [])) if reply.status == 200 else 0
        if got != whole:
            raise CheckFailed(
                f"GET messages on {reply.served_by or 'unknown pod'}: HTTP {reply.status}, "
                f"{got} messages, expected {whole}"
            )
        logger.info("read    served_by=%-40s messages=%3d", reply.served_by, got)


def check_memory(done: list[Turn]) -> None:
    """With per-pod memory, a turn on a pod that had not served every earlier turn must come
    with less than the whole history: that loss is what the memory backend demonstrates."""
    lost = [t for t in done if t.history_length < t.expected]
    if not lost:
        raise CheckFailed(
            "memory backend, yet every pod saw the whole history: are the replicas sharing state?"
        )
    logger.info(
        "history lost on %d of %d turns, as expected with per-pod memory (first: turn %d on %s "
        "saw %d of %d messages)",
        len(lost),
        len(done),
        lost[0].index,
        lost[0].served_by,
        lost[0].history_length,
        lost[0].expected,
    )


def run(args: argparse.Namespace) -> None:
    client = Client(args.url, args.timeout)
    wait_ready(client, args.wait)
    info = client.request("GET", "/v1/info")
    if info.status != 200:
        raise CheckFailed(f"GET /v1/info: HTTP {info.status}")
    cap = int(info.body.get("history_max_messages", 2 * args.turns))
    session_id = f"hopcheck-{uuid.uuid4().hex[:16]}"
    logger.info(
        "hop check: %d turns of session %s through %s (%s backend), a new connection each",
        args.turns,
        session_id,
        args.url,
        args.backend,
    )
    try:
        done = run_turns(client, session_id, args.turns, args.backend, cap)
        pods = check_spread(done, args.min_pods)
        if args.backend == "redis":
            check_redis(client, session_id, done, args.reads, cap)
        else:
            check_memory(done)
    finally:
        try:
            client.request("DELETE", f"/v1/sessions/{session_id}")
        except OSError:
            logger.warning("could not delete session %s", session_id)
    spread = ", ".join(f"{pod}: {count}" for pod, count in sorted(pods.items()))
    verdict = "every pod saw the whole history" if args.backend == "redis" else "history was lost"
    logger.info("OK: %d pods served the turns (%s); %s", len(pods), spread, verdict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.hopcheck",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", required=True, help="load-balanced base URL, e.g. http://svc")
    parser.add_argument("--turns", type=int, default=12, help="turns to send (default 12)")
    parser.add_argument(
        "--backend",
        required=True,
        choices=["redis", "memory"],
        help="history backend the deployment is expected to use",
    )
    parser.add_argument(
        "--min-pods",
        type=int,
        default=2,
        help="distinct pods that must serve the turns (default 2)",
    )
    parser.add_argument(
        "--reads",
        type=int,
        default=6,
        help="redis: history reads at the end, each on a new connection",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="seconds to wait for /readyz before starting (default 60)",
    )
    args = parser.parse_args(argv)
    if args.turns < 2 or args.min_pods < 1 or args.reads < 0:
        parser.error("--turns must be >= 2, --min-pods >= 1, --reads >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The report goes to stdout (what `helm test --logs` shows), through a handler of this call.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        run(args)
    except CheckFailed as exc:
        logger.error("FAILED: %s", exc)
        return 1
    except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
        logger.error("FAILED: cannot talk to %s: %s: %s", args.url, type(exc).__name__, exc)
        return 1
    finally:
        logger.removeHandler(handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
