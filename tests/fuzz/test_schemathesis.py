"""Schemathesis, a third-party judge, against real replicas: each backend with each memory API,
started as the image starts them, every check (`--checks all`), a fixed seed. Zero failures:
the OpenAPI document (chat_history_k8s/api/openapi.py) tells the truth about what the service
answers, and no generated request, valid or not, gets a 5xx, an undocumented status, a body
off its schema or a 2xx for invalid data. Run by scripts/fuzz.sh, which prints the counts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testsupport import Replica

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20261130
MAX_EXAMPLES = 300
TARGETS = [
    ("memory", "message-history"),
    ("memory", "checkpointer"),
    ("redis", "message-history"),
    ("redis", "checkpointer"),
]


@pytest.fixture(params=TARGETS, ids=["-".join(t) for t in TARGETS])
def replica(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> Iterator[Replica]:
    backend, api = request.param
    settings = {"HISTORY_BACKEND": backend, "HISTORY_API": api}
    if backend == "redis":
        settings["REDIS_URL"] = redis_url
    replica = Replica(f"fuzz-{backend}-{api}", tmp_path, settings, access_log=False)
    replica.start()
    try:
        replica.wait_ready()
        yield replica
    finally:
        replica.stop()


def schemathesis() -> str:
    # The one installed next to this Python (the `test` extra): missing means a broken install,
    # never a reason to skip.
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert found, "schemathesis not found: pip install -c constraints.txt -e '.[test]'"
    return found


def test_schemathesis_finds_nothing(replica: Replica, tmp_path: Path) -> None:
    document = httpx.get(f"{replica.url}/openapi.json", timeout=10).json()
    operations = sum(len(methods) for methods in document["paths"].values())
    argv = [
        schemathesis(), "--config-file", str(CONFIG), "--no-color",
        "run", f"{replica.url}/openapi.json",
        "--checks", "all",
        "--seed", str(SEED),
        "--max-examples", str(MAX_EXAMPLES),
        "--generation-database", "none",
        "--workers", "1",
        "--request-timeout", "10",
    ]  # fmt: skip
    started = time.monotonic()
    run = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    took = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20_000:]
    tested = re.search(r"Tested: (\d+)", output)
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    assert tested and cases, output[-5000:]
    assert int(tested.group(1)) == operations, "every operation of the document is tested"
    assert cases.group(1) == cases.group(2), output[-5000:]
    assert "No issues found" in output
    stateful = re.search(r"API Links:\s+(\d+) covered / (\d+) selected / (\d+) total", output)
    assert stateful and stateful.group(1) == stateful.group(3), "every link is walked"
    print(
        f"\nschemathesis {replica.name}: {operations} operations, {cases.group(1)} cases, "
        f"{stateful.group(1)} links, 0 failures, seed {SEED}, {took:.0f} s"
    )
