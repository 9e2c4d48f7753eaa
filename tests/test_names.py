"""The project's names cannot collide with other projects' (issue 12): one import package,
`chat_history_k8s`, in a distribution that PyPI's unrelated `chat-history` is not; and the
`service` shim keeps DESIGN.md's `uvicorn service.main:app` working without being packaged."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_shim_serves_the_same_app() -> None:
    import chat_history_k8s.main
    import service.main

    assert service.main.app is chat_history_k8s.main.app


def test_the_distribution_name_is_not_pypis_unrelated_chat_history() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "chat-history-k8s"


def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO_ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("chat_history_k8s-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == {"chat_history_k8s"}
    # The page's files and the hop check ship inside it.
    assert "chat_history_k8s/web/static/index.html" in names
    assert "chat_history_k8s/hopcheck/__main__.py" in names


def test_the_version_is_the_installed_distributions() -> None:
    """/v1/info and the OpenAPI document report it; a stale distribution name would make it
    "0.0.0+source" everywhere, the image included."""
    from importlib.metadata import version

    import chat_history_k8s

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert chat_history_k8s.__version__ == version("chat-history-k8s") == project["version"]
