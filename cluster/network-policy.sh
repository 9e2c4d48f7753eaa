#!/usr/bin/env bash
# NetworkPolicy enforcement for the cluster of up.sh: kube-router's network policy controller
# alone (no routing, no service proxy, no CNI), as a host process like every other component.
# It turns each NetworkPolicy into iptables rules and ipsets on the FORWARD/INPUT/OUTPUT hooks,
# which the pod bridge's traffic crosses (bridge-nf-call-iptables=1).
#   cluster/network-policy.sh start    up.sh runs it (unless NETWORK_POLICY=none); idempotent
#   cluster/network-policy.sh stop     stop it and remove its rules and ipsets: policies are then
#                                      accepted and ignored (the "enforcement off" control)
#   cluster/network-policy.sh status   "enforcing" or "off" (exit 1)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHAINS_RE='^(KUBE-ROUTER-(INPUT|FORWARD|OUTPUT)|KUBE-NWPLCY-|KUBE-POD-FW-)'
IPSETS_RE='^(KUBE-SRC-|KUBE-DST-)'

rules_installed() { iptables -t filter -S KUBE-ROUTER-FORWARD >/dev/null 2>&1; }

start() {
    [[ "$NETWORK_POLICY" == kube-router ]] ||
        die "NETWORK_POLICY=$NETWORK_POLICY: only kube-router is known (or none: do not start)"
    need_bins kube-router
    have ipset || ensure_debian_packages ipset
    [[ -f "$CLUSTER_STATE/kube-router.kubeconfig" ]] ||
        die "no $CLUSTER_STATE/kube-router.kubeconfig: start the cluster with up.sh"
    # --health-port 0: its health server would listen on every address of the machine.
    start_bg kube-router kube-router \
        --run-firewall=true --run-router=false --run-service-proxy=false \
        --run-loadbalancer=false --enable-cni=false --enable-ipv6=false \
        --kubeconfig "$CLUSTER_STATE/kube-router.kubeconfig" --hostname-override "$NODE_NAME" \
        --service-cluster-ip-range "$SERVICE_CIDR" --health-port 0 --metrics-port 0 --v 1
    wait_for 60 "kube-router's policy chains" rules_installed ||
        die "kube-router did not install its rules: see $LOGS/kube-router.log"
    log "NetworkPolicies enforced by kube-router $KUBE_ROUTER_VERSION (log: $LOGS/kube-router.log)"
}

# Its own --cleanup-config also runs the routing and proxy controllers' cleanups (bridges,
# routes, IPVS), none of which this cluster uses: the policy chains and sets are removed here.
remove_rules() {
    local chain num
    # The jumps from the built-in chains, by rule number, last first (numbers shift on delete).
    for chain in INPUT FORWARD OUTPUT; do
        for num in $(iptables -t filter -L "$chain" -n --line-numbers 2>/dev/null |
            awk '$2 ~ /^KUBE-ROUTER-/ {print $1}' | sort -rn); do
            iptables -t filter -D "$chain" "$num" 2>/dev/null || true
        done
    done
    for chain in $(iptables -t filter -S | awk '$1 == "-N" {print $2}' | grep -E "$CHAINS_RE"); do
        iptables -t filter -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -t filter -S | awk '$1 == "-N" {print $2}' | grep -E "$CHAINS_RE"); do
        iptables -t filter -X "$chain" 2>/dev/null || true
    done
    if have ipset; then
        for chain in $(ipset list -n 2>/dev/null | grep -E "$IPSETS_RE"); do
            ipset destroy "$chain" 2>/dev/null || true
        done
    fi
}

stop() {
    stop_pid "$PIDS/kube-router.pid"
    remove_rules
    ! rules_installed || die "kube-router's chains are still installed"
    log "NetworkPolicy enforcement off: policies are accepted and ignored"
}

case "${1:-}" in
    start) need_root; start ;;
    stop) need_root; stop ;;
    status)
        if pid_alive kube-router && rules_installed; then echo enforcing; else echo off; exit 1; fi
        ;;
    *) die "usage: $0 start|stop|status" ;;
esac
