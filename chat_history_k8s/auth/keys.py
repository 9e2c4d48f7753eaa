"""API keys as the service holds them: SHA-256 hashes in a file, re-read when it changes.

The file (a mounted Kubernetes Secret) has one `principal:sha256-hex` line per key; blank lines
and lines starting with `#` are ignored. A principal may have several keys (a rotation adds the
new one before the old one goes). The service never sees a key in plain text except in the
request that presents it: it hashes the presented key and looks the hash up.

Unsalted SHA-256 is enough because keys are random (32 bytes from `python -m
chat_history_k8s.auth new`), not passwords: there is nothing to guess a dictionary of.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from chat_history_k8s.history.base import StoreMetric

logger = logging.getLogger(__name__)

PRINCIPAL_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
PRINCIPAL_RULE = "1-64 ASCII letters, digits and ._-"
_HASH = re.compile(r"[0-9a-f]{64}")


class KeyFileError(ValueError):
    """The key file cannot be read or holds a malformed line (the message says which)."""


def hash_key(key: str) -> str:
    """The hex SHA-256 of `key` as the key file stores it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def scoped(principal: str | None, session_id: str) -> str:
    """The id a session is stored under: the client's own id without authentication, else
    `<principal>/<session_id>`. `/` is in neither alphabet, so distinct pairs never share a
    store key, and another principal's lookup of the same session id finds nothing."""
    return session_id if principal is None else f"{principal}/{session_id}"


def parse_key_file(text: str) -> dict[str, str]:
    """Hash -> principal, from the file's text; `KeyFileError` naming the first bad line."""
    keys: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        principal, sep, digest = line.partition(":")
        digest = digest.strip().lower()
        if not sep or not PRINCIPAL_PATTERN.fullmatch(principal.strip()):
            raise KeyFileError(
                f"line {number}: expected principal:sha256-hex, the principal {PRINCIPAL_RULE}"
            )
        if not _HASH.fullmatch(digest):
            raise KeyFileError(f"line {number}: the hash must be 64 hex digits (SHA-256)")
        owner = keys.setdefault(digest, principal.strip())
        if owner != principal.strip():
            raise KeyFileError(f"line {number}: the same key is listed for two principals")
    return keys


@dataclass(frozen=True)
class _Loaded:
    signature: tuple[int, int, int, int]  # device, inode, mtime (ns), size
    keys: dict[str, str]


class KeyRing:
    """The keys of `path`, re-read when the file changes, so a rotation needs no restart.

    `principal(key)` looks at the file's `stat` at most every `check_seconds`; when it differs
    (a Kubernetes Secret volume swaps a symlink: the resolved file's inode changes) the file is
    read again. A file that cannot be read or parsed at startup raises `KeyFileError` (the
    replica does not start); later, the keys loaded last stay in force and the error is logged
    at ERROR and counted in `reloads["error"]`, so a bad edit never opens or closes the API.
    """

    def __init__(
        self,
        path: str,
        *,
        check_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_seconds = check_seconds
        self._clock = clock
        self.reloads = {"ok": 0, "error": 0}
        self._loaded = self._load()
        self._checked_at = clock()
        if not self._loaded.keys:
            logger.warning("the API key file %s holds no key: every request will be 401", path)

    @property
    def principals(self) -> int:
        """How many principals hold at least one key now."""
        return len(set(self._loaded.keys.values()))

    def size_metrics(self) -> list[StoreMetric]:
        """For /metrics: principals with a key now, and reloads of the file by outcome."""
        return [
            StoreMetric(
                "chat_auth_principals",
                "Principals holding at least one API key in the key file as last loaded.",
                "gauge",
                {(): float(self.principals)},
            ),
            StoreMetric(
                "chat_auth_key_reloads",
                "Reloads of the API key file after a change, by result (an error keeps the "
                "keys loaded before).",
                "counter",
                {(result,): float(n) for result, n in sorted(self.reloads.items())},
                labels=("result",),
            ),
        ]

    def _load(self) -> _Loaded:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                text = f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read the API key file {self.path}: {exc}") from exc
        signature = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        try:
            return _Loaded(signature, parse_key_file(text))
        except KeyFileError as exc:
            raise KeyFileError(f"{self.path}: {exc}") from None

    def _signature(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def refresh(self) -> None:
        """Re-read the file now if it changed (requests call this at most every check)."""
        self._checked_at = self._clock()
        if self._signature() == self._loaded.signature:
            return
        try:
            loaded = self._load()
        except KeyFileError as exc:
            self.reloads["error"] += 1
            logger.error("API keys not reloaded, the previous ones stay in force: %s", exc)
            return
        self._loaded = loaded
        self.reloads["ok"] += 1
        logger.info("API keys reloaded: %d principal(s)", self.principals)

    def principal(self, key: str) -> str | None:
        """The principal `key` belongs to, or None."""
        if self._clock() - self._checked_at >= self.check_seconds:
            self.refresh()
        return self._loaded.keys.get(hash_key(key))
