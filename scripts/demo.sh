#!/usr/bin/env bash
# The demo: one conversation hops between replicas, once with in-memory history and once with
# Redis, and a side-by-side table shows what each kept. Every number is measured live.
#   scripts/demo.sh                  local processes: needs Python >= 3.11 and redis-server
#   scripts/demo.sh --target kube    the current kubeconfig context (image from scripts/deploy.sh)
#   scripts/demo.sh --kind           kind-up.sh, deploy.sh, then the kube target (--minikube too)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in -h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
ensure_venv
prepare_target "$@"
cd "${REPO_ROOT}"
exec "${VENV}/bin/python" -m demo --target "${target}" ${target_args[@]+"${target_args[@]}"}
