# shellcheck shell=bash
# Shared defaults and helpers of the air-gapped cluster scripts. Sourced, never run:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The caller sets `set -euo pipefail` first. log, die, have, require, wait_for,
# ensure_debian_packages, REPO_ROOT, CHAT_HISTORY_CACHE and HELM_VERSION come from
# scripts/lib.sh, the one home of the repository's shell helpers.
# shellcheck source-path=SCRIPTDIR source=../scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

# Fail inside $(...) too, so a failed step never yields a half-made cache entry.
shopt -s inherit_errexit

: "${K8S_VERSION:=v1.35.8}"
: "${ETCD_VERSION:=v3.6.16}"
: "${COREDNS_VERSION:=v1.14.7}"
# NetworkPolicy enforcement (network-policy.sh): kube-router's policy controller, or "none".
: "${KUBE_ROUTER_VERSION:=v2.1.0}"
: "${NETWORK_POLICY:=kube-router}"
# Everything the running cluster owns (PKI, etcd data, containerd root, logs, PID files).
: "${CLUSTER_STATE:=/var/lib/chat-history/cluster}"
: "${NODE_NAME:=chat-history}"
# Pods live on a bridge of their own; its gateway address is also the node and API server
# address, so no cluster traffic ever leaves the machine.
: "${POD_SUBNET:=10.244.0.0/24}"
: "${NODE_IP:=10.244.0.1}"
: "${CLUSTER_CIDR:=10.244.0.0/16}"
: "${SERVICE_CIDR:=10.96.0.0/16}"
: "${KUBERNETES_SVC_IP:=10.96.0.1}"
: "${CLUSTER_DNS_IP:=10.96.0.10}"
: "${CNI_BRIDGE:=cni0}"
: "${CNI_BIN_DIR:=/usr/lib/cni}"
: "${PV_COUNT:=32}"
: "${PAUSE_IMAGE:=chat-history/pause:1.0}"
: "${COREDNS_IMAGE:=chat-history/coredns:$COREDNS_VERSION}"
: "${BASE_IMAGE:=chat-history/base:bookworm}"
# The name helm/chat-history/ci/airgap-values.yaml uses.
: "${REDIS_IMAGE:=chat-history-redis:ci}"
# compose.yaml's load balancer without a registry (cluster/images.sh nginx).
: "${NGINX_IMAGE:=chat-history-nginx:ci}"
# The kubelet's containerd (CRI on); dockerd keeps its own containerd elsewhere.
: "${CONTAINERD_SOCK:=/run/containerd/containerd.sock}"
: "${DOCKERD_STATE:=/var/lib/chat-history/dockerd}"
# The dockerd config ensure_privileged_docker writes, and the runc-caps wrapper it names
# (cluster/runc-caps.sh, copied into the machine's cache).
DOCKER_CONF=/etc/docker/daemon.json
RUNC_CAPS="$CHAT_HISTORY_CACHE/tools/runc-caps"

# shellcheck disable=SC2034 # used by the scripts that source this file
CACHE_BIN="$CHAT_HISTORY_CACHE/bin"
# shellcheck disable=SC2034
PKI="$CLUSTER_STATE/pki"
LOGS="$CLUSTER_STATE/logs"
PIDS="$CLUSTER_STATE/pids"
KUBECONFIG_ADMIN="$CLUSTER_STATE/admin.kubeconfig"
export PATH="$CACHE_BIN:$PATH"

need_root() { [[ $EUID -eq 0 ]] || die "run as root (the cluster runs host processes, mounts and iptables rules)"; }

need_bins() { # need_bins <binary...>: the cached build must have them
    local b
    for b in "$@"; do
        have "$b" ||
            die "$b not found in $CACHE_BIN: run cluster/build.sh first"
    done
}

