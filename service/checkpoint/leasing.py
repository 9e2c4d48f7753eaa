"""Fenced leases on Redis: one turn at a time per thread, across replicas (a mixin of the saver,
which enforces the fence in its write scripts)."""

from __future__ import annotations

import logging
import secrets
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

from service.checkpoint import ops
from service.checkpoint.lease import ThreadLease, aacquire, acquire

logger = logging.getLogger(__name__)
T = TypeVar("T")


class RedisLeases:
    """`alease`/`lease` and their parts, over the saver's drivers and key layout.

    Acquire is one script: SET the thread's `lease` key NX with a PX expiry to
    `<INCR fence>:<nonce>`, polled with short jittered sleeps while another turn holds it (not a
    FIFO queue). The saver's write scripts accept a write only when it carries the token that
    is in the `lease` key right now, so a turn whose lease expired, or was taken over after
    expiring, or whose thread was deleted, can no longer write. Release deletes the key only if
    it still holds this token.
    """

    settings: ops.Settings
    lease_wait_seconds: float

    @abstractmethod
    def _run(self, op: ops.Op[T]) -> T: ...

    @abstractmethod
    async def _arun(self, op: ops.Op[T]) -> T: ...

    @asynccontextmanager
    async def alease(
        self, thread_id: str, *, wait_seconds: float | None = None
    ) -> AsyncIterator[ThreadLease]:
        """Hold `thread_id` for one turn: pass `lease.config()` to the agent. Waits at most
        `wait_seconds` (default `lease_wait_seconds`) for the turn before, then `ThreadBusy`.
        The lease expires after `lease_seconds` even if its holder dies; from then on the
        holder's writes are refused (`LeaseLost`)."""
        lease = await self.aacquire_lease(thread_id, wait_seconds=wait_seconds)
        try:
            yield lease
        finally:
            await self.arelease_lease(lease)

    @contextmanager
    def lease(self, thread_id: str, *, wait_seconds: float | None = None) -> Iterator[ThreadLease]:
        """The sync twin of `alease`."""
        held = self.acquire_lease(thread_id, wait_seconds=wait_seconds)
        try:
            yield held
        finally:
            self.release_lease(held)

    async def aacquire_lease(
        self, thread_id: str, *, wait_seconds: float | None = None
    ) -> ThreadLease:
        """`alease` without the context manager: the caller must `arelease_lease` it."""
        wait_s = self.lease_wait_seconds if wait_seconds is None else wait_seconds
        nonce = secrets.token_hex(8)
        return await aacquire(
            thread_id, wait_s, lambda: self._arun(ops.try_acquire(self.settings, thread_id, nonce))
        )

    async def arelease_lease(self, lease: ThreadLease) -> None:
        """Give the thread back (a no-op if the lease was lost). Never raises: the turn's outcome
        stands whatever happens here, and an unreleased lease expires by itself."""
        try:
            await self._arun(ops.release(self.settings, lease.thread_id, lease.token))
        except Exception:
            logger.warning("could not release the lease on a thread", exc_info=True)

    def acquire_lease(self, thread_id: str, *, wait_seconds: float | None = None) -> ThreadLease:
        """The sync twin of `aacquire_lease`."""
        wait_s = self.lease_wait_seconds if wait_seconds is None else wait_seconds
        nonce = secrets.token_hex(8)
        return acquire(
            thread_id, wait_s, lambda: self._run(ops.try_acquire(self.settings, thread_id, nonce))
        )

    def release_lease(self, lease: ThreadLease) -> None:
        """The sync twin of `arelease_lease`."""
        try:
            self._run(ops.release(self.settings, lease.thread_id, lease.token))
        except Exception:
            logger.warning("could not release the lease on a thread", exc_info=True)
