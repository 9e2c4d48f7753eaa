#!/usr/bin/env bash
# Make the cluster's Released hostPath PVs Available again: wipe each one's directory and drop
# its claimRef. A PV is Released when its claim is deleted (say, with a test namespace); the
# StorageClass has no dynamic provisioner, so without this each PV serves one claim only.
# up.sh runs it too. Idempotent.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
    need_root
    [[ -f "$KUBECONFIG_ADMIN" ]] || die "no cluster: run cluster/up.sh first"
    local name path n=0
    while read -r name path; do
        [[ -n "$name" ]] || continue
        # Only directories this cluster made; never anything else.
        [[ "$path" == "$CLUSTER_STATE/pv/"* && -d "$path" ]] || continue
        find "$path" -mindepth 1 -delete
        chmod 0777 "$path"
        kc patch pv "$name" --type json -p '[{"op": "remove", "path": "/spec/claimRef"}]' >/dev/null
        n=$((n + 1))
    done < <(kc get pv -l chat-history/cluster=true \
        -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name}{" "}{.spec.hostPath.path}{"\n"}{end}')
    log "recycled $n released PVs"
}

main "$@"
