"""The `kube` target: the chart installed per backend and API on the current kubeconfig context.

Each (backend, API) gets a fresh namespace (`helm upgrade --install --wait`). Each pod is reached on
its own through the API server (a port-forward made with the Kubernetes Python client, relayed
from a local port); the load-balanced entry point is the API server's proxy to the chat
Service, which picks a ready endpoint per request. Disruptions are what an operator does: pod
deletes, `rollout restart`, scaling. The namespaces are deleted at the end.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import json
import logging
import re
import secrets
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from chat_history_k8s.hopcheck.client import Api, Endpoint
from testsupport import REPO_ROOT, find_tool, wait_until
from testsupport.failover import PrimaryKiller
from testsupport.targets.base import (
    Backend,
    Deployment,
    HistoryApi,
    RedisMode,
    Target,
    TargetUnavailable,
    unhandled_errors_in,
)

logger = logging.getLogger(__name__)

CHART = REPO_ROOT / "helm" / "chat-history"
RELEASE = "chat-history"  # contains the chart name, so the objects are called exactly this
CHAT_PORT = 8000
MERGE_PATCH = "application/merge-patch+json"
HELM_TIMEOUT = "6m"
ROLLOUT_TIMEOUT_S = 300.0
MANAGED_BY = {"app.kubernetes.io/managed-by": "chat-history-e2e"}


# docs/runbook.md's `rcli`: redis-cli in the Redis pod, authenticated from the mounted Secret.
RCLI = 'REDISCLI_AUTH="$(cat /run/secrets/redis/password)" exec redis-cli "$@"'
# Settings the upgrade test may change, as chart values.
UPGRADE_VALUES = {"LOG_LEVEL": "chat.logLevel"}
# Settings a deployment may be made with (deploy's `settings`), as chart values.
DEPLOY_VALUES = {"REDIS_WAIT_REPLICAS": "redis.client.waitReplicas"}

# redis.architecture=replication as helm/chat-history/ci/redis-replication-values.yaml makes it:
# a primary and 2 replicas, a Sentinel beside each, the chart's default ports and master name.
REPLICATION_VALUES = CHART / "ci" / "redis-replication-values.yaml"
REDIS_PORT = 6379
SENTINEL_PORT = 26379
SENTINEL_MASTER = "chat-history"
REDIS_PODS = [f"{RELEASE}-redis-{i}" for i in range(3)]
# Sentinel's down-after (5 s) plus an election and a promotion, with room for a busy 2-core node.
FAILOVER_LIMIT_S = 30.0
# A failover step in a Sentinel's log: `1:X 30 Nov 2026 19:00:00.123 # +sdown master <name> ...`
# (the `-failover-abort-*` events are the failed tries: a split vote, a promotion too slow).
SENTINEL_EVENT = re.compile(
    r"^\d+:X (?P<when>\d{2} \w{3} \d{4} [\d:.]+) \S (?P<event>[+-](?:sdown master|odown"
    r"|try-failover|vote-for-leader|elected-leader|failover-abort-\S+|promoted-slave|switch-master))\b"
)
# cluster/up.sh's node runs everything: a restarted pod, its init container and a full sync.
REJOIN_LIMIT_S = 180.0


def open_port_forward(core: Any, lock: threading.Lock, pod: str, namespace: str, port: int) -> Any:
    """A port-forward websocket to `pod`:`port` made with the Kubernetes Python client.

    The client swaps `call_api` on the ApiClient while it opens the websocket: `core` must have
    an ApiClient used for nothing else, and `lock` keeps the openings one at a time.
    """
    from kubernetes.stream import portforward

    with lock:
        return portforward(
            core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)
        )


class PortForwardRelay:
    """A local TCP port whose every connection is a new port-forward to one pod's port."""

    def __init__(self, open_forward: Callable[[], Any], remote_port: int, label: str) -> None:
        self._open_forward = open_forward
        self._remote_port = remote_port
        self._label = label
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._closed = threading.Event()
        self._conns: set[Any] = set()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"relay {label}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._workers = [w for w in self._workers if w.is_alive()] + [worker]
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        forward = remote = None
        try:
            forward = self._open_forward()
            remote = forward.socket(self._remote_port)
            remote.setblocking(True)
            with self._lock:
                self._conns.update((conn, remote))
            pump = threading.Thread(target=_pump, args=(remote, conn), daemon=True)
            pump.start()
            _pump(conn, remote)
            client_ended_first = pump.is_alive()
            pump.join(timeout=30)
            if not client_ended_first:
                # The pod ended the stream: the client library answers the close frame but
                # never closes the websocket's socket in that case (its close() is a no-op
                # once `connected` is False), so close it here; its thread has returned.
                websocket = forward.websocket
                if not websocket.connected and websocket.sock is not None:
                    websocket.shutdown()
        except Exception as exc:  # a failed forward just closes the client's connection
            logger.warning("port-forward to %s failed: %s", self._label, exc)
        finally:
            with self._lock:
                self._conns.discard(conn)
                if remote is not None:
                    self._conns.discard(remote)
            for sock in (conn, remote):
                if sock is not None:
                    sock.close()
            if forward is not None:
                forward.close()

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        with self._lock:
            for sock in list(self._conns):
                _shutdown(sock)
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout=5)


