"""redis.architecture (standalone, replication) and redis.external: what each renders, and
that the chat pods' settings follow the choice."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.chart.conftest import CI_VALUES, RELEASE, Manifest, Render, by_kind, one, selects
from tests.chart.test_values import notes
from testsupport import require_tool

REDIS = f"{RELEASE}-redis"
HEADLESS = f"{REDIS}-headless"
NAMESPACE = "chat"  # conftest renders into it
REPLICATION = next(p for p in CI_VALUES if p.name == "redis-replication-values.yaml")
EXTERNAL = next(p for p in CI_VALUES if p.name == "redis-external-values.yaml")


def pod_fqdn(ordinal: int) -> str:
    return f"{REDIS}-{ordinal}.{HEADLESS}.{NAMESPACE}.svc.cluster.local"


@pytest.fixture(scope="module")
def replication(render: Render) -> list[Manifest]:
    return render(REPLICATION)


def sts_spec(manifests: list[Manifest]) -> Manifest:
    spec: Manifest = one(manifests, "StatefulSet", REDIS)["spec"]
    return spec


def test_replication_is_a_primary_two_replicas_and_a_sentinel_in_each_pod(
    replication: list[Manifest],
) -> None:
    spec = sts_spec(replication)
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    containers = {c["name"]: c for c in spec["template"]["spec"]["containers"]}
    assert set(containers) == {"redis", "sentinel"}
    assert containers["sentinel"]["command"] == [
        "redis-server",
        "/run/redis/sentinel.conf",
        "--sentinel",
    ]
    assert {"name": "sentinel", "containerPort": 26379, "protocol": "TCP"} in containers[
        "sentinel"
    ]["ports"]
    for c in containers.values():
        assert {"livenessProbe", "readinessProbe", "startupProbe"} <= set(c), c["name"]
    (init,) = spec["template"]["spec"]["initContainers"]
    assert init["command"] == ["sh", "/etc/redis/prepare.sh"]
    assert init["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]


def test_every_redis_pod_writes_an_aof_and_a_primary_needs_a_current_replica(
    replication: list[Manifest],
) -> None:
    conf = one(replication, "ConfigMap", REDIS)["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in conf  # the same file in every pod, primary or replica
    assert "min-replicas-to-write 1" in conf
    assert "min-replicas-max-lag 10" in conf


def test_sentinels_monitor_with_quorum_two_and_announce_pod_dns_names(
    replication: list[Manifest],
) -> None:
    script = one(replication, "ConfigMap", REDIS)["data"]["prepare.sh"]
    lines = script.splitlines()
    monitor = next(line for line in lines if "sentinel monitor" in line)
    assert monitor.strip() == 'echo "sentinel monitor chat-history $primary 6379 $quorum"'
    # resolve-hostnames must precede the monitor line, or a hostname primary is refused.
    order = [i for i, line in enumerate(lines) if "resolve-hostnames yes" in line]
    assert order and order[0] < lines.index(next(x for x in lines if "sentinel monitor" in x))
    for directive in (
        "sentinel announce-hostnames yes",
        "sentinel announce-ip $me",
        "replica-announce-ip $me",
        # ci/redis-replication-values.yaml's timings (the chart's defaults: 5000, 10000);
        # down-after per pod: test_each_pods_sentinel_calls_the_primary_down_a_stagger_later.
        "sentinel failover-timeout chat-history 1500",
    ):
        assert any(directive in line for line in lines), directive
    assert f'domain="{HEADLESS}.{NAMESPACE}.svc.cluster.local"' in lines
    # A first start (no Sentinel answers) makes pod 0 the primary.
    assert f'  primary="{REDIS}""-0.$domain"' in lines
    # The password only ever goes through printf (a builtin), never an argument.
    for line in lines:
        if "$password" in line and "printf" not in line:
            assert re.search(r'REDISCLI_AUTH="\$password"|case "\$password"', line), line


def prepared_sentinel_conf(manifests: list[Manifest], pod: int, root: Path) -> list[str]:
    """The sentinel.conf the init container's prepare.sh writes in pod `pod` when no other
    Sentinel answers (a first start), run here with /run and /etc moved under `root`."""
    data = one(manifests, "ConfigMap", REDIS)["data"]
    (root / "secrets").mkdir(parents=True)
    (root / "secrets" / "password").write_text("s3cret")
    (root / "etc").mkdir()
    (root / "etc" / "redis.conf").write_text(data["redis.conf"])
    (root / "run").mkdir()
    script = (
        data["prepare.sh"]
        .replace("/run/secrets/redis/", f"{root}/secrets/")
        .replace("/etc/redis/", f"{root}/etc/")
        .replace("/run/redis/", f"{root}/run/")
    )
    cli = Path(require_tool("redis-cli")).parent  # asks the other pods' Sentinels: none runs
    env = {"PATH": f"{cli}:{os.environ['PATH']}", "POD_NAME": f"{REDIS}-{pod}"}
    subprocess.run(["sh", "-c", script], env=env, check=True, capture_output=True, timeout=60)
    return (root / "run" / "sentinel.conf").read_text().splitlines()


def test_each_pods_sentinel_calls_the_primary_down_a_stagger_later(
    render: Render, tmp_path: Path
) -> None:
    """Pod N's Sentinel waits downAfterMilliseconds + (last - N) x downAfterStaggerMilliseconds
    and the last pod's starts no failover while a pod is gone, so the two Sentinels left when
    the primary's pod dies never start competing elections at the same instant; every other
    line is the same in every pod but the pod's own name."""
    manifests = render(REPLICATION, "redis.replication.discoverySeconds=0")
    confs = [prepared_sentinel_conf(manifests, n, tmp_path / str(n)) for n in range(3)]
    down_after = [
        [line for line in conf if line.startswith("sentinel down-after-milliseconds")]
        for conf in confs
    ]
    assert down_after == [
        [f"sentinel down-after-milliseconds chat-history {ms}"] for ms in (2600, 2300, 2000)
    ]
    # A majority, 2 of 3, except the last pod's Sentinel: it never starts a failover while a pod
    # is gone (3 of 3), so of the 2 Sentinels left when pod 0 or 1 dies only one can.
    monitors = [
        next(line for line in conf if line.startswith("sentinel monitor")) for conf in confs
    ]
    assert monitors == [f"sentinel monitor chat-history {pod_fqdn(0)} 6379 {q}" for q in (2, 2, 3)]
    # pod 0's conf; the other pods' differ in their own name, down-after and quorum only.
    assert "sentinel failover-timeout chat-history 1500" in confs[0]

    def the_rest(n: int) -> list[str]:
        return [
            line.replace(pod_fqdn(n), "ME")
            for line in confs[n]
            if "down-after" not in line and "monitor" not in line
        ]

    for n in range(len(confs)):
        assert the_rest(n) == the_rest(0)

    unstaggered = render(
        REPLICATION,
        "redis.replication.discoverySeconds=0",
        "redis.replication.downAfterStaggerMilliseconds=0",
    )
    first = prepared_sentinel_conf(unstaggered, 0, tmp_path / "unstaggered")
    assert "sentinel down-after-milliseconds chat-history 2000" in first


