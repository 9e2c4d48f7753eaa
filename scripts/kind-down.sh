#!/usr/bin/env bash
# Delete the kind cluster made by scripts/kind-up.sh (idempotent).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${CLUSTER:=chat-history}"

require kind "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  log "deleting kind cluster ${CLUSTER}"
  kind delete cluster --name "${CLUSTER}"
else
  log "no kind cluster ${CLUSTER}: nothing to do"
fi
# The nodes' volumes, if scripts/kind-up.sh kept them on tmpfs (KIND_VOLUMES_TMPFS=1).
volumes="$(kind_volumes_dir "${CLUSTER}")"
if [[ -d "${volumes}" ]]; then
  log "removing the nodes' volumes in ${volumes}"
  rm -rf "${volumes}"
  rmdir --ignore-fail-on-non-empty "$(dirname "${volumes}")"
fi
