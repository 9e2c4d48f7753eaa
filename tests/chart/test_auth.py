"""API keys and abuse limits in the chart: on by default, keys generated into a Secret whose
hashes alone reach the chat pods, the plain key only the helm test pod, no restart on rotation."""

from __future__ import annotations

import base64
import hashlib

from tests.chart.conftest import RELEASE, Manifest, Render, by_kind, one
from tests.chart.test_values import notes

SECRET = f"{RELEASE}-api-keys"


def chat_pod(manifests: list[Manifest]) -> Manifest:
    spec: Manifest = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]
    return spec


def test_by_default_a_generated_key_is_stored_with_its_hash(render: Render) -> None:
    manifests = render(None)
    data = one(manifests, "Secret", SECRET)["data"]
    key = base64.b64decode(data["api-key"]).decode()
    assert len(key) >= 40
    line = base64.b64decode(data["api-keys"]).decode()
    assert line == f"default:{hashlib.sha256(key.encode()).hexdigest()}\n"
    config = one(manifests, "ConfigMap", RELEASE)["data"]
    assert config["AUTH_ENABLED"] == "true"
    assert (config["RATE_LIMIT_TURNS"], config["RATE_LIMIT_WINDOW_SECONDS"]) == ("120", "60")
    assert config["MAX_SESSIONS_PER_PRINCIPAL"] == "100"


def test_chat_pods_mount_only_the_hashes_and_without_subpath(render: Render) -> None:
    manifests = render(None)
    spec = chat_pod(manifests)
    (volume,) = [v for v in spec["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == SECRET
    assert volume["secret"]["items"] == [{"key": "api-keys", "path": "api-keys"}]
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "api-keys"]
    # A subPath mount would never see the kubelet's update: rotation needs the directory.
    assert "subPath" not in mount and mount["readOnly"] is True
    keys_file = one(manifests, "ConfigMap", RELEASE)["data"]["AUTH_API_KEYS_FILE"]
    assert keys_file == f"{mount['mountPath']}/api-keys"
    # No checksum of the Secret on the pods: changing a key must not roll them.
    annotations = one(manifests, "Deployment", RELEASE)["spec"]["template"]["metadata"]
    assert not any("secret" in a for a in annotations.get("annotations", {}))


def test_the_hop_check_gets_the_plain_key_as_a_file(render: Render) -> None:
    (pod,) = by_kind(render(None), "Pod")
    container = pod["spec"]["containers"][0]
    assert container["command"][-2:] == ["--api-key-file", "/var/run/chat-history/api-key"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "api-key"]
    assert volume["secret"]["items"] == [{"key": "api-key", "path": "api-key"}]
    assert not any("API_KEY" in e["name"] for e in container.get("env", []))


def test_an_existing_secret_replaces_the_generated_one(render: Render) -> None:
    manifests = render(None, "auth.existingSecret=my-keys")
    assert [s["metadata"]["name"] for s in by_kind(manifests, "Secret")] == [f"{RELEASE}-redis"]
    (volume,) = [v for v in chat_pod(manifests)["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == "my-keys"
    (pod,) = by_kind(manifests, "Pod")
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "api-key"]
    assert volume["secret"]["secretName"] == "my-keys"


def test_auth_off_renders_the_contract_of_the_service_alone(render: Render) -> None:
    manifests = render(
        None, "auth.enabled=false", "limits.rateLimitTurns=0", "limits.maxSessionsPerPrincipal=0"
    )
    config = one(manifests, "ConfigMap", RELEASE)["data"]
    assert config["AUTH_ENABLED"] == "false"
    assert not {k for k in config if k.startswith(("AUTH_API", "RATE_", "MAX_SESSIONS"))}
    assert [s["metadata"]["name"] for s in by_kind(manifests, "Secret")] == [f"{RELEASE}-redis"]
    assert all(v["name"] != "api-keys" for v in chat_pod(manifests)["volumes"])
    (pod,) = by_kind(manifests, "Pod")
    assert "--api-key-file" not in pod["spec"]["containers"][0]["command"]


def test_notes_say_how_to_send_the_generated_key() -> None:
    on = notes()
    assert f"get secret {SECRET} -o jsonpath='{{.data.api-key}}'" in on
    assert "Authorization: Bearer ${KEY}" in on
    off = notes("auth.enabled=false", "limits.rateLimitTurns=0", "limits.maxSessionsPerPrincipal=0")
    assert "Authorization" not in off


def test_every_pod_can_read_the_secrets_it_mounts(render: Render) -> None:
    """Secret files are root's, readable by their group only (0440): a pod that runs as a
    non-root user needs fsGroup for the kubelet to give them its group (helm test failed on a
    real cluster with Permission denied before the hop check pod had it)."""
    for manifest in by_kind(render(None), "Deployment") + by_kind(render(None), "Pod"):
        spec = (
            manifest["spec"]["template"]["spec"]
            if "template" in manifest["spec"]
            else manifest["spec"]
        )
        modes = [
            v["secret"].get("defaultMode", 0o644) for v in spec.get("volumes", []) if "secret" in v
        ]
        if any(mode & 0o004 == 0 for mode in modes):
            assert "fsGroup" in spec["securityContext"], manifest["metadata"]["name"]