pid_alive() { # pid_alive <name>: the process recorded in $PIDS/<name>.pid runs
    local f="$PIDS/$1.pid"
    [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

# close_inherited_fds: closes every file descriptor above 2 of the calling (sub)shell. A daemon
# started under `flock LOCKFILE script` would otherwise inherit the lock's descriptor and hold
# the lock for as long as it runs (dockerd started by the image stage would block every later
# `flock /tmp/chat-history-docker.lock ...`). Call it in the subshell that then execs the daemon.
close_inherited_fds() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd="${fd##*/}"
        if ((fd > 2)); then eval "exec ${fd}>&-" 2>/dev/null || true; fi
    done
}

# start_bg <name> <command...>: run a component in the background with a PID file and a log.
start_bg() {
    local name="$1"
    shift
    mkdir -p "$LOGS" "$PIDS"
    if pid_alive "$name"; then
        log "$name already running (pid $(cat "$PIDS/$name.pid"))"
        return 0
    fi
    log "starting $name"
    rm -f "$PIDS/$name.pid"
    # setsid: a component outlives the shell that started it, in a session of its own. The
    # inner shell writes its own PID, then execs the component, so the PID file is exact.
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
    (
        close_inherited_fds
        exec setsid sh -c 'echo $$ >"$0"; exec "$@"' "$PIDS/$name.pid" "$@"
    ) >>"$LOGS/$name.log" 2>&1 </dev/null &
    wait_for 5 "$name PID file" test -s "$PIDS/$name.pid"
}

# stop_pid <pidfile> [seconds]: TERM the recorded process, KILL it after a grace period.
stop_pid() {
    local f="$1" grace="${2:-20}" pid i
    [[ -f "$f" ]] || return 0
    pid="$(cat "$f")"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < grace * 5; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$f"
}

# ensure_dockerd: image builds need dockerd; start it by hand when it is not running.
# Started bare, dockerd adopts any containerd listening on /run/containerd/containerd.sock, which
# is the cluster's: its containers would then die with the cluster. So it gets a containerd of
# its own (CRI off, dockerd's usual paths), started explicitly and passed with --containerd.
ensure_dockerd() {
    have dockerd || ensure_debian_packages docker.io
    repair_runc_caps_config
    docker info >/dev/null 2>&1 && return 0
    local sock=/var/run/docker/containerd/containerd.sock
    mkdir -p "$DOCKERD_STATE" "$(dirname "$sock")"
    if ! { [[ -f "$DOCKERD_STATE/containerd.pid" ]] && kill -0 "$(cat "$DOCKERD_STATE/containerd.pid")" 2>/dev/null; }; then
        printf '%s\n' 'version = 2' \
            'root = "/var/lib/docker/containerd/daemon"' \
            'state = "/var/run/docker/containerd/daemon"' \
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]' \
            '[grpc]' "  address = \"$sock\"" \
            '[ttrpc]' "  address = \"$sock.ttrpc\"" >"$DOCKERD_STATE/containerd.toml"
        log "starting dockerd's containerd (log: $DOCKERD_STATE/containerd.log)"
        # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
        (
            close_inherited_fds
            exec setsid sh -c 'echo $$ >"$0"; exec "$@"' "$DOCKERD_STATE/containerd.pid" \
                containerd --config "$DOCKERD_STATE/containerd.toml"
        ) >>"$DOCKERD_STATE/containerd.log" 2>&1 </dev/null &
        wait_for 30 "dockerd's containerd" ctr -a "$sock" version ||
            die "containerd for dockerd did not start: see $DOCKERD_STATE/containerd.log"
    fi
    log "starting dockerd (log: $DOCKERD_STATE/dockerd.log)"
    (
        close_inherited_fds
        exec setsid dockerd --containerd "$sock" --pidfile "$DOCKERD_STATE/dockerd.pid"
    ) >>"$DOCKERD_STATE/dockerd.log" 2>&1 </dev/null &
    wait_for 60 dockerd docker info || die "dockerd did not start: see $DOCKERD_STATE/dockerd.log"
}

# debian_mirror: the Debian mirror this machine's apt already uses (so no host is written here).
debian_mirror() {
    local m
    m="$(grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
    [[ -n "$m" ]] || m="$(grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list 2>/dev/null |
        awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
    [[ -n "$m" ]] || die "no Debian mirror found in /etc/apt/sources.list(.d); set DEBIAN_MIRROR"
    echo "$m"
}

