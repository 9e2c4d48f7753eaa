"""A real Sentinel-managed Redis on loopback: one primary, replicas, and Sentinels (quorum 2)."""

from __future__ import annotations

import signal
from pathlib import Path

import redis

from testsupport.procs import LOOPBACK, Process, free_port, require_tool, wait_until
from testsupport.redis import RedisServer

READY_TIMEOUT_S = 60.0
MASTER = "mymaster"


class LocalSentinel:
    """`replicas + 1` RedisServers (AOF, password) and `sentinels` redis-sentinel processes
    monitoring them as `master` with `quorum`. `start()` returns once every Sentinel names the
    primary and sees every replica and the other Sentinels.

    `down_after_ms` is how long the Sentinels wait before they call the primary down (then a
    failover takes about a second more); `min_replicas_to_write` is set on every data node (a
    primary refuses writes with fewer replicas connected). The data nodes use `appendfsync
    everysec`, as the chart does: a SIGKILLed process loses nothing either way (the OS still
    writes what it was given), and with `always` a busy disk stalls the node's main thread for
    over a second at times, which the Sentinels read as "down" and fail over for. A killed node
    comes back with `restart_as_replica`, as the chart's pods do: as a replica of whichever
    primary the Sentinels name now.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        replicas: int = 2,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 2000,
        failover_timeout_ms: int = 4000,
        min_replicas_to_write: int = 0,
        master: str = MASTER,
    ) -> None:
        self.master = master
        self.password = password
        self.sentinel_password = sentinel_password
        self.quorum = quorum
        self._timing = (down_after_ms, failover_timeout_ms)
        self._pending = "nothing checked yet"
        options = ["--min-replicas-to-write", str(min_replicas_to_write),
                   "--min-replicas-max-lag", "10", "--repl-diskless-sync", "yes",
                   "--repl-diskless-sync-delay", "0", "--appendfsync", "everysec"]  # fmt: skip
        if password:
            options += ["--masterauth", password]
        self._workdir, self._options = workdir, options
        self.nodes = [
            RedisServer(workdir / f"redis{i}", password=password, extra_args=options)
            for i in range(replicas + 1)
        ]
        binary = require_tool("redis-sentinel")
        self.sentinels: list[tuple[int, Process]] = []
        for i in range(sentinels):
            home = workdir / f"sentinel{i}"
            home.mkdir(parents=True, exist_ok=True)
            port = free_port()
            conf = home / "sentinel.conf"  # Sentinel rewrites it: a file of its own
            process = Process(f"sentinel{i}", [binary, str(conf)], home / "log")
            self.sentinels.append((port, process))

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS: `host:port,host:port,...`."""
        return ",".join(f"{LOOPBACK}:{port}" for port, _ in self.sentinels)

    def _write_conf(self, port: int, process: Process, primary: RedisServer) -> None:
        down_after, failover_timeout = self._timing
        lines = [
            f"port {port}", f"bind {LOOPBACK}", f"dir {process.log.parent}",
            "daemonize no", "loglevel warning",
            f"sentinel monitor {self.master} {LOOPBACK} {primary.port} {self.quorum}",
            f"sentinel down-after-milliseconds {self.master} {down_after}",
            f"sentinel failover-timeout {self.master} {failover_timeout}",
            f"sentinel parallel-syncs {self.master} 2",
        ]  # fmt: skip
        if self.password:
            lines.append(f"sentinel auth-pass {self.master} {self.password}")
        if self.sentinel_password:
            lines += [f"requirepass {self.sentinel_password}",
                      f"sentinel sentinel-pass {self.sentinel_password}"]  # fmt: skip
        (process.log.parent / "sentinel.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        primary, *replicas = self.nodes
        try:
            primary.start()
            for node in replicas:
                self._replica_of(node, primary)
                node.start()
            for port, process in self.sentinels:
                self._write_conf(port, process, primary)
                process.start()
            try:
                wait_until(self._settled, timeout_s=READY_TIMEOUT_S, what="the Sentinels to settle")
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; still {self._pending}\n{self._log_tails()}") from None
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for _, process in self.sentinels:
            process.stop(signal.SIGTERM)
        for node in self.nodes:
            node.stop()

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        port, _ = self.sentinels[index]
        return redis.Redis(
            host=LOOPBACK, port=port, password=self.sentinel_password, socket_timeout=2
        )

    def primary_port(self) -> int | None:
        """The primary's port as a majority of the running Sentinels names it, else None."""
        named: list[int] = []
        for index, (_, process) in enumerate(self.sentinels):
            if not process.running:
                continue
            with self.sentinel_client(index) as client:
                try:
                    address = client.sentinel_get_master_addr_by_name(self.master)
                except redis.RedisError:
                    continue
                if address:
                    named.append(int(address[1]))
        best = max(set(named), key=named.count, default=None)
        return best if best is not None and named.count(best) >= self.quorum else None

    def primary(self) -> RedisServer:
        port = self.primary_port()
        for node in self.nodes:
            if node.port == port:
                return node
        raise RuntimeError(f"the Sentinels name no known primary (port {port})")

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary the Sentinels name; returns it (still killed)."""
        node = self.primary()
        node.kill()
        return node

    def wait_failover(self, old: RedisServer, timeout_s: float = 30.0) -> RedisServer:
        """Wait until the Sentinels name another primary that answers as a primary."""

        def promoted() -> bool:
            port = self.primary_port()
            if port is None or port == old.port:
                return False
            return self.role(self._node(port)) == "master"

        wait_until(promoted, timeout_s=timeout_s, what="a Sentinel failover", interval_s=0.1)
        return self.primary()

    def manual_failover(self) -> RedisServer:
        """`SENTINEL FAILOVER`: the primary is demoted (it keeps running, as a replica) and a
        replica promoted; returns the new primary once it answers as one."""
        old = self.primary()

        def accepted() -> bool:
            with self.sentinel_client() as client:
                try:
                    client.execute_command("SENTINEL", "FAILOVER", self.master)
                except redis.ResponseError as exc:
                    # The last failover still settling, or no replica's state fresh enough
                    # yet (a replica that just came back is "good" once its INFO is read).
                    if str(exc).startswith(("INPROG", "NOGOODSLAVE")):
                        return False
                    raise
            return True

        wait_until(accepted, timeout_s=READY_TIMEOUT_S, what="SENTINEL FAILOVER to be accepted")
        return self.wait_failover(old)

    def wait_settled(self) -> None:
        """Wait until no Sentinel has a failover in progress and every running node is an
        online replica of the primary."""

        def settled() -> bool:
            primary = self.primary_port()
            if primary is None:
                return False
            for index, (_, process) in enumerate(self.sentinels):
                if not process.running:
                    continue
                with self.sentinel_client(index) as client:
                    try:
                        flags = str(client.sentinel_master(self.master).get("flags", ""))
                    except redis.RedisError:
                        return False
                if "failover" in flags or "down" in flags:
                    return False
            running = sum(node.running for node in self.nodes)
            return self._online_replicas(self._node(primary)) >= running - 1

        wait_until(settled, timeout_s=READY_TIMEOUT_S, what="the Sentinels to settle")

    def restart_as_replica(self, node: RedisServer) -> None:
        """Start a stopped node again as a replica of the primary the Sentinels name now (its
        AOF is discarded by the full resync), and wait until it is an online replica of the
        primary they name then (another failover may have happened meanwhile: the Sentinels
        reconfigure the node)."""
        self._replica_of(node, self.primary())
        node.start()

        def synced() -> bool:
            port = self.primary_port()
            if port is None:
                return False
            running = sum(n.running for n in self.nodes)
            return self._online_replicas(self._node(port)) >= running - 1

        wait_until(
            synced, timeout_s=READY_TIMEOUT_S, what="the restarted node to sync as a replica"
        )

    def add_replica(self) -> RedisServer:
        """One more data node, started as a replica of the primary the Sentinels name (what a
        new pod of the chart's StatefulSet does); returns once every Sentinel lists it."""
        node = RedisServer(
            self._workdir / f"redis{len(self.nodes)}", password=self.password,
            extra_args=self._options,
        )  # fmt: skip
        self.nodes.append(node)
        self.restart_as_replica(node)

        def listed() -> bool:
            for index in range(len(self.sentinels)):
                with self.sentinel_client(index) as client:
                    ports = [int(r["port"]) for r in client.sentinel_slaves(self.master)]
                if node.port not in ports:
                    return False
            return True

        wait_until(listed, timeout_s=READY_TIMEOUT_S, what="every Sentinel to list the replica")
        return node

    def start_as_replica_of(self, node: RedisServer, primary: RedisServer) -> None:
        """Start a stopped node as a replica of `primary`, dead or alive; no waiting for a
        sync."""
        self._replica_of(node, primary)
        node.start()

    def seen_down_by_all(self, node: RedisServer) -> bool:
        """Whether every running Sentinel flags replica `node` as down (`s_down`)."""
        for index, (_, process) in enumerate(self.sentinels):
            if not process.running:
                continue
            with self.sentinel_client(index) as client:
                replicas = client.sentinel_slaves(self.master)
            flags = [str(r["flags"]) for r in replicas if int(r["port"]) == node.port]
            if not flags or "s_down" not in flags[0]:
                return False
        return True

    @staticmethod
    def _replica_of(node: RedisServer, primary: RedisServer) -> None:
        argv = node.process.argv
        if "--replicaof" in argv:
            at = argv.index("--replicaof")
            del argv[at : at + 3]
        argv += ["--replicaof", LOOPBACK, str(primary.port)]

    def _node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    @staticmethod
    def role(node: RedisServer) -> str:
        """`master`, `slave`, or `down`."""
        try:
            with node.client(socket_timeout=1, socket_connect_timeout=1) as client:
                return str(client.info("replication")["role"])
        except redis.RedisError:
            return "down"

    @staticmethod
    def _online_replicas(primary: RedisServer) -> int:
        try:
            with primary.client(socket_timeout=1, socket_connect_timeout=1) as client:
                info = client.info("replication")
        except redis.RedisError:
            return 0
        return sum(
            1
            for key, value in info.items()
            if key.startswith("slave")
            and isinstance(value, dict)
            and value.get("state") == "online"
        )

    def _settled(self) -> bool:
        """Whether the start is complete; else `_pending` says what is still missing."""
        for node in self.nodes:
            node.process.check_alive()
        primary, want = self.nodes[0], len(self.nodes) - 1
        online = self._online_replicas(primary)
        if online < want:
            self._pending = f"{online} of {want} replicas online on the primary :{primary.port}"
            return False
        for index, (_, process) in enumerate(self.sentinels):
            process.check_alive()
            with self.sentinel_client(index) as client:
                try:
                    state = client.sentinel_master(self.master)
                except redis.RedisError as exc:
                    self._pending = f"sentinel{index} does not answer SENTINEL MASTER: {exc}"
                    return False
            named = int(state.get("port", 0))
            if named != primary.port:
                # Only a failover moves it: the primary looked down for down-after-milliseconds.
                self._pending = (
                    f"sentinel{index} names :{named} as the primary, not :{primary.port} "
                    f"(flags {state.get('flags')}): a failover during the start"
                )
                return False
            seen = (int(state.get("num-slaves", 0)), int(state.get("num-other-sentinels", 0)))
            if seen < (want, len(self.sentinels) - 1):
                self._pending = (
                    f"sentinel{index} sees {seen[0]} of {want} replicas and {seen[1]} of "
                    f"{len(self.sentinels) - 1} other Sentinels (flags {state.get('flags')})"
                )
                return False
        return True

    def _log_tails(self) -> str:
        parts = [f"--- {process.name} (:{port}):\n{process.log_tail(15)}"
                 for port, process in self.sentinels]  # fmt: skip
        parts += [f"--- redis :{node.port}:\n{node.process.log_tail(15)}" for node in self.nodes]
        return "\n".join(parts)
