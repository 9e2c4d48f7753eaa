#!/usr/bin/env bash
# Stop the cluster of up.sh and remove its state: pods first (so CNI releases its rules), then
# every component by its PID file (never by name), mounts, network and $CLUSTER_STATE.
# Idempotent. The build cache and docker images are kept; dockerd keeps running unless
# STOP_DOCKERD=1 and this project started it.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${STOP_DOCKERD:=0}"

ctr_k8s() { ctr -a "$CONTAINERD_SOCK" -n k8s.io "$@"; }

no_tasks() { [[ -z "$(ctr_k8s tasks ls -q 2>/dev/null)" ]]; }

# Delete every pod through the API so the kubelet tears sandboxes down properly (CNI DEL).
drain_pods() {
    pid_alive kube-apiserver && pid_alive kubelet && pid_alive containerd || return 0
    kc get --raw /readyz >/dev/null 2>&1 || return 0
    log "deleting all pods"
    # Controllers first, or they would recreate what is deleted.
    stop_pid "$PIDS/kube-controller-manager.pid"
    stop_pid "$PIDS/kube-scheduler.pid"
    kc delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    wait_for 60 "pods to stop" no_tasks || log "some containers still run; killing them"
}

# Kill what the kubelet left behind, straight through containerd.
kill_containers() {
    [[ -S "$CONTAINERD_SOCK" ]] && pid_alive containerd || return 0
    local id
    for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
        ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
        ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_k8s containers ls -q 2>/dev/null); do
        ctr_k8s containers info "$id" 2>/dev/null |
            grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"' >>"$CLUSTER_STATE/netns.list" || true
        ctr_k8s containers delete "$id" >/dev/null 2>&1 || true
    done
}

# Shims outlive containerd; each wrote its PID next to its bundle.
kill_shims() {
    local f
    for f in "$CLUSTER_STATE"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid \
        "$CLUSTER_STATE"/containerd/state/io.containerd.runtime.v2.task/*/*/init.pid; do
        [[ -f "$f" ]] || continue
        stop_pid "$f" 5
    done
}

unmount_state() {
    local m pass
    for pass in 1 2 3; do
        local mounts=()
        while read -r m; do mounts+=("$m"); done < <(awk -v p="$CLUSTER_STATE/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r)
        ((${#mounts[@]} == 0)) && return 0
        log "unmounting ${#mounts[@]} mounts under $CLUSTER_STATE (pass $pass)"
        for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    done
}

cleanup_netns() {
    [[ -f "$CLUSTER_STATE/netns.list" ]] || return 0
    local ns
    sort -u "$CLUSTER_STATE/netns.list" | while read -r ns; do
        [[ -e "$ns" ]] || continue
        umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
        rm -f "$ns"
    done
}

# The kubelet's own chains (kube-proxy --cleanup leaves them), IPv4 and IPv6.
cleanup_kubelet_iptables() {
    local ipt t c
    for ipt in iptables ip6tables; do
        command -v "$ipt" >/dev/null || continue
        for c in INPUT OUTPUT; do
            while "$ipt" -t filter -D "$c" -j KUBE-FIREWALL 2>/dev/null; do :; done
        done
        for t in filter nat mangle; do
            for c in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
                if "$ipt" -t "$t" -F "$c" 2>/dev/null; then "$ipt" -t "$t" -X "$c" 2>/dev/null || true; fi
            done
        done
    done
}

cleanup_network() {
    local dir
    # The policy enforcer (stopped by its PID file above, if it ran): its rules and ipsets.
    "$(dirname "${BASH_SOURCE[0]}")/network-policy.sh" stop >/dev/null || true
    cleanup_kubelet_iptables
    for dir in -i -o; do
        while iptables -D DOCKER-USER "$dir" "$CNI_BRIDGE" -m comment --comment chat-history -j ACCEPT 2>/dev/null; do :; done
    done
    ip route del "$SERVICE_CIDR" dev "$CNI_BRIDGE" 2>/dev/null || true
    if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
        log "deleting bridge $CNI_BRIDGE"
        ip link del "$CNI_BRIDGE" || true
    fi
    rm -f /var/lib/cni/results/chat-history-* 2>/dev/null || true
}

main() {
    need_root
    local start=$SECONDS f
    if [[ ! -d "$CLUSTER_STATE" ]]; then
        log "no cluster state at $CLUSTER_STATE"
    else
        drain_pods
        stop_pid "$PIDS/kube-controller-manager.pid"
        stop_pid "$PIDS/kube-scheduler.pid"
        stop_pid "$PIDS/kubelet.pid"
        stop_pid "$PIDS/kube-proxy.pid"
        # kube-proxy's own rule cleanup (iptables KUBE-* chains).
        if command -v kube-proxy >/dev/null; then kube-proxy --cleanup >/dev/null 2>&1 || true; fi
        kill_containers
        stop_pid "$PIDS/containerd.pid"
        kill_shims
        stop_pid "$PIDS/kube-apiserver.pid"
        stop_pid "$PIDS/etcd.pid"
        for f in "$PIDS"/*.pid; do [[ -e "$f" ]] && stop_pid "$f"; done
        cleanup_netns
        unmount_state
        # Dangling links the kubelet made to container logs in our state.
        for f in /var/log/containers/*.log; do
            [[ -L "$f" && "$(readlink "$f")" == "$CLUSTER_STATE"/* ]] && rm -f "$f"
        done
        rm -rf "$CLUSTER_STATE"
    fi
    cleanup_network
    rm -f "$CONTAINERD_SOCK" "$CONTAINERD_SOCK.ttrpc"
    if [[ "$STOP_DOCKERD" == 1 && -f "$DOCKERD_STATE/dockerd.pid" ]]; then
        log "stopping the dockerd this project started"
        stop_pid "$DOCKERD_STATE/dockerd.pid" 30
        stop_pid "$DOCKERD_STATE/containerd.pid" 30
    fi
    log "cluster down in $((SECONDS - start))s"
}

main "$@"
