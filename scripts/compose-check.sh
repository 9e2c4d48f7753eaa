#!/usr/bin/env bash
# Run compose.yaml for real and check what docs/compose.md promises.
#
#  1. docker compose (scripts/tools.sh compose), a docker daemon, and the images without a
#     registry: the chat image from the Dockerfile on the debootstrap base (as image-check.sh
#     builds it: all cached after that stage), then `docker compose build` of it (BASE_IMAGE
#     passed through, one build for the 6 replicas, from that cache); Redis and nginx from
#     Debian's packages (cluster/images.sh redis nginx); handed to compose as CHAT_IMAGE,
#     REDIS_IMAGE and NGINX_IMAGE, as an air-gapped user would; nothing is pulled (--pull never);
#  2. `docker compose up -d --wait`: 8 containers healthy, each non-root, read-only root
#     filesystem, all capabilities dropped, no-new-privileges;
#  3. through nginx: the web page at / and its script; one conversation through the Redis port
#     hops replicas and the model recalls the name, the same through the memory port forgets
#     it; the hop check (`helm test`'s) on both ports, every replica serving; the side-by-side
#     mode's CORS between the two ports;
#  4. `docker compose restart` of every container: the Redis replicas still serve the whole
#     conversation (from Redis's AOF) and recall the name; the memory replicas have lost it;
#  5. `docker compose down -v`, always (trap), and nothing of the project is left.
#
#   flock /tmp/chat-history-docker.lock scripts/compose-check.sh
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${IMAGE:=chat-history:ci}"
# What `docker compose build` makes (compose labels its builds, so not the image stage's tag).
: "${COMPOSE_IMAGE:=chat-history:compose-check}"
PROJECT="chat-history-compose-check-$$"
COMPOSE_BIN="${REPO_ROOT}/.tools/bin/docker-compose"

# ---- prerequisites ---------------------------------------------------------------------------
started=${SECONDS}
ensure_debian_packages docker.io debootstrap
ensure_venv
"${REPO_ROOT}/scripts/tools.sh" compose
if ! docker info >/dev/null 2>&1; then
  [[ ${EUID} -eq 0 ]] || die "no docker daemon answers and starting one needs root"
fi

work="$(mktemp -d)"
project_up=""
# compose.yaml's health checks run every 10 s, and every second until the first success
# (start_interval) on Docker Engine >= 25; Debian 12's engine (API 1.41) ignores start_interval,
# which would cost three 10 s steps in a row (Redis, the replicas, nginx), twice. So this check
# runs them every second: the only change to the file as users run it.
cat >"${work}/compose.check.yaml" <<'EOF'
x-often: &often
  healthcheck: {interval: 1s}
services:
  redis: *often
  chat-redis-1: *often
  chat-redis-2: *often
  chat-redis-3: *often
  chat-memory-1: *often
  chat-memory-2: *often
  chat-memory-3: *often
  nginx: *often
EOF
compose() {
  "${COMPOSE_BIN}" --project-directory "${REPO_ROOT}" -f "${REPO_ROOT}/compose.yaml" \
    -f "${work}/compose.check.yaml" -p "${PROJECT}" "$@"
}
down() {
  compose down --volumes --remove-orphans --timeout 30 >"${work}/down.log" 2>&1 ||
    { cat "${work}/down.log" >&2; return 1; }
}
cleanup() {
  local rc=$?
  if [[ -n "${project_up}" ]]; then
    if ((rc != 0)); then
      compose ps --all >&2 || true
      compose logs --no-color --tail 20 >&2 || true
    fi
    down || log "docker compose down failed: remove project ${PROJECT} by hand"
  fi
  rm -rf "${work}"
}
trap cleanup EXIT

# ---- 1. images -------------------------------------------------------------------------------
# cluster/base-image.sh starts dockerd when none answers (see scripts/image-check.sh).
base_image="$("${REPO_ROOT}/cluster/base-image.sh" | tail -n 1)"
log "docker build --network=host --build-arg BASE_IMAGE=${base_image} -t ${IMAGE}"
docker build --network=host --build-arg "BASE_IMAGE=${base_image}" -t "${IMAGE}" "${REPO_ROOT}" \
  >"${work}/build.log" 2>&1 || { tail -n 40 "${work}/build.log" >&2; die "docker build failed"; }
