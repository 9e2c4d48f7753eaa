#!/usr/bin/env bash
# The demo: one conversation hops between replicas, once with in-memory history and once with
# Redis, and a side-by-side table shows what each kept. Every number is measured live.
#   scripts/demo.sh                  local processes: needs Python >= 3.11 and redis-server
#   scripts/demo.sh --target kube    the current kubeconfig context (image from scripts/deploy.sh)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${IMAGE_REPOSITORY:=chat-history}"
: "${IMAGE_TAG:=dev}"

target=local
args=()
while (($#)); do
  case "$1" in
    --target) target="${2:?--target needs local or kube}"; shift 2 ;;
    --target=*) target="${1#*=}"; shift ;;
    -h | --help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done

ensure_venv
case "${target}" in
  local)
    ensure_redis_server
    ;;
  kube)
    require kubectl "see https://kubernetes.io/docs/tasks/tools/"
    args+=(--kube-set "image.repository=${IMAGE_REPOSITORY}" --kube-set "image.tag=${IMAGE_TAG}")
    ;;
  *) die "unknown target ${target}: use local or kube" ;;
esac

cd "${REPO_ROOT}"
exec "${VENV}/bin/python" -m demo --target "${target}" ${args[@]+"${args[@]}"}
