"""The hop check: one conversation through a load-balanced URL, a new connection per request.

Used by the chart's `helm test` pod (and runnable anywhere) to show, from inside a cluster,
what the chart is about: the turns of one session land on different pods, and with the Redis
backend every pod sees the whole history, while with the memory backend history is lost on a hop.

    python -m chat_history_k8s.hopcheck --url http://chat-history --turns 12 --backend redis \
        --history-api checkpointer --api-key-file /var/run/chat-history/api-key

Exit status: 0 when the check holds, 1 when it does not (the reason is logged), 2 on bad usage.
It ships in the service's wheel and image, so `helm test` needs no second image.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

import httpx

from chat_history_k8s.hopcheck.client import Api, Endpoint, Turn, UnexpectedResponse

logger = logging.getLogger("chat_history_k8s.hopcheck")


class CheckFailed(Exception):
    """The deployment does not behave as the check requires; the message says how."""


def whole_history(turn_index: int, cap: int) -> int:
    """Messages stored before turn `turn_index` (0-based) when nothing was lost."""
    return min(2 * turn_index, cap)


def wait_ready(api: Api, deadline_s: float) -> None:
    """Waits until the Service answers /readyz with 200 (a fresh install may still be starting)."""
    deadline = time.monotonic() + deadline_s
    while (status := api.readyz_status()) != 200:
        if time.monotonic() > deadline:
            last = "no answer" if status is None else f"HTTP {status}"
            raise CheckFailed(f"the service was not ready within {deadline_s:.0f}s: {last}")
        time.sleep(1)


def run_turns(api: Api, session_id: str, turns: int, backend: str, cap: int) -> list[Turn]:
    """Sends the conversation; checks every answer against the contract as it goes."""
    done: list[Turn] = []
    for index in range(turns):
        message = f"turn {index + 1} of {turns}: my name is Hop"
        try:
            turn = api.chat(session_id, message)
        except UnexpectedResponse as exc:
            raise CheckFailed(f"turn {index + 1}: {exc}") from exc
        if turn.backend != backend:
            raise CheckFailed(
                f"turn {index + 1}: pod {turn.served_by} reports backend {turn.backend!r}, "
                f"expected {backend!r}"
            )
        done.append(turn)
        logger.info(
            "turn %2d  served_by=%-40s history_length=%3d (whole history: %d)",
            index + 1,
            turn.served_by,
            turn.history_length,
            whole_history(index, cap),
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


def check_redis(api: Api, session_id: str, done: list[Turn], reads: int, cap: int) -> None:
    """Every pod that served a turn saw every earlier message; then every read sees them all."""
    short = [
        f"turn {i + 1} on {t.served_by} saw {t.history_length} of {whole_history(i, cap)}"
        for i, t in enumerate(done)
        if t.history_length != whole_history(i, cap)
    ]
    if short:
        raise CheckFailed(f"history is not shared by every pod: {'; '.join(short)}")
    whole = whole_history(len(done), cap)
    for _ in range(reads):
        try:
            messages, served_by = api.messages_served(session_id)
        except UnexpectedResponse as exc:
            raise CheckFailed(f"GET messages: {exc}") from exc
        got = len(messages or [])
        if got != whole:
            raise CheckFailed(f"GET messages on {served_by}: {got} messages, expected {whole}")
        logger.info("read    served_by=%-40s messages=%3d", served_by, got)


def check_memory(done: list[Turn], cap: int) -> None:
    """With per-pod memory, a turn on a pod that had not served every earlier turn must come
    with less than the whole history: that loss is what the memory backend demonstrates."""
    lost = [(i, t) for i, t in enumerate(done) if t.history_length < whole_history(i, cap)]
    if not lost:
        raise CheckFailed(
            "memory backend, yet every pod saw the whole history: are the replicas sharing state?"
        )
    first_index, first = lost[0]
    logger.info(
        "history lost on %d of %d turns, as expected with per-pod memory (first: turn %d on %s "
        "saw %d of %d messages)",
        len(lost),
        len(done),
        first_index + 1,
        first.served_by,
        first.history_length,
        whole_history(first_index, cap),
    )


def run(args: argparse.Namespace) -> None:
    # A new connection per request, as independent clients reach a Service: kube-proxy picks a
    # backend pod per connection.
    endpoint = Endpoint(
        "service", args.url, fresh_connections=True, connect_retries=2, api_key=args.api_key
    )
    with Api(endpoint, timeout_s=args.timeout) as api:
        wait_ready(api, args.wait)
        try:
            info = api.info()
        except UnexpectedResponse as exc:
            raise CheckFailed(str(exc)) from exc
        if info.get("auth", "off") != "off" and args.api_key is None:
            raise CheckFailed(
                f"the service requires an API key (auth={info['auth']}): pass --api-key-file"
            )
        cap = int(info.get("history_max_messages", 2 * args.turns))
        history_api = info.get("history_api", "message-history")
        if args.history_api is not None and history_api != args.history_api:
            raise CheckFailed(
                f"pod {info.get('served_by')} reports history_api {history_api!r}, "
                f"expected {args.history_api!r}"
            )
        session_id = f"hopcheck-{uuid.uuid4().hex[:16]}"
        logger.info(
            "hop check: %d turns of session %s through %s (%s backend, %s API), a new "
            "connection each",
            args.turns,
            session_id,
            args.url,
            args.backend,
            history_api,
        )
        try:
            done = run_turns(api, session_id, args.turns, args.backend, cap)
            pods = check_spread(done, args.min_pods)
            if args.backend == "redis":
                check_redis(api, session_id, done, args.reads, cap)
            else:
                check_memory(done, cap)
        finally:
            try:
                api.delete(session_id)
            except (httpx.HTTPError, UnexpectedResponse):
                logger.warning("could not delete session %s", session_id)
    spread = ", ".join(f"{pod}: {count}" for pod, count in sorted(pods.items()))
    verdict = "every pod saw the whole history" if args.backend == "redis" else "history was lost"
    logger.info("OK: %d pods served the turns (%s); %s", len(pods), spread, verdict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chat_history_k8s.hopcheck",
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
        "--history-api",
        choices=["message-history", "checkpointer"],
        default=None,
        help="memory API the deployment is expected to use (/v1/info's history_api)",
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
    parser.add_argument(
        "--api-key-file",
        default=None,
        help="a file holding the API key to send (when the service has authentication on)",
    )
    args = parser.parse_args(argv)
    args.api_key = None
    if args.api_key_file is not None:
        try:
            with open(args.api_key_file, encoding="utf-8") as f:
                args.api_key = f.read().strip()
        except OSError as exc:
            parser.error(f"cannot read --api-key-file: {exc}")
        if not args.api_key:
            parser.error(f"--api-key-file {args.api_key_file} is empty")
    if args.turns < 2 or args.min_pods < 1 or args.reads < 0:
        parser.error("--turns must be >= 2, --min-pods >= 1, --reads >= 0")
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        parser.error(f"--url must be http(s)://host[:port], got {args.url!r}")
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
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        logger.error("FAILED: cannot talk to %s: %s: %s", args.url, type(exc).__name__, exc)
        return 1
    finally:
        logger.removeHandler(handler)
    return 0
