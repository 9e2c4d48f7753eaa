"""Assertions on what the chart renders, for every CI value set and the defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat_history_k8s.config import Settings
from tests.chart.conftest import (
    CI_VALUES,
    RELEASE,
    Manifest,
    Render,
    by_kind,
    load_yaml,
    one,
    pod_specs,
    render_uncached,
    selects,
)
from testsupport import REPO_ROOT

REDIS = f"{RELEASE}-redis"


def backend_of(values_file: Path | None) -> str:
    values = load_yaml(values_file) if values_file else {}
    return str(values.get("history", {}).get("backend", "redis"))


def label(values_file: Path | None) -> str:
    return values_file.name.removesuffix("-values.yaml") if values_file else "defaults"


VALUE_SETS = [None, *CI_VALUES]
REDIS_VALUE_SETS = [v for v in VALUE_SETS if backend_of(v) == "redis"]


@pytest.fixture(params=VALUE_SETS, ids=label)
def values_file(request: pytest.FixtureRequest) -> Path | None:
    chosen: Path | None = request.param
    return chosen


@pytest.fixture
def manifests(render: Render, values_file: Path | None) -> list[Manifest]:
    return render(values_file)


@pytest.fixture(params=REDIS_VALUE_SETS, ids=label)
def redis_values_file(request: pytest.FixtureRequest) -> Path | None:
    chosen: Path | None = request.param
    return chosen


@pytest.fixture
def redis_manifests(render: Render, redis_values_file: Path | None) -> list[Manifest]:
    return render(redis_values_file)


def pod_labels(manifests: list[Manifest], kind: str, name: str) -> dict[str, str]:
    labels: dict[str, str] = one(manifests, kind, name)["spec"]["template"]["metadata"]["labels"]
    return labels


def chat_pod_labels(manifests: list[Manifest]) -> dict[str, str]:
    return pod_labels(manifests, "Deployment", RELEASE)


def redis_pod_labels(manifests: list[Manifest]) -> dict[str, str]:
    return pod_labels(manifests, "StatefulSet", REDIS)


def test_workload_selectors_match_their_pod_labels(manifests: list[Manifest]) -> None:
    for m in by_kind(manifests, "Deployment") + by_kind(manifests, "StatefulSet"):
        selector = m["spec"]["selector"]["matchLabels"]
        assert selects(selector, m["spec"]["template"]["metadata"]["labels"]), m["metadata"]["name"]


def test_each_service_selects_exactly_its_own_pods(manifests: list[Manifest]) -> None:
    pods = {name: labels for name, _, labels in pod_specs(manifests)}
    expected = {
        RELEASE: f"Deployment/{RELEASE}",
        REDIS: f"StatefulSet/{REDIS}",
        f"{REDIS}-headless": f"StatefulSet/{REDIS}",
    }
    for svc in by_kind(manifests, "Service"):
        name = svc["metadata"]["name"]
        chosen = [pod for pod, labels in pods.items() if selects(svc["spec"]["selector"], labels)]
        assert chosen == [expected[name]], f"Service {name} selects {chosen}"


def test_chat_service_port_80_reaches_container_port_8000_named_http(
    manifests: list[Manifest],
) -> None:
    svc = one(manifests, "Service", RELEASE)
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    container = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in container["ports"]


def test_clients_use_a_cluster_ip_and_the_statefulset_a_headless_service(
    redis_manifests: list[Manifest],
) -> None:
    manifests = redis_manifests
    client = one(manifests, "Service", REDIS)  # a stable virtual IP across Redis pod restarts
    assert client["spec"]["type"] == "ClusterIP" and "clusterIP" not in client["spec"]
    headless = one(manifests, "Service", f"{REDIS}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    sts = one(manifests, "StatefulSet", REDIS)
    assert sts["spec"]["serviceName"] == f"{REDIS}-headless"
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    for svc in (client, headless):
        assert svc["spec"]["ports"][0]["port"] == 6379
        assert svc["spec"]["selector"].items() <= pod_labels.items()
    config = one(manifests, "ConfigMap", RELEASE)["data"]
    assert config["REDIS_URL"] == f"redis://{REDIS}:6379/0"


def test_pdb_selects_the_chat_pods(manifests: list[Manifest]) -> None:
    (pdb,) = by_kind(manifests, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], chat_pod_labels(manifests))
    assert pdb["spec"]["maxUnavailable"] == 1


def test_no_pdb_for_a_single_replica(render: Render) -> None:
    assert by_kind(render(None, "replicaCount=1"), "PodDisruptionBudget") == []


def test_network_policies_select_the_real_chat_and_redis_pods(
    manifests: list[Manifest], values_file: Path | None
) -> None:
    chat_labels = chat_pod_labels(manifests)
    chat_np = one(manifests, "NetworkPolicy", RELEASE)
    assert selects(chat_np["spec"]["podSelector"]["matchLabels"], chat_labels)
    assert chat_np["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    if backend_of(values_file) != "redis":
        assert [np["metadata"]["name"] for np in by_kind(manifests, "NetworkPolicy")] == [RELEASE]
        return
    redis_labels = redis_pod_labels(manifests)
    assert not selects(chat_np["spec"]["podSelector"]["matchLabels"], redis_labels)
    redis_np = one(manifests, "NetworkPolicy", REDIS)
    assert selects(redis_np["spec"]["podSelector"]["matchLabels"], redis_labels)
    assert not selects(redis_np["spec"]["podSelector"]["matchLabels"], chat_labels)
    (rule,) = redis_np["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}, "only pods of this namespace, chosen by label"
    allowed = peer["podSelector"]["matchLabels"]
    # Every pod of the render other than the chat pods is refused, the helm test pod included.
    for name, _, labels in pod_specs(manifests):
        assert selects(allowed, labels) == (name == f"Deployment/{RELEASE}"), name
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    redis_spec = one(manifests, "StatefulSet", REDIS)["spec"]["template"]["spec"]
    redis_container = redis_spec["containers"][0]
    assert {"name": "redis", "containerPort": 6379, "protocol": "TCP"} in redis_container["ports"]


def test_every_container_is_hardened(manifests: list[Manifest]) -> None:
    for name, spec, _ in pod_specs(manifests):
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["runAsUser"] > 0, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        mounts_of_tmp = []
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name} container {c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["runAsNonRoot"] is True, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
            assert ":" in c["image"], where
            mounts_of_tmp += [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        tmp = {v["name"]: v for v in spec["volumes"]}
        assert mounts_of_tmp and all("emptyDir" in tmp[m["name"]] for m in mounts_of_tmp), name


def test_long_running_containers_have_probes(manifests: list[Manifest]) -> None:
    for m in by_kind(manifests, "Deployment") + by_kind(manifests, "StatefulSet"):
        for c in m["spec"]["template"]["spec"]["containers"]:
            assert {"livenessProbe", "readinessProbe", "startupProbe"} <= set(c), c["name"]
    chat = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
    assert chat["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert chat["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_no_image_is_latest_or_untagged(manifests: list[Manifest]) -> None:
    for name, spec, _ in pod_specs(manifests):
        for c in spec.get("initContainers", []) + spec["containers"]:
            repo, _, tag = c["image"].rpartition(":")
            assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: {c['image']}"


def test_redis_keeps_its_data_on_a_pvc(
    redis_manifests: list[Manifest], redis_values_file: Path | None
) -> None:
    manifests = redis_manifests
    sts = one(manifests, "StatefulSet", REDIS)
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    values = load_yaml(redis_values_file) if redis_values_file else {}
    size = values.get("redis", {}).get("persistence", {}).get("size", "1Gi")  # 1Gi: values.yaml
    assert claim["spec"]["resources"]["requests"]["storage"] == size
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert container["command"] == ["redis-server", "/etc/redis/redis.conf"]
    conf = one(manifests, "ConfigMap", REDIS)["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in conf and "dir /data" in conf
    assert "maxmemory-policy noeviction" in conf
    assert any(line.startswith("appendfsync ") for line in conf)


def test_redis_password_comes_from_a_secret_never_from_arguments(
    redis_manifests: list[Manifest], redis_values_file: Path | None
) -> None:
    manifests = redis_manifests
    values = load_yaml(redis_values_file) if redis_values_file else {}
    existing = values.get("redis", {}).get("auth", {}).get("existingSecret")
    secret_name, key = (existing, "password") if existing else (REDIS, "redis-password")
    secrets = [s for s in by_kind(manifests, "Secret") if s["metadata"]["name"] == REDIS]
    if existing:
        assert secrets == [], "an existing Secret replaces the generated one"
    else:
        (secret,) = secrets
        assert secret["metadata"]["name"] == REDIS and key in secret["data"]
    conf = one(manifests, "ConfigMap", REDIS)["data"]["redis.conf"]
    assert "requirepass" not in conf
    refs = []
    for name, spec, _ in pod_specs(manifests):
        for volume in spec.get("volumes", []):
            if volume.get("secret", {}).get("secretName") == secret_name:  # the probe's file
                items = [(i["key"], i["path"]) for i in volume["secret"]["items"]]
                refs.append(("volume", volume["name"], volume["secret"]["secretName"], items[0][0]))
        for c in spec.get("initContainers", []) + spec["containers"]:
            argv = " ".join(c.get("command", []) + c.get("args", []))
            assert "--requirepass" not in argv and " -a " not in argv, name
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.append((c["name"], env["name"], ref["name"], ref["key"]))
    assert sorted(refs) == sorted(
        [
            ("chat", "REDIS_PASSWORD", secret_name, key),
            ("auth-config", "REDIS_PASSWORD", secret_name, key),
            ("volume", "password", secret_name, key),
        ]
    )


def test_memory_backend_deploys_no_redis(render: Render) -> None:
    manifests = render(None, "history.backend=memory")
    assert [m for m in manifests if "redis" in m["metadata"]["name"]] == []
    config = one(manifests, "ConfigMap", RELEASE)["data"]
    assert config["HISTORY_BACKEND"] == "memory"
    assert not [k for k in config if k.startswith("REDIS_")]
    env = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["POD_NAME"]


def test_config_map_is_settings_the_service_accepts(manifests: list[Manifest]) -> None:
    data = one(manifests, "ConfigMap", RELEASE)["data"]
    unknown = {k for k in data if k.lower() not in Settings.model_fields}
    assert not unknown, f"the service reads no such variables: {unknown}"
    settings = Settings(**{k.lower(): v for k, v in data.items()}, pod_name="p")
    if settings.history_backend == "redis":
        assert settings.redis_url == f"redis://{REDIS}:6379/0"


def test_pod_name_comes_from_the_downward_api(manifests: list[Manifest]) -> None:
    env = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0] == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def test_grace_period_outlasts_prestop_and_uvicorn_drain(manifests: list[Manifest]) -> None:
    spec = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    command = container["command"]
    drain = int(command[command.index("--timeout-graceful-shutdown") + 1])
    sleep_cmd = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep_cmd[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] > int(sleep_cmd[1]) + drain


def test_the_chat_container_runs_the_image_cmd_with_the_guarded_protocol(
    manifests: list[Manifest],
) -> None:
    """The chart's command is the Dockerfile's CMD (the drain time aside): both run uvicorn with
    the protocol class that cuts slow, half-sent and oversized requests."""
    instructions = (REPO_ROOT / "Dockerfile").read_text().splitlines()
    cmd = json.loads(next(line for line in instructions if line.startswith("CMD "))[4:])
    command = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0][
        "command"
    ]
    drain = command.index("--timeout-graceful-shutdown") + 1
    assert command[:drain] == cmd[:drain] and len(command) == len(cmd)
    assert command[command.index("--http") + 1] == "chat_history_k8s.protocol:GuardedHttpProtocol"


def test_config_checksum_rolls_the_pods_when_config_changes() -> None:
    def checksum(*sets: str) -> str:
        # A fresh `helm template` each time: a cached render would compare a result with itself.
        dep = one(list(render_uncached((), sets)), "Deployment", RELEASE)
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    base = checksum()
    assert len(base) == 64  # sha256 of the rendered ConfigMap
    assert checksum() == base, "the same values must give the same checksum (no spurious rollout)"
    assert checksum("replicaCount=5") == base, "a change outside the ConfigMap rolls nothing"
    assert checksum("history.ttlSeconds=60") != base
    assert checksum("chat.logLevel=DEBUG") != base


def test_hop_check_pod_uses_the_service_image_through_the_service(
    manifests: list[Manifest], values_file: Path | None
) -> None:
    (pod,) = by_kind(manifests, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    chat = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == chat["image"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "chat_history_k8s.hopcheck"]
    assert command[command.index("--url") + 1] == f"http://{RELEASE}:80"
    assert command[command.index("--backend") + 1] == backend_of(values_file)
    assert int(command[command.index("--min-pods") + 1]) >= 2


def test_airgap_values_use_local_images_and_the_standard_class(render: Render) -> None:
    manifests = render(next(p for p in CI_VALUES if p.name == "airgap-values.yaml"))
    images = {
        (c["image"], c["imagePullPolicy"])
        for _, spec, _ in pod_specs(manifests)
        for c in spec.get("initContainers", []) + spec["containers"]
    }
    assert images == {
        ("chat-history:ci", "IfNotPresent"),
        ("chat-history-redis:ci", "IfNotPresent"),
    }
    claim = one(manifests, "StatefulSet", REDIS)["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["storageClassName"] == "standard"


def test_fullname_follows_the_release_name(render: Render) -> None:
    # The release "chat-history" names everything "chat-history"; checked against another name
    # through fullnameOverride, which the same helper applies.
    names = {m["metadata"]["name"] for m in render(None, "fullnameOverride=demo")}
    assert {"demo", "demo-redis", "demo-test-hopcheck"} <= names


def test_the_memory_api_reaches_the_service_and_the_hop_check(render: Render) -> None:
    def rendered(*sets: str) -> tuple[dict[str, str], list[str]]:
        manifests = render(None, *sets)
        test_pod = one(manifests, "Pod", f"{RELEASE}-test-hopcheck")
        return one(manifests, "ConfigMap", RELEASE)["data"], test_pod["spec"]["containers"][0][
            "command"
        ]

    config, command = rendered()
    assert config["HISTORY_API"] == "message-history"
    assert not [k for k in config if k.startswith("CHECKPOINT_")]
    assert command[command.index("--history-api") + 1] == "message-history"

    config, command = rendered("history.api=checkpointer", "history.checkpointer.leaseSeconds=45")
    assert config["HISTORY_API"] == "checkpointer"
    assert (config["CHECKPOINT_LEASE_SECONDS"], config["CHECKPOINT_MAX_CHECKPOINTS"]) == ("45", "1")
    assert command[command.index("--history-api") + 1] == "checkpointer"
