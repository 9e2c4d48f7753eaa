#!/usr/bin/env bash
# The kind stage: the user's path of docs/kind.md on a machine with no registry. kind
# (KIND_VERSION) is built from source, its node image by cluster/kind-node-image.sh (nothing
# pulled; NetworkPolicies enforced by kube-router's policy controller); then, as docs/kind.md
# says, each step timed: scripts/kind-up.sh (KIND_NODE_IMAGE set), scripts/deploy.sh (the base
# and Redis images of the image stage, airgap values), `helm test` of both releases,
# scripts/e2e.sh --target kube (the whole suite; it installs releases with Redis replication
# and runs their `helm test` too: e2e/test_redis_replication.py), scripts/demo.sh --target kube,
# and scripts/kind-down.sh.
#   scripts/kind-e2e.sh             needs root, docker, Go (the node image's parts: ~10 min cold)
#   KEEP_CLUSTER=1 scripts/kind-e2e.sh   leave the cluster up afterwards
#   KIND_WORKERS=N                  worker nodes (default 0 here: 2 cores; the stand-in pod
#                                   network's routes between nodes are untested)
#   KIND_VOLUMES_TMPFS=0            the Redis PVCs on the host's disk instead of tmpfs (default 1
#                                   here when /dev/shm is a tmpfs: the suite tests the software,
#                                   not the disk; with appendfsync always one slow fsync, over
#                                   half a second on a VM disk, delays every Redis reply past the
#                                   1 s socket timeout)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"
cd "${REPO_ROOT}"

blocker="$(kind_blocker)"
[[ -z "${blocker}" ]] ||
  die "this machine cannot run the kind stage: ${blocker}. ./scripts/test.sh skips it then."

step_started=${SECONDS}
step() {
  log "-- $1 ($((SECONDS - step_started)) s)"
  step_started=${SECONDS}
}

ensure_venv test,e2e
"${REPO_ROOT}/scripts/tools.sh" kind helm
export PATH="${REPO_ROOT}/.tools/bin:${PATH}"
step "kind ${KIND_VERSION} and helm ready"
KIND_NODE_IMAGE="$("${REPO_ROOT}/cluster/kind-node-image.sh")"
export KIND_NODE_IMAGE
step "node image ${KIND_NODE_IMAGE} built or found"
ensure_privileged_docker
step "docker runs privileged containers"

: "${CLUSTER:=chat-history}"
: "${KIND_WORKERS:=0}"
if [[ -z "${KIND_VOLUMES_TMPFS:-}" ]]; then
  KIND_VOLUMES_TMPFS=1
  shm_is_tmpfs || {
    KIND_VOLUMES_TMPFS=0
    log "no tmpfs at /dev/shm: the Redis PVCs stay on the disk (slow fsyncs may fail turns)"
  }
fi
export CLUSTER KIND_WORKERS KIND_VOLUMES_TMPFS
values="${REPO_ROOT}/helm/chat-history/ci/airgap-values.yaml"
base="$("${REPO_ROOT}/cluster/base-image.sh")"
redis="$("${REPO_ROOT}/cluster/images.sh" redis)"
step "base image ${base}, Redis image ${redis}"
finish() {
  local rc=$?
  if ((rc != 0)); then
    log "kind stage failed; the node's logs:"
    local node
    for node in $(kind get nodes --name "${CLUSTER}" 2>/dev/null); do
      docker exec "${node}" journalctl --no-pager -u containerd -u kubelet 2>&1 | tail -n 60 >&2 || true
    done
    log "the NetworkPolicy enforcer's log:"
    kubectl -n kube-system logs daemonset/kube-router --tail 40 >&2 || true
  fi
  if [[ -z "${KEEP_CLUSTER:-}" ]]; then
    "${REPO_ROOT}/scripts/kind-down.sh" || rc=1
    step "scripts/kind-down.sh"
  fi
  exit "${rc}"
}
trap finish EXIT
"${REPO_ROOT}/scripts/kind-up.sh"
kubectl get nodes -o wide
kubectl get pods -A -o wide
step "kind cluster ${CLUSTER} up"
DOCKER_BUILD_ARGS="--build-arg BASE_IMAGE=${base} --network=host" EXTRA_IMAGES="${redis}" \
  VALUES="${values}" "${REPO_ROOT}/scripts/deploy.sh"
step "scripts/deploy.sh: both releases installed"
for backend in memory redis; do
  helm test chat-history --namespace "chat-history-${backend}" --logs --timeout 5m
done
step "helm test of both releases"
# The suite installs the chart's other Redis architecture too (a primary, 2 replicas and the
# Sentinels, ci/redis-replication-values.yaml) and runs its `helm test` after 3 failovers.
"${REPO_ROOT}/scripts/e2e.sh" --target kube --require-target --kube-values "${values}" \
  -p no:cacheprovider --durations=12
step "scripts/e2e.sh --target kube"
"${REPO_ROOT}/scripts/demo.sh" --target kube --kube-values "${values}"
step "scripts/demo.sh --target kube"
