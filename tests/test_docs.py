"""Every ```python block of README.md and docs/*.md runs as written: a fresh interpreter per
block, from the repository root, with REDIS_URL naming this test's redis-server (the snippets
read it, defaulting to a local Redis)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from testsupport import REPO_ROOT, service_env

DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def snippets() -> list[pytest.ParameterSet]:
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(pytest.param(match.group(1), id=f"{path.name}:{line}"))
    return found


def test_the_docs_have_snippets_to_run() -> None:
    assert len(snippets()) >= 2  # the checkpointer and the history class: never vacuous


@pytest.mark.parametrize("snippet", snippets())
def test_every_python_snippet_of_the_docs_runs_as_written(snippet: str, redis_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=REPO_ROOT,
        env=service_env({"REDIS_URL": redis_url}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
