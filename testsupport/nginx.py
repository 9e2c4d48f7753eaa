"""nginx as a round-robin load balancer in front of local replicas."""

from __future__ import annotations

import signal
from pathlib import Path

from testsupport.procs import (
    LOOPBACK,
    Process,
    free_port,
    require_tool,
    wait_for_http,
    wait_until,
)

START_TIMEOUT_S = 30.0


class Nginx:
    """Round robin over `upstream_ports` on a free loopback port.

    `keepalive=0` opens a new upstream connection per request, as independent clients reaching
    a Service do (the e2e suite, the hop check); `keepalive=N` pools up to N idle upstream
    connections, as a production proxy does (the benchmarks measure the replicas, not
    connection setup).
    """

    def __init__(self, workdir: Path, upstream_ports: list[int], *, keepalive: int = 0) -> None:
        self.port = free_port()
        self.prefix = prefix = workdir / "nginx"
        prefix.mkdir(parents=True)
        self._upstream_ports = list(upstream_ports)
        self._keepalive = keepalive
        self._conf = prefix / "nginx.conf"
        self._write_conf(set())
        argv = [require_tool("nginx"), "-p", str(prefix), "-c", str(self._conf),
                "-e", str(prefix / "error.log"), "-g", "daemon off;"]  # fmt: skip
        self.process = Process("nginx", argv, prefix / "stdout.log")
        self.url = f"http://{LOOPBACK}:{self.port}"

    def _write_conf(self, down: set[int]) -> None:
        prefix, keepalive = self.prefix, self._keepalive
        servers = "\n".join(
            f"    server {LOOPBACK}:{p} max_fails=0{' down' if p in down else ''};"
            for p in self._upstream_ports
        )
        if keepalive:
            # Idle pooled connections closed before uvicorn closes them (--timeout-keep-alive,
            # 5 s): one reused as uvicorn closes it fails the request sent on it.
            pool = f"    keepalive {keepalive};\n    keepalive_timeout 4s;"
            proxy = 'proxy_http_version 1.1;\n      proxy_set_header Connection "";'
        else:
            pool = ""
            proxy = "proxy_http_version 1.0;\n      proxy_set_header Connection close;"
        self._conf.write_text(
            f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/client_body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  upstream chat {{
{servers}
{pool}
  }}
  server {{
    listen {LOOPBACK}:{self.port};
    location / {{
      proxy_pass http://chat;
      {proxy}
      proxy_connect_timeout 2s;
      proxy_read_timeout 30s;
      # Pass bodies through as they come, like a Service (L4) does. Buffering would spill
      # large ones (a 16 KB message, Swagger UI's 1.5 MB bundle) into temp files, which the
      # workers (nobody, when root starts nginx) cannot open under a 0700 temp dir: a 500.
      proxy_request_buffering off;
      proxy_buffering off;
    }}
  }}
}}
"""
        )

    def start(self) -> None:
        self.process.start()
        try:
            wait_for_http(self.process, f"{self.url}/healthz", timeout_s=START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def route_around(self, down: set[int]) -> None:
        """Send no new request to the upstreams on the ports in `down` (the others get them
        all), and return once every worker runs with that: what removing a not-ready pod from
        a Service's endpoints does before the pod is stopped. Requests in flight finish."""
        self._write_conf(down)
        old_workers = set(self.process.children())
        self.process.send(signal.SIGHUP)  # reload: new workers, old ones finish gracefully

        def reloaded() -> bool:
            self.process.check_alive()
            workers = set(self.process.children())
            return bool(workers) and not workers & old_workers

        wait_until(reloaded, timeout_s=START_TIMEOUT_S, what="nginx to reload its upstreams")

    def stop(self) -> None:
        self.process.stop(signal.SIGTERM)