def _pump(source: Any, sink: Any) -> None:
    """Copy bytes until `source` ends, then end `sink`'s writing side."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _shutdown(sink, socket.SHUT_WR)


def _shutdown(sock: Any, how: int = socket.SHUT_RDWR) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)


class KubeReplication:
    """The Redis pods of a release with redis.architecture=replication, as redis-cli in them
    sees them: who the Sentinels name primary, and whether everything has converged."""

    def __init__(self, target: KubeTarget, namespace: str) -> None:
        self.target = target
        self.namespace = namespace

    def cli(self, pod: str, *args: str, container: str = "redis") -> str:
        argv = ["-n", self.namespace, "exec", pod, "-c", container, "--", "sh", "-c", RCLI, "rcli"]
        return self.target.kubectl(*argv, *args, timeout_s=30).strip()

    def sentinel(self, pod: str, *args: str) -> str:
        return self.cli(pod, "-p", str(SENTINEL_PORT), *args, container="sentinel")

    def primary(self, asking: str) -> str:
        """The pod name of the primary, as the Sentinel of `asking` names it."""
        answer = self.sentinel(asking, "sentinel", "get-master-addr-by-name", SENTINEL_MASTER)
        return answer.splitlines()[0].split(".")[0]

    def fqdn(self, pod: str) -> str:
        """`pod`'s DNS name, as the pods announce it (taken from a Sentinel's answer)."""
        for asking in REDIS_PODS:
            with contextlib.suppress(RuntimeError, IndexError, subprocess.TimeoutExpired):
                answer = self.sentinel(
                    asking, "sentinel", "get-master-addr-by-name", SENTINEL_MASTER
                )
                return f"{pod}.{answer.splitlines()[0].split('.', 1)[1]}"
        raise RuntimeError(f"no Sentinel in {self.namespace} answers")

    def resolvable(self, name: str) -> bool:
        """Every Redis pod resolves `name` now."""
        for pod in REDIS_PODS:
            try:
                self.target.kubectl(
                    "-n", self.namespace, "exec", pod, "-c", "sentinel", "--",
                    "getent", "hosts", name, timeout_s=30,
                )  # fmt: skip
            except (RuntimeError, subprocess.TimeoutExpired):
                return False
        return True

    def current_primary(self) -> str:
        """The primary as the first Sentinel that answers names it."""
        for pod in REDIS_PODS:
            with contextlib.suppress(RuntimeError, IndexError, subprocess.TimeoutExpired):
                return self.primary(pod)
        raise RuntimeError(f"no Sentinel in {self.namespace} names a primary")

    def promoted(self, asking: str, old: str) -> bool:
        """The Sentinel of `asking` names a primary other than `old`."""
        try:
            return self.primary(asking) not in {old, ""}
        except (RuntimeError, IndexError, subprocess.TimeoutExpired):
            return False

    def sentinel_events(self, pod: str, since: float) -> list[tuple[float, str]]:
        """(seconds after `since`, event) for the failover events `pod`'s Sentinel logged since
        the wall-clock time `since`: how a failover went, step by step, from the pods' logs."""
        stamp = dt.datetime.fromtimestamp(since - 1, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        log = self.target.kubectl(
            "-n", self.namespace, "logs", pod, "-c", "sentinel", f"--since-time={stamp}",
            timeout_s=30,
        )  # fmt: skip
        events = []
        for line in log.splitlines():
            match = SENTINEL_EVENT.match(line)
            if match is None:
                continue
            when = dt.datetime.strptime(match["when"], "%d %b %Y %H:%M:%S.%f")
            at = when.replace(tzinfo=dt.UTC).timestamp() - since  # Redis logs the pod's UTC
            if at >= 0:
                events.append((at, match["event"]))
        return events

    def master_info(self, asking: str) -> dict[str, str]:
        flat = self.sentinel(asking, "sentinel", "master", SENTINEL_MASTER).splitlines()
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def ready(self, pod: str) -> bool:
        status = json.loads(
            self.target.kubectl("-n", self.namespace, "get", "pod", pod, "-o", "json")
        )
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in status.get("status", {}).get("conditions", [])
        )

    def converged(self) -> bool:
        """Every pod ready; every Sentinel agrees on the primary and knows 2 replicas and the 2
        other Sentinels; the primary has 2 connected replicas, and the 2 others are replicas of
        it with their link up and no sync in progress (a pod that came back as a primary was
        turned into one)."""
        try:
            if not all(self.ready(pod) for pod in REDIS_PODS):
                return False
            primaries = {self.primary(pod) for pod in REDIS_PODS}
            infos = [self.master_info(pod) for pod in REDIS_PODS]
            if len(primaries) != 1:
                return False
            (primary,) = primaries
            roles = {pod: self.cli(pod, "info", "replication") for pod in REDIS_PODS}
        except (RuntimeError, ValueError, IndexError, subprocess.TimeoutExpired):
            return False
        sentinels_agree = all(
            i["num-slaves"] == "2"
            and i["num-other-sentinels"] == "2"
            and "s_down" not in i["flags"]
            for i in infos
        )
        replicas_follow = all(
            "role:slave" in info
            and f"master_host:{primary}." in info
            and "master_link_status:up" in info
            and "master_sync_in_progress:0" in info
            for pod, info in roles.items()
            if pod != primary
        )
        return sentinels_agree and replicas_follow and "connected_slaves:2" in roles[primary]

    def wait_converged(self, what: str) -> None:
        try:
            wait_until(self.converged, timeout_s=REJOIN_LIMIT_S, interval_s=2.0, what=what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; as they are now:\n{self.state()}") from exc

    def state(self) -> str:
        """Each pod's role and link as Redis sees it, and its Sentinel's view of the primary."""
        lines = []
        for pod in REDIS_PODS:
            try:
                info = self.cli(pod, "info", "replication").replace("\r", "").splitlines()
                sentinel = self.master_info(pod)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
                lines.append(f"  {pod}: {str(exc).strip()[-200:]}")
                continue
            redis = [line for line in info if line.startswith(
                ("role:", "master_host:", "master_link_status:", "master_sync_in_progress:",
                 "connected_slaves:")
            )]  # fmt: skip
            view = {
                k: sentinel.get(k) for k in ("ip", "flags", "num-slaves", "num-other-sentinels")
            }
            lines.append(f"  {pod}: redis {' '.join(redis)}; sentinel {view}")
        return "\n".join(lines)


class KubePrimaryKiller:
    """testsupport.failover's PrimaryKiller on the chart's replication, as losing the primary's
    node does it: kill = delete the pod the Sentinels name primary with zero grace, while no
    pod can be scheduled, until the Sentinels have promoted another pod; restore = wait until
    the deleted pod is back as a synced replica of the new primary.

    Without the scheduling stop, the StatefulSet's replacement can be back within Sentinel's
    down-after: the Sentinels still name it, it comes back as the primary with its AOF (the
    chart's prepare.sh believes them) and no failover happens at all (seen on the CI cluster).
    Deleting each replacement instead churns the Sentinels: every replacement's Sentinel
    announces itself under a new run id and is then gone, and the survivors lost the quorum
    for the next failover (seen too). The stop is a NoSchedule taint on every node, for the
    seconds until the promotion; pods already running are not touched.
    """

    TAINT = "chat-history.e2e/primary-node-lost"

    def __init__(self, replication: KubeReplication) -> None:
        self._replication = replication
        self._killed: str | None = None
        self._killed_at = 0.0  # wall clock, for the Sentinels' logs
        self.failover_s: list[float] = []  # kill to promotion, per kill

    def _scheduling(self, on: bool) -> None:
        """Stop scheduling (a NoSchedule taint on every node), or let it run again."""
        kubectl = self._replication.target.kubectl
        if not on:
            kubectl("taint", "nodes", "--all", f"{self.TAINT}=true:NoSchedule", "--overwrite")
            return
        try:
            kubectl("taint", "nodes", "--all", f"{self.TAINT}:NoSchedule-")
        except RuntimeError as exc:
            if "not found" not in str(exc):
                raise

    def kill_primary(self) -> str:
        old = self._replication.current_primary()
        survivor = next(p for p in REDIS_PODS if p != old)
        self._killed = old
        self._scheduling(on=False)
        try:
            started, self._killed_at = time.monotonic(), time.time()
            self._replication.target.kubectl(
                "-n", self._replication.namespace, "delete", "pod", old,
                "--grace-period=0", "--force",
            )  # fmt: skip
            wait_until(
                functools.partial(self._replication.promoted, survivor, old),
                timeout_s=FAILOVER_LIMIT_S, interval_s=0.5,
                what=f"the Sentinels to promote a replica after {old} was deleted",
            )  # fmt: skip
            self.failover_s.append(time.monotonic() - started)
        finally:
            self._scheduling(on=True)
        new = self._replication.primary(survivor)
        return f"{old} deleted (zero grace), {new} primary after {self.failover_s[-1]:.1f} s"

    def restore(self) -> str | None:
        """Wait until the deleted pod is a synced replica and its DNS name resolves again;
        return the other pods' Sentinels' failover events, in seconds after the delete.

        Lookups of the name while the pod was gone were answered NXDOMAIN, and CoreDNS caches
        that (`cache 30` with the kubernetes plugin's `ttl 30`, kubeadm's defaults and the CI
        cluster's) for up to 30 s after the pod is back. A failover to this pod inside that
        window goes wrong (seen on the CI cluster): a Sentinel that cannot resolve the new
        primary keeps the old one, for good (its epoch has moved on), and the chat pods cannot
        connect to it. A node is back when everyone can reach it."""
        self._replication.wait_converged("the deleted pod to come back as a synced replica")
        if self._killed is not None:
            name = self._replication.fqdn(self._killed)
            wait_until(
                functools.partial(self._replication.resolvable, name),
                timeout_s=REJOIN_LIMIT_S, interval_s=1.0,
                what=f"{name} to resolve in every Redis pod (CoreDNS's negative cache)",
            )  # fmt: skip
        return self.events()

    def events(self) -> str | None:
        """The failover events the Sentinels that saw the last kill logged, or None."""
        if self._killed is None:
            return None
        seen = []
        for pod in REDIS_PODS:
            if pod == self._killed:
                continue
            try:
                events = self._replication.sentinel_events(pod, self._killed_at)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                seen.append(f"{pod}: no log ({exc})")
                continue
            seen.append(f"{pod}: " + ", ".join(f"{e} {at:.2f}" for at, e in events))
        return "Sentinel events, s after the delete: " + "; ".join(seen)


class KubeDeployment(Deployment):
    """One Helm release of the chart in its own namespace."""

    def __init__(
        self,
        target: KubeTarget,
        backend: Backend,
        namespace: str,
        replicas: int,
        history_api: HistoryApi,
        replication: KubeReplication | None = None,
    ) -> None:
        from kubernetes import client

        self.backend = backend
        self.history_api = history_api
        self.replica_count = replicas
        self.namespace = namespace
        self.description = f"release {RELEASE} in namespace {namespace}, {replicas} pods"
        if replication is not None:
            self.description += (
                f", Redis with replication in {replication.namespace} "
                "(a primary, 2 replicas, 3 Sentinels)"
            )
        # The Redis with replication the chat pods use (their own release's, or a shared one).
        self.replication = replication
        self._known_chat_pods: set[str] | None = None
        self._target = target
        self._core = client.CoreV1Api(target.api_client)
        self._apps = client.AppsV1Api(target.api_client)
        self._discovery = client.DiscoveryV1Api(target.api_client)
        self._relays: dict[str, PortForwardRelay] = {}
        self._forward_lock = threading.Lock()
        self._forward_core = client.CoreV1Api(client.ApiClient(target.api_client.configuration))
        self.api_key = self._generated_api_key()

    def _generated_api_key(self) -> str | None:
        """The key the chart generated at install (its Secret's `api-key` item), if it made one."""
        from kubernetes.client.exceptions import ApiException

        try:
            secret: Any = self._core.read_namespaced_secret(f"{RELEASE}-api-keys", self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None  # auth.enabled=false
            raise
        return base64.b64decode(secret.data["api-key"]).decode()

    # --- looking ------------------------------------------------------------------------------

    def _selector(self, component: str) -> str:
        return f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"

    def _pods(self, component: str = "chat") -> list[Any]:
        """Running pods that are not being deleted, oldest first."""
        # Any: the client's models mark every field Optional, while the API server always sets
        # metadata and status on the objects it returns.
        pods: list[Any] = self._core.list_namespaced_pod(
            self.namespace, label_selector=self._selector(component), _request_timeout=10
        ).items
        alive = [
            p for p in pods if p.metadata.deletion_timestamp is None and p.status.phase == "Running"
        ]
        return sorted(alive, key=lambda p: (p.metadata.creation_timestamp, p.metadata.name))

    @staticmethod
    def _ready(pod: Any) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    def _open_forward(self, pod: str) -> Any:
        return open_port_forward(
            self._forward_core, self._forward_lock, pod, self.namespace, CHAT_PORT
        )

    def replicas(self) -> list[Endpoint]:
        pods = [p.metadata.name for p in self._pods()]
        for gone in set(self._relays) - set(pods):
            self._relays.pop(gone).close()
        for pod in pods:
            if pod not in self._relays:
                self._relays[pod] = PortForwardRelay(
                    functools.partial(self._open_forward, pod), CHAT_PORT, pod
                )
        return [
            Endpoint(pod, f"http://127.0.0.1:{self._relays[pod].port}", api_key=self.api_key)
            for pod in pods
        ]

    def entry_point(self) -> Endpoint | None:
        service: Any = self._core.read_namespaced_service(RELEASE, self.namespace)  # see _pods
        port = service.spec.ports[0]
        port_ref = port.name or str(port.port)
        cfg = self._target.api_client.configuration
        url = f"{cfg.host}/api/v1/namespaces/{self.namespace}/services/{RELEASE}:{port_ref}/proxy"
        # X-API-Key: the API server authenticates this request with its own Authorization
        # header and strips it before proxying.
        return Endpoint(
            "api-server proxy to the Service", url, self._target.httpx_options(),
            fresh_connections=True, api_key=self.api_key, api_key_header="x-api-key",
        )  # fmt: skip

    def serving_endpoints(self) -> int:
        slices = self._discovery.list_namespaced_endpoint_slice(
            self.namespace, label_selector=f"kubernetes.io/service-name={RELEASE}"
        ).items
        return sum(
            1
            for s in slices
            for e in s.endpoints or []
            if e.conditions is not None and e.conditions.ready
        )

    def store_identity(self) -> str | None:
        pods = self._pods("redis")
        return f"pod {pods[0].metadata.name} uid {pods[0].metadata.uid}" if pods else None

    # --- waiting ------------------------------------------------------------------------------

    def _wait_chat(
        self, count: int, *, replaced: AbstractSet[str] = frozenset(), timeout_s: float
    ) -> None:
        """Wait for `count` ready chat pods, none of them in `replaced`, all behind the Service."""

        def settled() -> bool:
            pods = self._pods()
            return (
                len(pods) == count
                and all(self._ready(p) for p in pods)
                and not {p.metadata.name for p in pods} & replaced
                and self.serving_endpoints() == count
            )

        wait_until(settled, timeout_s=timeout_s, what=f"{count} ready chat pods", interval_s=1.0)

    def wait_replicas_ready(self, timeout_s: float) -> None:
        started = time.monotonic()
        self._wait_chat(len(self._pods()), timeout_s=timeout_s)
        self._wait_answering_ready(max(1.0, timeout_s - (time.monotonic() - started)))

    def _wait_answering_ready(self, timeout_s: float) -> None:
        """Wait until every chat pod answers /readyz with 200 now, asked through its own
        port-forward, as the local target asks its processes.

        The pods' Ready condition is the kubelet's last probe: a Redis restart shorter than
        periodSeconds x failureThreshold (8 s) never changes it, so it says nothing about the
        new Redis pod. A pod's /readyz answers 200 once its ping reaches Redis the way a turn
        does (DNS, the Service's rules, the NetworkPolicy); kube-proxy programs the Service's
        rules for a new Redis pod up to seconds after that pod is Ready, and until then
        connects time out (after the retries a turn answers 503 "redis: ConnectionError").
        """

        def answering() -> bool:
            for endpoint in self.replicas():
                with Api(endpoint, timeout_s=5.0) as api:
                    if not api.ready():
                        return False
            return True

        wait_until(answering, timeout_s=timeout_s, interval_s=0.5,
                   what="every chat pod to answer /readyz with 200")  # fmt: skip

    def _wait_store(self, *, running: bool, not_uid: str | None = None) -> None:
        def settled() -> bool:
            all_pods = self._core.list_namespaced_pod(
                self.namespace, label_selector=self._selector("redis")
            ).items
            if not running:
                return not all_pods
            pods = self._pods("redis")
            return len(pods) == 1 and self._ready(pods[0]) and pods[0].metadata.uid != not_uid

        wait_until(
            settled, timeout_s=ROLLOUT_TIMEOUT_S, interval_s=1.0,
            what=f"the Redis pod to be {'ready' if running else 'gone'}",
        )  # fmt: skip

    # --- disturbing ---------------------------------------------------------------------------

    def restart_replica(self, index: int) -> None:
        pod = self._pods()[index].metadata.name
        self._core.delete_namespaced_pod(pod, self.namespace)
        self._wait_chat(self.replica_count, replaced={pod}, timeout_s=ROLLOUT_TIMEOUT_S)

    def rolling_restart(self) -> None:
        old = {p.metadata.name for p in self._pods()}
        stamp = dt.datetime.now(dt.UTC).isoformat()
        patch = {
            "spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": stamp,
            }}}}
        }  # fmt: skip
        self._apps.patch_namespaced_deployment(
            RELEASE, self.namespace, patch, _content_type=MERGE_PATCH
        )
        self._wait_chat(len(old), replaced=old, timeout_s=ROLLOUT_TIMEOUT_S)

    def scale(self, replicas: int) -> None:
        self._apps.patch_namespaced_deployment_scale(
            RELEASE, self.namespace, {"spec": {"replicas": replicas}}, _content_type=MERGE_PATCH
        )
        self._wait_chat(replicas, timeout_s=ROLLOUT_TIMEOUT_S)

    def kill_history_store(self) -> None:
        from kubernetes import client

        if self.backend == "memory":  # the history is in the chat pods' heap
            old = {p.metadata.name for p in self._pods()}
            for pod in old:
                self._core.delete_namespaced_pod(
                    pod, self.namespace, body=client.V1DeleteOptions(grace_period_seconds=0)
                )
            self._wait_chat(self.replica_count, replaced=old, timeout_s=ROLLOUT_TIMEOUT_S)
            return
        [pod] = self._pods("redis")
        # A plain delete: the kubelet sends SIGTERM and Redis fsyncs the AOF before exiting;
        # the new pod mounts the same PVC and replays it.
        self._core.delete_namespaced_pod(pod.metadata.name, self.namespace)
        self._wait_store(running=True, not_uid=pod.metadata.uid)
        self.wait_replicas_ready(ROLLOUT_TIMEOUT_S)

    def _scale_store(self, replicas: int) -> None:
        self._apps.patch_namespaced_stateful_set_scale(
            f"{RELEASE}-redis", self.namespace, {"spec": {"replicas": replicas}},
            _content_type=MERGE_PATCH,
        )  # fmt: skip

    def stop_store(self) -> None:
        if self.backend == "redis":
            self._scale_store(0)
            self._wait_store(running=False)

    def start_store(self) -> None:
        if self.backend == "redis" and not self._pods("redis"):
            self._scale_store(1)
            self._wait_store(running=True)

    # --- runbook procedures: the kubectl/helm/redis-cli lines of docs/runbook.md -----------

    @property
    def _redis_pod(self) -> str:
        return f"{RELEASE}-redis-0"

    def _kubectl(self, *args: str, stdin: str | None = None, timeout_s: float = 300) -> str:
        return self._target.kubectl("-n", self.namespace, *args, stdin=stdin, timeout_s=timeout_s)

    def _rcli(self, *args: str, stdin: str | None = None) -> str:
        out = self._kubectl(
            "exec", "-i", self._redis_pod, "-c", "redis", "--", "sh", "-c", RCLI, "rcli", *args,
            stdin=stdin,
        )  # fmt: skip
        if out.startswith(("ERR", "NOAUTH", "WRONGPASS")):
            raise RuntimeError(f"redis-cli {' '.join(args)}: {out.strip()}")
        return out

    def _require_redis(self) -> None:
        if self.backend != "redis":
            raise NotImplementedError("the memory backend has no store to operate on")

    def backup_store(self, dest: Path) -> None:
        self._require_redis()
        self._rcli("BGREWRITEAOF")

        def rewritten() -> bool:
            info = self._rcli("INFO", "persistence")
            return "aof_rewrite_in_progress:0" in info and "aof_rewrite_scheduled:0" in info

        wait_until(rewritten, timeout_s=ROLLOUT_TIMEOUT_S, what="the AOF rewrite to finish")
        self._kubectl(
            "cp", "-c", "redis", f"{self._redis_pod}:/data/appendonlydir",
            str(dest / "appendonlydir"),
        )  # fmt: skip

    def _store_down(self) -> None:
        self._kubectl("scale", f"statefulset/{RELEASE}-redis", "--replicas=0")
        self._kubectl("wait", "--for=delete", f"pod/{self._redis_pod}", "--timeout=300s")

    def _store_up(self) -> None:
        self._kubectl("scale", f"statefulset/{RELEASE}-redis", "--replicas=1")
        self._kubectl("rollout", "status", f"statefulset/{RELEASE}-redis", "--timeout=300s")
        self._wait_store(running=True)
        self.wait_replicas_ready(ROLLOUT_TIMEOUT_S)

    def lose_store_data(self) -> None:
        self._require_redis()
        self._store_down()
        self._kubectl("delete", "pvc", f"data-{self._redis_pod}", "--wait=true")
        self._store_up()

    def restore_store(self, src: Path) -> None:
        self._require_redis()
        image = self._kubectl(
            "get", f"statefulset/{RELEASE}-redis", "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ).strip()  # fmt: skip
        # The restored files belong to Redis's own UID, whatever the chart runs it as.
        redis_ids = json.loads(
            self._kubectl(
                "get", f"statefulset/{RELEASE}-redis", "-o",
                "jsonpath={.spec.template.spec.securityContext}",
            )
        )  # fmt: skip
        self._store_down()
        overrides = {
            "spec": {
                # `sleep` as PID 1 ignores SIGTERM: the default 30 s grace would be waited out.
                "terminationGracePeriodSeconds": 0,
                "securityContext": {
                    key: redis_ids[key] for key in ("runAsUser", "runAsGroup", "fsGroup")
                },
                "volumes": [{"name": "data", "persistentVolumeClaim": {
                    "claimName": f"data-{self._redis_pod}"}}],
                "containers": [{
                    "name": "redis-restore", "image": image, "command": ["sleep", "3600"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
            }
        }  # fmt: skip
        self._kubectl(
            "run", "redis-restore", "--restart=Never", f"--image={image}",
            f"--overrides={json.dumps(overrides)}",
        )  # fmt: skip
        try:
            self._kubectl("wait", "--for=condition=Ready", "pod/redis-restore", "--timeout=300s")
            self._kubectl("exec", "redis-restore", "--", "rm", "-rf", "/data/appendonlydir")
            self._kubectl("cp", str(src / "appendonlydir"), "redis-restore:/data/appendonlydir")
        finally:
            self._kubectl("delete", "pod", "redis-restore", "--wait=true")
        self._store_up()

    def rotate_store_password(self) -> str:
        self._require_redis()
        secret = f"{RELEASE}-redis"
        encoded = self._kubectl(
            "get", "secret", secret, "-o", "jsonpath={.data.redis-password}"
        ).strip()
        old, new = base64.b64decode(encoded).decode(), secrets.token_urlsafe(24)
        self._rcli(stdin=f"ACL SETUSER default on >{new}\n")
        patch = json.dumps({"stringData": {"redis-password": new}})
        self._kubectl("patch", "secret", secret, "--type", "merge", "-p", patch)
        self._kubectl("rollout", "restart", f"deployment/{RELEASE}")
        self._kubectl("rollout", "status", f"deployment/{RELEASE}", "--timeout=300s")
        # The runbook's tip: a changed annotation makes the kubelet sync the Redis pods, and
        # refresh their mounted Secret, now instead of within its sync period (about a minute).
        self._kubectl("annotate", "pods", "-l", self._selector("redis"), "--overwrite",
                      f"chat-history/secret-rotated-at={int(time.time())}")  # fmt: skip

        def mounted() -> bool:
            current = self._kubectl(
                "exec", self._redis_pod, "-c", "redis", "--", "cat", "/run/secrets/redis/password"
            )
            return current == new

        wait_until(mounted, timeout_s=ROLLOUT_TIMEOUT_S, interval_s=1.0,
                   what="the kubelet to refresh the mounted Secret")  # fmt: skip
        self._rcli(stdin=f"ACL SETUSER default <{old}\n")
        self.wait_replicas_ready(ROLLOUT_TIMEOUT_S)
        return old

    def store_rejects_password(self, password: str) -> bool:
        out = self._kubectl(
            "exec", "-i", self._redis_pod, "-c", "redis", "--", "redis-cli",
            stdin=f"AUTH {password}\nPING\n",
        )  # fmt: skip
        return "WRONGPASS" in out or "invalid username-password" in out

    def upgrade(self, settings: dict[str, str]) -> None:
        unknown = set(settings) - set(UPGRADE_VALUES)
        if unknown:
            raise NotImplementedError(f"no chart value for {sorted(unknown)}")
        old = {p.metadata.name for p in self._pods()}
        args = ["upgrade", RELEASE, str(CHART), "--namespace", self.namespace,
                "--reset-then-reuse-values", "--wait", "--timeout", HELM_TIMEOUT]  # fmt: skip
        for name, value in settings.items():
            args += ["--set", f"{UPGRADE_VALUES[name]}={value}"]
        result = self._target.helm(*args)
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        self._wait_chat(len(old), replaced=old, timeout_s=ROLLOUT_TIMEOUT_S)

    def helm_test(self) -> tuple[bool, str]:
        result = self._target.helm(
            "test", RELEASE, "--namespace", self.namespace, "--logs", "--timeout", HELM_TIMEOUT
        )
        return result.returncode == 0, result.stdout + result.stderr

    # --- failover under traffic (testsupport/failover.py) -------------------------------------

    def failover_killer(self, sessions: list[str]) -> PrimaryKiller:
        # One primary holds every session: `sessions` needs no placement.
        if self.replication is None:
            raise NotImplementedError(f"{self.description}: no Redis primary with replicas")
        self.replication.wait_converged("the replication to converge before a kill")
        return KubePrimaryKiller(self.replication)

    def unhandled_errors(self) -> list[str]:
        logs = [self._kubectl("logs", pod.metadata.name, "-c", "chat", timeout_s=30)
                for pod in self._pods()]  # fmt: skip
        return [error for log in logs for error in unhandled_errors_in(log)]

    def diagnostics(self) -> str:
        """Every pod's containers (their log tails, timestamped, the previous run's too when a
        container restarted) and the last events, in this release's namespace and in that of
        the Redis it uses."""
        namespaces = [self.namespace]
        if self.replication is not None and self.replication.namespace != self.namespace:
            namespaces.append(self.replication.namespace)
        return "\n".join(self._namespace_diagnostics(ns) for ns in namespaces)

    def _namespace_diagnostics(self, namespace: str) -> str:
        def kubectl(*args: str) -> str:
            try:
                out = self._target.kubectl("-n", namespace, *args, timeout_s=30).rstrip()
            except Exception as exc:  # gathering must not hide the failure itself
                return f"(not available: {exc})"
            return out

        parts = []
        pods: list[Any] = self._core.list_namespaced_pod(namespace).items  # Any: see _pods
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            for status in pod.status.container_statuses or []:
                for previous in [False, True] if status.restart_count else [False]:
                    log = kubectl(
                        "logs", pod.metadata.name, "-c", status.name, "--tail", "40",
                        "--timestamps", *(["--previous"] if previous else []),
                    )  # fmt: skip
                    run = " (its previous run)" if previous else ""
                    parts.append(f"--- {namespace}/{pod.metadata.name} {status.name}{run}:\n{log}")
        events = kubectl(
            "get", "events", "--sort-by=.lastTimestamp", "-o",
            "custom-columns=LAST:.lastTimestamp,OBJECT:.involvedObject.name,"
            "REASON:.reason,MESSAGE:.message",
        )  # fmt: skip
        last = "\n".join(events.splitlines()[-30:])
        parts.append(f"--- {namespace} events (the last 30):\n{last}")
        return "\n".join(parts)

    def replica_restarts(self) -> int:
        """Container restarts of the chat pods, plus the chat pods that replaced one seen by an
        earlier call (a pod that died and was recreated)."""
        pods: list[Any] = self._core.list_namespaced_pod(  # Any: see _pods
            self.namespace, label_selector=self._selector("chat")
        ).items
        names = {p.metadata.name for p in pods}
        if self._known_chat_pods is None:
            self._known_chat_pods = names
        restarts: int = sum(
            s.restart_count for p in pods for s in p.status.container_statuses or []
        )
        return restarts + len(names - self._known_chat_pods)

    def close(self) -> None:
        for relay in self._relays.values():
            relay.close()
        self._relays.clear()
        self._forward_core.api_client.close()
        # Its pods stop loading the node now; the target waits for the namespace at the end.
        self._target.delete_namespace(self.namespace)


class KubeTarget(Target):
    """The current kubeconfig context (kind, minikube, the CI cluster)."""

    name = "kube"
    concurrent_deploys = True

    def __init__(
        self, keep: bool = False, context: str | None = None,
        values_files: list[str] | None = None, set_values: list[str] | None = None,
    ) -> None:  # fmt: skip
        try:
            from kubernetes import client, config
        except ImportError as exc:
            raise TargetUnavailable(f"{exc}: pip install -e '.[e2e]'") from exc
        try:
            config.load_kube_config(context=context)  # type: ignore[no-untyped-call]  # unannotated in the client
        except (config.ConfigException, OSError) as exc:
            raise TargetUnavailable(
                f"no Kubernetes cluster configured ({exc}); create one with scripts/kind-up.sh"
            ) from exc
        self.api_client = client.ApiClient()
        host = self.api_client.configuration.host
        try:
            version = client.VersionApi(self.api_client).get_code(_request_timeout=5)
        except Exception as exc:  # any failure means: no cluster to test
            self.api_client.close()  # type: ignore[no-untyped-call]  # unannotated in the client
            raise TargetUnavailable(f"the cluster at {host} does not answer: {exc}") from exc
        self.helm_binary = find_tool("helm")
        if self.helm_binary is None:
            self.api_client.close()  # type: ignore[no-untyped-call]  # unannotated in the client
            raise TargetUnavailable(
                "helm not found: run scripts/tools.sh (builds .tools/bin/helm) or see "
                "https://helm.sh/docs/intro/install/"
            )
        self.context = context
        self.keep = keep
        self.values_files = list(values_files or [])
        self.set_values = list(set_values or [])
        self.run_id = secrets.token_hex(3)
        self.namespaces: list[str] = []
        self._naming = threading.Lock()  # deploy() may run in several threads at once
        self._deleting: set[str] = set()
        self._deployments: list[KubeDeployment] = []
        self.description = f"Kubernetes {version.git_version} at {host}"

    def kubectl(self, *args: str, stdin: str | None = None, timeout_s: float = 300) -> str:
        """Run kubectl on this target's context; raise with its output when it fails."""
        binary = find_tool("kubectl")
        if binary is None:
            raise NotImplementedError("kubectl not found: the runbook procedures need it")
        argv = [binary, *(["--context", self.context] if self.context else []), *args]
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, check=False, timeout=timeout_s
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [self.helm_binary or "helm", *args]
        if self.context:
            argv += ["--kube-context", self.context]
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)

    def httpx_options(self) -> dict[str, Any]:
        """TLS and credentials to call the API server with httpx, taken from the kubeconfig."""
        cfg = self.api_client.configuration
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if not cfg.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        headers = {}
        if token := cfg.get_api_key_with_prefix("authorization"):
            headers["Authorization"] = token
        return {"verify": context, "headers": headers}

    def deploy(
        self,
        backend: Backend,
        replicas: int,
        history_api: HistoryApi = "message-history",
        redis_mode: RedisMode = "standalone",
        settings: dict[str, str] | None = None,
        redis_from: Deployment | None = None,
    ) -> Deployment:
        """The chart, as users install it. `redis_mode` "sentinel" is redis.architecture=
        replication; `settings` are set through their chart values (DEPLOY_VALUES); `redis_from`
        (a deployment made with "sentinel") makes a release in a namespace of its own whose chat
        pods use that release's Redis through redis.external, as they would a managed one."""
        from kubernetes import client

        if redis_mode == "cluster":
            raise TargetUnavailable(
                "the chart deploys Redis standalone or with replication (Sentinel), not a Redis "
                "Cluster (redis.external can name one): Redis Cluster runs on the local target"
            )
        unknown = set(settings or {}) - set(DEPLOY_VALUES)
        if unknown:
            raise TargetUnavailable(f"no chart value for the settings {sorted(unknown)}")
        shared: KubeDeployment | None = None
        if redis_from is not None:
            if not isinstance(redis_from, KubeDeployment) or redis_from.replication is None:
                raise TargetUnavailable("redis_from must be a kube deployment made with sentinel")
            shared = redis_from

        short_api = {"message-history": "mh", "checkpointer": "ckpt"}[history_api]
        namespace = f"chat-e2e-{self.run_id}-{backend}-{short_api}"
        core = client.CoreV1Api(self.api_client)
        with self._naming:
            if redis_mode != "standalone" or settings or shared is not None:
                namespace += f"-{len(self.namespaces)}"  # several of these per (backend, API)
            core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=MANAGED_BY))
            )
            self.namespaces.append(namespace)
        args = ["upgrade", "--install", RELEASE, str(CHART), "--namespace", namespace,
                "--wait", "--timeout", HELM_TIMEOUT]  # fmt: skip
        ci_values = CHART / "ci" / f"{backend}-values.yaml"
        if ci_values.is_file():
            args += ["--values", str(ci_values)]
        if redis_mode == "sentinel" and shared is None:
            args += ["--values", str(REPLICATION_VALUES)]
        for values in self.values_files:
            args += ["--values", values]
        workdir = tempfile.TemporaryDirectory(prefix="chat-e2e-")
        if shared is not None:
            shared_values = Path(workdir.name) / "shared-redis-values.json"
            # JSON is YAML: helm reads it as a values file.
            shared_values.write_text(json.dumps(self._share_redis(shared, namespace)))
            args += ["--values", str(shared_values)]
        args += [
            "--set", f"history.backend={backend}", "--set", f"history.api={history_api}",
            "--set", f"replicaCount={replicas}",
            # Keys on, as by default; limits on with room for every turn the suite sends.
            "--set", "limits.rateLimitTurns=100000",
            "--set", "limits.maxSessionsPerPrincipal=100000",
        ]  # fmt: skip
        for value in self.set_values:
            args += ["--set", value]
        for name, value in (settings or {}).items():
            args += ["--set", f"{DEPLOY_VALUES[name]}={value}"]
        started = time.monotonic()
        with workdir:
            result = self.helm(*args)
        if result.returncode != 0:
            raise RuntimeError(
                f"helm {' '.join(args)} failed after {time.monotonic() - started:.0f}s:\n"
                f"{result.stdout}{result.stderr}\n{self._pod_summary(namespace)}"
            )
        replication = shared.replication if shared is not None else None
        if redis_mode == "sentinel" and shared is None:
            replication = KubeReplication(self, namespace)
        deployment = KubeDeployment(self, backend, namespace, replicas, history_api, replication)
        self._deployments.append(deployment)
        return deployment

    def _share_redis(self, source: KubeDeployment, namespace: str) -> dict[str, Any]:
        """Let the chat pods of the release about to be installed in `namespace` use `source`'s
        Redis: its password in a Secret there, a NetworkPolicy beside that Redis admitting them
        (the chart's own admits its release's chat pods only), and the redis.external values
        (returned) naming its Sentinels."""
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        config: Any = core.read_namespaced_config_map(RELEASE, source.namespace)  # see _pods
        password = self.kubectl(
            "-n", source.namespace, "get", "secret", f"{RELEASE}-redis",
            "-o", "jsonpath={.data.redis-password}",
        ).strip()  # fmt: skip
        secret = f"{RELEASE}-shared-redis"
        self.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret, "namespace": namespace},
            "data": {"redis-password": password},
        }))  # fmt: skip

        def pods(component: str, ns: str) -> dict[str, Any]:
            return {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "podSelector": {"matchLabels": {
                    "app.kubernetes.io/name": "chat-history",
                    "app.kubernetes.io/instance": RELEASE,
                    "app.kubernetes.io/component": component,
                }},
            }  # fmt: skip

        ports = [{"port": port, "protocol": "TCP"} for port in (REDIS_PORT, SENTINEL_PORT)]
        self.kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"e2e-clients-from-{namespace}", "namespace": source.namespace},
            "spec": {
                "podSelector": pods("redis", source.namespace)["podSelector"],
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [pods("chat", namespace)], "ports": ports}],
            },
        }))  # fmt: skip
        return {"redis": {"external": {
            "enabled": True, "mode": "sentinel",
            "sentinels": config.data["REDIS_SENTINELS"].split(","),
            "sentinelMaster": config.data["REDIS_SENTINEL_MASTER"],
            "existingSecret": secret, "existingSecretPasswordKey": "redis-password",
            # The chart's Sentinels take the data nodes' password.
            "sentinelPasswordKey": "redis-password",
            "egress": [{"to": [pods("redis", source.namespace)], "ports": ports}],
        }}}  # fmt: skip

    def delete_namespace(self, namespace: str) -> None:
        """Start deleting `namespace` (unless --keep); close() waits for all of them.

        Its workloads are scaled to zero and its pods deleted without grace first: the
        namespace is thrown away, and the namespace controller, finding pods still there,
        comes back only after their terminationGracePeriodSeconds (35 s with the chart's
        values) even when they are gone within seconds. With no pod left it finishes at once.
        """
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        if self.keep or namespace in self._deleting:
            return
        core, apps = client.CoreV1Api(self.api_client), client.AppsV1Api(self.api_client)
        try:
            zero = {"spec": {"replicas": 0}}
            deployments: list[Any] = apps.list_namespaced_deployment(namespace).items  # see _pods
            for deployment in deployments:
                apps.patch_namespaced_deployment_scale(
                    deployment.metadata.name, namespace, zero, _content_type=MERGE_PATCH
                )
            stateful_sets: list[Any] = apps.list_namespaced_stateful_set(namespace).items
            for stateful_set in stateful_sets:
                apps.patch_namespaced_stateful_set_scale(
                    stateful_set.metadata.name, namespace, zero, _content_type=MERGE_PATCH
                )
            core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
            core.delete_namespace(namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise
        self._deleting.add(namespace)

    def _pod_summary(self, namespace: str) -> str:
        from kubernetes import client

        lines = []
        pods: list[Any] = client.CoreV1Api(self.api_client).list_namespaced_pod(namespace).items
        for pod in pods:  # Any: see KubeDeployment._pods
            waiting = [
                f"{s.name}: {s.state.waiting.reason}"
                for s in pod.status.container_statuses or []
                if s.state and s.state.waiting
            ]
            lines.append(f"  {pod.metadata.name} {pod.status.phase} {' '.join(waiting)}")
        return "pods:\n" + "\n".join(lines) if lines else "no pods"

    def close(self) -> None:
        from kubernetes import client

        for deployment in self._deployments:
            deployment.close()
        core = client.CoreV1Api(self.api_client)
        if not self.keep:
            for namespace in self.namespaces:
                self.delete_namespace(namespace)
            selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())

            def deleted() -> bool:
                left: list[Any] = core.list_namespace(label_selector=selector).items  # see _pods
                return not {ns.metadata.name for ns in left} & set(self.namespaces)

            wait_until(
                deleted, timeout_s=ROLLOUT_TIMEOUT_S, interval_s=2.0,
                what=f"namespaces {', '.join(self.namespaces)} to be deleted",
            )  # fmt: skip
        self.api_client.close()  # type: ignore[no-untyped-call]  # unannotated in the client