# write_file <path>: stdin to <path>, only when the content differs. Running components watch
# their config files (kube-proxy exits when its file changes), so a second up.sh must not touch them.
write_file() {
    local tmp
    tmp="$(mktemp "$1.XXXXXX")"
    cat >"$tmp"
    if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

# image_loaded <image>: the cluster's containerd has it. containerd stores the fully qualified
# form of a docker name (registry and, for single names, "library/" prepended), so match the end.
image_loaded() {
    ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q 2>/dev/null | grep -qE "/(library/)?${1//./\\.}\$"
}

kc() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# rootfs_tar <name> <customize-fn> <package...>: a debootstrap bookworm rootfs with the packages,
# customized by <customize-fn ROOTFS>, as a tarball cached under $CHAT_HISTORY_CACHE/rootfs.
# The cache key covers the packages, the customization and the host's extra CAs. Prints the path.
rootfs_tar() {
    local name="$1" fn="$2" key tar dir mirror
    shift 2
    key="$({
        echo "$*"
        declare -f "$fn"
        cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true
    } | sha256sum | cut -c1-12)"
    tar="$CHAT_HISTORY_CACHE/rootfs/$name-bookworm-$key.tar"
    if [[ -f "$tar" ]]; then
        echo "$tar"
        return 0
    fi
    ensure_debian_packages debootstrap ca-certificates
    mirror="${DEBIAN_MIRROR:-$(debian_mirror)}"
    mkdir -p "$CHAT_HISTORY_CACHE/rootfs"
    dir="$(mktemp -d "$CHAT_HISTORY_CACHE/rootfs/.$name.XXXXXX")"
    log "debootstrap bookworm for $name ($*)"
    local includes
    includes="$(
        IFS=,
        echo "$*"
    )"
    debootstrap --variant=minbase --include="$includes" bookworm "$dir" "$mirror" >&2 ||
        die "debootstrap failed (see $dir/debootstrap/debootstrap.log)"
    # The host's extra CAs (a TLS-intercepting proxy's) make pip and apt work in containers.
    if [[ -x "$dir/usr/sbin/update-ca-certificates" ]] &&
        compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        mkdir -p "$dir/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
        chroot "$dir" update-ca-certificates >&2
    fi
    "$fn" "$dir"
    chroot "$dir" apt-get clean
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/log/*.log "$dir"/tmp/*
    tar --numeric-owner -C "$dir" -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$dir"
    echo "$tar"
}

# image_key <image>: the cache key label of a local docker image ("" when absent).
image_key() {
    docker image inspect -f '{{index .Config.Labels "org.chat-history.key"}}' "$1" 2>/dev/null || true
}

# missing_caps: the capabilities this machine's root lacks (its bounding set), space-separated
# numbers; empty on an ordinary machine. Here: 24 (CAP_SYS_RESOURCE).
missing_caps() {
    local bnd last i missing=()
    bnd=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
    last="$(cat /proc/sys/kernel/cap_last_cap)"
    for ((i = 0; i <= last; i++)); do (((bnd >> i) & 1)) || missing+=("$i"); done
    echo "${missing[*]}"
}

# repair_runc_caps_config: the daemon.json that ensure_privileged_docker writes names the runc-caps
# wrapper by its path in the cache of the run that wrote it. When that wrapper is gone (the cache
# deleted, or another CHAT_HISTORY_CACHE), dockerd fails every container it starts ("fork/exec
# .../runc-caps: no such file or directory"), image builds included: install the wrapper into
# this cache, name it there, and reload the dockerd these scripts started.
repair_runc_caps_config() {
    local named pid
    [[ -r "$DOCKER_CONF" ]] || return 0 # none yet (a fresh machine): nothing to repair
    named="$(sed -n 's/.*"runc-caps": *{ *"path": *"\([^"]*\)".*/\1/p' "$DOCKER_CONF")"
    [[ -n "$named" && ! -x "$named" ]] || return 0
    ensure_debian_packages jq runc
    install_runc_caps
    log "$DOCKER_CONF named a runc-caps wrapper that is gone ($named): it names $RUNC_CAPS now"
    pid="$(cat "$DOCKERD_STATE/dockerd.pid" 2>/dev/null || true)"
    kill -0 "$pid" 2>/dev/null || pid="" # not running: it reads the file when it starts
    use_runc_caps "$pid"
}

