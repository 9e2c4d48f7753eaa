#!/usr/bin/env bash
# Prove the cluster of up.sh works, with locally built images only:
#   1. a plain pod gets a real pod IP and answers HTTP from the host;
#   2. a Service answers on its ClusterIP from the host (kube-proxy);
#   3. a StatefulSet's PVC binds through the default StorageClass and Redis writes to it;
#   4. a pod resolves the Service name through CoreDNS and reaches it by name.
# Works in a namespace made for this run and removed afterwards.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
HERE="$REPO_ROOT/cluster"

NS="smoke-$(date +%s)-$RANDOM"
PF_PID=""

ns() { kc -n "$NS" "$@"; }

cleanup() {
    local rc=$?
    if [[ -n "$PF_PID" ]]; then kill "$PF_PID" 2>/dev/null || true; fi
    if ((rc != 0)); then
        log "smoke test FAILED (exit $rc)"
        ns get all,pvc -o wide >&2 2>/dev/null || true
        ns describe pods >&2 2>/dev/null || true
    fi
    kc delete namespace "$NS" --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 || true
    exit "$rc"
}

ensure_loaded() { # ensure_loaded <image>: in the cluster's containerd
    image_loaded "$1" || "$HERE/load-image.sh" "$1"
}

http_get() { curl -fsS --max-time 3 "$1"; }

main() {
    need_root
    [[ -f "$KUBECONFIG_ADMIN" ]] || die "no cluster: run cluster/up.sh first"
    kc get --raw /readyz >/dev/null || die "the API server does not answer: run cluster/up.sh"
    local start=$SECONDS
    "$HERE/base-image.sh" >/dev/null
    ensure_loaded "$BASE_IMAGE"
    ensure_loaded "$REDIS_IMAGE"
    trap cleanup EXIT
    kc create namespace "$NS" >/dev/null
    log "namespace $NS"

    ns apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: $BASE_IMAGE
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'mkdir -p /tmp/www && echo smoke-ok >/tmp/www/index.html && exec python3 -m http.server 8080 --directory /tmp/www']
    ports: [{containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /, port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: redis}
spec:
  serviceName: redis
  replicas: 1
  selector:
    matchLabels: {app: redis}
  template:
    metadata:
      labels: {app: redis}
    spec:
      terminationGracePeriodSeconds: 5
      securityContext: {runAsUser: 999, runAsGroup: 999, runAsNonRoot: true}
      containers:
      - name: redis
        image: $REDIS_IMAGE
        imagePullPolicy: IfNotPresent
        command: [redis-server, /etc/redis/redis.conf, --appendonly, "yes"]
        ports: [{containerPort: 6379}]
        securityContext:
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
        readinessProbe:
          exec: {command: [redis-cli, ping]}
          periodSeconds: 1
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
EOF

    # 1. plain pod with a real pod IP, reached from the host
    ns wait --for=condition=Ready pod/web --timeout=120s >/dev/null
    local ip
    ip="$(ns get pod web -o jsonpath='{.status.podIP}')"
    [[ "$ip" == "${NODE_IP%.*}".* && "$ip" != "$NODE_IP" ]] || die "pod web has no pod IP from $POD_SUBNET: '$ip'"
    [[ "$(http_get "http://$ip:8080/")" == smoke-ok ]] || die "pod web at $ip does not answer"
    log "ok: pod web runs with pod IP $ip and answers from the host"

    # 2. Service through its ClusterIP (kube-proxy iptables rules)
    local cip
    cip="$(ns get service hello -o jsonpath='{.spec.clusterIP}')"
    wait_for 60 "ClusterIP $cip" http_get "http://$cip/" || die "Service hello at $cip does not answer"
    log "ok: Service hello answers on ClusterIP $cip from the host"

    # 3. StatefulSet with a PVC bound through the default StorageClass, written by uid 999
    wait_for 60 "PVC data-redis-0 Bound" \
        test "$(ns get pvc data-redis-0 -o jsonpath='{.status.phase}' 2>/dev/null)" = Bound ||
        die "PVC data-redis-0 did not bind"
    ns wait --for=condition=Ready pod/redis-0 --timeout=120s >/dev/null
    ns exec redis-0 -- redis-cli set smoke ok >/dev/null
    [[ "$(ns exec redis-0 -- redis-cli get smoke)" == ok ]] || die "redis-0 lost a key"
    ns exec redis-0 -- test -s /data/appendonlydir/appendonly.aof.1.incr.aof ||
        ns exec redis-0 -- sh -c 'ls /data/appendonlydir/*.aof' >/dev/null ||
        die "redis-0 wrote no AOF to its volume"
    log "ok: StatefulSet redis runs on PVC data-redis-0 ($(ns get pvc data-redis-0 -o jsonpath='{.spec.volumeName}'), class $(ns get pvc data-redis-0 -o jsonpath='{.spec.storageClassName}'))"

    # 4. DNS: the Service name from inside a pod, then HTTP by its short name (through the
    #    search path; the pod reaches itself through the Service, so hairpin NAT works too)
    local resolved
    resolved="$(ns exec web -- python3 -c "import socket; print(socket.gethostbyname('hello.$NS.svc.cluster.local'))")"
    [[ "$resolved" == "$cip" ]] || die "hello.$NS.svc.cluster.local resolved to '$resolved', want $cip"
    [[ "$(ns exec web -- python3 -c "import urllib.request; print(urllib.request.urlopen('http://hello/', timeout=5).read().decode().strip())")" == smoke-ok ]] ||
        die "pod web cannot reach Service hello by its short name"
    log "ok: hello.$NS.svc.cluster.local resolves to $cip in a pod, and http://hello/ answers"

    # 5. port-forward through the API server and the kubelet (what the e2e suite's kube target uses)
    local pf="$CLUSTER_STATE/smoke-port-forward.log" port
    # kubectl itself, not the ns() wrapper: $! must be kubectl's PID to stop it.
    kubectl --kubeconfig "$KUBECONFIG_ADMIN" -n "$NS" port-forward pod/web :8080 >"$pf" 2>&1 &
    PF_PID=$!
    wait_for 30 "port-forward" grep -q 'Forwarding from 127.0.0.1:' "$pf" || die "port-forward did not start: $(cat "$pf")"
    port="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$pf" | head -n1)"
    local got
    got="$(http_get "http://127.0.0.1:$port/" || true)"
    kill "$PF_PID" 2>/dev/null || true
    wait "$PF_PID" 2>/dev/null || true
    PF_PID=""
    rm -f "$pf"
    [[ "$got" == smoke-ok ]] || die "port-forward to pod web (127.0.0.1:$port) did not answer"
    log "ok: kubectl port-forward reaches pod web (127.0.0.1:$port)"

    kc get nodes,pods -A -o wide
    log "smoke test passed in $((SECONDS - start))s"
}

main "$@"
