"""A real Redis Cluster of local `redis-server` processes (3 primaries, no replicas by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from testsupport.procs import LOOPBACK, free_port, wait_until
from testsupport.redis import RedisServer

READY_TIMEOUT_S = 60.0


class LocalRedisCluster:
    """`primaries` RedisServers with `--cluster-enabled yes`, joined by `redis-cli --cluster
    create` (slots spread evenly) and started when `start()` returns: every node reports
    `cluster_state:ok`. No persistence: a test cluster, not a durability claim."""

    def __init__(self, workdir: Path, *, primaries: int = 3) -> None:
        self.nodes = [
            RedisServer(workdir / f"node{i}", appendonly=False, extra_args=self._options())
            for i in range(primaries)
        ]

    @staticmethod
    def _options() -> list[str]:
        return [
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            # An explicit bus port: the default (port + 10000) may not be a valid port.
            "--cluster-port", str(free_port()), "--cluster-node-timeout", "5000",
        ]  # fmt: skip

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
        settings: dict[str, Any] = {"socket_timeout": 5} | options
        return RedisCluster(startup_nodes=self.startup_nodes, **settings)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        try:
            addresses = [f"{LOOPBACK}:{node.port}" for node in self.nodes]
            self.nodes[0].cli("--cluster", "create", *addresses, "--cluster-replicas", "0",
                              "--cluster-yes")  # fmt: skip
            wait_until(self._ready, timeout_s=READY_TIMEOUT_S, what="cluster_state:ok everywhere")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def owner_of(self, slot: int) -> int:
        """The port of the primary that serves `slot`."""
        with self.nodes[0].client() as c:
            for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(primary[1])
        raise ValueError(f"slot {slot} is not served")

    def flushall(self) -> None:
        for node in self.nodes:
            with node.client() as c:
                c.flushall()

    def _ready(self) -> bool:
        for node in self.nodes:
            node.process.check_alive()
            with node.client(socket_timeout=1) as c:
                try:
                    info: dict[str, Any] = c.cluster("INFO")
                except redis.RedisError:
                    return False
                if str(info.get("cluster_state")) != "ok":
                    return False
        return True
