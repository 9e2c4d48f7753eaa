"""Local process machinery shared by tests/, e2e/, bench/ and demo/: free ports, child
processes that die with their parent, `redis-server` (alone, as a local Redis Cluster, or
managed by Sentinels), nginx, uvicorn replicas, a PostgreSQL server (the benchmarks' peer),
polling, API key files, and the lookup of the tools the repository builds (helm, kubectl).

Nothing here knows about pytest: the suites wrap these in fixtures of their own.
"""

from testsupport.keys import new_key, write_key_file
from testsupport.nginx import Nginx
from testsupport.postgres import PostgresServer
from testsupport.procs import (
    LOOPBACK,
    REPO_ROOT,
    MissingTool,
    Process,
    ProcessError,
    await_until,
    find_tool,
    free_port,
    require_tool,
    wait_until,
)
from testsupport.redis import RedisServer
from testsupport.redis_cluster import LocalRedisCluster
from testsupport.redis_sentinel import LocalSentinel
from testsupport.replicas import Replica, service_env

__all__ = [
    "LOOPBACK",
    "REPO_ROOT",
    "LocalRedisCluster",
    "LocalSentinel",
    "MissingTool",
    "Nginx",
    "PostgresServer",
    "Process",
    "ProcessError",
    "RedisServer",
    "Replica",
    "await_until",
    "find_tool",
    "free_port",
    "new_key",
    "require_tool",
    "service_env",
    "wait_until",
    "write_key_file",
]