install_runc_caps() {
    mkdir -p "$(dirname "$RUNC_CAPS")"
    install -m 0755 "$REPO_ROOT/cluster/runc-caps.sh" "$RUNC_CAPS.tmp"
    mv "$RUNC_CAPS.tmp" "$RUNC_CAPS"
}

# use_runc_caps [PID]: $DOCKER_CONF makes the wrapper dockerd's default runtime; a dockerd PID
# (one these scripts started) reloads it and is waited for until it runs on it.
use_runc_caps() {
    local pid="${1:-}"
    mkdir -p "$(dirname "$DOCKER_CONF")"
    printf '{"runtimes": {"runc-caps": {"path": "%s"}}, "default-runtime": "runc-caps"}\n' \
        "$RUNC_CAPS" >"$DOCKER_CONF"
    [[ -n "$pid" ]] || return 0
    log "dockerd (pid $pid): default runtime runc-caps ($RUNC_CAPS), reloading"
    kill -HUP "$pid"
    wait_for 10 "dockerd's default runtime runc-caps at $RUNC_CAPS" runs_on_runc_caps ||
        die "dockerd did not take the runc-caps runtime: see $DOCKERD_STATE/dockerd.log"
}

runs_on_runc_caps() {
    docker_default_runtime_is runc-caps &&
        [[ "$(docker info -f '{{with index .Runtimes "runc-caps"}}{{.Path}}{{end}}')" == "$RUNC_CAPS" ]]
}

docker_default_runtime_is() { [[ "$(docker info -f '{{.DefaultRuntime}}' 2>/dev/null)" == "$1" ]]; }

# ensure_privileged_docker: `docker run --privileged` (kind's node containers) works. Where root
# lacks a capability, runc 1.1 refuses every privileged container ("unable to apply caps:
# operation not permitted"); then the dockerd these scripts started (ensure_dockerd) gets
# cluster/runc-caps.sh as its default runtime, through a config file of its own that a SIGHUP
# reloads. A dockerd started by someone else is left alone: the function says what to do.
ensure_privileged_docker() {
    ensure_dockerd
    [[ -z "$(missing_caps)" ]] && return 0
    local pid
    # The wrapper edits the OCI spec with jq and execs Debian's runc: both must be there before
    # it becomes the runtime of every container.
    ensure_debian_packages jq runc
    docker_default_runtime_is runc-caps && cmp -s "$REPO_ROOT/cluster/runc-caps.sh" "$RUNC_CAPS" && return 0
    install_runc_caps
    pid="$(cat "$DOCKERD_STATE/dockerd.pid" 2>/dev/null || true)"
    if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
        die "root lacks capabilities $(missing_caps) (see /proc/self/status CapBnd), so runc" \
            "refuses privileged containers, and this dockerd was not started by these scripts:" \
            "add {\"runtimes\": {\"runc-caps\": {\"path\": \"$RUNC_CAPS\"}}, \"default-runtime\": \"runc-caps\"}" \
            "to its daemon.json and reload it (kill -HUP)"
    fi
    # dockerd started without --config-file reloads $DOCKER_CONF; only ever ours.
    if [[ -f "$DOCKER_CONF" ]] && ! grep -q '"runc-caps"' "$DOCKER_CONF"; then
        die "$DOCKER_CONF exists and is not this project's: add the runc-caps runtime ($RUNC_CAPS) as" \
            "its default-runtime yourself, then kill -HUP $pid"
    fi
    use_runc_caps "$pid"
}
