"""The chart's NetworkPolicies, enforced (kube target only): connections are really opened from
pods, and the refused ones must fail. On a cluster that accepts NetworkPolicies without enforcing
them (the CI cluster with `cluster/network-policy.sh stop`, a bare bridge CNI) every refusal
below connects, and these tests fail; the allowed connections show the ports do listen.

Probe pods run the chat image (it has python); the Redis pods' own egress is tried with perl,
which every Debian-based Redis image has (perl-base is essential).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from testsupport.targets.base import Deployment, Target
from testsupport.targets.kube import RELEASE, KubeDeployment, KubeTarget

pytestmark = [
    pytest.mark.kube_only,
    # One release is enough: the policies do not depend on the memory API.
    pytest.mark.parametrize(
        "flavor", [("redis", "message-history")], indirect=True, ids=["redis-message-history"]
    ),
]

REDIS_PORT = 6379
CHAT_PORT = 8000
PROBE_PORT = 8080
CONNECT_TIMEOUT_S = 3
PY_CONNECT = (
    "import socket, sys\n"
    "try:\n"
    f"    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout={CONNECT_TIMEOUT_S})\n"
    "except OSError as exc:\n"
    "    print(type(exc).__name__, exc)\n"
    "    sys.exit(1)\n"
    "print('connected')\n"
)
PERL_CONNECT = (
    "use IO::Socket::INET; my $s = IO::Socket::INET->new(PeerAddr => $ARGV[0], "
    f'Timeout => {CONNECT_TIMEOUT_S}); print $s ? "connected\\n" : "$!\\n"; exit($s ? 0 : 1)'
)
# The labels of the release's chat pods (the chart's chat selector labels).
CHAT_LABELS = {
    "app.kubernetes.io/name": "chat-history",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "chat",
}


@dataclass(frozen=True)
class Addresses:
    redis_pod: str
    redis_service: str
    chat_pod: str
    dns_service: str
    api_service: str


def _kubectl(kube: KubeTarget, *args: str, timeout_s: float = 120) -> str:
    return kube.kubectl(*args, timeout_s=timeout_s)


def _json(kube: KubeTarget, *args: str) -> Any:
    return json.loads(_kubectl(kube, *args, "-o", "json"))


@pytest.fixture
def release(cluster: Deployment) -> KubeDeployment:
    assert isinstance(cluster, KubeDeployment)
    return cluster


@pytest.fixture
def kube(target: Target) -> KubeTarget:
    assert isinstance(target, KubeTarget)
    return target


@pytest.fixture
def addresses(release: KubeDeployment, kube: KubeTarget) -> Addresses:
    ns = release.namespace
    redis_pod = _json(kube, "-n", ns, "get", "pod", f"{RELEASE}-redis-0")
    chat_pods = _json(kube, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/component=chat")[
        "items"
    ]
    return Addresses(
        redis_pod=redis_pod["status"]["podIP"],
        redis_service=_kubectl(
            kube,
            "-n",
            ns,
            "get",
            "service",
            f"{RELEASE}-redis",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ),
        chat_pod=chat_pods[0]["status"]["podIP"],
        dns_service=_kubectl(
            kube,
            "-n",
            "kube-system",
            "get",
            "service",
            "kube-dns",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ),
        api_service=_kubectl(
            kube,
            "-n",
            "default",
            "get",
            "service",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ),
    )


def _probe_pod(
    kube: KubeTarget, namespace: str, name: str, labels: dict[str, str], image: str
) -> str:
    """A pod running the chat image: it serves HTTP on PROBE_PORT (a destination no policy of
    the chart opens) and runs the connects the tests exec in it."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Mi"}}],
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-m", "http.server", str(PROBE_PORT), "-d", "/tmp"],
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "32Mi"},
                        "limits": {"cpu": "200m", "memory": "64Mi"},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    kube.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    kube.kubectl(
        "-n",
        namespace,
        "wait",
        "--for=condition=Ready",
        f"pod/{name}",
        "--timeout=120s",
        timeout_s=150,
    )
    return _kubectl(kube, "-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.podIP}")


@dataclass(frozen=True)
class Probes:
    """Pods to connect from: `local` in the release's namespace without the chat labels, and
    `foreign` in another namespace with exactly the chat labels."""

    local: tuple[str, str]
    foreign: tuple[str, str]
    local_ip: str


@pytest.fixture
def probes(release: KubeDeployment, kube: KubeTarget) -> Iterator[Probes]:
    image = _kubectl(
        kube, "-n", release.namespace, "get", "deployment", RELEASE,
        "-o", "jsonpath={.spec.template.spec.containers[0].image}",
    )  # fmt: skip
    suffix = uuid.uuid4().hex[:6]
    foreign_ns = f"{release.namespace}-np-{suffix}"
    kube.kubectl("create", "namespace", foreign_ns)
    local = (release.namespace, f"np-probe-{suffix}")
    foreign = (foreign_ns, f"np-probe-{suffix}")
    try:
        local_ip = _probe_pod(kube, *local, {"app.kubernetes.io/name": "np-probe"}, image)
        _probe_pod(kube, *foreign, CHAT_LABELS, image)
        # The probes' own network works: one reaches the other's HTTP port.
        assert connects_from_python(kube, *foreign, local_ip, PROBE_PORT)
        yield Probes(local=local, foreign=foreign, local_ip=local_ip)
    finally:
        kube.kubectl(
            "-n", local[0], "delete", "pod", local[1], "--ignore-not-found", "--wait=false"
        )
        kube.kubectl("delete", "namespace", foreign_ns, "--wait=false")


