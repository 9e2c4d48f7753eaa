#!/usr/bin/env bash
# Run the pod-hopping e2e suite.
#   scripts/e2e.sh                    local target: uvicorn replicas + redis-server + nginx
#                                     (installed with apt-get when root on Debian/Ubuntu)
#   scripts/e2e.sh --target kube      the current kubeconfig context (image from deploy.sh)
#   scripts/e2e.sh --kind             kind-up.sh, deploy.sh, then the kube target
#   scripts/e2e.sh --minikube         deploy.sh minikube, then the kube target
# Other arguments go to pytest (e.g. -k hop, --replicas 4, --keep).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${IMAGE_REPOSITORY:=chat-history}"
: "${IMAGE_TAG:=dev}"

target=local
prepare=""
args=()
while (($#)); do
  case "$1" in
    --target) target="${2:?--target needs local or kube}"; shift 2 ;;
    --target=*) target="${1#*=}"; shift ;;
    --kind) target=kube; prepare=kind; shift ;;
    --minikube) target=kube; prepare=minikube; shift ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done

ensure_venv test,e2e
case "${target}" in
  local)
    if can_apt; then
      ensure_debian_packages redis-server redis-tools nginx-light
    else
      ensure_redis_server
      have redis-cli || log "redis-cli not found: the runbook tests will be skipped (package redis-tools)"
      have nginx || have /usr/sbin/nginx ||
        log "nginx not found: the load-balancer test will be skipped (package nginx-light)"
    fi
    ;;
  kube)
    scripts="${REPO_ROOT}/scripts"
    case "${prepare}" in
      kind) "${scripts}/kind-up.sh" && "${scripts}/deploy.sh" kind ;;
      minikube) "${scripts}/deploy.sh" minikube ;;
    esac
    args+=(--kube-set "image.repository=${IMAGE_REPOSITORY}" --kube-set "image.tag=${IMAGE_TAG}")
    ;;
  *) die "unknown target ${target}: use local or kube" ;;
esac

cd "${REPO_ROOT}"
log "pytest e2e --target ${target}"
exec "${VENV}/bin/python" -m pytest e2e --target "${target}" ${args[@]+"${args[@]}"}