def test_the_quorum_is_a_majority_of_the_sentinels(render: Render, tmp_path: Path) -> None:
    manifests = render(
        REPLICATION, "redis.replication.replicas=4", "redis.replication.discoverySeconds=0"
    )
    assert sts_spec(manifests)["replicas"] == 5
    monitors = [
        next(line for line in prepared_sentinel_conf(manifests, n, tmp_path / str(n))
             if line.startswith("sentinel monitor"))
        for n in range(5)
    ]  # fmt: skip
    # A majority, 3 of 5; the last pod's Sentinel waits for all 5 before it starts a failover.
    assert [m.rsplit(" ", 1)[1] for m in monitors] == ["3", "3", "3", "3", "5"]


def test_the_chat_pods_follow_the_sentinels(replication: list[Manifest]) -> None:
    config = one(replication, "ConfigMap", RELEASE)["data"]
    assert config["REDIS_MODE"] == "sentinel"
    assert config["REDIS_SENTINELS"].split(",") == [f"{pod_fqdn(i)}:26379" for i in range(3)]
    assert config["REDIS_SENTINEL_MASTER"] == "chat-history"
    assert config["REDIS_WAIT_REPLICAS"] == "1"
    assert "REDIS_URL" not in config  # only Sentinel knows the primary
    # The chart's Sentinels take the data nodes' password.
    assert config["REDIS_PASSWORD_FILE"] == "/run/secrets/redis/password"
    assert config["REDIS_SENTINEL_PASSWORD_FILE"] == "/run/secrets/redis/password"
    # Pod names resolve through the headless Service, before the pods are ready too.
    headless = one(replication, "Service", HEADLESS)["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert [p["port"] for p in headless["ports"]] == [6379, 26379]
    assert one(replication, "StatefulSet", REDIS)["spec"]["serviceName"] == HEADLESS
    assert [s["metadata"]["name"] for s in by_kind(replication, "Service")] == [HEADLESS, RELEASE]


def test_the_settings_follow_the_architecture_without_other_values(render: Render) -> None:
    def mode(*sets: str) -> str:
        return str(one(render(None, *sets), "ConfigMap", RELEASE)["data"]["REDIS_MODE"])

    assert mode() == "standalone"
    assert mode("redis.architecture=replication") == "sentinel"
    assert (
        mode(
            "redis.external.enabled=true",
            "redis.external.mode=cluster",
            "redis.external.url=redis://node-0.example:6379",
            "redis.external.egress[0].ports[0].port=6379",
        )
        == "cluster"
    )


def test_replicas_spread_over_nodes_and_a_drain_takes_one_at_a_time(
    replication: list[Manifest],
) -> None:
    spec = sts_spec(replication)["template"]["spec"]
    labels = sts_spec(replication)["template"]["metadata"]["labels"]
    (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert selects(spread["labelSelector"]["matchLabels"], labels)
    pdb = one(replication, "PodDisruptionBudget", REDIS)["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert selects(pdb["selector"]["matchLabels"], labels)


def test_standalone_has_no_sentinel_and_no_redis_pdb(render: Render) -> None:
    manifests = render(None)
    spec = sts_spec(manifests)
    assert spec["replicas"] == 1
    assert [c["name"] for c in spec["template"]["spec"]["containers"]] == ["redis"]
    assert [p["metadata"]["name"] for p in by_kind(manifests, "PodDisruptionBudget")] == [RELEASE]
    conf = one(manifests, "ConfigMap", REDIS)["data"]
    assert "min-replicas-to-write" not in conf["redis.conf"]
    assert "sentinel" not in conf["prepare.sh"]


def test_external_redis_deploys_nothing_and_points_the_chat_pods_at_it(render: Render) -> None:
    manifests = render(EXTERNAL)
    assert [m["metadata"]["name"] for m in manifests if REDIS in m["metadata"]["name"]] == []
    assert by_kind(manifests, "StatefulSet") == []
    assert [s["metadata"]["name"] for s in by_kind(manifests, "Secret")] == [f"{RELEASE}-api-keys"]
    config = one(manifests, "ConfigMap", RELEASE)["data"]
    assert config["REDIS_MODE"] == "sentinel"
    assert config["REDIS_SENTINELS"] == (
        "sentinel-a.redis.example.internal:26379,sentinel-b.redis.example.internal:26379,"
        "sentinel-c.redis.example.internal:26379"
    )
    assert config["REDIS_SENTINEL_MASTER"] == "chat"
    assert config["REDIS_PASSWORD_FILE"] == "/run/secrets/redis/password"
    assert config["REDIS_SENTINEL_PASSWORD_FILE"] == "/run/secrets/redis/sentinel-password"


def test_external_redis_without_a_password_mounts_none(render: Render) -> None:
    manifests = render(
        None,
        "redis.external.enabled=true",
        "redis.external.url=rediss://managed.example:6380/0",
        "redis.external.egress[0].ports[0].port=6380",
    )
    config = one(manifests, "ConfigMap", RELEASE)["data"]
    assert (config["REDIS_MODE"], config["REDIS_URL"]) == (
        "standalone",
        "rediss://managed.example:6380/0",
    )
    assert "REDIS_PASSWORD_FILE" not in config and "REDIS_SENTINEL_PASSWORD_FILE" not in config
    spec = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]
    assert "redis-password" not in [v["name"] for v in spec["volumes"]]


def test_notes_say_where_history_lives_for_each_architecture() -> None:
    replication = notes("redis.architecture=replication")
    assert "a primary, 2 replicas and a Sentinel in each pod" in replication
    assert "sentinel get-master-addr-by-name chat-history" in replication
    external = notes(
        "redis.external.enabled=true",
        "redis.external.url=redis://r:6379",
        "redis.external.egress[0].ports[0].port=6379",
    )
    assert "the existing Redis the values name" in external and "deploys none" in external


def test_a_redis_pod_is_ready_only_when_it_can_do_its_part(replication: list[Manifest]) -> None:
    # A primary without a current replica refuses writes (min-replicas-to-write); a replica
    # whose link is down serves stale data: neither is ready (checked on real processes in
    # the kube target's e2e/test_redis_replication.py).
    spec = sts_spec(replication)["template"]["spec"]
    redis = next(c for c in spec["containers"] if c["name"] == "redis")
    assert redis["readinessProbe"]["exec"]["command"] == ["sh", "-c", "sh /etc/redis/ready.sh"]
    script = one(replication, "ConfigMap", REDIS)["data"]["ready.sh"]
    assert "min_slaves_good_slaves" in script and "-ge 1" in script
    assert "*master_link_status:up*) exit 0" in script
    mounts = {m["mountPath"]: m["name"] for m in redis["volumeMounts"]}
    assert mounts["/etc/redis"] == "config", "the probe's script is in the ConfigMap"
