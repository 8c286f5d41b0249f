{{/*
Names. KubeRay appends 6 characters to a RayService/RayJob name for its RayCluster and
"-serve-svc" to that for the Serve Service, so it caps those names at 47 characters and
requires DNS-1035 labels (lowercase letter first). The chart fails early rather than
letting the operator reject the object after install.
*/}}
{{- define "qwen3-serving.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 47 | trimSuffix "-" -}}
{{- end -}}

{{- define "qwen3-serving.fullname" -}}
{{- $name := "" -}}
{{- if .Values.fullnameOverride -}}
{{- $name = .Values.fullnameOverride -}}
{{- else -}}
{{- $base := default .Chart.Name .Values.nameOverride -}}
{{- if contains $base .Release.Name -}}
{{- $name = .Release.Name -}}
{{- else -}}
{{- $name = printf "%s-%s" .Release.Name $base -}}
{{- end -}}
{{- end -}}
{{- $name = $name | trunc 47 | trimSuffix "-" -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "resource name %q must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter); set fullnameOverride" $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* The RayJob's name: the full name shortened so "-job" still fits in 47 characters. */}}
{{- define "qwen3-serving.rayJobName" -}}
{{- printf "%s-job" (include "qwen3-serving.fullname" . | trunc 43 | trimSuffix "-") -}}
{{- end -}}

{{/* The Serve Service KubeRay creates from spec.serveService (the Ingress points at it). */}}
{{- define "qwen3-serving.serveServiceName" -}}
{{- printf "%s-serve-svc" (include "qwen3-serving.fullname" .) -}}
{{- end -}}

{{/* The Ray containers' image: the repository's Dockerfile build, tagged <appVersion>-<variant> unless image.tag is set. */}}
{{- define "qwen3-serving.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default (printf "%s-%s" .Chart.AppVersion .Values.image.variant)) -}}
{{- end -}}

{{- define "qwen3-serving.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "qwen3-serving.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qwen3-serving.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "qwen3-serving.labels" -}}
helm.sh/chart: {{ include "qwen3-serving.chart" . }}
{{ include "qwen3-serving.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "qwen3-serving.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "qwen3-serving.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secret holding HF_TOKEN / QWEN3_SERVE_API_KEYS / QWEN3_SERVE_TENANTS: the user's, the chart's, or none. */}}
{{- define "qwen3-serving.createSecret" -}}
{{- if and (not .Values.secrets.existingSecret) (or .Values.secrets.hfToken .Values.secrets.apiKeys .Values.secrets.tenants) -}}true{{- end -}}
{{- end -}}

{{- define "qwen3-serving.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if include "qwen3-serving.createSecret" . -}}
{{- printf "%s-secrets" (include "qwen3-serving.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "qwen3-serving.cacheClaimName" -}}
{{- default (printf "%s-model-cache" (include "qwen3-serving.fullname" .)) .Values.modelCache.pvc.existingClaim -}}
{{- end -}}

{{/*
The Serve HTTP port. It comes from the app config's `http` section, the one the local
`qwen3-serve serve` uses; 8000 and 300 s are AppConfig's defaults (serving/config.py),
and tests/helm checks the two agree.
*/}}
{{- define "qwen3-serving.servePort" -}}
{{- dig "http" "port" 8000 .Values.appConfig | int -}}
{{- end -}}

{{/*
serveConfigV2: one Serve application whose `args.config` is the whole app config as a
mapping; serving.deployments.app:app_builder validates it with the same AppConfig as
`qwen3-serve serve --config FILE`. API keys are not in it: they reach the app as the
QWEN3_SERVE_API_KEYS environment variable from the Secret.
*/}}
{{- define "qwen3-serving.serveConfigV2" -}}
{{- $http := dict "host" (dig "http" "host" "0.0.0.0" .Values.appConfig) "port" (include "qwen3-serving.servePort" . | int) -}}
{{- $timeout := dig "http" "request_timeout_s" 300 .Values.appConfig -}}
{{- if $timeout }}{{- $_ := set $http "request_timeout_s" $timeout -}}{{- end -}}
{{- $app := dict "name" "qwen3" "route_prefix" "/" "import_path" "serving.deployments.app:app_builder" "args" (dict "config" .Values.appConfig) -}}
{{- with .Values.serve.runtimeEnv }}{{- $_ := set $app "runtime_env" . -}}{{- end -}}
{{- toYaml (dict "proxy_location" .Values.serve.proxyLocation "http_options" $http "applications" (list $app)) -}}
{{- end -}}

{{/*
Environment shared by every Ray container: weights cache, Ray Serve's ingress settings, secrets,
user extras. Ray Serve reads RAY_SERVE_* when its processes start, so the app config's
`http.ingress` and `http.throughput_optimized` become container environment here, as
`qwen3-serve serve` sets them for its local cluster (AppConfig's HttpConfig.ray_serve_env).
*/}}
{{- define "qwen3-serving.env" -}}
- name: HF_HOME
  value: {{ .Values.modelCache.mountPath | quote }}
- name: RAY_SERVE_ENABLE_HA_PROXY
  value: {{ ternary "1" "0" (eq (dig "http" "ingress" "haproxy" .Values.appConfig) "haproxy") | quote }}
- name: RAY_SERVE_THROUGHPUT_OPTIMIZED
  value: {{ ternary "1" "0" (dig "http" "throughput_optimized" true .Values.appConfig) | quote }}
{{- $timeout := dig "http" "request_timeout_s" 300 .Values.appConfig }}
{{- $haproxy := eq (dig "http" "ingress" "haproxy" .Values.appConfig) "haproxy" }}
{{- if and $haproxy $timeout }}
- name: RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S
  value: {{ ceil $timeout | int | quote }}
{{- end }}
{{- if $haproxy }}
- name: RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S
  value: {{ dig "http" "drain_s" 5 .Values.appConfig | toString | quote }}
- name: RAY_SERVE_HAPROXY_METRICS_ENABLED
  value: {{ ternary "1" "0" (dig "http" "haproxy_request_metrics" false .Values.appConfig) | quote }}
{{- end }}
{{- $threads := dig "http" "haproxy_threads" nil .Values.appConfig }}
{{- if and $haproxy $threads }}
- name: RAY_SERVE_HAPROXY_NBTHREAD
  value: {{ $threads | int | quote }}
{{- end }}
{{- $retries := dig "http" "retries" 2 .Values.appConfig }}
{{- if and $haproxy $retries }}
- name: RAY_SERVE_HAPROXY_RETRY_ON
  value: "conn-failure empty-response junk-response 503\n    option http-buffer-request"
- name: RAY_SERVE_HAPROXY_RETRIES
  value: {{ $retries | int | quote }}
- name: RAY_SERVE_HAPROXY_TUNE_BUFSIZE
  value: {{ mul (dig "http" "retry_body_kib" 64 .Values.appConfig) 1024 | int | quote }}
{{- end }}
{{- $secret := include "qwen3-serving.secretName" . }}
{{- if $secret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.secrets.hfTokenKey }}
      optional: true
- name: QWEN3_SERVE_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.secrets.apiKeysKey }}
      optional: true
- name: QWEN3_SERVE_TENANTS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.secrets.tenantsKey }}
      optional: true
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "qwen3-serving.cacheVolume" -}}
- name: model-cache
{{- if eq .Values.modelCache.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ include "qwen3-serving.cacheClaimName" . }}
{{- else if eq .Values.modelCache.type "hostPath" }}
  hostPath:
    path: {{ .Values.modelCache.hostPath.path | quote }}
    type: {{ .Values.modelCache.hostPath.type }}
{{- else }}
  {{- $emptyDir := dict }}
  {{- with .Values.modelCache.emptyDir.medium }}{{ $_ := set $emptyDir "medium" . }}{{ end }}
  {{- with .Values.modelCache.emptyDir.sizeLimit }}{{ $_ := set $emptyDir "sizeLimit" . }}{{ end }}
  emptyDir: {{ toJson $emptyDir }}
{{- end }}
{{- end -}}

{{/*
One Ray node group: rayStartParams (every value quoted: the CRD wants strings) and the pod
template. Called with (dict "root" $ "group" $values "kind" "head"|"worker").
*/}}
{{- define "qwen3-serving.rayStartParams" -}}
{{- range $key, $value := . }}
{{- $text := toString $value }}
{{- /* YAML numbers arrive as floats: 10000000000 would print as 1e+10 */}}
{{- if and (kindIs "float64" $value) (eq (floor $value) $value) }}{{ $text = printf "%d" (int64 $value) }}{{ end }}
{{ $key }}: {{ $text | quote }}
{{- end }}
{{- end -}}

{{- define "qwen3-serving.podTemplate" -}}
{{- $root := .root -}}
{{- $group := .group -}}
{{- $head := eq .kind "head" -}}
metadata:
  labels:
    {{- include "qwen3-serving.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ ternary "ray-head" "ray-worker" $head }}
    {{- with $root.Values.commonLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $group.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $group.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "qwen3-serving.serviceAccountName" $root }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- with $group.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" $head }}
      image: {{ include "qwen3-serving.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      {{- with $root.Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      env:
        {{- include "qwen3-serving.env" $root | nindent 8 }}
        {{- with $group.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        {{- if $head }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        - {name: serve, containerPort: {{ include "qwen3-serving.servePort" $root }}}
        - {name: metrics, containerPort: 8080}
      {{- with $group.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      lifecycle:
        preStop:
          exec:
            command: ["/bin/sh", "-c", "ray stop"]
      volumeMounts:
        - name: model-cache
          mountPath: {{ $root.Values.modelCache.mountPath }}
        {{- if $group.shmSize }}
        - name: dshm
          mountPath: /dev/shm
        {{- end }}
        {{- with $root.Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- include "qwen3-serving.cacheVolume" $root | nindent 4 }}
    {{- if $group.shmSize }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $group.shmSize }}
    {{- end }}
    {{- with $root.Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/*
A RayCluster spec (RayService.spec.rayClusterConfig or RayJob.spec.rayClusterSpec).
Called with (dict "root" $ "head" $head "workerGroups" $groups "autoscaling" $autoscaling).
*/}}
{{- define "qwen3-serving.rayClusterSpec" -}}
{{- $root := .root -}}
rayVersion: {{ $root.Values.rayVersion | quote }}
enableInTreeAutoscaling: {{ .autoscaling.enabled }}
{{- if and .autoscaling.enabled .autoscaling.options }}
autoscalerOptions:
  {{- toYaml .autoscaling.options | nindent 2 }}
{{- end }}
headGroupSpec:
  {{- with .head.rayStartParams }}
  rayStartParams:
    {{- include "qwen3-serving.rayStartParams" . | trim | nindent 4 }}
  {{- end }}
  template:
    {{- include "qwen3-serving.podTemplate" (dict "root" $root "group" .head "kind" "head") | nindent 4 }}
{{- $groups := list }}
{{- range $name, $group := .workerGroups }}
{{- if $group.enabled }}
{{- $groups = append $groups $name }}
{{- end }}
{{- end }}
{{- if $groups }}
workerGroupSpecs:
{{- range $name := $groups }}
{{- $group := get $.workerGroups $name }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) }}
{{- fail (printf "worker group name %q must be a DNS-1123 label (lowercase letters, digits and '-')" $name) }}
{{- end }}
{{- if or (gt (int $group.minReplicas) (int $group.replicas)) (gt (int $group.replicas) (int $group.maxReplicas)) }}
{{- fail (printf "worker group %q: need minReplicas (%d) <= replicas (%d) <= maxReplicas (%d)" $name (int $group.minReplicas) (int $group.replicas) (int $group.maxReplicas)) }}
{{- end }}
  - groupName: {{ $name }}
    replicas: {{ $group.replicas }}
    minReplicas: {{ $group.minReplicas }}
    maxReplicas: {{ $group.maxReplicas }}
    {{- with $group.rayStartParams }}
    rayStartParams:
      {{- include "qwen3-serving.rayStartParams" . | trim | nindent 6 }}
    {{- end }}
    template:
      {{- include "qwen3-serving.podTemplate" (dict "root" $root "group" $group "kind" "worker") | nindent 6 }}
{{- end }}
{{- end }}
{{- end -}}
