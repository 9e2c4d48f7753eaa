"""The key file: its format, its reload on change, and the key-making command."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from chat_history_k8s.auth import KeyFileError, KeyRing, hash_key, parse_key_file, scoped
from tests.conftest import app_client, make_settings
from testsupport import new_key, write_key_file


def test_a_key_file_maps_hashes_to_principals_and_skips_comments_and_blank_lines() -> None:
    text = (
        f"# keys\n\nalice:{hash_key('a1')}\n alice:{hash_key('a2').upper()} \nbob:{hash_key('b')}\n"
    )
    assert parse_key_file(text) == {
        hash_key("a1"): "alice", hash_key("a2"): "alice", hash_key("b"): "bob",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("alice", "expected principal:sha256-hex"),
        (f"al/ice:{hash_key('k')}", "expected principal:sha256-hex"),
        ("alice:plaintext-key", "64 hex digits"),
        (f"alice:{hash_key('k')[:-1]}", "64 hex digits"),
    ],
)
def test_a_malformed_line_is_refused_with_its_line_number(line: str, problem: str) -> None:
    with pytest.raises(KeyFileError, match=f"line 2: .*{problem}"):
        parse_key_file(f"# ok\n{line}\n")


def test_one_key_for_two_principals_is_refused() -> None:
    with pytest.raises(KeyFileError, match="two principals"):
        parse_key_file(f"alice:{hash_key('k')}\nbob:{hash_key('k')}\n")


def test_sessions_of_distinct_principals_never_share_a_store_id() -> None:
    assert scoped(None, "s1") == "s1"
    assert scoped("alice", "s1") != scoped("bob", "s1")


def test_the_ring_rereads_the_file_when_it_changes(tmp_path: Path) -> None:
    now = [0.0]
    old, new = new_key(), new_key()
    path = write_key_file(tmp_path / "keys", {"alice": [old]})
    ring = KeyRing(str(path), check_seconds=1.0, clock=lambda: now[0])
    assert ring.principal(old) == "alice" and ring.principal(new) is None
    write_key_file(path, {"alice": [new]})
    assert ring.principal(old) == "alice"  # not looked at again within check_seconds
    now[0] = 1.0
    assert ring.principal(old) is None and ring.principal(new) == "alice"
    assert ring.reloads == {"ok": 1, "error": 0}


def test_a_bad_edit_keeps_the_last_good_keys_and_is_counted(tmp_path: Path) -> None:
    now = [0.0]
    key = new_key()
    path = write_key_file(tmp_path / "keys", {"alice": [key]})
    ring = KeyRing(str(path), check_seconds=1.0, clock=lambda: now[0])
    path.write_text("alice:not-a-hash\n")
    now[0] = 5.0
    assert ring.principal(key) == "alice"
    assert ring.reloads == {"ok": 0, "error": 1}
    reloads = {m.name: m.samples for m in ring.size_metrics()}["chat_auth_key_reloads"]
    assert reloads == {("error",): 1.0, ("ok",): 0.0}


def test_a_missing_or_bad_file_at_startup_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        KeyRing(str(tmp_path / "absent"))
    (tmp_path / "bad").write_text("alice\n")
    with pytest.raises(KeyFileError, match="line 1"):
        KeyRing(str(tmp_path / "bad"))


def test_the_key_command_makes_a_key_and_its_line() -> None:
    run = [sys.executable, "-m", "chat_history_k8s.auth"]
    made = subprocess.run([*run, "new", "alice"], capture_output=True, text=True, check=True)
    key = made.stdout.split("key:", 1)[1].split()[0]
    assert f"line: alice:{hash_key(key)}" in made.stdout
    hashed = subprocess.run(
        [*run, "hash", "alice"], input=key + "\n", capture_output=True, text=True, check=True
    )
    assert hashed.stdout == f"alice:{hash_key(key)}\n"
    bad = subprocess.run([*run, "new", "a/b"], capture_output=True, text=True)
    assert bad.returncode == 2 and "principal must be" in bad.stderr


def test_a_replica_with_an_unreadable_key_file_does_not_start(tmp_path: Path) -> None:
    settings = make_settings(
        "memory", auth_enabled=True, auth_api_keys_file=str(tmp_path / "absent")
    )

    async def start() -> None:
        async with app_client(settings):
            pass

    with pytest.raises(KeyFileError, match="cannot read the API key file"):
        asyncio.run(start())
