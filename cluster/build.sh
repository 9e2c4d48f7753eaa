#!/usr/bin/env bash
# Build the binaries of the air-gapped single-node cluster from source, through the Go module
# proxy only: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
# kubectl, etcd, coredns, kube-router (NetworkPolicy), helm and the project's pause program.
#   cluster/build.sh                 all of them (what the host-process cluster needs)
#   cluster/build.sh kubeadm ...     only the named components (kubeadm: for the kind node image,
#                                    which also takes kube-router from here)
#
# Outputs are cached outside the clone, keyed by version:
#   $CHAT_HISTORY_CACHE/versions/<component>-<version>/bin/...
# and linked into $CHAT_HISTORY_CACHE/bin, so a warm run only checks stamps (seconds).
# A cold run takes 20-45 minutes on 2 cores; see README.md for measured figures.
set -euo pipefail

# Versions and the cache directory are defined once, in lib.sh (and scripts/lib.sh).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
HERE="$REPO_ROOT/cluster"
# Go's module and build caches live in the project cache too, so one directory holds it all.
: "${CHAT_HISTORY_GOMODCACHE:=$CHAT_HISTORY_CACHE/go/mod}"
: "${CHAT_HISTORY_GOCACHE:=$CHAT_HISTORY_CACHE/go/build}"

require go "install Go >= 1.25 (https://go.dev/doc/install)"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
export GOMODCACHE="$CHAT_HISTORY_GOMODCACHE" GOCACHE="$CHAT_HISTORY_GOCACHE"
CACHE="$CHAT_HISTORY_CACHE"
BIN="$CACHE_BIN"
# LINK_BINS=0: build into versions/ only, leave $BIN's links alone (cluster/kind-node-image.sh
# builds other etcd/CoreDNS versions than the host-process cluster runs).
: "${LINK_BINS:=1}"
mkdir -p "$BIN" "$CACHE/versions" "$CACHE/src" "$GOMODCACHE" "$GOCACHE"

# A tiny ldflags-safe date string from a module version's commit time (fixed, reproducible).
module_time() { # module@version -> 2006-01-02T15:04:05Z
    go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$1"
}

# stamp <dir>: true when <dir> holds a finished build.
built() { [[ -f "$1/.done" ]]; }
finish() { # finish <dir> <binaries...>: stamp the build and link its binaries into $BIN
    local dir="$1" b
    shift
    go version >"$dir/.done"
    for b in "$@"; do
        [[ -x "$dir/bin/$b" ]] || die "$dir/bin/$b was not built"
        [[ "$LINK_BINS" == 1 ]] || continue
        ln -sfn "$dir/bin/$b" "$BIN/$b"
    done
}
relink() { # relink <dir> <binaries...>: a cached build; make sure $BIN points at it
    local dir="$1" b
    shift
    [[ "$LINK_BINS" == 1 ]] || return 0
    for b in "$@"; do ln -sfn "$dir/bin/$b" "$BIN/$b"; done
}

timed() { # timed <label> <function>: run and report seconds
    local label="$1" start
    shift
    start=$SECONDS
    "$@"
    log "$label: $((SECONDS - start))s"
}

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

