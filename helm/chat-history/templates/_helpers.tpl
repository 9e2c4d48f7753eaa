{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "chat-history.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name when it already contains the chart name (release
"chat-history" gives "chat-history"), else "<release>-<chart>". Truncated to 63 characters.
*/}}
{{- define "chat-history.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the Redis StatefulSet, its headless Service and its generated Secret.
*/}}
{{- define "chat-history.redis.fullname" -}}
{{- printf "%s-redis" (include "chat-history.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The headless Service that governs the Redis StatefulSet.
*/}}
{{- define "chat-history.redis.headlessName" -}}
{{- printf "%s-headless" (include "chat-history.redis.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "chat-history.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every object carries (selector labels plus version and manager).
*/}}
{{- define "chat-history.labels" -}}
helm.sh/chart: {{ include "chat-history.chart" . }}
{{ include "chat-history.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chat-history
{{- end }}

{{/*
Selector labels shared by every component of one release.
*/}}
{{- define "chat-history.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chat-history.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of the chat pods. The Service, PDB and both NetworkPolicies use these.
*/}}
{{- define "chat-history.chat.selectorLabels" -}}
{{ include "chat-history.selectorLabels" . }}
app.kubernetes.io/component: chat
{{- end }}

{{/*
Selector labels of the Redis pods.
*/}}
{{- define "chat-history.redis.selectorLabels" -}}
{{ include "chat-history.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{/*
Selector labels of the `helm test` pod.
*/}}
{{- define "chat-history.test.selectorLabels" -}}
{{ include "chat-history.selectorLabels" . }}
app.kubernetes.io/component: test
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "chat-history.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chat-history.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The chat image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "chat-history.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The Redis image reference.
*/}}
{{- define "chat-history.redis.image" -}}
{{- printf "%s:%s" .Values.redis.image.repository .Values.redis.image.tag }}
{{- end }}

{{/*
True (non-empty) when the chat pods keep history in Redis (the chart's or an external one).
*/}}
{{- define "chat-history.redis.enabled" -}}
{{- if eq .Values.history.backend "redis" }}true{{ end }}
{{- end }}

{{/*
True (non-empty) when this release deploys Redis (backend redis, no redis.external).
*/}}
{{- define "chat-history.redis.deployed" -}}
{{- if and (include "chat-history.redis.enabled" .) (not .Values.redis.external.enabled) }}true{{ end }}
{{- end }}

{{/*
True (non-empty) when this release deploys a primary, replicas and Sentinels.
*/}}
{{- define "chat-history.redis.replication" -}}
{{- if and (include "chat-history.redis.deployed" .) (eq .Values.redis.architecture "replication") }}true{{ end }}
{{- end }}

{{/*
The chat pods' REDIS_MODE: what the chart deploys, or how the external Redis is reached.
*/}}
{{- define "chat-history.redis.mode" -}}
{{- if .Values.redis.external.enabled }}
{{- .Values.redis.external.mode }}
{{- else if include "chat-history.redis.replication" . -}}
sentinel
{{- else -}}
standalone
{{- end }}
{{- end }}

{{/*
Redis pods of the StatefulSet: the primary, plus its replicas with replication.
*/}}
{{- define "chat-history.redis.pods" -}}
{{- if include "chat-history.redis.replication" . }}
{{- add 1 .Values.redis.replication.replicas }}
{{- else -}}
1
{{- end }}
{{- end }}

{{/*
DNS suffix of the Redis pods (their names are "<statefulset>-<ordinal>.<this>"), fully qualified
so that Redis, Sentinel and the chat pods resolve it the same way whatever their search path.
*/}}
{{- define "chat-history.redis.podDomain" -}}
{{- printf "%s.%s.svc.%s" (include "chat-history.redis.headlessName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
The Sentinels' addresses, "host:port,..." (REDIS_SENTINELS of the chat pods).
*/}}
{{- define "chat-history.redis.sentinels" -}}
{{- if .Values.redis.external.enabled }}
{{- join "," .Values.redis.external.sentinels }}
{{- else }}
{{- $hosts := list }}
{{- range $i := until (int (include "chat-history.redis.pods" .)) }}
{{- $hosts = append $hosts (printf "%s-%d.%s:%d" (include "chat-history.redis.fullname" $) $i (include "chat-history.redis.podDomain" $) (int $.Values.redis.replication.sentinelPort)) }}
{{- end }}
{{- join "," $hosts }}
{{- end }}
{{- end }}

{{/*
Name of the Secret that holds the Redis password: the user's existing one, or the chart's; with
redis.external, its existingSecret (empty: no password).
*/}}
{{- define "chat-history.redis.secretName" -}}
{{- if .Values.redis.external.enabled }}
{{- .Values.redis.external.existingSecret }}
{{- else }}
{{- default (include "chat-history.redis.fullname" .) .Values.redis.auth.existingSecret }}
{{- end }}
{{- end }}

{{/*
Key of the password inside that Secret.
*/}}
{{- define "chat-history.redis.secretKey" -}}
{{- if .Values.redis.external.enabled }}
{{- .Values.redis.external.existingSecretPasswordKey }}
{{- else if .Values.redis.auth.existingSecret }}
{{- .Values.redis.auth.existingSecretPasswordKey }}
{{- else -}}
redis-password
{{- end }}
{{- end }}

{{/*
Where every container that needs the Redis password reads it: a Secret volume, never an
environment variable (a process's environment is readable in /proc, `kubectl describe` and
crash dumps).
*/}}
{{- define "chat-history.redis.passwordDir" -}}
/run/secrets/redis
{{- end }}

{{/*
The Secret volume that holds the Redis password as the file "password" (only that key).
*/}}
{{- define "chat-history.redis.passwordVolume" -}}
- name: redis-password
  secret:
    secretName: {{ include "chat-history.redis.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ include "chat-history.redis.secretKey" . }}
        path: password
      {{- if and .Values.redis.external.enabled .Values.redis.external.sentinelPasswordKey }}
      - key: {{ .Values.redis.external.sentinelPasswordKey }}
        path: sentinel-password
      {{- end }}
{{- end }}

{{/*
The NetworkPolicy egress rule to the cluster DNS (networkPolicy.dnsPorts, UDP and TCP).
*/}}
{{- define "chat-history.dnsEgress" -}}
- to:
    {{- toYaml .Values.networkPolicy.dnsTo | nindent 4 }}
  ports:
    {{- range .Values.networkPolicy.dnsPorts }}
    - port: {{ . }}
      protocol: UDP
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}

{{/*
URL the chat pods use to reach Redis in standalone and cluster mode (the password comes
separately, from the Secret).
*/}}
{{- define "chat-history.redis.url" -}}
{{- if .Values.redis.external.enabled }}
{{- .Values.redis.external.url }}
{{- else }}
{{- printf "redis://%s:%d/0" (include "chat-history.redis.fullname" .) (int .Values.redis.service.port) }}
{{- end }}
{{- end }}

{{/*
A Kubernetes memory quantity ("256Mi", "1Gi", "512M") or a redis.conf size ("200mb", "1gb")
in bytes. Used only to check that maxmemory leaves headroom under the container limit.
*/}}
{{- define "chat-history.bytes" -}}
{{- $q := . | toString | trim }}
{{- $units := dict "ki" 1024 "mi" 1048576 "gi" 1073741824 "k" 1000 "m" 1000000 "g" 1000000000 "kb" 1024 "mb" 1048576 "gb" 1073741824 "" 1 }}
{{- $num := regexFind "^[0-9]+" $q }}
{{- $unit := lower (trimPrefix $num $q) }}
{{- if or (not $num) (not (hasKey $units $unit)) }}
{{- fail (printf "cannot read the size %q: use a number with Ki/Mi/Gi (Kubernetes) or kb/mb/gb (redis)" $q) }}
{{- end }}
{{- mul (int64 $num) (get $units $unit) }}
{{- end }}

{{/*
Render-time checks of value combinations the schema cannot express. Each failure says what to
set. Included once, from the chat Deployment.
*/}}
{{- define "chat-history.validate" -}}
{{- $shutdown := add .Values.lifecycle.preStopSleepSeconds .Values.lifecycle.gracefulShutdownSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $shutdown) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than lifecycle.preStopSleepSeconds + lifecycle.gracefulShutdownSeconds (%d), or the kubelet kills uvicorn before in-flight requests finish" (int .Values.terminationGracePeriodSeconds) (int $shutdown)) }}
{{- end }}
{{- if lt (int .Values.memory.maxMessages) (int .Values.history.maxMessages) }}
{{- fail (printf "memory.maxMessages (%d) must be at least history.maxMessages (%d)" (int .Values.memory.maxMessages) (int .Values.history.maxMessages)) }}
{{- end }}
{{- if gt (int .Values.history.windowMessages) (int .Values.history.maxMessages) }}
{{- fail (printf "history.windowMessages (%d) must not exceed history.maxMessages (%d)" (int .Values.history.windowMessages) (int .Values.history.maxMessages)) }}
{{- end }}
{{- if and (eq .Values.chat.model "openai") (not .Values.chat.openai.model) }}
{{- fail "chat.model=openai needs chat.openai.model (e.g. gpt-4o-mini)" }}
{{- end }}
{{- if eq .Values.history.api "checkpointer" }}
{{- $lease := float64 .Values.history.checkpointer.leaseSeconds }}
{{- $ttl := float64 .Values.history.ttlSeconds }}
{{- if and (gt $ttl 0.0) (lt $ttl $lease) }}
{{- fail (printf "history.ttlSeconds (%v) must be 0 or at least history.checkpointer.leaseSeconds (%v): a thread's lease must not outlive the thread" .Values.history.ttlSeconds .Values.history.checkpointer.leaseSeconds) }}
{{- end }}
{{- $modelTime := mulf 2.0 (float64 .Values.chat.openai.timeoutSeconds) }}
{{- if and (eq .Values.chat.model "openai") (le $lease $modelTime) }}
{{- fail (printf "history.checkpointer.leaseSeconds (%v) must exceed twice chat.openai.timeoutSeconds (%v; a model call is tried twice), or a slow turn loses its lease and stores nothing" .Values.history.checkpointer.leaseSeconds .Values.chat.openai.timeoutSeconds) }}
{{- end }}
{{- end }}
{{- if and (not .Values.auth.enabled) (or .Values.limits.rateLimitTurns .Values.limits.maxSessionsPerPrincipal) }}
{{- fail "limits.rateLimitTurns and limits.maxSessionsPerPrincipal are per principal and need auth.enabled=true: with auth.enabled=false set both to 0" }}
{{- end }}
{{- if and (include "chat-history.redis.enabled" .) .Values.redis.external.enabled }}
{{- if and .Values.redis.external.sentinelPasswordKey (or (ne .Values.redis.external.mode "sentinel") (not .Values.redis.external.existingSecret)) }}
{{- fail "redis.external.sentinelPasswordKey needs redis.external.mode=sentinel and redis.external.existingSecret (the Secret that holds it)" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.redis.external.egress) }}
{{- fail "redis.external.egress is required with networkPolicy.enabled: the chat pods may reach only what a rule allows (e.g. an ipBlock of the managed Redis and its ports), or set networkPolicy.enabled=false" }}
{{- end }}
{{- end }}
{{- if include "chat-history.redis.deployed" . }}
{{- if include "chat-history.redis.replication" . }}
{{- if gt (int .Values.redis.replication.minReplicasToWrite) (int .Values.redis.replication.replicas) }}
{{- fail (printf "redis.replication.minReplicasToWrite (%d) must not exceed redis.replication.replicas (%d): the primary would refuse every write" (int .Values.redis.replication.minReplicasToWrite) (int .Values.redis.replication.replicas)) }}
{{- end }}
{{- end }}
{{- $limit := dig "limits" "memory" "" .Values.redis.resources }}
{{- if not $limit }}
{{- fail "redis.resources.limits.memory is required: redis.maxmemory is checked against it" }}
{{- end }}
{{- $max := include "chat-history.bytes" .Values.redis.maxmemory | int64 }}
{{- $lim := include "chat-history.bytes" $limit | int64 }}
{{- if gt (mul $max 10) (mul $lim 9) }}
{{- fail (printf "redis.maxmemory (%s) must be at most 90%% of redis.resources.limits.memory (%s): Redis needs headroom for buffers and the AOF rewrite fork, or the kernel OOM-kills it instead of Redis refusing writes" .Values.redis.maxmemory $limit) }}
{{- end }}
{{- if and .Values.redis.auth.existingSecret (not .Values.redis.auth.existingSecretPasswordKey) }}
{{- fail "redis.auth.existingSecretPasswordKey is required with redis.auth.existingSecret" }}
{{- end }}
{{- end }}
{{- if include "chat-history.redis.enabled" . }}
{{- $replicas := 0 }}
{{- if include "chat-history.redis.replication" . }}
{{- $replicas = int .Values.redis.replication.replicas }}
{{- else if .Values.redis.external.enabled }}
{{- /* An external Redis's replicas are unknown here: the service finds out. */}}
{{- $replicas = int .Values.redis.client.waitReplicas }}
{{- end }}
{{- if ge (float64 .Values.redis.client.waitTimeoutSeconds) (float64 .Values.redis.client.socketTimeoutSeconds) }}
{{- fail (printf "redis.client.waitTimeoutSeconds (%v) must be less than redis.client.socketTimeoutSeconds (%v): WAIT's answer must come before the socket gives up" .Values.redis.client.waitTimeoutSeconds .Values.redis.client.socketTimeoutSeconds) }}
{{- end }}
{{- if gt (int .Values.redis.client.waitReplicas) $replicas }}
{{- fail (printf "redis.client.waitReplicas (%d) must not exceed the replicas there are (%d): every turn would wait for replicas that do not exist and fail. Use redis.architecture=replication, or 0" (int .Values.redis.client.waitReplicas) $replicas) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the Secret that holds the API keys: the user's existing one, or the chart's.
*/}}
{{- define "chat-history.auth.secretName" -}}
{{- default (printf "%s-api-keys" (include "chat-history.fullname" .) | trunc 63 | trimSuffix "-") .Values.auth.existingSecret }}
{{- end }}

{{/*
Where the chat pods find the key file (the Secret's "api-keys" item, a volume that the kubelet
updates in place when the Secret changes: no subPath, so a rotation needs no restart).
*/}}
{{- define "chat-history.auth.keysFile" -}}
/etc/chat-history/auth/api-keys
{{- end }}
