"""Fenced leases on Redis: one turn at a time per thread, across replicas (a mixin of the saver,
which enforces the fence in its write scripts)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

from chat_history_k8s.checkpoint import ops
from chat_history_k8s.checkpoint.lease import ThreadBusy, ThreadLease, aacquire, acquire
from chat_history_k8s.history.base import HistoryUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")


class RedisLeases:
    """`alease`/`lease` and their parts, over the saver's drivers and key layout.

    Acquire is one script: SET the thread's `lease` key NX with a PX expiry to
    `<INCR fence>:<nonce>`, polled with short jittered sleeps while another turn holds it (not a
    FIFO queue). The saver's write scripts accept a write only when it carries the token that
    is in the `lease` key right now, so a turn whose lease expired, or was taken over after
    expiring, or whose thread was deleted, can no longer write. Release deletes the key only if
    it still holds this acquisition's lease (named by its random nonce).

    A lease nobody knows it holds would block its thread until it expires: an acquire whose
    reply never came (a hung Redis runs the script when it resumes) or a release that failed.
    So after such a failure the async methods release that nonce's lease in the background,
    retrying until Redis answers once, for at most the lease time (after which it has expired
    anyway). The sync methods leave it to expire.
    """

    settings: ops.Settings
    lease_wait_seconds: float
    _forgetting: set[asyncio.Task[None]]

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
        try:
            return await aacquire(
                thread_id,
                wait_s,
                lambda: self._arun(ops.try_acquire(self.settings, thread_id, nonce)),
            )
        except ThreadBusy:
            raise  # every attempt was answered: this nonce holds nothing
        except HistoryUnavailable:
            self._forget_later(thread_id, nonce)
            raise

    async def arelease_lease(self, lease: ThreadLease) -> None:
        """Give the thread back (a no-op if the lease was lost). Never raises: the turn's outcome
        stands whatever happens here; a failed release is retried in the background."""
        try:
            await self._arun(ops.release(self.settings, lease.thread_id, lease.nonce))
        except Exception:
            logger.warning("could not release the lease on a thread", exc_info=True)
            self._forget_later(lease.thread_id, lease.nonce)

    def _forget_later(self, thread_id: str, nonce: str) -> None:
        task = asyncio.create_task(self._forget(thread_id, nonce), name="release-unknown-lease")
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    async def _forget(self, thread_id: str, nonce: str) -> None:
        deadline = time.monotonic() + self.settings.lease_ms / 1000
        delay = 0.05
        while time.monotonic() < deadline:
            try:
                await self._arun(ops.release(self.settings, thread_id, nonce))
                return
            except HistoryUnavailable:
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(2 * delay, 1.0)

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
            self._run(ops.release(self.settings, lease.thread_id, lease.nonce))
        except Exception:
            logger.warning("could not release the lease on a thread", exc_info=True)
