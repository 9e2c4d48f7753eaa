"""Assertions on what the chart renders, for every CI value set and the defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def values_of(values_file: Path | None) -> dict[str, Any]:
    values: dict[str, Any] = load_yaml(values_file) if values_file else {}
    return values


def backend_of(values_file: Path | None) -> str:
    return str(values_of(values_file).get("history", {}).get("backend", "redis"))


def redis_deployed(values_file: Path | None) -> bool:
    """The render has the chart's own Redis (backend redis, no redis.external)."""
    external = values_of(values_file).get("redis", {}).get("external", {})
    return backend_of(values_file) == "redis" and not external.get("enabled", False)


def architecture_of(values_file: Path | None) -> str:
    return str(values_of(values_file).get("redis", {}).get("architecture", "standalone"))


def label(values_file: Path | None) -> str:
    return values_file.name.removesuffix("-values.yaml") if values_file else "defaults"


VALUE_SETS = [None, *CI_VALUES]
REDIS_VALUE_SETS = [v for v in VALUE_SETS if redis_deployed(v)]
STANDALONE_VALUE_SETS = [v for v in REDIS_VALUE_SETS if architecture_of(v) == "standalone"]
assert [architecture_of(v) for v in REDIS_VALUE_SETS].count("replication") >= 1
assert [v for v in VALUE_SETS if backend_of(v) == "redis" and not redis_deployed(v)], "no external"


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


@pytest.mark.parametrize("values_file", STANDALONE_VALUE_SETS, ids=label)
def test_clients_use_a_cluster_ip_and_the_statefulset_a_headless_service(
    render: Render, values_file: Path | None
) -> None:
    manifests = render(values_file)
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


def test_pdb_selects_the_chat_pods_and_evicts_unhealthy_ones(manifests: list[Manifest]) -> None:
    pdb = one(manifests, "PodDisruptionBudget", RELEASE)
    assert selects(pdb["spec"]["selector"]["matchLabels"], chat_pod_labels(manifests))
    assert pdb["spec"]["maxUnavailable"] == 1
    # Readiness follows Redis: in a Redis outage every chat pod is unready, and a drain must
    # still be able to evict them.
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_no_pdb_for_a_single_replica(render: Render) -> None:
    assert by_kind(render(None, "replicaCount=1"), "PodDisruptionBudget") == []


def policies_of(manifests: list[Manifest], labels: dict[str, str]) -> list[Manifest]:
    return [
        np
        for np in by_kind(manifests, "NetworkPolicy")
        if selects(np["spec"]["podSelector"]["matchLabels"], labels)
    ]


def admitted(rules: list[Manifest], side: str, labels: dict[str, str], port: int | str) -> bool:
    """Whether one of the rules lets a pod of this namespace with these labels through on the
    port (`side` is "from" for ingress, "to" for egress). Namespace and ipBlock peers admit no
    pod of this namespace here: none of this chart's peers names its own namespace."""
    for rule in rules:
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports and port not in ports:
            continue
        peers = rule.get(side)
        if peers is None:
            return True
        for peer in peers:
            if set(peer) == {"podSelector"} and selects(peer["podSelector"]["matchLabels"], labels):
                return True
    return False


def dns_rule(values_file: Path | None) -> Manifest:
    """The egress rule to the cluster DNS: kube-dns pods, on their ports (53 by default)."""
    ports = values_of(values_file).get("networkPolicy", {}).get("dnsPorts", [53])
    return {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"port": p, "protocol": proto} for p in ports for proto in ("UDP", "TCP")],
    }


def test_every_pod_is_fenced_in_both_directions(manifests: list[Manifest]) -> None:
    for name, _, labels in pod_specs(manifests):
        (np,) = policies_of(manifests, labels)
        assert np["spec"]["policyTypes"] == ["Ingress", "Egress"], name


def test_only_chat_pods_reach_redis_and_sentinel(
    redis_manifests: list[Manifest], redis_values_file: Path | None
) -> None:
    manifests = redis_manifests
    replication = architecture_of(redis_values_file) == "replication"
    (redis_np,) = policies_of(manifests, redis_pod_labels(manifests))
    ingress = redis_np["spec"]["ingress"]
    ports = [6379, 26379] if replication else [6379]
    for name, _, labels in pod_specs(manifests):
        is_chat = name == f"Deployment/{RELEASE}"
        is_redis = name == f"StatefulSet/{REDIS}"
        for port in ports:
            # The helm test pod is refused too; Redis pods reach each other only to replicate.
            assert admitted(ingress, "from", labels, port) == (
                is_chat or (is_redis and replication)
            )
        assert not admitted(ingress, "from", labels, 8000)
    redis_spec = one(manifests, "StatefulSet", REDIS)["spec"]["template"]["spec"]
    container_ports = {
        p["containerPort"] for c in redis_spec["containers"] for p in c.get("ports", [])
    }
    assert container_ports == set(ports)
    # A pod of another namespace matches no peer: every peer is a bare podSelector.
    assert all(set(peer) == {"podSelector"} for rule in ingress for peer in rule["from"])


