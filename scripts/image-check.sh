#!/usr/bin/env bash
# Build the real image from the Dockerfile and run it the way the chart does.
#
#  1. a docker daemon (started by hand when none answers, stopped again at the end);
#  2. the base image from debootstrap + `docker import`, cached (cluster/base-image.sh);
#  3. `docker build --network=host` of the Dockerfile on that base; prints build time and size;
#  4. static checks: non-root user, exec-form uvicorn CMD with the guarded protocol, no compiler;
#  5. the default CMD with a read-only root filesystem (writable /tmp only), all capabilities
#     dropped, no network: /healthz, one chat turn, a half-sent head cut with 408, then a
#     graceful stop;
#  6. the same image against a real redis-server (password, AOF): /healthz, /readyz, two chat
#     turns that share history, the stored list in Redis, the `helm test` hop check run from
#     the image, and /readyz 503 once Redis is gone.
#
#   scripts/image-check.sh                      # IMAGE=chat-history:ci
#   IMAGE_CHECK_NO_CACHE=1 scripts/image-check.sh   # time an uncached build
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${IMAGE:=chat-history:ci}"
: "${IMAGE_CHECK_NO_CACHE:=}"
: "${UID_EXPECTED:=10001}"
RUN_ID="chat-history-image-check-$$"


# ---- prerequisites ---------------------------------------------------------------------------
ensure_debian_packages docker.io debootstrap redis-server curl

