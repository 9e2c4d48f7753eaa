#!/usr/bin/env bash
# Create the kind cluster for chat-history (idempotent: an existing cluster is reused).
# kindnet enforces NetworkPolicy since kind v0.24, so the chart's "only chat pods reach Redis"
# policy is real here (on cluster/kind-node-image.sh's node, kube-router's policy controller
# does). Two workers let the chat pods spread over nodes. Ready means: every node Ready, and
# every DaemonSet of kube-system (pod network, policy enforcer, kube-proxy) rolled out.
#   scripts/kind-up.sh          then: scripts/deploy.sh && scripts/e2e.sh --target kube
# KIND_NODE_IMAGE=IMAGE: the node image to use instead of kind's default (which kind pulls);
# for machines without a registry, cluster/kind-node-image.sh builds one from source.
# KIND_VOLUMES_TMPFS=1: every node's volumes (local-path-provisioner's /var/local-path-provisioner)
# in memory, on the host's /dev/shm, for a test cluster: what fsync costs is then not this
# machine's disk (scripts/kind-e2e.sh sets it; scripts/kind-down.sh removes them).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${CLUSTER:=chat-history}"
: "${KIND_WORKERS:=2}"
: "${KIND_VOLUMES_TMPFS:=0}"
MIN_KIND_VERSION="0.24.0"

require docker "install Docker: https://docs.docker.com/engine/install/"
require kind "install kind >= v${MIN_KIND_VERSION}: https://kind.sigs.k8s.io/docs/user/quick-start/#installation (or: go install sigs.k8s.io/kind@latest)"
require kubectl "install kubectl: https://kubernetes.io/docs/tasks/tools/"
docker info >/dev/null 2>&1 ||
  die "the Docker daemon does not answer: start it, or add yourself to the docker group"

kind_version="$(kind version | sed -n 's/^kind v\([0-9][0-9.]*\).*/\1/p')"
if [[ "$(printf '%s\n%s\n' "${MIN_KIND_VERSION}" "${kind_version}" | sort -V | head -n1)" != \
  "${MIN_KIND_VERSION}" ]]; then
  die "kind v${kind_version:-?} is too old: v${MIN_KIND_VERSION}+ enforces NetworkPolicy (kindnet)"
fi

# node_mounts <name>: the node's extraMounts (its volumes on tmpfs with KIND_VOLUMES_TMPFS=1).
node_mounts() {
  [[ "${KIND_VOLUMES_TMPFS}" == 1 ]] || return 0
  local dir
  dir="$(kind_volumes_dir "${CLUSTER}")/$1"
  install -d -m 0755 "${dir}"
  printf '\n    extraMounts:\n      - {hostPath: %s, containerPath: /var/local-path-provisioner}' "${dir}"
}

if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  log "kind cluster ${CLUSTER} already exists"
else
  log "creating kind cluster ${CLUSTER} (1 control plane, ${KIND_WORKERS} workers)"
  if [[ "${KIND_VOLUMES_TMPFS}" == 1 ]]; then
    shm_is_tmpfs || die "KIND_VOLUMES_TMPFS=1 needs a tmpfs at /dev/shm"
    log "the nodes' volumes on tmpfs: $(kind_volumes_dir "${CLUSTER}")"
  fi
  workers=""
  for i in $(seq "${KIND_WORKERS}"); do workers+=$'\n  - role: worker'"$(node_mounts "worker${i}")"; done
  image=()
  if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
    docker image inspect "${KIND_NODE_IMAGE}" >/dev/null 2>&1 ||
      die "KIND_NODE_IMAGE=${KIND_NODE_IMAGE} is not a local image: build or load it first"
    image=(--image "${KIND_NODE_IMAGE}")
    log "node image ${KIND_NODE_IMAGE}"
  fi
  patches=""
  if [[ "$(docker info -f "{{.CgroupVersion}}" 2>/dev/null)" == 1 ]]; then
    # Kubernetes >= 1.35's kubelet refuses to start on cgroup v1 unless told otherwise.
    log "docker runs on cgroup v1: setting the kubelet's failCgroupV1: false"
    patches=$'kubeadmConfigPatches:\n  - |\n    kind: KubeletConfiguration\n    failCgroupV1: false'
  fi
  kind create cluster --name "${CLUSTER}" ${image[@]+"${image[@]}"} --wait 180s --config - <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  # The default CNI (kindnet) enforces NetworkPolicy from kind v0.24 on; keep it.
  disableDefaultCNI: false
${patches}
nodes:
  - role: control-plane$(node_mounts control-plane)${workers}
YAML
fi

kubectl config use-context "kind-${CLUSTER}" >/dev/null
kubectl wait --for=condition=Ready nodes --all --timeout=180s >/dev/null
# A node is Ready once its CNI config exists; NetworkPolicies hold only once the enforcer runs.
for daemonset in $(kubectl -n kube-system get daemonsets -o name); do
  kubectl -n kube-system rollout status "${daemonset}" --timeout=180s >/dev/null ||
    die "${daemonset#*/} in kube-system is not ready after 180 s: kubectl -n kube-system describe ${daemonset}"
done
log "cluster ready; context kind-${CLUSTER}. Next: scripts/deploy.sh"
