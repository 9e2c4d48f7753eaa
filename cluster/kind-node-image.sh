#!/usr/bin/env bash
# Build a kind node image without pulling anything, for kind's KIND_VERSION (scripts/lib.sh):
#   node    a debootstrap bookworm root with systemd as PID 1, Debian's containerd, runc and CNI
#           plugins, kubelet/kubeadm/kubectl from cluster/build.sh, and the node-side setup kind
#           expects (entrypoint, systemd units, containerd config, /kind/version), written here
#   images  the control plane as kubeadm names it (`kubeadm config images list`):
#           kube-apiserver, -controller-manager, -scheduler, etcd, CoreDNS and pause FROM
#           scratch, kube-proxy on a debootstrap root with iptables (the "netbase" root); each
#           built from source at the version kubeadm pins, and imported into the node's
#           containerd (`ctr -n k8s.io images import --no-unpack`, pinned), as kind's own node
#           image does.
#   network /kind/manifests/default-cni.yaml, which kind applies, in place of kindnetd (whose
#           source is not reachable here): kind-hostgw (below), the pod network, and
#           kube-router's network policy controller alone (below), which enforces
#           NetworkPolicies as kindnetd does in kind's own image. Both run on the netbase root,
#           so kube-router writes its rules with the same iptables backend as kube-proxy.
#   storage /kind/manifests/default-storage.yaml: local-path-provisioner, built from source.
# The image carries a cache-key label (versions, this script, the rootfs), so a warm run only
# checks it. Prints the image name (KIND_NODE_IMAGE, default chat-history/kind-node:<k8s version>).
#   cluster/kind-node-image.sh
# See docs/kind.md ("Air-gapped") for what differs from kind's own image.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
HERE="$REPO_ROOT/cluster"
: "${KIND_NODE_IMAGE:=chat-history/kind-node:$K8S_VERSION}"
need_root

