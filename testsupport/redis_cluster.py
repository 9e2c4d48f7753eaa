"""A real Redis Cluster of local `redis-server` processes (3 primaries; replicas on request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from testsupport.procs import LOOPBACK, free_port, wait_until
from testsupport.redis import RedisServer

READY_TIMEOUT_S = 60.0


class LocalRedisCluster:
    """`primaries * (1 + replicas)` RedisServers with `--cluster-enabled yes`, joined by
    `redis-cli --cluster create` (slots spread evenly, `replicas` per primary) and started when
    `start()` returns: every running node reports `cluster_state:ok` and every replica has synced.
    No persistence: a killed node comes back empty and resyncs from its primary (`restart`), as a
    pod without a volume.

    `node_timeout_ms` is how long the others wait before they call a node failed; a replica of
    a failed primary is promoted about a second after that."""

    def __init__(
        self,
        workdir: Path,
        *,
        primaries: int = 3,
        replicas: int = 0,
        node_timeout_ms: int = 5000,
        password: str | None = None,
    ) -> None:
        self.replicas = replicas
        self.password = password
        self.nodes = [
            RedisServer(
                workdir / f"node{i}", appendonly=False, password=password,
                extra_args=self._options(node_timeout_ms, password),
            )
            for i in range(primaries * (1 + replicas))
        ]  # fmt: skip

    @staticmethod
    def _options(node_timeout_ms: int, password: str | None) -> list[str]:
        options = [
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            # An explicit bus port: the default (port + 10000) may not be a valid port.
            "--cluster-port", str(free_port()), "--cluster-node-timeout", str(node_timeout_ms),
        ]  # fmt: skip
        return options + (["--masterauth", password] if password else [])

    @property
    def url(self) -> str:
        """Any node: a cluster client discovers the others."""
        return self.nodes[0].url

    @property
    def startup_nodes(self) -> list[ClusterNode]:
        # The ignore: redis-py leaves ClusterNode.__init__ unannotated.
        return [ClusterNode(LOOPBACK, n.port) for n in self.nodes]  # type: ignore[no-untyped-call]  # see above

    def client(self, **options: Any) -> RedisCluster:
        """A sync cluster client of its own (close it when done)."""
        settings: dict[str, Any] = {"socket_timeout": 5, "password": self.password} | options
        return RedisCluster(startup_nodes=self.startup_nodes, **settings)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        try:
            addresses = [f"{LOOPBACK}:{node.port}" for node in self.nodes]
            self.nodes[0].cli("--cluster", "create", *addresses, "--cluster-replicas",
                              str(self.replicas), "--cluster-yes")  # fmt: skip
            self.wait_ok()
            # A replica that never synced is not promoted (its data counts as too old), so a
            # primary killed before then stays failed: wait until every replica has synced.
            wait_until(self._synced, timeout_s=READY_TIMEOUT_S, what="every replica to sync")
        except BaseException:
            self.stop()
            raise

    def wait_ok(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Return once every running node reports `cluster_state:ok`."""
        wait_until(self._ready, timeout_s=timeout_s, what="cluster_state:ok everywhere")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _slots(self) -> list[Any]:
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with node.client(socket_timeout=1, socket_connect_timeout=1) as c:
                    slots: list[Any] = c.execute_command("CLUSTER", "SLOTS")
                    return slots
            except redis.RedisError:
                continue
        raise RuntimeError("no cluster node answers")

    def owner_of(self, slot: int) -> int:
        """The port of the primary that serves `slot`, as a running node sees it."""
        for start, end, primary, *_ in self._slots():
            if start <= slot <= end:
                return int(primary[1])
        raise ValueError(f"slot {slot} is not served")

    def owner_of_key(self, key: str) -> int:
        return self.owner_of(key_slot(key.encode()))

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def wait_failover(self, slot: int, old: RedisServer, timeout_s: float = 30.0) -> None:
        """Wait until another node serves `slot` as a primary and the cluster is ok again."""

        def promoted() -> bool:
            try:
                return self.owner_of(slot) != old.port and self._ready()
            except (RuntimeError, ValueError):
                return False

        try:
            wait_until(promoted, timeout_s=timeout_s, what="a cluster failover", interval_s=0.1)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc} of :{old.port}\n{self.describe()}") from None

    def describe(self) -> str:
        """What a failed wait needs: each running node's CLUSTER INFO state and CLUSTER NODES
        view, and its log's tail."""
        parts = []
        for node in self.nodes:
            if not node.running:
                parts.append(f"--- :{node.port} (not running)")
                continue
            try:
                with node.client(socket_timeout=1, socket_connect_timeout=1) as c:
                    state = c.cluster("INFO").get("cluster_state")
                    view = c.execute_command("CLUSTER", "NODES")
            except redis.RedisError as exc:
                state, view = f"no answer: {exc}", ""
            view = view.decode() if isinstance(view, bytes) else str(view)
            parts.append(f"--- :{node.port} cluster_state {state}\n{view.strip()}\n"
                         f"{node.process.log_tail(12)}")  # fmt: skip
        return "\n".join(parts)

    def restart(self, node: RedisServer) -> None:
        """Start a killed node again: it finds from nodes.conf that it was failed over and
        comes back as a replica of its former replica; wait until it has synced."""
        node.start()

        def synced() -> bool:
            with node.client(socket_timeout=1) as c:
                info = c.info("replication")
            return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")

        wait_until(synced, timeout_s=READY_TIMEOUT_S, what="the node to rejoin as a replica")
        wait_until(self._ready, timeout_s=READY_TIMEOUT_S, what="cluster_state:ok everywhere")

    def flushall(self) -> None:
        for node in self.nodes:
            with node.client() as c:
                if c.info("replication").get("role") == "master":
                    c.flushall()

    def _synced(self) -> bool:
        for node in self.nodes:
            with node.client(socket_timeout=1) as c:
                info = c.info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    def _ready(self) -> bool:
        for node in self.nodes:
            if not node.running:
                continue
            node.process.check_alive()
            with node.client(socket_timeout=1) as c:
                try:
                    info: dict[str, Any] = c.cluster("INFO")
                except redis.RedisError:
                    return False
                if str(info.get("cluster_state")) != "ok":
                    return False
        return True
