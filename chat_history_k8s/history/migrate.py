"""Copy every chat-history key from one Redis to another:
`python -m chat_history_k8s.history.migrate`.

The runbook's "move to another Redis" procedure (docs/runbook.md): from a standalone Redis to a
Sentinel-managed one, a Redis Cluster or a managed service, in any direction. The target is
described by the service's own settings (`REDIS_MODE`, `REDIS_URL`, `REDIS_SENTINELS`,
`REDIS_SENTINEL_MASTER`, `REDIS_PASSWORD`, ...), the source by the same names prefixed with
`FROM_` (`FROM_REDIS_MODE`, `FROM_REDIS_URL`, `FROM_REDIS_PASSWORD`, ...): passwords come from
the environment, never from the command line. Only keys under `REDIS_KEY_PREFIX` are copied
(message histories, checkpoints, limits: everything the service writes).

Each key is copied whole with `DUMP` and `RESTORE` (the payload carries a checksum that
`RESTORE` verifies, so a copied value is exact) and keeps its remaining time to live. Writers
must be stopped first (scale the chat Deployment to 0): a turn stored during the copy may be
missed. A target that already holds keys under the prefix is refused unless `--replace` is
given. The copy is then checked: every source key must exist on the target with the same type
and size. Exit status 0 only when the check passes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from chat_history_k8s.config import Settings
from chat_history_k8s.history.redis_pool import REDIS_ERRORS, AsyncClient, build_async_client

SOURCE_PREFIX = "FROM_"
BATCH = 200  # keys per round trip
_SIZE = {"list": "LLEN", "hash": "HLEN", "set": "SCARD", "zset": "ZCARD", "string": "STRLEN"}


class MigrationError(RuntimeError):
    """The copy cannot start or did not check out; the message says why."""


@dataclass
class Report:
    copied: int = 0
    vanished: int = 0  # listed by SCAN, expired or deleted before DUMP

    def line(self) -> str:
        return f"copied {self.copied} keys ({self.vanished} expired during the copy)"


def _pattern(prefix: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix) + "*"


async def _keys(client: AsyncClient, prefix: str) -> AsyncIterator[bytes]:
    """Every key under `prefix` (each primary's, on a cluster)."""
    async for key in client.scan_iter(match=_pattern(prefix), count=1000):
        yield key


async def _batches(client: AsyncClient, prefix: str) -> AsyncIterator[list[bytes]]:
    batch: list[bytes] = []
    async for key in _keys(client, prefix):
        batch.append(key)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


async def _dump(client: AsyncClient, keys: Sequence[bytes]) -> list[tuple[bytes, int] | None]:
    """(payload, ttl in ms or 0) per key; None for a key gone since SCAN."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    replies = await pipe.execute()
    out: list[tuple[bytes, int] | None] = []
    for payload, ttl in zip(replies[::2], replies[1::2], strict=True):
        out.append(None if payload is None or ttl == -2 else (payload, max(int(ttl), 0)))
    return out


async def _sizes(client: AsyncClient, keys: Sequence[bytes]) -> list[tuple[str, int]]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    types = [t.decode() if isinstance(t, bytes) else str(t) for t in await pipe.execute()]
    pipe = client.pipeline(transaction=False)
    for key, kind in zip(keys, types, strict=True):
        if kind in _SIZE:
            pipe.execute_command(_SIZE[kind], key)
        else:
            pipe.exists(key)  # a type the service does not write: presence only
    sizes = [int(n) for n in await pipe.execute()]
    return list(zip(types, sizes, strict=True))


async def migrate(
    source: AsyncClient, target: AsyncClient, prefix: str, *, replace: bool
) -> Report:
    """Copy every key under `prefix` from `source` to `target`, then check the copy."""
    if not replace:
        async for key in _keys(target, prefix):
            raise MigrationError(
                f"the target already holds keys under {prefix!r} (e.g. {key.decode()!r}): "
                "nothing copied; pass --replace to overwrite them"
            )
    report = Report()
    async for keys in _batches(source, prefix):
        dumped = await _dump(source, keys)
        pipe = target.pipeline(transaction=False)
        present = []
        for key, item in zip(keys, dumped, strict=True):
            if item is None:
                report.vanished += 1
                continue
            payload, ttl = item
            pipe.restore(key, ttl, payload, replace=True)
            present.append(key)
        if present:
            await pipe.execute()
            report.copied += len(present)
            want, got = await _sizes(source, present), await _sizes(target, present)
            for key, a, b in zip(present, want, got, strict=True):
                if a != b and a[0] != "none":  # "none": expired on the source meanwhile
                    raise MigrationError(f"{key.decode()!r}: source {a}, target {b} after the copy")
    return report


def _settings(env_prefix: str) -> Settings:
    try:
        return Settings(history_backend="redis", _env_prefix=env_prefix)
    except ValidationError as exc:
        side = "source (FROM_REDIS_*)" if env_prefix else "target (REDIS_*)"
        raise MigrationError(f"{side} settings: {exc.errors()[0]['msg']}") from exc


async def _run(replace: bool) -> Report:
    source_settings, target_settings = _settings(SOURCE_PREFIX), _settings("")
    prefix = target_settings.redis_key_prefix
    if source_settings.redis_key_prefix != prefix:
        raise MigrationError(
            f"FROM_REDIS_KEY_PREFIX {source_settings.redis_key_prefix!r} differs from "
            f"REDIS_KEY_PREFIX {prefix!r}: the service would not find the copied keys"
        )
    source, target = build_async_client(source_settings), build_async_client(target_settings)
    try:
        for client, side in ((source, "source (FROM_REDIS_*)"), (target, "target (REDIS_*)")):
            try:
                await client.ping()
            except REDIS_ERRORS as exc:
                raise MigrationError(f"{side}: {exc}") from exc
        return await migrate(source, target, prefix, replace=replace)
    finally:
        await source.aclose()
        await target.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chat_history_k8s.history.migrate",
        description="Copy every chat-history key from the FROM_REDIS_* Redis to the REDIS_* one "
        "(stop the chat pods first).",
    )
    parser.add_argument(
        "--replace", action="store_true", help="overwrite keys the target already holds"
    )
    args = parser.parse_args(argv)
    try:
        report = asyncio.run(_run(args.replace))
    except (MigrationError, *REDIS_ERRORS, ValueError) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    print(f"migrate: {report.line()}; every copied key checked on the target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
