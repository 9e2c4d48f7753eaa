#!/usr/bin/env bash
# Start the air-gapped single-node Kubernetes cluster as host processes:
#   etcd -> kube-apiserver -> kube-controller-manager + kube-scheduler -> containerd (CRI)
#   -> CNI bridge -> kubelet -> kube-proxy (iptables) -> CoreDNS -> StorageClass "standard"
#   -> kube-router's NetworkPolicy controller (network-policy.sh; NETWORK_POLICY=none: not started).
# Needs the binaries of build.sh. Everything lives under $CLUSTER_STATE (PID files, logs, PKI,
# data); cluster/down.sh removes it. Idempotent: components already running are kept.
# Prints `export KUBECONFIG=...` on stdout.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
HERE="$REPO_ROOT/cluster"

# --- PKI -----------------------------------------------------------------------------------

# cert <name> <subject> [<subjectAltName>] [clientAuth|serverAuth|both]: a CA-signed EC key pair.
cert() {
    local name="$1" subj="$2" san="${3:-}" usage="${4:-clientAuth}" ext
    [[ -f "$PKI/$name.crt" ]] && return 0
    ext="$PKI/$name.ext"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        case "$usage" in
        both) echo "extendedKeyUsage=serverAuth,clientAuth" ;;
        *) echo "extendedKeyUsage=$usage" ;;
        esac
        [[ -n "$san" ]] && echo "subjectAltName=$san"
    } >"$ext"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null
    openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
        -CAcreateserial -days 3650 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$ext"
}

# kubeconfig <name> <cert-name>: a kubeconfig for one identity, certificates embedded.
kubeconfig() {
    local name="$1" id="$2" out="$CLUSTER_STATE/$1.kubeconfig"
    [[ -f "$out" ]] && return 0
    cat >"$out" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: chat-history
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $id
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$id.crt")
    client-key-data: $(base64 -w0 "$PKI/$id.key")
contexts:
- name: chat-history
  context: {cluster: chat-history, user: $id}
current-context: chat-history
EOF
    chmod 0600 "$out"
}

make_pki() {
    mkdir -p "$PKI"
    chmod 0700 "$PKI"
    if [[ ! -f "$PKI/ca.crt" ]]; then
        log "generating the PKI"
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
        openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=chat-history-ca" -days 3650 \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$PKI/ca.crt"
    fi
    cert apiserver "/CN=kube-apiserver" \
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$KUBERNETES_SVC_IP,IP:127.0.0.1,IP:$NODE_IP" \
        serverAuth
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    cert admin "/O=system:masters/CN=chat-history-admin"
    cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
    cert kubelet-serving "/CN=$NODE_NAME" "DNS:$NODE_NAME,IP:$NODE_IP,IP:127.0.0.1" serverAuth
    cert controller-manager "/CN=system:kube-controller-manager"
    cert scheduler "/CN=system:kube-scheduler"
    cert kube-proxy "/CN=system:kube-proxy"
    cert kube-router "/CN=system:kube-router"
    if [[ ! -f "$PKI/sa.key" ]]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
        openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
    fi
    kubeconfig admin admin
    kubeconfig kubelet kubelet
    kubeconfig controller-manager controller-manager
    kubeconfig scheduler scheduler
    kubeconfig kube-proxy kube-proxy
    kubeconfig kube-router kube-router
}

# --- network -------------------------------------------------------------------------------