# The cluster's own REDIS_IMAGE name must not come from this shell: compose reads the same one.
mapfile -t images < <(env -u REDIS_IMAGE -u NGINX_IMAGE "${REPO_ROOT}/cluster/images.sh" redis nginx)
((${#images[@]} == 2)) || die "cluster/images.sh redis nginx printed '${images[*]}'"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
unset CORS_ALLOW_ORIGINS HISTORY_API
export CHAT_IMAGE="${COMPOSE_IMAGE}" REDIS_IMAGE="${images[0]}" NGINX_IMAGE="${images[1]}"
export BASE_IMAGE="${base_image}"
REDIS_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
CHAT_PORT="$(free_port)"
CHAT_MEMORY_PORT="$(free_port)"
export REDIS_PASSWORD CHAT_PORT CHAT_MEMORY_PORT BIND_ADDRESS=127.0.0.1

log "docker compose build (CHAT_IMAGE=${CHAT_IMAGE} BASE_IMAGE=${BASE_IMAGE})"
compose build >"${work}/compose-build.log" 2>&1 ||
  { tail -n 40 "${work}/compose-build.log" >&2; die "docker compose build failed"; }
builders=$(compose config --format json | python3 -c \
  'import json, sys; print(sum("build" in s for s in json.load(sys.stdin)["services"].values()))')
((builders == 1)) || die "${builders} services build the chat image, expected one (chat-redis-1)"
# BASE_IMAGE reached the build: the image starts with the base's layer.
base_layer=$(docker image inspect --format '{{ index .RootFS.Layers 0 }}' "${base_image}")
[[ "$(docker image inspect --format '{{ index .RootFS.Layers 0 }}' "${CHAT_IMAGE}")" == "${base_layer}" ]] ||
  die "${CHAT_IMAGE} is not built on ${base_image}: BASE_IMAGE did not reach docker compose build"
images_seconds=$((SECONDS - started))
# ---- 2. up -----------------------------------------------------------------------------------
log "docker compose -p ${PROJECT} up -d --wait (CHAT_IMAGE=${CHAT_IMAGE}" \
  "REDIS_IMAGE=${REDIS_IMAGE} NGINX_IMAGE=${NGINX_IMAGE}; ports ${CHAT_PORT}, ${CHAT_MEMORY_PORT})"
up_started=${SECONDS}
project_up=1
compose up --detach --wait --wait-timeout 180 --no-build --pull never >"${work}/up.log" 2>&1 ||
  { cat "${work}/up.log" >&2; die "docker compose up --wait failed"; }
up_seconds=$((SECONDS - up_started))

mapfile -t containers < <(compose ps --quiet)
((${#containers[@]} == 8)) || die "${#containers[@]} containers run, expected 8 (6 chat, redis, nginx)"
for id in "${containers[@]}"; do
  read -r name user readonly capdrop secopt health < <(docker inspect --format \
    '{{ .Name }} {{ .Config.User }} {{ .HostConfig.ReadonlyRootfs }} {{ join .HostConfig.CapDrop "," }} {{ join .HostConfig.SecurityOpt "," }} {{ .State.Health.Status }}' \
    "${id}")
  [[ "${user}" =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]] || die "${name} runs as '${user}', expected a non-root uid:gid"
  [[ "${readonly}" == true ]] || die "${name}: the root filesystem is writable"
  [[ "${capdrop}" == ALL ]] || die "${name}: capabilities dropped: '${capdrop}', expected ALL"
  [[ "${secopt}" == *no-new-privileges* ]] || die "${name}: no no-new-privileges"
  [[ "${health}" == healthy ]] || die "${name} is ${health}"
done
log "up in ${up_seconds}s: ${#containers[@]} containers healthy, non-root, read-only, no capabilities"

# ---- 3. through nginx, then 4. after a restart of everything ---------------------------------
# One program, two phases; the session it made in the first is checked in the second.
check() {
  "${VENV}/bin/python" - "$1" "${CHAT_PORT}" "${CHAT_MEMORY_PORT}" "${work}/session" <<'PY'
import sys
import uuid
from pathlib import Path

import httpx

from chat_history_k8s.hopcheck.client import Api, Endpoint

phase, redis_port, memory_port, session_file = sys.argv[1:]
redis_url = f"http://127.0.0.1:{redis_port}"
memory_url = f"http://127.0.0.1:{memory_port}"
redis = Api(Endpoint("redis", redis_url))
memory = Api(Endpoint("memory", memory_url))


def say(text: str) -> None:
    print(f"[compose-check] {text}", file=sys.stderr)


if phase == "before":
    page = httpx.get(f"{redis_url}/", timeout=10)
    assert page.status_code == 200 and "<title>chat-history" in page.text, page.status_code
    script = httpx.get(f"{redis_url}/static/app.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"], script
    # Side by side: the page on one port calls the other port's API (docs/compose.md).
    csp = page.headers["content-security-policy"]
    assert memory_url in csp, f"connect-src lacks {memory_url}: {csp}"
    preflight = httpx.options(
        f"{memory_url}/v1/chat",
        headers={"Origin": redis_url, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
        timeout=10,
    )  # fmt: skip
    assert preflight.status_code == 200, preflight
    assert preflight.headers.get("access-control-allow-origin") == redis_url, preflight.headers
    say(f"page at / and static/app.js through nginx; CORS from {redis_url} to {memory_url} allowed")

    session = f"compose-check-{uuid.uuid4().hex[:12]}"
    Path(session_file).write_text(session)
    for api, backend in ((redis, "redis"), (memory, "memory")):
        told = api.chat(session, "Hi, my name is Ada")
        asked = api.chat(session, "What is my name?")
        assert told.backend == asked.backend == backend, (told, asked)
        assert told.served_by != asked.served_by, f"{backend}: no hop, {told.served_by} twice"
        if backend == "redis":
            assert asked.history_length == 2 and "Ada" in asked.reply, asked
        else:
            assert asked.history_length == 0 and "Ada" not in asked.reply, asked
        say(f"{backend}: turn 1 on {told.served_by}, turn 2 on {asked.served_by} saw "
            f"{asked.history_length} messages: {asked.reply!r}")  # fmt: skip
else:
    session = Path(session_file).read_text()
    readers = set()
    for _ in range(3):
        messages, served_by = redis.messages_served(session)
        assert messages is not None and len(messages) == 4, (served_by, messages)
        readers.add(served_by)
    assert len(readers) >= 2, f"reads served by {readers} only"
    asked = redis.chat(session, "What is my name?")
    assert asked.history_length == 4 and "Ada" in asked.reply, asked
    say(f"redis after the restart: {sorted(readers)} each read 4 messages; {asked.served_by} "
        f"saw {asked.history_length}: {asked.reply!r}")  # fmt: skip
    for _ in range(3):
        messages, served_by = memory.messages_served(session)
        assert messages is None, f"{served_by} still has {messages} after a restart"
    say("memory after the restart: the session is gone from every replica")
PY
}
# 12 turns (the hop check's default): nginx's round robin also carries its own health checks
# and the hop check's readiness polls, so turns do not cycle the replicas strictly. With 6, a
# CI run on a loaded machine once saw 2 of 3 replicas, turns alternating between them: what
# nginx does while it skips a replica for fail_timeout (5 s), e.g. after reusing a pooled
# connection as uvicorn closed it (compose/nginx.conf now closes them first).
hopcheck() {
  "${VENV}/bin/python" -m chat_history_k8s.hopcheck --url "http://127.0.0.1:$1" --turns 12 \
    --backend "$2" --min-pods 3 --wait 30 >"${work}/hopcheck-$2.log" 2>&1 ||
    { cat "${work}/hopcheck-$2.log" >&2; die "the hop check through nginx (${2} replicas) failed"; }
  log "hop check ($2): $(tail -n 1 "${work}/hopcheck-$2.log")"
}

check before || die "the checks through nginx failed (see above)"
hopcheck "${CHAT_PORT}" redis
hopcheck "${CHAT_MEMORY_PORT}" memory

restart_started=${SECONDS}
compose restart >"${work}/restart.log" 2>&1 || { cat "${work}/restart.log" >&2; die "docker compose restart failed"; }
compose up --detach --wait --wait-timeout 180 --no-build --pull never >"${work}/up.log" 2>&1 ||
  { cat "${work}/up.log" >&2; die "the containers did not become healthy again after docker compose restart"; }
restart_seconds=$((SECONDS - restart_started))
log "docker compose restart: every container healthy again in ${restart_seconds}s"
check after || die "the checks after docker compose restart failed (see above)"

# ---- 5. down ---------------------------------------------------------------------------------
down_started=${SECONDS}
down
project_up=""
down_seconds=$((SECONDS - down_started))
left="$(docker ps --all --quiet --filter "label=com.docker.compose.project=${PROJECT}")"
left+="$(docker volume ls --quiet --filter "label=com.docker.compose.project=${PROJECT}")"
left+="$(docker network ls --quiet --filter "label=com.docker.compose.project=${PROJECT}")"
[[ -z "${left}" ]] || die "docker compose down -v left containers, volumes or networks: ${left}"

log "OK in $((SECONDS - started))s: images ${images_seconds}s, up ${up_seconds}s, restart ${restart_seconds}s, down ${down_seconds}s"
printf 'compose-check: total_seconds=%s images_seconds=%s up_seconds=%s restart_seconds=%s down_seconds=%s\n' \
  "$((SECONDS - started))" "${images_seconds}" "${up_seconds}" "${restart_seconds}" "${down_seconds}"
