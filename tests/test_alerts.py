"""The shipped alert rules parse and name only metrics the service really exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import app_client, make_settings

RULES = Path(__file__).resolve().parents[1] / "docs" / "alerts" / "prometheus-rules.yaml"
EXTERNAL = re.compile(r"^(redis_|kube_)")  # redis_exporter and kube-state-metrics


def rules() -> list[dict[str, object]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    words = set(re.findall(r"[a-z_][a-z0-9_]*", without_labels))
    functions = {"sum", "rate", "clamp_min", "by", "e"}
    return {w for w in words if "_" in w and w not in functions}


ALERTS = {
    "ChatHistoryUnavailable": "page",
    "ChatHistory5xxRate": "page",
    "ChatHistoryPodsNotReady": "warn",
    "ChatHistoryMemoryStoreNearCap": "warn",
    "ChatHistoryMemoryEvictions": "warn",
    "ChatHistoryRedisDown": "page",
    "ChatHistoryRedisMemoryNearMax": "warn",
}


def test_every_rule_has_an_expression_a_severity_and_a_runbook_link() -> None:
    severities = {}
    for rule in rules():
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        severities[rule["alert"]] = labels["severity"]
        assert metric_names(str(rule["expr"])), f"{rule['alert']}: the expression names no metric"
        assert str(annotations["runbook"]).startswith("docs/runbook.md#")
    assert severities == ALERTS


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_chat_metrics_named_by_the_rules_are_exported(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    async with app_client(make_settings(backend, url)) as client:
        await client.post("/v1/chat", json={"session_id": "a", "message": "x"})
        await client.post("/v1/chat", json={"message": ""})
        exported = _exported((await client.get("/metrics")).text)
    wanted = {name for rule in rules() for name in metric_names(str(rule["expr"]))}
    ours = {name for name in wanted if not EXTERNAL.match(name)}
    if backend == "redis":
        ours = {name for name in ours if not name.startswith("chat_history_memory_")}
    assert ours and ours <= exported, ours - exported


def _exported(text: str) -> set[str]:
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"
    }


def test_runbook_anchors_exist() -> None:
    runbook = (RULES.parents[1] / "runbook.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("#")
    }
    for rule in rules():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        anchor = str(annotations["runbook"]).split("#", 1)[1]
        assert anchor in headings, anchor
