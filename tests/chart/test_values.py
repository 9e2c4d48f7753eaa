"""Bad values fail `helm lint --strict` and `helm template` with a message naming the value;
every value is documented."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import CHART, RELEASE, load_yaml, run_helm

# (values file content, a fragment the error must contain)
BAD_VALUES = {
    "principal_with_a_slash": (
        "auth:\n  principal: team/a\n",
        "at '/auth/principal'",
    ),
    "negative_rate_limit": (
        "limits:\n  rateLimitTurns: -1\n",
        "at '/limits/rateLimitTurns'",
    ),
    "replica_count_as_word": (
        'replicaCount: "three"\n',
        "at '/replicaCount': got string, want integer",
    ),
    "unknown_backend": (
        "history:\n  backend: postgres\n",
        "at '/history/backend': value must be one of 'memory', 'redis'",
    ),
    "unknown_api": (
        "history:\n  api: langgraph\n",
        "at '/history/api': value must be one of 'message-history', 'checkpointer'",
    ),
    "zero_lease": (
        "history:\n  checkpointer:\n    leaseSeconds: 0\n",
        "at '/history/checkpointer/leaseSeconds'",
    ),
    "unknown_top_level_key": ("replicas: 3\n", "additional properties 'replicas' not allowed"),
    "misspelled_nested_key": (
        "redis:\n  persistance:\n    size: 1Gi\n",
        "at '/redis': additional properties 'persistance' not allowed",
    ),
    "bad_appendfsync": ("redis:\n  appendfsync: sometimes\n", "at '/redis/appendfsync'"),
    "latest_tag": ("image:\n  tag: latest\n", "at '/image/tag'"),
    "odd_history_cap": ("history:\n  maxMessages: 999\n", "at '/history/maxMessages'"),
    "zero_replicas": ("replicaCount: 0\n", "at '/replicaCount'"),
    "maxmemory_not_a_size": ("redis:\n  maxmemory: lots\n", "at '/redis/maxmemory'"),
    "unknown_architecture": (
        "redis:\n  architecture: cluster\n",
        "at '/redis/architecture': value must be one of 'standalone', 'replication'",
    ),
    "replication_with_one_replica": (
        "redis:\n  architecture: replication\n  replication:\n    replicas: 1\n",
        "at '/redis/replication/replicas': minimum: got 1, want 2",
    ),
    "external_with_the_charts_replication": (
        "redis:\n  architecture: replication\n  external:\n    enabled: true\n"
        "    url: redis://r:6379\n",
        "at '/redis/architecture': value must be 'standalone'",
    ),
    "external_sentinel_without_sentinels": (
        "redis:\n  external:\n    enabled: true\n    mode: sentinel\n    sentinelMaster: m\n",
        "at '/redis/external/sentinels': minItems: got 0, want 1",
    ),
    "external_sentinel_without_master": (
        "redis:\n  external:\n    enabled: true\n    mode: sentinel\n    sentinels: [s:26379]\n",
        "at '/redis/external/sentinelMaster': minLength: got 0, want 1",
    ),
    "external_sentinel_with_a_url_too": (
        "redis:\n  external:\n    enabled: true\n    mode: sentinel\n"
        "    sentinels: [s:26379]\n    sentinelMaster: m\n    url: redis://r:6379\n",
        "at '/redis/external/url': maxLength: got 14, want 0",
    ),
    "external_cluster_without_url": (
        "redis:\n  external:\n    enabled: true\n    mode: cluster\n",
        "at '/redis/external/url': minLength: got 0, want 1",
    ),
    "external_url_with_a_password": (
        "redis:\n  external:\n    url: redis://:secret@r:6379\n",
        "at '/redis/external/url'",
    ),
    "sentinel_address_without_port": (
        "redis:\n  external:\n    sentinels: [sentinel-a]\n",
        "at '/redis/external/sentinels/0'",
    ),
    "no_dns_peer": ("networkPolicy:\n  dnsTo: []\n", "at '/networkPolicy/dnsTo'"),
}
# Combinations the schema cannot express fail in the templates, saying what to set. `helm lint`
# only logs a template's `fail` (helm's lint mode), so these are checked with `helm template`,
# which `helm install` and `upgrade` share.
BAD_COMBINATIONS = {
    "limits_without_auth": (
        "auth:\n  enabled: false\n",
        "limits.rateLimitTurns and limits.maxSessionsPerPrincipal are per principal and need "
        "auth.enabled=true",
    ),
    "maxmemory_above_limit": (
        "redis:\n  maxmemory: 250mb\n",
        "redis.maxmemory (250mb) must be at most 90% of redis.resources.limits.memory (256Mi)",
    ),
    "grace_period_too_short": (
        "terminationGracePeriodSeconds: 20\n",
        "terminationGracePeriodSeconds (20) must be greater than",
    ),
    "window_above_cap": (
        "history:\n  maxMessages: 10\n  windowMessages: 20\n",
        "history.windowMessages (20) must not exceed history.maxMessages (10)",
    ),
    "memory_total_below_session_cap": (
        "memory:\n  maxMessages: 500\n",
        "memory.maxMessages (500) must be at least history.maxMessages (1000)",
    ),
    "openai_without_model": (
        "chat:\n  model: openai\n",
        "chat.model=openai needs chat.openai.model",
    ),
    "ttl_below_the_lease": (
        "history:\n  api: checkpointer\n  ttlSeconds: 10\n",
        "history.ttlSeconds (10) must be 0 or at least history.checkpointer.leaseSeconds (30)",
    ),
    "wait_timeout_not_under_the_socket_timeout": (
        "redis:\n  client:\n    waitTimeoutSeconds: 1.0\n",
        "redis.client.waitTimeoutSeconds (1) must be less than "
        "redis.client.socketTimeoutSeconds (1)",
    ),
    "wait_for_replicas_a_standalone_redis_lacks": (
        "redis:\n  client:\n    waitReplicas: 1\n",
        "redis.client.waitReplicas (1) must not exceed the replicas there are (0)",
    ),
    "wait_for_more_replicas_than_deployed": (
        "redis:\n  architecture: replication\n  client:\n    waitReplicas: 3\n",
        "redis.client.waitReplicas (3) must not exceed the replicas there are (2)",
    ),
    "min_replicas_to_write_above_the_replicas": (
        "redis:\n  architecture: replication\n  replication:\n    minReplicasToWrite: 3\n",
        "redis.replication.minReplicasToWrite (3) must not exceed redis.replication.replicas (2)",
    ),
    "sentinel_password_key_without_sentinel_mode": (
        "redis:\n  external:\n    enabled: true\n    url: redis://r:6379\n"
        "    existingSecret: s\n    sentinelPasswordKey: k\n"
        "    egress: [{ports: [{port: 6379}]}]\n",
        "redis.external.sentinelPasswordKey needs redis.external.mode=sentinel",
    ),
    "external_redis_with_no_egress": (
        "redis:\n  external:\n    enabled: true\n    url: redis://r:6379\n",
        "redis.external.egress is required with networkPolicy.enabled",
    ),
    "lease_shorter_than_a_slow_model_call": (
        "history:\n  api: checkpointer\nchat:\n  model: openai\n  openai:\n    model: m\n",
        "history.checkpointer.leaseSeconds (30) must exceed twice chat.openai.timeoutSeconds (30",
    ),
}


def values_file(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "bad-values.yaml"
    path.write_text(content)
    return path


@pytest.fixture(params=sorted(BAD_VALUES), ids=str)
def bad_values(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    content, fragment = BAD_VALUES[request.param]
    return values_file(tmp_path, content), fragment


@pytest.fixture(params=sorted(BAD_VALUES) + sorted(BAD_COMBINATIONS), ids=str)
def bad_values_or_combination(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    content, fragment = {**BAD_VALUES, **BAD_COMBINATIONS}[request.param]
    return values_file(tmp_path, content), fragment


def test_bad_value_fails_helm_template_with_a_clear_message(
    bad_values_or_combination: tuple[Path, str],
) -> None:
    path, fragment = bad_values_or_combination
    done = run_helm("template", RELEASE, str(CHART), "-f", str(path))
    assert done.returncode != 0
    assert fragment in done.stderr, done.stderr


def test_bad_value_fails_helm_lint(bad_values: tuple[Path, str]) -> None:
    path, fragment = bad_values
    done = run_helm("lint", "--strict", str(CHART), "-f", str(path))
    assert done.returncode != 0
    assert fragment in done.stdout + done.stderr, done.stdout + done.stderr


def test_set_flags_are_checked_too() -> None:
    done = run_helm("template", RELEASE, str(CHART), "--set", "history.backend=postgres")
    assert done.returncode != 0
    assert "value must be one of 'memory', 'redis'" in done.stderr


def leaf_paths(node: Any, prefix: str = "") -> set[str]:
    """Dotted paths of values.yaml; a map or list value that users pass whole (resources,
    nodeSelector, ...) is one leaf, as its `## @param` documents it."""
    if isinstance(node, dict) and node and prefix not in WHOLE_VALUES:
        out: set[str] = set()
        for key, child in node.items():
            out |= leaf_paths(child, f"{prefix}.{key}" if prefix else key)
        return out
    return {prefix}


WHOLE_VALUES = {
    "resources",
    "redis.resources",
    "redis.replication.sentinelResources",
    "tests.resources",
}
PARAM = re.compile(r"^\s*## @param (\S+) \S")


def documented_params() -> list[str]:
    return [
        m.group(1)
        for line in (CHART / "values.yaml").read_text().splitlines()
        if (m := PARAM.match(line))
    ]


def test_every_value_is_documented_once_and_every_doc_names_a_value() -> None:
    params = documented_params()
    assert len(params) == len(set(params)), "a value is documented twice"
    assert set(params) == leaf_paths(load_yaml(CHART / "values.yaml"))


def test_chart_readme_table_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    table = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    assert table == set(documented_params())


def test_schema_is_strict_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    loose: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            is_object = node.get("type") == "object" and "properties" in node
            if is_object and node.get("additionalProperties") is not False:
                loose.append(where)
            for key, child in node.items():
                walk(child, f"{where}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{where}/{i}")

    walk(schema, "")
    assert not loose, f"objects accepting unknown keys: {loose}"


def notes(*sets: str) -> str:
    args = ["install", RELEASE, str(CHART), "--dry-run=client"]
    for value in sets:
        args += ["--set", value]
    done = run_helm(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("NOTES:", 1)[1]


def test_notes_explain_how_to_get_an_image_that_comes_from_no_registry() -> None:
    local = notes()
    assert "The image chat-history:0.1.0 comes from no registry" in local
    assert "kind load docker-image chat-history:0.1.0 --name" in local
    pulled = notes("image.repository=registry.example/team/chat-history")
    assert "comes from no registry" not in pulled
