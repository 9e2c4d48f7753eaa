"""API keys for a run: made fresh, written as the key file a replica reads (AUTH_API_KEYS_FILE)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from chat_history_k8s.auth import hash_key


def new_key() -> str:
    return secrets.token_urlsafe(32)


def write_key_file(path: Path, keys: dict[str, list[str]]) -> Path:
    """Writes `principal:sha256` lines for `keys` (principal -> its keys) to `path` the way a
    Kubernetes Secret volume updates a file: a new file renamed over the old one (a new inode)."""
    lines = [f"{principal}:{hash_key(key)}" for principal, ks in keys.items() for key in ks]
    staged = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    staged.write_text("# principal:sha256-hex\n" + "\n".join(lines) + "\n")
    os.replace(staged, path)
    return path