# The node's own files, written into the rootfs. Matches what kind KIND_VERSION runs on a node:
# `docker run --privileged --tmpfs /run --tmpfs /tmp --volume /var --cgroupns=private ...` with
# this entrypoint, then kubeadm through `docker exec`, reading /kind/version and
# /kind/kubeadm.conf; it waits for "detected cgroup v1" or systemd's "Multi-User System".
customize_kind_node() {
    local root="$1"
    # systemd in a container: only what a node needs (https://systemd.io/CONTAINER_INTERFACE/).
    rm -f "$root"/lib/systemd/system/multi-user.target.wants/* \
        "$root"/etc/systemd/system/*.wants/* \
        "$root"/lib/systemd/system/local-fs.target.wants/* \
        "$root"/lib/systemd/system/sockets.target.wants/*udev* \
        "$root"/lib/systemd/system/sockets.target.wants/*initctl* \
        "$root"/lib/systemd/system/basic.target.wants/*
    find "$root/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
    echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
    mkdir -p "$root/kind/bin" "$root/etc/kubernetes/manifests" "$root/opt/cni" \
        "$root/etc/containerd" "$root/etc/systemd/system/kubelet.service.d"
    # Debian's CNI plugins live in /usr/lib/cni; kindnetd and containerd look in /opt/cni/bin.
    ln -sfn /usr/lib/cni "$root/opt/cni/bin"

    # containerd 1.6 (Debian): CRI with the systemd cgroup driver kind's kubelet config uses;
    # the sandbox image kubeadm names; restrict_oom_score_adj because this machine's root lacks
    # CAP_SYS_RESOURCE (runc cannot lower an OOM score); images are unpacked on first use.
    cat >"$root/etc/containerd/config.toml" <<'TOML'
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "@PAUSE_IMAGE@"
  tolerate_missing_hugepages_controller = true
  restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/opt/cni/bin"
  conf_dir = "/etc/cni/net.d"
TOML
    printf 'runtime-endpoint: unix:///run/containerd/containerd.sock\n' >"$root/etc/crictl.yaml"

    # No OOMScoreAdjust: lowering it needs CAP_SYS_RESOURCE, and systemd would fail the unit.
    cat >"$root/etc/systemd/system/containerd.service" <<'UNIT'
[Unit]
Description=containerd (the kind node's container runtime)
After=network.target local-fs.target
StartLimitIntervalSec=0

[Service]
ExecStart=/usr/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=1
LimitNPROC=infinity
LimitCORE=infinity
LimitNOFILE=infinity
TasksMax=infinity

[Install]
WantedBy=multi-user.target
UNIT
    cat >"$root/etc/systemd/system/kubelet.slice" <<'UNIT'
[Unit]
Description=The kubelet and the pods it runs
Before=slices.target

[Slice]
MemoryAccounting=true
CPUAccounting=true
UNIT
    # kubeadm writes /var/lib/kubelet/config.yaml and kubeadm-flags.env; the unit waits for them.
    cat >"$root/etc/systemd/system/kubelet.service" <<'UNIT'
[Unit]
Description=kubelet
ConditionPathExists=/var/lib/kubelet/config.yaml

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=1s
CPUAccounting=true
MemoryAccounting=true
Slice=kubelet.slice
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
    cat >"$root/etc/systemd/system/kubelet.service.d/10-kubeadm.conf" <<'UNIT'
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
UNIT
    # kind's kubelet config sets cgroupRoot: /kubelet; on cgroup v1 the entrypoint makes it in
    # every hierarchy, the systemd one too.
    cat >"$root/etc/systemd/system/kubelet.service.d/11-cgroup-root.conf" <<'UNIT'
[Service]
ExecStartPre=/bin/mkdir -p /sys/fs/cgroup/systemd/kubelet
UNIT
    printf 'KUBELET_EXTRA_ARGS=--runtime-cgroups=/system.slice/containerd.service\n' \
        >"$root/etc/default/kubelet"
    printf '%s\n' net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.all.arp_ignore=0 \
        >"$root/etc/sysctl.d/10-kind-node.conf"
    chroot "$root" systemctl enable containerd.service kubelet.service >&2
    chroot "$root" systemctl mask systemd-binfmt.service >&2

    cat >"$root/usr/local/bin/entrypoint" <<'ENTRYPOINT'
#!/bin/bash
# The kind node's PID 1 until systemd: fix what `docker run --privileged` leaves, then exec it.
set -euo pipefail
info() { echo "INFO: $*" >&2; }

# systemd wants a read-only /sys in a container; mounts must propagate for the kubelet.
mount -o remount,ro /sys
mount --make-rshared /

if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    info "detected cgroup v2"
else
    info "detected cgroup v1"
    own="$(grep -E '^[^:]*:([^:]*,)?cpu(,[^,:]*)?:' /proc/self/cgroup | cut -d: -f3)"
    [[ "$own" == / ]] || { echo "ERROR: no private cgroup namespace (docker run --cgroupns=private)" >&2; exit 1; }
    # misc: runc on cgroup v1 cannot nest it; hide it from systemd.
    if [[ -d /sys/fs/cgroup/misc ]]; then
        umount /sys/fs/cgroup/misc && rmdir /sys/fs/cgroup/misc || true
    fi
    mount --make-rprivate /sys/fs/cgroup
    # The kubelet's cgroupRoot (/kubelet; /kubelet.slice under the systemd driver) in every
    # hierarchy, self-bind-mounted so that systemd never removes it.
    for h in $(findmnt -lun -o target -t cgroup); do
        for g in kubelet kubelet.slice; do
            mkdir -p "$h/$g"
            if [[ "$h" == /sys/fs/cgroup/cpuset ]]; then
                cat "$h/cpuset.cpus" >"$h/$g/cpuset.cpus"
                cat "$h/cpuset.mems" >"$h/$g/cpuset.mems"
            fi
            mount --bind "$h/$g" "$h/$g"
        done
    done
fi

# Every node needs its own machine-id and product_uuid (the kubelet reports both).
rm -f /etc/machine-id
systemd-machine-id-setup >/dev/null
cat /proc/sys/kernel/random/uuid >/kind/product_uuid
for f in /sys/class/dmi/id/product_uuid /sys/devices/virtual/dmi/id/product_uuid; do
    [[ -f "$f" ]] && mount -o ro,bind /kind/product_uuid "$f"
done

# Use the iptables backend the host's docker already uses.
legacy="$(iptables-legacy-save 2>/dev/null | grep -c '^-' || true)"
nft="$(timeout 5 iptables-nft-save 2>/dev/null | grep -c '^-' || true)"
mode=nft
((legacy >= nft)) && mode=legacy
info "iptables: ${mode}"
update-alternatives --set iptables "/usr/sbin/iptables-${mode}" >/dev/null
update-alternatives --set ip6tables "/usr/sbin/ip6tables-${mode}" >/dev/null

# Docker's embedded DNS (127.0.0.11) answers only inside the node's own network namespace:
# point it, and the node's resolv.conf, at the docker host so that pods can use it too.
gw="$(ip -4 route show default | cut -d' ' -f3)"
if [[ -n "$gw" ]] && grep -q 127.0.0.11 /etc/resolv.conf; then
    iptables-save | sed -e "s/-d 127.0.0.11/-d ${gw}/g" \
        -e 's/-A OUTPUT \(.*\) -j DOCKER_OUTPUT/\0\n-A PREROUTING \1 -j DOCKER_OUTPUT/' \
        -e "s/--to-source :53/--to-source ${gw}:53/g" | iptables-restore
    sed -e "s/127.0.0.11/${gw}/g" /etc/resolv.conf >/tmp/resolv.conf
    cat /tmp/resolv.conf >/etc/resolv.conf
fi

info "starting init"
exec "$@"
ENTRYPOINT
    chmod 0755 "$root/usr/local/bin/entrypoint"
}

customize_none() { :; }

# netbase_tar: the root of the node's networking images (kube-proxy, kind-hostgw, kube-router):
# Debian's iptables (its default backend, nft), ipset, conntrack, iproute2. Prints the tarball.
netbase_tar() {
    rootfs_tar kind-netbase customize_none iptables nftables conntrack iproute2 ipset
}

# The pod network kind installs from /kind/manifests/default-cni.yaml. kind's own is kindnetd,
# whose source the Go module proxy here does not serve (docs/kind.md); this stands in for it:
# each node's pods on `ptp` + `host-local` over the node's podCIDR, and a route to every other
# node's podCIDR via that node's address (all nodes share one docker network). No masquerading
# (nothing outside the nodes to reach); NetworkPolicies are kube-router's (below).
# shellcheck disable=SC2016 # expanded by the script's own shell, in the pod
HOSTGW_SCRIPT='#!/bin/sh
# kind-hostgw: this node'"'"'s CNI config, and routes to the other nodes'"'"' pods.
set -eu
echo 1 >/proc/sys/net/ipv4/ip_forward
while true; do
    kubectl get nodes -o jsonpath='"'"'{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}'"'"' >/tmp/nodes || { sleep 2; continue; }
    while read -r name cidr ip; do
        [ -n "$cidr" ] || continue
        if [ "$name" = "$NODE_NAME" ]; then
            printf "%s\n" "{\"cniVersion\": \"0.4.0\", \"name\": \"kind-hostgw\", \"plugins\": [" \
                "  {\"type\": \"ptp\", \"mtu\": 1500, \"ipMasq\": false, \"ipam\": {\"type\": \"host-local\"," \
                "   \"ranges\": [[{\"subnet\": \"$cidr\"}]], \"routes\": [{\"dst\": \"0.0.0.0/0\"}]}}," \
                "  {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}]}" >/tmp/conf
            cmp -s /tmp/conf /etc/cni/net.d/10-kind-hostgw.conflist ||
                cp /tmp/conf /etc/cni/net.d/10-kind-hostgw.conflist
        else
            ip route replace "$cidr" via "$ip"
        fi
    done </tmp/nodes
    sleep 5
done
'

# hostgw_manifest <image>: the DaemonSet (and its RBAC) that runs HOSTGW_SCRIPT on every node.
hostgw_manifest() {
    cat <<YAML
# kind-hostgw: the pod network of chat-history's kind node image (cluster/kind-node-image.sh)
apiVersion: v1
kind: ServiceAccount
metadata: {name: kind-hostgw, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kind-hostgw}
rules:
  - {apiGroups: [""], resources: [nodes], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kind-hostgw}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kind-hostgw}
subjects: [{kind: ServiceAccount, name: kind-hostgw, namespace: kube-system}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kind-hostgw
  namespace: kube-system
  labels: {app: kind-hostgw, k8s-app: kind-hostgw}
spec:
  selector: {matchLabels: {app: kind-hostgw}}
  template:
    metadata: {labels: {app: kind-hostgw, k8s-app: kind-hostgw}}
    spec:
      hostNetwork: true
      serviceAccountName: kind-hostgw
      priorityClassName: system-node-critical
      tolerations: [{operator: Exists}]
      containers:
        - name: hostgw
          image: $1
          imagePullPolicy: IfNotPresent
          command: [/usr/local/bin/kind-hostgw]
          env:
            - name: NODE_NAME
              valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
          securityContext: {privileged: true}
          volumeMounts: [{name: cni-cfg, mountPath: /etc/cni/net.d}]
      volumes:
        - name: cni-cfg
          hostPath: {path: /etc/cni/net.d, type: DirectoryOrCreate}
YAML
}

# hostgw_image: the image of HOSTGW_SCRIPT (iptables/iproute2 root + kubectl); prints its name.
hostgw_image() {
    local netbase dir key image kubectl="$CHAT_HISTORY_CACHE/versions/kubernetes-$K8S_VERSION/bin/kubectl"
    netbase="$(netbase_tar)"
    key="$({
        echo "$HOSTGW_SCRIPT"
        basename "$netbase"
        sha256sum "$kubectl"
    } | sha256sum | cut -c1-12)"
    image="chat-history/kind-hostgw:$key"
    if [[ -z "$(image_key "$image")" ]]; then
        dir="$(mktemp -d)"
        tar -C "$dir" -xf "$netbase"
        install -m 0755 "$kubectl" "$dir/usr/local/bin/"
        printf '%s' "$HOSTGW_SCRIPT" >"$dir/usr/local/bin/kind-hostgw"
        chmod 0755 "$dir/usr/local/bin/kind-hostgw"
        log "docker import $image"
        import_image "$image" "$dir" "LABEL org.chat-history.key=$key"
        rm -rf "$dir"
    fi
    echo "$image"
}

# NetworkPolicy enforcement, kindnetd's other job: kube-router's network policy controller alone
# (no routing, no service proxy, no CNI), as cluster/network-policy.sh runs it on the
# host-process cluster, here a DaemonSet in kube-system. It turns each NetworkPolicy into
# iptables rules and ipsets on the node's FORWARD/INPUT/OUTPUT hooks, which kind-hostgw's routed
# pod traffic crosses. Its health server would listen on every address of the node (the docker
# network, every pod), so it is off (--health-port 0); the pod is ready once its top-level
# chains are installed, checked with iptables from inside the pod (no port opened).
# --service-cluster-ip-range is kind's default serviceSubnet (kind templates only the pod subnet
# into the manifest); KUBE_ROUTER_SERVICE_CIDR=... builds an image for a kind config with another.
KUBE_ROUTER_SERVICE_CIDR="${KUBE_ROUTER_SERVICE_CIDR:-10.96.0.0/16}"

# kube_router_manifest <image>: its DaemonSet, and RBAC for what its informers read.
kube_router_manifest() {
    cat <<YAML
# kube-router $KUBE_ROUTER_VERSION, network policy controller only: the NetworkPolicy enforcer of
# chat-history's kind node image (cluster/kind-node-image.sh)
apiVersion: v1
kind: ServiceAccount
metadata: {name: kube-router, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kube-router}
rules:
  - {apiGroups: [""], resources: [pods, namespaces, nodes, services, endpoints], verbs: [get, list, watch]}
  - {apiGroups: [networking.k8s.io], resources: [networkpolicies], verbs: [get, list, watch]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [get, list, watch]}
  - {apiGroups: ["", events.k8s.io], resources: [events], verbs: [create, patch, update]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kube-router}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kube-router}
subjects: [{kind: ServiceAccount, name: kube-router, namespace: kube-system}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-router
  namespace: kube-system
  labels: {app: kube-router, k8s-app: kube-router}
spec:
  selector: {matchLabels: {app: kube-router}}
  template:
    metadata: {labels: {app: kube-router, k8s-app: kube-router}}
    spec:
      hostNetwork: true
      serviceAccountName: kube-router
      priorityClassName: system-node-critical
      tolerations: [{operator: Exists}]
      containers:
        - name: kube-router
          image: $1
          imagePullPolicy: IfNotPresent
          command: [/usr/local/bin/kube-router]
          args:
            - --run-firewall=true
            - --run-router=false
            - --run-service-proxy=false
            - --run-loadbalancer=false
            - --enable-cni=false
            - --enable-ipv6=false
            - --service-cluster-ip-range=$KUBE_ROUTER_SERVICE_CIDR
            - --health-port=0
            - --metrics-port=0
            - --v=1
          env:
            - name: NODE_NAME
              valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
          readinessProbe:
            exec: {command: [iptables, -t, filter, -S, KUBE-ROUTER-FORWARD]}
            periodSeconds: 5
          resources: {requests: {cpu: 50m, memory: 64Mi}}
          securityContext:
            capabilities: {add: [NET_ADMIN, NET_RAW], drop: [ALL]}
          volumeMounts: [{name: xtables-lock, mountPath: /run/xtables.lock}]
      volumes:
        - name: xtables-lock
          hostPath: {path: /run/xtables.lock, type: FileOrCreate}
YAML
}

# kube_router_image: the netbase root + the kube-router of cluster/build.sh; prints its name.
kube_router_image() {
    local netbase key image dir bin="$CHAT_HISTORY_CACHE/versions/kube-router-$KUBE_ROUTER_VERSION/bin/kube-router"
    netbase="$(netbase_tar)"
    key="$({
        basename "$netbase"
        sha256sum "$bin"
    } | sha256sum | cut -c1-12)"
    image="chat-history/kube-router:$KUBE_ROUTER_VERSION-$key"
    if [[ -z "$(image_key "$image")" ]]; then
        dir="$(mktemp -d)"
        tar -C "$dir" -xf "$netbase"
        install -m 0755 "$bin" "$dir/usr/local/bin/"
        log "docker import $image"
        import_image "$image" "$dir" 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
            "LABEL org.chat-history.key=$key"
        rm -rf "$dir"
    fi
    echo "$image"
}

# images_kubeadm_names: the control-plane images kubeadm K8S_VERSION runs, one a line.
images_kubeadm_names() {
    "$CHAT_HISTORY_CACHE/versions/kubeadm-$K8S_VERSION/bin/kubeadm" config images list \
        --kubernetes-version "$K8S_VERSION" 2>/dev/null
}

# import_image <image> <dir> <change...>: a docker image of <dir>'s files.
import_image() {
    local image="$1" dir="$2" c changes=()
    shift 2
    for c in "$@"; do changes+=(--change "$c"); done
    tar --numeric-owner --owner=0 --group=0 -C "$dir" -c . | docker import "${changes[@]}" - "$image" >/dev/null
}

# control_plane_images: builds each image kubeadm names, from source; prints their names.
control_plane_images() {
    local name tag bin dir etcd_v coredns_v versions="$CHAT_HISTORY_CACHE/versions"
    local k8s="$versions/kubernetes-$K8S_VERSION/bin" netbase
    netbase="$(netbase_tar)"
    while read -r name; do
        tag="${name##*:}"
        dir="$(mktemp -d)"
        mkdir -p "$dir/usr/local/bin"
        case "$name" in
            */kube-proxy:*)
                tar -C "$dir" -xf "$netbase"
                install -m 0755 "$k8s/kube-proxy" "$dir/usr/local/bin/"
                ;;
            */kube-*:*)
                bin="${name##*/}"
                install -m 0755 "$k8s/${bin%%:*}" "$dir/usr/local/bin/"
                ;;
            */etcd:*)
                etcd_v="v${tag%-*}"
                LINK_BINS=0 ETCD_VERSION="$etcd_v" "$HERE/build.sh" etcd >&2
                install -m 0755 "$versions/etcd-$etcd_v/bin/etcd" "$dir/usr/local/bin/"
                ;;
            */coredns:*)
                coredns_v="$tag"
                LINK_BINS=0 COREDNS_VERSION="$coredns_v" "$HERE/build.sh" coredns >&2
                install -m 0755 "$versions/coredns-$coredns_v/bin/coredns" "$dir/coredns"
                ;;
            */pause:*)
                "$HERE/build.sh" pause >&2
                install -m 0755 "$(readlink -f "$CACHE_BIN/pause")" "$dir/pause"
                ;;
            *) die "kubeadm names an image this script cannot build: $name" ;;
        esac
        local entry=()
        case "$name" in
            */coredns:*) entry=('ENTRYPOINT ["/coredns"]') ;;
            */pause:*) entry=('ENTRYPOINT ["/pause"]') ;;
        esac
        log "docker import $name"
        import_image "$name" "$dir" 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
            ${entry[@]+"${entry[@]}"}
        rm -rf "$dir"
        echo "$name"
    done < <(images_kubeadm_names)
}