build_kubernetes() {
    local dir="$CACHE/versions/kubernetes-$K8S_VERSION" src="$CACHE/src/kubernetes-$K8S_VERSION"
    if built "$dir"; then
        relink "$dir" "${K8S_BINS[@]}"
        log "kubernetes $K8S_VERSION: cached"
        return
    fi
    log "kubernetes $K8S_VERSION: generating the wrapper module"
    local staging="v0.${K8S_VERSION#v1.}" major minor date gomod
    major="$(cut -d. -f1 <<<"${K8S_VERSION#v}")"
    minor="$(cut -d. -f2 <<<"${K8S_VERSION#v}")"
    mkdir -p "$src" "$dir/bin"
    gomod="$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
    [[ -f "$gomod" ]] || die "could not download the go.mod of k8s.io/kubernetes@$K8S_VERSION"
    {
        echo "module chat-history.local/k8s-build"
        echo
        # The tag's own go and godebug lines (single line or block form).
        awk '/^go [0-9]/ { print; print "" }
             /^godebug \(/ { inblock = 1 }
             inblock || /^godebug / { print }
             inblock && /^\)/ { inblock = 0 }' "$gomod"
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        echo "replace ("
        # Every staging module the tag replaces with a local path -> its published v0.x tag.
        sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*$#\t\1 => \1 '"$staging"'#p' "$gomod"
        echo ")"
    } >"$src/go.mod"
    grep -q "k8s.io/client-go => k8s.io/client-go $staging" "$src/go.mod" ||
        die "no staging replace lines found in the go.mod of k8s.io/kubernetes@$K8S_VERSION"
    {
        echo "//go:build tools"
        echo
        echo "// Package tools pins the commands this module builds."
        echo "package tools"
        echo
        echo "import ("
        local b
        for b in "${K8S_BINS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$b\""; done
        echo ")"
    } >"$src/tools.go"
    log "kubernetes $K8S_VERSION: go mod tidy (downloads dependencies)"
    (cd "$src" && go mod tidy)
    date="$(cd "$src" && module_time "k8s.io/kubernetes@$K8S_VERSION")"
    local ld="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    local pkgs=()
    for b in "${K8S_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    log "kubernetes $K8S_VERSION: go build ${K8S_BINS[*]} (the long step)"
    (cd "$src" && go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$dir/bin/" "${pkgs[@]}")
    finish "$dir" "${K8S_BINS[@]}"
}

# kubeadm is only needed by the kind node image (cluster/kind-node-image.sh), so it is a
# component of its own: the host-process cluster's cold build does not pay for it. It reuses the
# Kubernetes wrapper module (same replaces, same version ldflags) with kubeadm added.
build_kubeadm() {
    local dir="$CACHE/versions/kubeadm-$K8S_VERSION" src="$CACHE/src/kubeadm-$K8S_VERSION"
    local k8s_src="$CACHE/src/kubernetes-$K8S_VERSION"
    if built "$dir"; then
        relink "$dir" kubeadm
        log "kubeadm $K8S_VERSION: cached"
        return
    fi
    [[ -f "$k8s_src/go.mod" ]] || build_kubernetes
    mkdir -p "$src" "$dir/bin"
    cp "$k8s_src/go.mod" "$k8s_src/go.sum" "$src/"
    sed -i 's#^module .*#module chat-history.local/kubeadm-build#' "$src/go.mod"
    printf '%s\n' '//go:build tools' '' '// Package tools pins the command this module builds.' \
        'package tools' '' 'import _ "k8s.io/kubernetes/cmd/kubeadm"' >"$src/tools.go"
    (cd "$src" && go mod tidy)
    local major minor date ld="-s -w" pkg
    major="$(cut -d. -f1 <<<"${K8S_VERSION#v}")"
    minor="$(cut -d. -f2 <<<"${K8S_VERSION#v}")"
    date="$(cd "$src" && module_time "k8s.io/kubernetes@$K8S_VERSION")"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    log "kubeadm $K8S_VERSION: go build"
    (cd "$src" && go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$dir/bin/" k8s.io/kubernetes/cmd/kubeadm)
    finish "$dir" kubeadm
}

build_etcd() {
    local dir="$CACHE/versions/etcd-$ETCD_VERSION" src="$CACHE/src/etcd-$ETCD_VERSION"
    if built "$dir"; then
        relink "$dir" etcd
        log "etcd $ETCD_VERSION: cached"
        return
    fi
    mkdir -p "$src" "$dir/bin"
    cat >"$src/go.mod" <<EOF
module chat-history.local/etcd-build

go 1.25

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
    cat >"$src/main.go" <<'EOF'
// Command etcd is the upstream etcd server, built from its published module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    log "etcd $ETCD_VERSION: go mod tidy + go build"
    (cd "$src" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$dir/bin/etcd" .)
    finish "$dir" etcd
}

build_coredns() {
    local dir="$CACHE/versions/coredns-$COREDNS_VERSION"
    if built "$dir"; then
        relink "$dir" coredns
        log "coredns $COREDNS_VERSION: cached"
        return
    fi
    mkdir -p "$dir/bin"
    log "coredns $COREDNS_VERSION: go install"
    GOBIN="$dir/bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
    finish "$dir" coredns
}

# kube-router, for its network policy controller only (cluster/network-policy.sh, and the kind
# node image's DaemonSet, cluster/kind-node-image.sh): the bridge
# CNI enforces no NetworkPolicy, and kube-network-policies (kind's) needs the nftables "queue"
# expression, which this kernel lacks (see README.md).
build_kube_router() {
    local dir="$CACHE/versions/kube-router-$KUBE_ROUTER_VERSION"
    local module=github.com/cloudnativelabs/kube-router/v2
    if built "$dir"; then
        relink "$dir" kube-router
        log "kube-router $KUBE_ROUTER_VERSION: cached"
        return
    fi
    mkdir -p "$dir/bin"
    log "kube-router $KUBE_ROUTER_VERSION: go install"
    GOBIN="$dir/bin" go install -trimpath \
        -ldflags "-s -w -X $module/pkg/version.Version=$KUBE_ROUTER_VERSION" \
        "$module/cmd/kube-router@$KUBE_ROUTER_VERSION"
    finish "$dir" kube-router
}

# helm is the one scripts/tools.sh pins and builds for the chart checks too (cached as
# $CHAT_HISTORY_CACHE/tools/helm-<version>): one build, one version, linked into $BIN.
build_helm() {
    "$REPO_ROOT/scripts/tools.sh"
    [[ -x "$CACHE/tools/helm-$HELM_VERSION" ]] ||
        die "scripts/tools.sh left no $CACHE/tools/helm-$HELM_VERSION"
    ln -sfn "$CACHE/tools/helm-$HELM_VERSION" "$BIN/helm"
}

build_pause() {
    # Tiny and built from this repo, so keyed by the source's hash rather than a version.
    local sum dir
    sum="$(cat "$HERE/pause/go.mod" "$HERE/pause/main.go" | sha256sum | cut -c1-12)"
    dir="$CACHE/versions/pause-$sum"
    if built "$dir"; then
        relink "$dir" pause
        log "pause $sum: cached"
        return
    fi
    mkdir -p "$dir/bin"
    (cd "$HERE/pause" && go build -trimpath -ldflags "-s -w" -o "$dir/bin/pause" .)
    finish "$dir" pause
}

main() {
    local start=$SECONDS c
    if (($#)); then # build.sh COMPONENT...: only these (kubeadm is built only this way)
        for c in "$@"; do
            case "$c" in
                pause | helm | kubernetes | kubeadm | etcd | coredns) timed "$c" "build_$c" ;;
                kube-router) timed "$c" build_kube_router ;;
                *) die "unknown component $c: use pause, helm, kubernetes, kubeadm, etcd, coredns or kube-router" ;;
            esac
        done
        return
    fi
    log "cache: $CACHE (go: $(go env GOVERSION))"
    timed "pause" build_pause
    timed "helm $HELM_VERSION" build_helm
    timed "kubernetes $K8S_VERSION" build_kubernetes
    timed "etcd $ETCD_VERSION" build_etcd
    timed "coredns $COREDNS_VERSION" build_coredns
    timed "kube-router $KUBE_ROUTER_VERSION" build_kube_router
    log "total: $((SECONDS - start))s; binaries in $BIN"
    echo "export PATH=$BIN:\$PATH"
}

main "$@"