work="$(mktemp -d)"
redis_pid=""
stop_redis() {
  if [[ -n "${redis_pid}" ]]; then
    kill "${redis_pid}" 2>/dev/null || true
    wait "${redis_pid}" 2>/dev/null || true
    redis_pid=""
  fi
}
cleanup() {
  docker rm -f "${RUN_ID}-memory" "${RUN_ID}-redis" >/dev/null 2>&1 || true
  stop_redis
  rm -rf "${work}"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---- 1. docker daemon ------------------------------------------------------------------------
# cluster/base-image.sh (next step) starts dockerd when none answers, with a containerd of its
# own: a bare dockerd would adopt the test cluster's containerd and die with it. It stays up for
# the stages after it (compose, kind); `STOP_DOCKERD=1 cluster/down.sh` stops it.
if ! docker info >/dev/null 2>&1; then
  [[ ${EUID} -eq 0 ]] || die "no docker daemon answers and starting one needs root"
fi

# ---- 2. base image ---------------------------------------------------------------------------
base_script="${REPO_ROOT}/cluster/base-image.sh"
[[ -x "${base_script}" ]] || die "${base_script} not found: it makes the debootstrap base image"
base_image="$("${base_script}" | tail -n 1)"
log "base image ${base_image}"

# ---- 3. build --------------------------------------------------------------------------------
build_args=(--network=host --build-arg "BASE_IMAGE=${base_image}" -t "${IMAGE}")
[[ -n "${IMAGE_CHECK_NO_CACHE}" ]] && build_args+=(--no-cache)
log "docker build ${build_args[*]} ${REPO_ROOT}"
build_start=$(date +%s.%N)
if ! docker build "${build_args[@]}" "${REPO_ROOT}" >"${work}/build.log" 2>&1; then
  tail -n 40 "${work}/build.log" >&2
  die "docker build failed"
fi
build_seconds=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" \
  "${build_start}" "$(date +%s.%N)")
cached_steps=$(grep -c 'Using cache' "${work}/build.log" || true)
size_bytes=$(docker image inspect --format '{{ .Size }}' "${IMAGE}")
size_mb=$((size_bytes / 1000000))
log "built ${IMAGE} in ${build_seconds}s (${cached_steps} steps from cache${IMAGE_CHECK_NO_CACHE:+, --no-cache}); size ${size_mb} MB"

# ---- 4. static checks ------------------------------------------------------------------------
user=$(docker image inspect --format '{{ .Config.User }}' "${IMAGE}")
[[ "${user}" == "${UID_EXPECTED}:${UID_EXPECTED}" ]] || die "image user is '${user}', expected ${UID_EXPECTED}:${UID_EXPECTED} (the chart's runAsUser)"
cmd=$(docker image inspect --format '{{ json .Config.Cmd }}' "${IMAGE}")
[[ "${cmd}" == '["uvicorn","chat_history_k8s.main:app",'* && "${cmd}" == *'"--timeout-graceful-shutdown"'* &&
  "${cmd}" == *'"--http","chat_history_k8s.protocol:GuardedHttpProtocol"'* ]] ||
  die "CMD is ${cmd}: expected exec-form uvicorn with --http chat_history_k8s.protocol:GuardedHttpProtocol and --timeout-graceful-shutdown"
compilers=$(docker run --rm --network none --entrypoint sh "${IMAGE}" -c \
  'for c in gcc cc c++ g++ clang make; do command -v "$c"; done; true')
[[ -z "${compilers}" ]] || die "compilers in the final image: ${compilers}"
log "static checks passed: user ${user}, exec-form CMD, no compiler"

hardened=(--read-only --tmpfs "/tmp:rw,size=64m" --cap-drop ALL --security-opt no-new-privileges)

# ---- 5. default CMD, memory backend, no network ----------------------------------------------
# An in-container request helper: the image has python, and no network namespace is shared.
probe='import json, sys, urllib.request as u
method, path = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = u.Request("http://127.0.0.1:8000" + path, data=data, method=method,
                headers={"Content-Type": "application/json"})
with u.urlopen(req, timeout=5) as r:
    print(r.status, r.headers["X-Served-By"], r.read().decode())'
docker run -d --name "${RUN_ID}-memory" --network none "${hardened[@]}" \
  -e POD_NAME=image-check-memory -e HTTP_HEADER_TIMEOUT_SECONDS=2 "${IMAGE}" >/dev/null
wait_for 30 "/healthz of the default CMD" docker exec "${RUN_ID}-memory" python -c "${probe}" GET /healthz
uid=$(docker exec "${RUN_ID}-memory" id -u)
[[ "${uid}" == "${UID_EXPECTED}" ]] || die "the container runs as uid ${uid}"
reply=$(docker exec "${RUN_ID}-memory" python -c "${probe}" POST /v1/chat \
  '{"session_id": "image-check", "message": "my name is Ada"}')
[[ "${reply}" == "200 image-check-memory "*'"backend":"memory"'* ]] || die "chat turn (memory): ${reply}"
# The CMD's protocol class is in force: a half-sent request head is cut with 408.
slow='import socket
s = socket.create_connection(("127.0.0.1", 8000), timeout=15)
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
print(s.recv(4096).split(b"\r\n")[0].decode())'
cut=$(docker exec "${RUN_ID}-memory" python -c "${slow}")
[[ "${cut}" == "HTTP/1.1 408 Request Timeout" ]] || die "a half-sent request head got '${cut}', expected a 408"
stop_start=${SECONDS}
docker stop --time 25 "${RUN_ID}-memory" >/dev/null
exit_code=$(docker inspect --format '{{ .State.ExitCode }}' "${RUN_ID}-memory")
[[ "${exit_code}" == "0" ]] || die "uvicorn exited with ${exit_code} on SIGTERM (expected a graceful 0)"
log "default CMD, read-only rootfs, uid ${uid}: /healthz, a chat turn, a half-sent head cut (408) OK; SIGTERM -> exit 0 in $((SECONDS - stop_start))s"

# ---- 6. against a real Redis -----------------------------------------------------------------
redis_port=$(free_port)
app_port=$(free_port)
password="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
mkdir -p "${work}/redis"
# The password goes in the config file, not the command line (as in the chart).
cat >"${work}/redis/redis.conf" <<EOF
bind 127.0.0.1
port ${redis_port}
dir ${work}/redis
appendonly yes
appendfsync everysec
save ""
maxmemory 64mb
maxmemory-policy noeviction
requirepass "${password}"
EOF
redis-server "${work}/redis/redis.conf" >"${work}/redis/redis.log" 2>&1 &
redis_pid=$!
export REDISCLI_AUTH="${password}"
wait_for 10 "redis-server" redis-cli -p "${redis_port}" ping

# Host networking reaches the loopback-only Redis; the port is the only change to the CMD, and
# the app is named as DESIGN.md's start command names it (`service.main:app`, the shim), so the
# shim is proven in the image too.
docker run -d --name "${RUN_ID}-redis" --network host "${hardened[@]}" \
  -e HISTORY_BACKEND=redis -e "REDIS_URL=redis://127.0.0.1:${redis_port}/0" \
  -e "REDIS_PASSWORD=${password}" -e POD_NAME=image-check-redis "${IMAGE}" \
  uvicorn service.main:app --http chat_history_k8s.protocol:GuardedHttpProtocol \
  --host 127.0.0.1 --port "${app_port}" --timeout-graceful-shutdown 20 >/dev/null
base="http://127.0.0.1:${app_port}"
wait_for 30 "/healthz against Redis" curl -fsS "${base}/healthz"
curl -fsS "${base}/readyz" >/dev/null || die "/readyz is not 200 with Redis up"
chat() {
  curl -fsS -D "${work}/headers" "${base}/v1/chat" -H 'content-type: application/json' \
    -d "{\"session_id\": \"image-check\", \"message\": \"$1\"}"
}
first=$(chat "my name is Ada")
second=$(chat "what is my name?")
grep -qi '^x-served-by: image-check-redis' "${work}/headers" || die "no X-Served-By header"
python3 - "${first}" "${second}" <<'PY' || die "chat turns against Redis: ${first} / ${second}"
import json, sys
first, second = (json.loads(a) for a in sys.argv[1:])
assert first["backend"] == "redis" and first["history_length"] == 0, first
assert second["history_length"] == 2, second
assert "Ada" in second["reply"], second
PY
stored=$(redis-cli -p "${redis_port}" llen "chat-history:image-check")
[[ "${stored}" == "4" ]] || die "Redis holds ${stored} messages for the session, expected 4"
compgen -G "${work}/redis/appendonlydir/*.aof" >/dev/null || die "Redis wrote no AOF under ${work}/redis"
# The chart's `helm test` command, from this image (one replica here, so one pod suffices).
docker run --rm --network host "${hardened[@]}" "${IMAGE}" python -m chat_history_k8s.hopcheck \
  --url "${base}" --turns 4 --backend redis --min-pods 1 >"${work}/hopcheck.log" 2>&1 ||
  { cat "${work}/hopcheck.log" >&2; die "the hop check from the image failed"; }
stop_redis
status=$(curl -sS -o /dev/null -w '%{http_code}' "${base}/readyz")
[[ "${status}" == "503" ]] || die "/readyz answered ${status} with Redis down, expected 503"
log "against Redis: /healthz, /readyz, 2 turns sharing history (4 messages stored), the hop check, /readyz 503 when Redis stops"

log "OK: ${IMAGE} ${size_mb} MB, built in ${build_seconds}s (${cached_steps} cached steps)"
printf 'image-check: image=%s size_mb=%s build_seconds=%s cached_steps=%s\n' \
  "${IMAGE}" "${size_mb}" "${build_seconds}" "${cached_steps}"
