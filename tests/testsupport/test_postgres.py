"""testsupport.PostgresServer: a real PostgreSQL server on loopback, removed by `close()`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testsupport import LOOPBACK, PostgresServer, find_tool, require_tool

pytestmark = pytest.mark.skipif(
    find_tool("postgres") is None or find_tool("psql") is None,
    reason="PostgreSQL is not installed (apt-get install postgresql)",
)


def psql(server: PostgresServer, sql: str) -> str:
    argv = [require_tool("psql"), "-h", LOOPBACK, "-p", str(server.port), "-U", "postgres"]
    done = subprocess.run(
        [*argv, "-tAc", sql], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


def test_it_serves_with_the_given_settings_keeps_data_across_a_restart_and_close_removes_it(
    tmp_path: Path,
) -> None:
    server = PostgresServer(tmp_path, settings={"fsync": "off"})
    try:
        server.start()
        assert psql(server, "SHOW fsync") == "off"
        assert psql(server, "SHOW listen_addresses") == LOOPBACK
        psql(server, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        server.stop()
        assert not server.running
        server.start()
        assert psql(server, "SELECT v FROM kept") == "42"
        data = server.data
        assert data is not None and data.is_dir()
    finally:
        server.close()
    assert not server.running
    assert server.data is None and not data.exists()