# The storage kind installs from /kind/manifests/default-storage.yaml: local-path-provisioner
# (as in kind's own image), built from source, with upstream's own manifest from its module
# (deploy/local-path-storage.yaml) renamed to kind's default StorageClass `standard`, volumes
# under the node's /var, our images. Its helper pod (mkdir -m 0777 / rm -rf of a volume's
# directory) runs in the kind-hostgw image, a Debian root with a shell.
LOCAL_PATH_VERSION="${LOCAL_PATH_VERSION:-v0.0.30}"
LOCAL_PATH_MODULE=github.com/rancher/local-path-provisioner

# local_path_image: builds (cached) the provisioner and its image; prints the image name.
local_path_image() {
    local dir="$CHAT_HISTORY_CACHE/versions/local-path-provisioner-$LOCAL_PATH_VERSION" image tmp
    image="chat-history/local-path-provisioner:$LOCAL_PATH_VERSION"
    if [[ ! -f "$dir/.done" ]]; then
        mkdir -p "$dir/bin"
        log "local-path-provisioner $LOCAL_PATH_VERSION: go install"
        GOTOOLCHAIN=local CGO_ENABLED=0 GOMODCACHE="$CHAT_HISTORY_CACHE/go/mod" \
            GOCACHE="$CHAT_HISTORY_CACHE/go/build" GOBIN="$dir/bin" \
            go install -trimpath -ldflags "-s -w" "$LOCAL_PATH_MODULE@$LOCAL_PATH_VERSION" >&2
        go version >"$dir/.done"
    fi
    if [[ -z "$(image_key "$image")" ]]; then
        tmp="$(mktemp -d)"
        mkdir -p "$tmp/usr/local/bin"
        install -m 0755 "$dir/bin/local-path-provisioner" "$tmp/usr/local/bin/"
        log "docker import $image"
        import_image "$image" "$tmp" 'ENV PATH=/usr/local/bin' "LABEL org.chat-history.key=$LOCAL_PATH_VERSION"
        rm -rf "$tmp"
    fi
    echo "$image"
}

