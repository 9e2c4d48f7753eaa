"""Fixtures for the chart tests: the pinned helm binary and a cached `helm template`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from testsupport import REPO_ROOT, require_tool

CHART = REPO_ROOT / "helm" / "chat-history"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "chat-history"

Manifest = dict[str, Any]


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    # The chart tests are the chart's judges: without helm they fail, they never skip.
    helm = require_tool("helm")
    return subprocess.run([helm, *args], capture_output=True, text=True, check=False, timeout=60)


def render_uncached(values_files: tuple[str, ...], sets: tuple[str, ...]) -> tuple[Manifest, ...]:
    """`helm template` run now (the `render` fixture caches its renders)."""
    args = ["template", RELEASE, str(CHART), "--namespace", "chat"]
    for f in values_files:
        args += ["-f", f]
    for s in sets:
        args += ["--set", s]
    done = run_helm(*args)
    if done.returncode != 0:
        raise AssertionError(f"helm template failed:\n{done.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


_render = cache(render_uncached)


Render = Callable[..., list[Manifest]]


@pytest.fixture(scope="session")
def render() -> Render:
    """render(values_file?, *sets) -> the manifests `helm template` makes of them."""

    def _do(values_file: Path | None = None, *sets: str) -> list[Manifest]:
        files = (str(values_file),) if values_file else ()
        return list(_render(files, tuple(sets)))

    return _do


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in by_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(manifests: list[Manifest]) -> list[tuple[str, Manifest, dict[str, str]]]:
    """(object name, pod spec, pod labels) of every workload and bare pod."""
    out = []
    for m in manifests:
        if m["kind"] in ("Deployment", "StatefulSet"):
            template = m["spec"]["template"]
            out.append(
                (
                    f"{m['kind']}/{m['metadata']['name']}",
                    template["spec"],
                    template["metadata"]["labels"],
                )
            )
        elif m["kind"] == "Pod":
            out.append((f"Pod/{m['metadata']['name']}", m["spec"], m["metadata"]["labels"]))
    return out


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
