#!/usr/bin/env bash
# Print every cluster component's log (the last LINES lines of each), the state of the node and
# of the pods when the API server answers, and the PID files: what to read when up.sh or a test
# fails. Safe to run at any time.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${LINES_PER_LOG:=200}"

main() {
    local f name
    echo "=== cluster state: $CLUSTER_STATE"
    for f in "$PIDS"/*.pid; do
        [[ -e "$f" ]] || continue
        name="$(basename "$f" .pid)"
        if pid_alive "$name"; then echo "$name: running (pid $(cat "$f"))"; else echo "$name: NOT running"; fi
    done
    for f in "$LOGS"/*.log; do
        [[ -e "$f" ]] || continue
        echo "=== $(basename "$f") (last $LINES_PER_LOG lines)"
        tail -n "$LINES_PER_LOG" "$f"
    done
    if [[ -f "$KUBECONFIG_ADMIN" ]] && kc get --raw /readyz >/dev/null 2>&1; then
        echo "=== kubectl get nodes,pods -A -o wide"
        kc get nodes,pods -A -o wide || true
        echo "=== events"
        kc get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 60 || true
        echo "=== pods not running: describe"
        kc get pods -A --field-selector=status.phase!=Running,status.phase!=Succeeded \
            -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}' |
            while read -r ns pod; do
                [[ -n "$pod" ]] && kc -n "$ns" describe pod "$pod" | tail -n 40
            done || true
    fi
    if [[ -S "$CONTAINERD_SOCK" ]]; then
        echo "=== containerd images (k8s.io)"
        ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q 2>/dev/null | grep -v '^sha256:' || true
    fi
}

main "$@"
