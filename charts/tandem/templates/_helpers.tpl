{{/* Names and labels shared by every manifest. */}}
{{- define "tandem.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tandem.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "cloud-worker"). */}}
{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tandem.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Environment every program reads. */}}
{{- define "tandem.commonEnv" -}}
- name: TANDEM_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: TANDEM_CACHE_DIR
  value: /cache
{{- end -}}

{{/* The container's writable places (the root filesystem is read-only) and the model volume. */}}
{{- define "tandem.volumeMounts" -}}
- name: cache
  mountPath: /cache
- name: tmp
  mountPath: /tmp
{{- if .Values.model.volume }}
- name: models
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "tandem.volumes" -}}
- name: cache
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- if .Values.model.volume }}
- name: models
{{ toYaml .Values.model.volume | indent 2 }}
{{- end }}
{{- end -}}

{{- define "tandem.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tandem.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/*
NATS credential and TLS of one program, from Secrets mounted as files (never values):
call with (dict "root" $ "prefix" "TANDEM_WORKER" "role" "cloudWorker").
*/}}
{{- define "tandem.natsEnv" -}}
{{- $credential := index .root.Values.nats.credentials .role -}}
{{- $tls := .root.Values.nats.tls -}}
{{- if $credential.secretName }}
- name: {{ .prefix }}_{{ ternary "NATS_CREDS" "NATS_NKEY_SEED" (eq $credential.type "creds") }}
  value: {{ printf "/etc/tandem/nats/credentials/%s" $credential.key | quote }}
{{- end }}
{{- if $tls.caSecret }}
- name: {{ .prefix }}_NATS_TLS_CA
  value: /etc/tandem/nats/ca/ca.crt
{{- end }}
{{- if $tls.clientCertSecret }}
- name: {{ .prefix }}_NATS_TLS_CERT
  value: /etc/tandem/nats/client/tls.crt
- name: {{ .prefix }}_NATS_TLS_KEY
  value: /etc/tandem/nats/client/tls.key
{{- end }}
{{- end -}}

{{- define "tandem.natsVolumeMounts" -}}
{{- if (index .root.Values.nats.credentials .role).secretName }}
- name: nats-credentials
  mountPath: /etc/tandem/nats/credentials
  readOnly: true
{{- end }}
{{- if .root.Values.nats.tls.caSecret }}
- name: nats-ca
  mountPath: /etc/tandem/nats/ca
  readOnly: true
{{- end }}
{{- if .root.Values.nats.tls.clientCertSecret }}
- name: nats-client-tls
  mountPath: /etc/tandem/nats/client
  readOnly: true
{{- end }}
{{- end -}}

{{- define "tandem.natsVolumes" -}}
{{- $credential := index .root.Values.nats.credentials .role -}}
{{- $tls := .root.Values.nats.tls -}}
{{- if $credential.secretName }}
# The whole Secret: its key may name each pod's own credential ($(POD_NAME)).
- name: nats-credentials
  secret:
    secretName: {{ $credential.secretName }}
    # 0400
    defaultMode: 256
{{- end }}
{{- if $tls.caSecret }}
- name: nats-ca
  secret:
    secretName: {{ $tls.caSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if $tls.clientCertSecret }}
- name: nats-client-tls
  secret:
    secretName: {{ $tls.clientCertSecret }}
    # 0400
    defaultMode: 256
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end -}}

{{/*
Metrics (values metrics.*): a pod's Prometheus scrape annotations, its container port
named `metrics`, and the program's metricsAddress on the pod's address. Call the last
with (dict "root" $ "prefix" "TANDEM_WORKER").
*/}}
{{- define "tandem.metricsAnnotations" -}}
{{- if .Values.metrics.enabled }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{- define "tandem.metricsPort" -}}
{{- if .Values.metrics.enabled }}
- name: metrics
  containerPort: {{ .Values.metrics.port }}
  protocol: TCP
{{- end }}
{{- end -}}

{{- define "tandem.metricsEnv" -}}
{{- if .root.Values.metrics.enabled }}
- name: {{ .prefix }}_METRICS_ADDRESS
  value: {{ printf "0.0.0.0:%v" .root.Values.metrics.port | quote }}
{{- end }}
{{- end -}}

{{/* The metrics port's NetworkPolicy ingress rule: from metrics.scrapeFrom (empty: anyone). */}}
{{- define "tandem.metricsIngress" -}}
{{- if .Values.metrics.enabled }}
- ports:
    - port: {{ .Values.metrics.port }}
      protocol: TCP
  {{- with .Values.metrics.scrapeFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
Tracing (values tracing.*): the environment that turns a program's OpenTelemetry SDK on and
says where its spans go. Call with (dict "root" $ "service" "tandem-cloud-worker").
*/}}
{{- define "tandem.tracingEnv" -}}
{{- if .root.Values.tracing.enabled }}
- name: TANDEM_TRACING
  value: "1"
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .root.Values.tracing.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .root.Values.tracing.sampleRatio | quote }}
{{- with .root.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}