# local_path_manifest <provisioner image> <helper image>: upstream's manifest, adapted.
local_path_manifest() {
    local src out
    src="$(cd / && GOTOOLCHAIN=local GOMODCACHE="$CHAT_HISTORY_CACHE/go/mod" \
        go mod download -json "$LOCAL_PATH_MODULE@$LOCAL_PATH_VERSION" |
        sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
    [[ -f "$src/deploy/local-path-storage.yaml" ]] ||
        die "no deploy/local-path-storage.yaml in $LOCAL_PATH_MODULE@$LOCAL_PATH_VERSION"
    out="$(sed -e "s#image: rancher/local-path-provisioner:.*#image: $1#" \
        -e "s#image: busybox#image: $2#" \
        -e 's#^  name: local-path$#  name: standard\n  annotations:\n    storageclass.kubernetes.io/is-default-class: "true"#' \
        -e 's#/opt/local-path-provisioner#/var/local-path-provisioner#' \
        "$src/deploy/local-path-storage.yaml")"
    local want
    for want in "image: $1" "image: $2" 'is-default-class: "true"' /var/local-path-provisioner; do
        grep -qF "$want" <<<"$out" ||
            die "$LOCAL_PATH_MODULE@$LOCAL_PATH_VERSION's manifest changed shape (no '$want'): adapt local_path_manifest"
    done
    echo "$out"
}

