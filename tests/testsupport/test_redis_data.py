"""testsupport.redis.data_dir: a redis-server's AOF on tmpfs where the machine has one (the
suites test the software, not the disk's fsync), on disk otherwise, found again by a second
server on the same work directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from testsupport import redis as test_redis
from testsupport.redis import PREFIX, SHM, RedisServer, data_dir, is_tmpfs


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for /dev/shm that counts as tmpfs."""
    home = tmp_path / "shm"
    home.mkdir()
    monkeypatch.setattr(test_redis, "SHM", home)
    monkeypatch.setattr(test_redis, "is_tmpfs", lambda path: True)
    return home


def test_on_tmpfs_the_data_is_a_directory_of_this_process_linked_from_the_workdir(
    tmp_path: Path, shm: Path
) -> None:
    data = data_dir(tmp_path / "work")

    assert data.parent == shm and data.name.startswith(f"{PREFIX}{os.getpid()}-")
    assert data.is_dir() and data.stat().st_mode & 0o777 == 0o700
    link = tmp_path / "work" / "redis-data"
    assert link.is_symlink() and link.resolve() == data
    assert data_dir(tmp_path / "work") == data, "a second server finds the first one's data"
    assert data_dir(tmp_path / "other") != data


def test_without_tmpfs_the_data_is_a_directory_in_the_workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(test_redis, "is_tmpfs", lambda path: False)

    data = data_dir(tmp_path)

    assert data == tmp_path / "redis-data" and data.is_dir() and not data.is_symlink()


def test_directories_of_dead_processes_are_removed_and_a_dangling_link_replaced(
    tmp_path: Path, shm: Path
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan, ours = shm / f"{PREFIX}{dead.pid}-gone", shm / f"{PREFIX}{os.getpid()}-kept"
    orphan.mkdir()
    ours.mkdir()
    (tmp_path / "redis-data").symlink_to(tmp_path / "nowhere")

    data = data_dir(tmp_path)

    assert not orphan.exists() and ours.is_dir()
    assert (tmp_path / "redis-data").resolve() == data and data.is_dir()


def test_only_a_writable_tmpfs_with_room_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    tmpfs = next((Path(m[1]) for m in mounts if m[2] == "tmpfs" and os.access(m[1], os.W_OK)), None)
    if tmpfs is None:
        pytest.skip("no writable tmpfs mounted on this machine")
    other = next((Path(m[1]) for m in mounts if m[2] != "tmpfs" and Path(m[1]).is_dir()), None)
    assert other is None or not is_tmpfs(other)
    monkeypatch.setattr(test_redis, "SHM_MIN_FREE", 0)
    assert is_tmpfs(tmpfs)
    monkeypatch.setattr(test_redis, "SHM_MIN_FREE", 1 << 60)  # more than any machine has
    assert not is_tmpfs(tmpfs)


@pytest.mark.skipif(not is_tmpfs(SHM), reason="/dev/shm: no writable tmpfs with room")
def test_a_real_server_writes_its_aof_on_tmpfs_and_keeps_it_across_a_restart(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        with server.client() as client:
            client.rpush("kept", "a", "b")
        server.kill()
        server.start()
        with server.client() as client:
            assert client.lrange("kept", 0, -1) == [b"a", b"b"]
    finally:
        server.stop()
    fs = subprocess.run(
        ["stat", "-f", "-c", "%T", str(server.data)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert fs == "tmpfs" and (server.data / "appendonlydir").is_dir()
    assert (tmp_path / "redis-data").resolve() == server.data
