"""The deprecated LangChain history helpers are not used anywhere in the service."""

from __future__ import annotations

from pathlib import Path

import service

FORBIDDEN = ("InMemoryChatMessageHistory", "RunnableWithMessageHistory")


def test_service_code_never_names_the_deprecated_helpers() -> None:
    root = Path(service.__file__).parent
    offenders = [
        f"{path.relative_to(root)}: {name}"
        for path in root.rglob("*.py")
        for name in FORBIDDEN
        if name in path.read_text()
    ]
    assert offenders == []