# The pod bridge exists before any component: its gateway address is the node address.
# Service IPs are routed to it, so nothing addressed to the cluster ever takes the default route.
setup_network() {
    if ! ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
        log "creating bridge $CNI_BRIDGE ($NODE_IP/${POD_SUBNET#*/})"
        ip link add "$CNI_BRIDGE" type bridge
    fi
    ip addr replace "$NODE_IP/${POD_SUBNET#*/}" dev "$CNI_BRIDGE"
    ip link set "$CNI_BRIDGE" up
    ip route replace "$SERVICE_CIDR" dev "$CNI_BRIDGE" src "$NODE_IP"
    sysctl -qw net.ipv4.ip_forward=1
    [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
    # dockerd sets the FORWARD policy to DROP; let pod traffic through its user chain.
    iptables -N DOCKER-USER 2>/dev/null || true
    iptables -C FORWARD -j DOCKER-USER 2>/dev/null || iptables -I FORWARD -j DOCKER-USER
    local dir
    for dir in -i -o; do
        iptables -C DOCKER-USER "$dir" "$CNI_BRIDGE" -m comment --comment chat-history -j ACCEPT 2>/dev/null ||
            iptables -I DOCKER-USER "$dir" "$CNI_BRIDGE" -m comment --comment chat-history -j ACCEPT
    done
    # No resolver of the machine's may reach pods: the cluster is air-gapped.
    printf '# chat-history cluster: no upstream resolver (air-gapped)\n' | write_file "$CLUSTER_STATE/resolv.conf"
    mkdir -p "$CLUSTER_STATE/cni/net.d" "$CLUSTER_STATE/cni/ipam"
    write_file "$CLUSTER_STATE/cni/net.d/10-chat-history.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "chat-history",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CLUSTER_STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# --- control plane -------------------------------------------------------------------------

start_etcd() {
    start_bg etcd etcd --name "$NODE_NAME" --data-dir "$CLUSTER_STATE/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" --listen-metrics-urls "" \
        --unsafe-no-fsync
    wait_for 60 etcd curl -fsS http://127.0.0.1:2379/health
}

apiserver_ready() {
    curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
        "https://$NODE_IP:6443/readyz"
}

start_apiserver() {
    start_bg kube-apiserver kube-apiserver \
        --etcd-servers http://127.0.0.1:2379 \
        --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port 6443 \
        --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$PKI/sa.pub" \
        --service-account-signing-key-file "$PKI/sa.key" \
        --authorization-mode Node,RBAC --allow-privileged=true \
        --enable-admission-plugins NodeRestriction \
        --profiling=false
    wait_for 120 "kube-apiserver /readyz" apiserver_ready
}

start_controllers() {
    local cm="$CLUSTER_STATE/controller-manager.kubeconfig" sc="$CLUSTER_STATE/scheduler.kubeconfig"
    start_bg kube-controller-manager kube-controller-manager \
        --kubeconfig "$cm" --authentication-kubeconfig "$cm" --authorization-kubeconfig "$cm" \
        --bind-address 127.0.0.1 --leader-elect=false \
        --use-service-account-credentials=true \
        --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" --allocate-node-cidrs=false \
        --flex-volume-plugin-dir "$CLUSTER_STATE/kubelet/volume-plugins" \
        --profiling=false
    start_bg kube-scheduler kube-scheduler \
        --kubeconfig "$sc" --authentication-kubeconfig "$sc" --authorization-kubeconfig "$sc" \
        --bind-address 127.0.0.1 --leader-elect=false --profiling=false
}

# --- node ----------------------------------------------------------------------------------

start_containerd() {
    local dir="$CLUSTER_STATE/containerd"
    mkdir -p "$dir/root" "$dir/state" "$dir/opt" "$(dirname "$CONTAINERD_SOCK")"
    write_file "$dir/config.toml" <<EOF
# The kubelet's own containerd; dockerd runs another one with CRI disabled.
version = 2
root = "$dir/root"
state = "$dir/state"

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[debug]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    enable_selinux = false
    # CI machines may lack CAP_SYS_RESOURCE: then no process may lower its oom_score_adj, and
    # runc fails on the kubelet's negative values. Clamp them to containerd's own score.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$CNI_BIN_DIR"
      conf_dir = "$CLUSTER_STATE/cni/net.d"
      max_conf_num = 1
EOF
    start_bg containerd containerd --config "$dir/config.toml"
    wait_for 60 containerd ctr -a "$CONTAINERD_SOCK" version
}

load_images() {
    local img missing=()
    for img in "$PAUSE_IMAGE" "$COREDNS_IMAGE" "$REDIS_IMAGE"; do
        image_loaded "$img" || missing+=("$img")
    done
    ((${#missing[@]} == 0)) || "$HERE/load-image.sh" "${missing[@]}"
}

start_kubelet() {
    local dir="$CLUSTER_STATE/kubelet"
    mkdir -p "$dir/volume-plugins" "$CLUSTER_STATE/pod-logs"
    write_file "$CLUSTER_STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 machine: 1.35 refuses it unless told otherwise.
failCgroupV1: false
# containerd 1.6 cannot report its cgroup driver; the kubelet falls back to this.
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS_IP]
resolvConf: $CLUSTER_STATE/resolv.conf
podLogsDir: $CLUSTER_STATE/pod-logs
volumePluginDir: $dir/volume-plugins
failSwapOn: false
# A test node on a shared CI disk: never garbage-collect images (they cannot be pulled again)
# and never evict.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "0%"
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
maxPods: 110
serializeImagePulls: false
EOF
    start_bg kubelet kubelet --config "$CLUSTER_STATE/kubelet.yaml" \
        --kubeconfig "$CLUSTER_STATE/kubelet.kubeconfig" \
        --root-dir "$dir" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
}

start_kube_proxy() {
    write_file "$CLUSTER_STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $CLUSTER_STATE/kube-proxy.kubeconfig
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the machine's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
# NodePorts only on the node address (the pod bridge), never on the machine's other addresses.
nodePortAddresses: [primary]
EOF
    start_bg kube-proxy kube-proxy --config "$CLUSTER_STATE/kube-proxy.yaml"
}

node_ready() {
    [[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

# --- add-ons -------------------------------------------------------------------------------

apply_addons() {
    log "applying CoreDNS, StorageClass standard and $PV_COUNT hostPath PVs"
    kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
- {kind: ServiceAccount, name: coredns, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  # No "forward": the cluster answers for its own names only and never asks an outside resolver.
  Corefile: |
    .:5353 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            ttl 30
        }
        cache 30
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        imagePullPolicy: IfNotPresent
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 5353, protocol: UDP}
        - {name: dns-tcp, containerPort: 5353, protocol: TCP}
        resources:
          requests: {cpu: 50m, memory: 64Mi}
          limits: {memory: 170Mi}
        securityContext:
          runAsNonRoot: true
          runAsUser: 65534
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          periodSeconds: 10
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
      volumes:
      - name: config
        configMap: {name: coredns}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: $CLUSTER_DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 5353, protocol: TCP}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
EOF
    # Pre-created hostPath PVs: world-writable directories, so a non-root pod (Redis uid 999)
    # can write without fsGroup (which hostPath ignores). Released ones are wiped and made
    # Available again by recycle-pvs.sh (run below, and by hand between test runs).
    local i manifest=""
    for ((i = 1; i <= PV_COUNT; i++)); do
        install -d -m 0777 "$CLUSTER_STATE/pv/pv$i"
        manifest+="---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: standard-pv$i
  labels: {chat-history/cluster: \"true\"}
spec:
  storageClassName: standard
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $CLUSTER_STATE/pv/pv$i, type: Directory}
"
    done
    kc apply -f - >/dev/null <<<"$manifest"
    "$HERE/recycle-pvs.sh"
    # What kube-router's policy controller reads (network-policy.sh), and nothing more.
    kc apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "chat-history:kube-router"}
rules:
- apiGroups: [""]
  resources: [pods, namespaces, nodes, services, endpoints]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "chat-history:kube-router"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "chat-history:kube-router"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:kube-router"}
EOF
}

on_exit() {
    local rc=$?
    ((rc == 0)) && return 0
    log "cluster start failed (exit $rc); component logs follow"
    "$HERE/dump-logs.sh" >&2 || true
    return "$rc"
}

main() {
    need_root
    need_bins etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns
    have containerd || ensure_debian_packages containerd runc
    [[ -x "$CNI_BIN_DIR/bridge" ]] || ensure_debian_packages containernetworking-plugins
    have conntrack || ensure_debian_packages conntrack
    have iptables || ensure_debian_packages iptables
    have openssl || ensure_debian_packages openssl
    have curl || ensure_debian_packages curl
    local start=$SECONDS
    mkdir -p "$CLUSTER_STATE" "$LOGS" "$PIDS"
    trap on_exit EXIT

    ensure_dockerd
    "$HERE/images.sh" >/dev/null
    make_pki
    setup_network
    start_etcd
    start_apiserver
    start_controllers
    start_containerd
    load_images
    start_kubelet
    start_kube_proxy
    wait_for 120 "node $NODE_NAME Ready" node_ready
    apply_addons
    wait_for 180 "CoreDNS available" \
        kc -n kube-system wait --for=condition=Available deployment/coredns --timeout=5s
    if [[ "$NETWORK_POLICY" != none ]]; then
        "$HERE/network-policy.sh" start
    else
        log "NETWORK_POLICY=none: NetworkPolicies are accepted and not enforced"
    fi
    trap - EXIT
    log "cluster up in $((SECONDS - start))s (kubernetes $K8S_VERSION, node $NODE_NAME, state $CLUSTER_STATE)"
    echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
}

main "$@"
