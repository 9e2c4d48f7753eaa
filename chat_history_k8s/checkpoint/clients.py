"""One Redis call of an operation (ops.Call) over a sync or async client: counted, scripts by
SHA with a fallback when the server lost them, errors mapped to the project's domain errors.

The hook sees one call per EVALSHA, EVAL or DEL: each is one round trip. A SCAN (admin calls
only) is reported once, however many cursor pages and nodes it took. With `wait.replicas` > 0,
a script that keeps data is sent with `WAIT` after it, in the same round trip
(chat_history_k8s/history/redis_wait.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.exceptions import NoScriptError

from chat_history_k8s.checkpoint.lease import LeaseLost
from chat_history_k8s.checkpoint.ops import Call, Delete, Eval, Scan
from chat_history_k8s.history.base import HistoryUnavailable
from chat_history_k8s.history.redis import RoundTripHook
from chat_history_k8s.history.redis_pool import REDIS_ERRORS, AsyncClient
from chat_history_k8s.history.redis_wait import (
    Command,
    WaitFor,
    asend_together,
    raise_first_error,
    send_together,
)

SyncClient = redis.Redis | redis.cluster.RedisCluster
NO_WAIT = WaitFor()


@contextmanager
def _round_trip(op: str, hook: RoundTripHook | None) -> Iterator[None]:
    """One round trip to Redis: counted, and its failures raised as domain errors."""
    try:
        yield
    except NoScriptError:
        raise  # not a failure: the caller sends the script itself
    except redis.ResponseError as exc:
        if str(exc).startswith(("FENCED", "LEASED")):
            raise LeaseLost(str(exc).split(" script:")[0]) from exc
        raise HistoryUnavailable.from_redis(exc) from exc
    except REDIS_ERRORS as exc:  # a cluster's RedisClusterException too: e.g. no slot owner
        raise HistoryUnavailable.from_redis(exc) from exc
    finally:
        if hook is not None:
            hook(op)


def _script(c: Eval, command: str) -> Command:
    name = c.script.sha if command == "EVALSHA" else c.script.source
    return (command, name, len(c.keys), *c.keys, *c.args)


def _waited(replies: list[Any], wait: WaitFor) -> Any:
    raise_first_error(replies[:1])  # NOSCRIPT included: the caller sends the source
    return wait.check(replies)[0]


def call(client: SyncClient, c: Call, hook: RoundTripHook | None, wait: WaitFor = NO_WAIT) -> Any:
    if isinstance(c, Eval) and c.script.keeps_data and wait.replicas:
        assert isinstance(client, redis.Redis)  # the saver refuses a sync cluster with WAIT
        for command in ("EVALSHA", "EVAL"):
            try:
                with _round_trip(c.script.name, hook):
                    replies = send_together(client, [_script(c, command), *wait.command()])
                    return _waited(replies, wait)
            except NoScriptError:
                continue  # a restarted or failed-over server: EVAL sends the source
    if isinstance(c, Delete):
        with _round_trip("delete", hook):
            return client.delete(*c.keys)
    if isinstance(c, Scan):
        with _round_trip("scan", hook):
            return [bytes(k).decode() for k in client.scan_iter(match=c.match, count=1000)]
    try:
        with _round_trip(c.script.name, hook):
            return client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
    except NoScriptError:
        pass  # a restarted or failed-over server: EVAL sends the source and caches it again
    with _round_trip(c.script.name, hook):
        return client.eval(c.script.source, len(c.keys), *c.keys, *c.args)


async def acall(
    client: AsyncClient, c: Call, hook: RoundTripHook | None, wait: WaitFor = NO_WAIT
) -> Any:
    if isinstance(c, Eval) and c.script.keeps_data and wait.replicas:
        for command in ("EVALSHA", "EVAL"):
            try:
                with _round_trip(c.script.name, hook):
                    commands = [_script(c, command), *wait.command()]
                    return _waited(await asend_together(client, c.keys[0], commands), wait)
            except NoScriptError:
                continue  # a restarted or failed-over server: EVAL sends the source
    if isinstance(c, Delete):
        with _round_trip("delete", hook):
            return await client.delete(*c.keys)
    if isinstance(c, Scan):
        with _round_trip("scan", hook):
            return [bytes(k).decode() async for k in client.scan_iter(match=c.match, count=1000)]
    try:
        with _round_trip(c.script.name, hook):
            return await client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
    except NoScriptError:
        pass
    with _round_trip(c.script.name, hook):
        return await client.eval(c.script.source, len(c.keys), *c.keys, *c.args)