main() {
    local start=$SECONDS key node_tar images pause_image
    ensure_dockerd
    LINK_BINS=0 "$HERE/build.sh" kubernetes kubeadm kube-router >&2
    images="$(images_kubeadm_names)"
    [[ -n "$images" ]] || die "kubeadm $K8S_VERSION lists no images"
    pause_image="$(grep '/pause:' <<<"$images")"
    node_tar="$(rootfs_tar kind-node customize_kind_node systemd systemd-sysv dbus containerd runc \
        containernetworking-plugins iptables nftables conntrack iproute2 ethtool mount util-linux \
        kmod procps ca-certificates socat)"
    key="$({
        echo "$K8S_VERSION $KIND_VERSION $images $HOSTGW_SCRIPT"
        declare -f hostgw_manifest kube_router_manifest local_path_manifest
        echo "$LOCAL_PATH_VERSION $KUBE_ROUTER_VERSION $KUBE_ROUTER_SERVICE_CIDR"
        basename "$node_tar"
        # Contents only: the same build whatever path this script was called by.
        cat "${BASH_SOURCE[0]}" "$HERE/build.sh" \
            "$CHAT_HISTORY_CACHE/versions/kubeadm-$K8S_VERSION/bin/kubeadm" \
            "$CHAT_HISTORY_CACHE/versions/kubernetes-$K8S_VERSION/bin/kubelet" \
            "$CHAT_HISTORY_CACHE/versions/kube-router-$KUBE_ROUTER_VERSION/bin/kube-router" | sha256sum
    } | sha256sum | cut -c1-12)"
    if [[ "$(image_key "$KIND_NODE_IMAGE")" == "$key" ]]; then
        log "$KIND_NODE_IMAGE: cached ($key)"
        echo "$KIND_NODE_IMAGE"
        return 0
    fi
    local list built=() hostgw kube_router local_path
    list="$(control_plane_images)"
    mapfile -t built <<<"$list"
    hostgw="$(hostgw_image)"
    kube_router="$(kube_router_image)"
    local_path="$(local_path_image)"
    built+=("$hostgw" "$kube_router" "$local_path")

    local base="chat-history/kind-node-base:$key" ctr_name="chat-history-kind-node-build-$$"
    log "docker import $base"
    docker import --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
        "$node_tar" "$base" >/dev/null
    docker rm -f "$ctr_name" >/dev/null 2>&1 || true
    # A plain container is enough to run containerd for an import without unpacking.
    docker run -d --name "$ctr_name" --network none --entrypoint sleep "$base" infinity >/dev/null
    trap 'docker rm -f "$ctr_name" >/dev/null 2>&1 || true' EXIT
    local b k8s="$CHAT_HISTORY_CACHE/versions/kubernetes-$K8S_VERSION/bin"
    for b in "$k8s/kubelet" "$k8s/kubectl" "$CHAT_HISTORY_CACHE/versions/kubeadm-$K8S_VERSION/bin/kubeadm"; do
        docker cp "$b" "$ctr_name:/usr/bin/"
    done
    docker exec "$ctr_name" sh -c "sed -i 's#@PAUSE_IMAGE@#$pause_image#' /etc/containerd/config.toml &&
        printf '%s' '$K8S_VERSION' >/kind/version && mkdir -p /kind/manifests"
    { hostgw_manifest "$hostgw" && echo --- && kube_router_manifest "$kube_router"; } |
        docker exec -i "$ctr_name" sh -c 'cat >/kind/manifests/default-cni.yaml'
    local_path_manifest "$local_path" "$hostgw" |
        docker exec -i "$ctr_name" sh -c 'cat >/kind/manifests/default-storage.yaml'
    docker exec -d "$ctr_name" sh -c 'containerd >/tmp/containerd.log 2>&1'
    wait_for 30 "containerd in the build container" docker exec "$ctr_name" ctr version ||
        die "containerd did not start in $ctr_name: $(docker exec "$ctr_name" cat /tmp/containerd.log)"
    local image
    for image in "${built[@]}"; do
        log "importing $image into the node's containerd"
        docker save "$image" | docker exec -i "$ctr_name" ctr -n k8s.io images import \
            --label=io.cri-containerd.pinned=pinned --no-unpack --digests - >&2
    done
    docker exec "$ctr_name" sh -c 'kill $(pidof containerd); while pidof containerd >/dev/null; do sleep 0.2; done; rm -f /tmp/containerd.log'
    docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
        --change "LABEL org.chat-history.key=$key" "$ctr_name" "$KIND_NODE_IMAGE" >/dev/null
    docker rm -f "$ctr_name" >/dev/null
    trap - EXIT
    docker rmi "$base" >/dev/null
    log "$KIND_NODE_IMAGE built in $((SECONDS - start))s"
    echo "$KIND_NODE_IMAGE"
}

main "$@"