def connects_from_python(
    kube: KubeTarget, namespace: str, pod: str, host: str, port: int, container: str | None = None
) -> bool:
    args = ["-n", namespace, "exec", pod]
    if container:
        args += ["-c", container]
    argv = [*args, "--", "python", "-c", PY_CONNECT, host, str(port)]
    try:
        return "connected" in kube.kubectl(*argv, timeout_s=30)
    except RuntimeError:
        return False


def connects_from_redis(kube: KubeTarget, namespace: str, host: str, port: int) -> bool:
    argv = [
        "-n", namespace, "exec", f"{RELEASE}-redis-0", "-c", "redis", "--",
        "perl", "-e", PERL_CONNECT, f"{host}:{port}",
    ]  # fmt: skip
    try:
        return "connected" in kube.kubectl(*argv, timeout_s=30)
    except RuntimeError:
        return False


def test_chat_pods_reach_redis(
    release: KubeDeployment, kube: KubeTarget, addresses: Addresses
) -> None:
    chat_pods = _json(
        kube, "-n", release.namespace, "get", "pods", "-l", "app.kubernetes.io/component=chat"
    )["items"]
    assert chat_pods
    for pod in chat_pods:
        name = pod["metadata"]["name"]
        for host in (addresses.redis_service, addresses.redis_pod):
            assert connects_from_python(
                kube, release.namespace, name, host, REDIS_PORT, container="chat"
            ), f"chat pod {name} cannot reach Redis at {host}"


def test_a_pod_without_the_chat_labels_cannot_reach_redis(
    kube: KubeTarget, addresses: Addresses, probes: Probes
) -> None:
    namespace, pod = probes.local
    # The probe itself is unrestricted (no policy selects it) and the chat pods accept anyone
    # on http: so its network works, and only Redis's ingress policy refuses it.
    assert connects_from_python(kube, namespace, pod, addresses.chat_pod, CHAT_PORT)
    for host in (addresses.redis_service, addresses.redis_pod):
        assert not connects_from_python(kube, namespace, pod, host, REDIS_PORT), (
            f"a pod without the chat labels reached Redis at {host}:{REDIS_PORT}"
        )


def test_a_pod_of_another_namespace_cannot_reach_redis_even_with_the_chat_labels(
    kube: KubeTarget, addresses: Addresses, probes: Probes
) -> None:
    namespace, pod = probes.foreign
    assert connects_from_python(kube, namespace, pod, addresses.chat_pod, CHAT_PORT)
    for host in (addresses.redis_service, addresses.redis_pod):
        assert not connects_from_python(kube, namespace, pod, host, REDIS_PORT), (
            f"a pod of namespace {namespace} reached Redis at {host}:{REDIS_PORT}"
        )


def test_redis_opens_no_connection(
    release: KubeDeployment, kube: KubeTarget, addresses: Addresses, probes: Probes
) -> None:
    # Each destination answers others (shown from the unrestricted probe pod); a standalone
    # Redis needs none of them, and its egress policy allows nothing.
    destinations = {
        "a chat pod": (addresses.chat_pod, CHAT_PORT),
        "a pod of its namespace": (probes.local_ip, PROBE_PORT),
        "the cluster DNS": (addresses.dns_service, 53),
        "the API server": (addresses.api_service, 443),
    }
    for what, (host, port) in destinations.items():
        source = probes.foreign if host == probes.local_ip else probes.local
        assert connects_from_python(kube, *source, host, port), f"{what} is unreachable"
        assert not connects_from_redis(kube, release.namespace, host, port), (
            f"the Redis pod reached {what} at {host}:{port}"
        )


def test_chat_pods_reach_nothing_beyond_dns_and_redis(
    release: KubeDeployment, kube: KubeTarget, addresses: Addresses, probes: Probes
) -> None:
    pods = _json(
        kube, "-n", release.namespace, "get", "pods", "-l", "app.kubernetes.io/component=chat"
    )["items"]
    # The pod whose address is addresses.chat_pod.
    (chat_pod,) = [
        p["metadata"]["name"] for p in pods if p["status"]["podIP"] == addresses.chat_pod
    ]
    assert connects_from_python(kube, *probes.local, addresses.api_service, 443)
    assert connects_from_python(
        kube, release.namespace, chat_pod, addresses.dns_service, 53, container="chat"
    ), "the chat pods must resolve names"
    # Destinations no ingress rule of the chart opens. (Not another chat pod's http port:
    # kube-router v2.1.0 checks a pod's egress and the destination's ingress rules in one chain,
    # so the chat pods' own ingress rule, "anyone on http", lets that connection through.)
    for what, (host, port) in {
        "the API server": (addresses.api_service, 443),
        "a pod of its namespace": (probes.local_ip, PROBE_PORT),
    }.items():
        assert not connects_from_python(
            kube, release.namespace, chat_pod, host, port, container="chat"
        ), f"a chat pod reached {what} at {host}:{port}"