def test_redis_opens_no_connection_it_does_not_need(
    redis_manifests: list[Manifest], redis_values_file: Path | None
) -> None:
    manifests = redis_manifests
    (redis_np,) = policies_of(manifests, redis_pod_labels(manifests))
    egress = redis_np["spec"]["egress"]
    if architecture_of(redis_values_file) == "standalone":
        assert egress == []
        return
    # Replication: the other Redis pods (by their DNS names) and nothing else.
    assert egress[0] == dns_rule(redis_values_file)
    (peers,) = egress[1:]
    assert peers["ports"] == [{"port": 6379, "protocol": "TCP"}, {"port": 26379, "protocol": "TCP"}]
    (peer,) = peers["to"]
    assert peer == {"podSelector": {"matchLabels": dict(redis_pod_labels(manifests))}} or (
        set(peer) == {"podSelector"}
        and selects(peer["podSelector"]["matchLabels"], redis_pod_labels(manifests))
        and not selects(peer["podSelector"]["matchLabels"], chat_pod_labels(manifests))
    )


def test_chat_pods_reach_only_dns_and_their_history_store(
    manifests: list[Manifest], values_file: Path | None
) -> None:
    (chat_np,) = policies_of(manifests, chat_pod_labels(manifests))
    assert chat_np["metadata"]["name"] == RELEASE
    assert chat_np["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    egress = chat_np["spec"]["egress"]
    assert egress[0] == dns_rule(values_file)
    rest = egress[1:]
    values = values_of(values_file)
    if backend_of(values_file) == "memory":
        assert rest == []
    elif not redis_deployed(values_file):
        assert rest == values["redis"]["external"]["egress"]
    else:
        (rule,) = rest
        replication = architecture_of(values_file) == "replication"
        ports = [6379, 26379] if replication else [6379]
        assert [p["port"] for p in rule["ports"]] == ports
        for name, _, labels in pod_specs(manifests):
            assert admitted(rest, "to", labels, 6379) == (name == f"StatefulSet/{REDIS}"), name


def test_the_model_provider_is_reachable_only_with_the_openai_model(render: Render) -> None:
    def chat_egress(*sets: str) -> list[Manifest]:
        manifests = render(None, *sets)
        egress: list[Manifest] = one(manifests, "NetworkPolicy", RELEASE)["spec"]["egress"]
        return egress

    https = {"ports": [{"port": 443, "protocol": "TCP"}]}
    assert https not in chat_egress()
    openai = ("chat.model=openai", "chat.openai.model=m")
    assert chat_egress(*openai)[-1] == https
    narrowed = chat_egress(
        *openai,
        "networkPolicy.modelEgress[0].to[0].ipBlock.cidr=192.0.2.0/24",
        "networkPolicy.modelEgress[0].ports[0].port=8443",
    )
    assert narrowed[-1] == {
        "to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}],
        "ports": [{"port": 8443}],
    }


def test_the_helm_test_pod_reaches_only_the_chat_pods(
    manifests: list[Manifest], values_file: Path | None
) -> None:
    (pod,) = by_kind(manifests, "Pod")
    (np,) = policies_of(manifests, pod["metadata"]["labels"])
    assert np["spec"]["ingress"] == []
    egress = np["spec"]["egress"]
    assert egress[0] == dns_rule(values_file)
    for name, _, labels in pod_specs(manifests):
        assert admitted(egress[1:], "to", labels, "http") == (name == f"Deployment/{RELEASE}")


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


def test_redis_keeps_its_data_on_a_pvc_in_every_pod(
    redis_manifests: list[Manifest], redis_values_file: Path | None
) -> None:
    manifests = redis_manifests
    sts = one(manifests, "StatefulSet", REDIS)
    (claim,) = sts["spec"]["volumeClaimTemplates"]  # one claim per pod: primary and replicas
    assert claim["metadata"]["name"] == "data"
    values = values_of(redis_values_file)
    size = values.get("redis", {}).get("persistence", {}).get("size", "1Gi")  # 1Gi: values.yaml
    assert claim["spec"]["resources"]["requests"]["storage"] == size
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    # The init container's copy of redis.conf, with the password appended.
    assert container["command"] == ["redis-server", "/run/redis/redis.conf"]
    conf = one(manifests, "ConfigMap", REDIS)["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in conf and "dir /data" in conf
    assert "maxmemory-policy noeviction" in conf
    assert any(line.startswith("appendfsync ") for line in conf)


def mounted_secrets(
    spec: Manifest, container: Manifest
) -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    """mount path -> (Secret, ((key, file name), ...)) of the container's Secret volumes: only
    the keys it needs, never the whole Secret."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        secret = volumes.get(mount["name"], {}).get("secret")  # "data": a claim template
        if secret:
            items = tuple((i["key"], i["path"]) for i in secret["items"])
            assert mount.get("readOnly") is True
            out[mount["mountPath"]] = (secret["secretName"], items)
    return out


def test_the_redis_password_is_a_mounted_file_in_every_container_never_an_env_var(
    manifests: list[Manifest], values_file: Path | None
) -> None:
    values = values_of(values_file).get("redis", {})
    external = values.get("external", {})
    existing = values.get("auth", {}).get("existingSecret")
    if external.get("enabled"):
        secret_name, key = external["existingSecret"], external["existingSecretPasswordKey"]
    elif existing:
        secret_name, key = existing, values["auth"]["existingSecretPasswordKey"]
    else:
        secret_name, key = REDIS, "redis-password"
    secrets = [s for s in by_kind(manifests, "Secret") if s["metadata"]["name"] == REDIS]
    if not redis_deployed(values_file) or existing:
        assert secrets == [], "the chart makes a Secret only for a Redis it deploys"
    else:
        (secret,) = secrets
        assert secret["metadata"]["name"] == REDIS and key in secret["data"]
    uses_redis = backend_of(values_file) == "redis"
    items: tuple[tuple[str, str], ...] = ((key, "password"),)
    if external.get("sentinelPasswordKey"):
        items += ((external["sentinelPasswordKey"], "sentinel-password"),)
    expected = ("/run/secrets/redis", (secret_name, items))
    config = one(manifests, "ConfigMap", RELEASE)["data"]
    assert config.get("REDIS_PASSWORD_FILE") == (
        "/run/secrets/redis/password" if uses_redis else None
    )
    users = []
    for name, spec, _ in pod_specs(manifests):
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name} container {c['name']}"
            argv = " ".join(c.get("command", []) + c.get("args", []))
            assert "--requirepass" not in argv and " -a " not in argv, where
            for env in c.get("env", []):
                assert "secretKeyRef" not in env.get("valueFrom", {}), where
                assert "PASSWORD" not in env["name"], where
            # The Redis password's mounts (API keys are other Secrets, tested with auth).
            mounts = {p: v for p, v in mounted_secrets(spec, c).items() if v[0] == secret_name}
            assert all(m.startswith("/run/secrets/") for m in mounts), where
            assert set(mounts.items()) <= {expected}, where
            if mounts:
                users.append(c["name"])
    if not uses_redis:
        assert users == []
    elif not redis_deployed(values_file):
        assert users == ["chat"]
    elif architecture_of(values_file) == "replication":
        assert sorted(users) == ["chat", "config", "redis", "sentinel"]
    else:
        assert sorted(users) == ["chat", "config", "redis"]  # redis: its readiness probe
    if redis_deployed(values_file):
        conf = one(manifests, "ConfigMap", REDIS)["data"]["redis.conf"]
        assert "requirepass" not in conf


def test_the_openai_key_is_a_mounted_file(render: Render) -> None:
    manifests = render(
        None, "chat.model=openai", "chat.openai.model=m", "chat.openai.apiKeySecret=provider"
    )
    spec = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]
    assert mounted_secrets(spec, spec["containers"][0])["/run/secrets/openai"] == (
        "provider",
        (("api-key", "api-key"),),
    )
    config = one(manifests, "ConfigMap", RELEASE)["data"]
    assert config["OPENAI_API_KEY_FILE"] == "/run/secrets/openai/api-key"


def test_memory_backend_deploys_no_redis(render: Render) -> None:
    manifests = render(None, "history.backend=memory")
    assert [m for m in manifests if "redis" in m["metadata"]["name"]] == []
    config = one(manifests, "ConfigMap", RELEASE)["data"]
    assert config["HISTORY_BACKEND"] == "memory"
    assert not [k for k in config if k.startswith("REDIS_")]
    env = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["POD_NAME"]


def test_config_map_is_settings_the_service_accepts(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    data = dict(one(manifests, "ConfigMap", RELEASE)["data"])
    unknown = {k for k in data if k.lower() not in Settings.model_fields}
    assert not unknown, f"the service reads no such variables: {unknown}"
    for name in [k for k in data if k.endswith("_FILE")]:  # mounted Secrets: the test's files
        secret = tmp_path / name.lower()
        secret.write_text("pw")
        data[name] = str(secret)
    settings = Settings(**{k.lower(): v for k, v in data.items()}, pod_name="p")
    if settings.history_backend == "redis" and settings.redis_mode == "standalone":
        assert settings.redis_url == f"redis://{REDIS}:6379/0"
    if settings.redis_mode == "sentinel":  # the password files were read
        assert settings.redis_sentinel_password is not None


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
