#!/usr/bin/env bash
# The real-Kubernetes stage: build a single-node Kubernetes from source (cached outside the
# clone), start it (NetworkPolicies enforced), install the chart for both backends and for Redis
# with replication exactly as users do (only the values of helm/chat-history/ci/*-values.yaml
# differ), `helm test`, the e2e suite with `--target kube`, then tear everything down. Every
# component's log is dumped on failure.
#   scripts/cluster-e2e.sh            needs root on Debian/Ubuntu (containerd, kubelet, iptables)
#                                     and Go (the first build takes 20-45 min; cached after)
#   KEEP_CLUSTER=1 scripts/cluster-e2e.sh   leave the cluster up afterwards
#   IMAGE=chat-history:mine scripts/cluster-e2e.sh   test that image (built by image-check.sh
#                                     if absent) instead of chat-history:ci
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"

: "${IMAGE:=chat-history:ci}"
: "${REDIS_IMAGE:=chat-history-redis:ci}"
cluster="${REPO_ROOT}/cluster"
values="${REPO_ROOT}/helm/chat-history/ci/airgap-values.yaml"
# The chat image every release runs: IMAGE, whatever the values file names.
image_sets=(--set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}")

blocker="$(cluster_blocker)"
[[ -z "${blocker}" ]] ||
  die "this machine cannot run the cluster stage: ${blocker}. Run it as root on Debian/Ubuntu" \
    "(sudo ./scripts/cluster-e2e.sh); ./scripts/test.sh skips it on machines like this one."
ensure_venv test,e2e

step_started=${SECONDS}
step() {
  log "-- $1 ($((SECONDS - step_started)) s)"
  step_started=${SECONDS}
}

"${cluster}/build.sh"
step "binaries built or found in ${CHAT_HISTORY_CACHE}"
"${cluster}/images.sh" >/dev/null
docker image inspect "${IMAGE}" >/dev/null 2>&1 || "${REPO_ROOT}/scripts/image-check.sh"
step "images ready: ${IMAGE}, ${REDIS_IMAGE}, pause, coredns"

up=""
finish() {
  local rc=$?
  if ((rc != 0)) && [[ -n "${up}" ]]; then
    log "FAILED (exit ${rc}): dumping every component's log"
    "${cluster}/dump-logs.sh" || true
  fi
  if [[ -n "${up}" && -z "${KEEP_CLUSTER:-}" ]]; then "${cluster}/down.sh" || true; fi
  exit "${rc}"
}
trap finish EXIT

eval "$("${cluster}/up.sh")"
up=1
export PATH="${CHAT_HISTORY_CACHE}/bin:${PATH}"
step "cluster up (KUBECONFIG=${KUBECONFIG})"
"${cluster}/load-image.sh" "${IMAGE}" "${REDIS_IMAGE}"
"${cluster}/smoke.sh"
step "images loaded, smoke test passed"

for backend in memory redis; do
  helm upgrade --install chat-history helm/chat-history --namespace "chat-${backend}" \
    --create-namespace --values "${values}" --set "history.backend=${backend}" \
    "${image_sets[@]}" --wait --timeout 5m
done
helm test chat-history --namespace chat-redis --logs --timeout 5m
# Redis with replication: a primary, 2 replicas and 3 Sentinels; the chat pods ask the Sentinels.
helm upgrade --install chat-history helm/chat-history --namespace chat-redis-ha \
  --create-namespace --values "${values}" \
  --values helm/chat-history/ci/redis-replication-values.yaml "${image_sets[@]}" \
  --wait --timeout 5m
helm test chat-history --namespace chat-redis-ha --logs --timeout 5m
kubectl get nodes,pods -A -o wide
step "three releases (memory, redis, redis with replication) ready, helm test passed"
for ns in chat-memory chat-redis chat-redis-ha; do
  helm uninstall chat-history --namespace "${ns}" --wait
  kubectl delete namespace "${ns}" --wait=true
done
"${cluster}/recycle-pvs.sh"

"${VENV}/bin/python" -m pytest e2e --target kube --require-target --kube-values "${values}" \
  --kube-set "image.repository=${IMAGE%:*}" --kube-set "image.tag=${IMAGE##*:}" -p no:cacheprovider
step "e2e suite on the kube target"
