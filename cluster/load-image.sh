#!/usr/bin/env bash
# Load local docker images into the cluster's containerd (namespace k8s.io), where the kubelet
# finds them: no registry is involved. Pods must use imagePullPolicy IfNotPresent (or Never).
#   cluster/load-image.sh IMAGE...
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
    (($# > 0)) || die "usage: ${0##*/} IMAGE..."
    need_root
    [[ -S "$CONTAINERD_SOCK" ]] || die "$CONTAINERD_SOCK not found: start the cluster with cluster/up.sh"
    local img id
    for img in "$@"; do
        id="$(docker image inspect -f '{{.Id}}' "$img" 2>/dev/null)" ||
            die "image $img not found in docker: build it first"
        log "loading $img ($id)"
        docker save "$img" | ctr -a "$CONTAINERD_SOCK" -n k8s.io images import - >/dev/null
    done
}

main "$@"
