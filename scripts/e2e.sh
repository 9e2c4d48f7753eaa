#!/usr/bin/env bash
# Run the pod-hopping e2e suite.
#   scripts/e2e.sh                    local target: uvicorn replicas + redis-server + nginx
#                                     (installed with apt-get when root on Debian/Ubuntu)
#   scripts/e2e.sh --target kube      the current kubeconfig context (image from deploy.sh)
#   scripts/e2e.sh --kind             kind-up.sh, deploy.sh, then the kube target
#   scripts/e2e.sh --minikube         deploy.sh minikube, then the kube target
# Other arguments go to pytest (e.g. -k hop, --replicas 4, --keep, --require-target).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
ensure_venv test,e2e
prepare_target "$@"
cd "${REPO_ROOT}"
log "pytest e2e --target ${target}"
exec "${VENV}/bin/python" -m pytest e2e --target "${target}" ${target_args[@]+"${target_args[@]}"}
