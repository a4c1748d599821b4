{{/* Common labels; pass a dict with "ctx" (the root) and "component". */}}
{{- define "regsandbox.labels" -}}
app.kubernetes.io/name: regsandbox
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: regsandbox
app.kubernetes.io/component: {{ .component }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component. */}}
{{- define "regsandbox.selector" -}}
app.kubernetes.io/name: regsandbox
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "regsandbox.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Pod security context: non-root, default seccomp. */}}
{{- define "regsandbox.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security context: read-only root, no privileges, no capabilities. */}}
{{- define "regsandbox.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "regsandbox.auditUrl" -}}
http://{{ .Release.Name }}-audit.{{ .Release.Namespace }}.svc:8080
{{- end -}}

{{/* URL of the OPA server when policyEngine is opa: the sidecar or operator.opaUrl, never
nothing (the operator would then deny every request, failing closed, with no server). */}}
{{- define "regsandbox.opaUrl" -}}
{{- $op := .Values.operator -}}
{{- if and $op.opaSidecar.enabled $op.opaUrl -}}
{{- fail "operator.opaUrl and operator.opaSidecar.enabled=true exclude each other: the sidecar serves on http://127.0.0.1:8181; set only one" -}}
{{- else if $op.opaSidecar.enabled -}}
http://127.0.0.1:8181
{{- else if $op.opaUrl -}}
{{ $op.opaUrl }}
{{- else -}}
{{- fail "operator.policyEngine=opa needs an OPA server: set operator.opaSidecar.enabled=true, or operator.opaUrl to an OPA server you run" -}}
{{- end -}}
{{- end -}}

{{/* REGSANDBOX_EXPORT_OUTBOX (JSON of sandbox.exports.outbox.OutboxSettings) from
.Values.operator.exportOutbox; credentials are never part of it (see credentialsSecret). */}}
{{- define "regsandbox.exportOutbox" -}}
{{- $outbox := dict "bucket" .bucket "region" .region "destinations" (.destinations | default dict) -}}
{{- with .endpoint }}{{ $_ := set $outbox "endpoint" . }}{{ end -}}
{{- toJson $outbox -}}
{{- end -}}

{{/* The Secret of the gateway's STS sealing keys: the user's, or the one the operator
creates once (never rendered here, so the manifests stay the same on every render). */}}
{{- define "regsandbox.stsKeySecret" -}}
{{- .Values.gateway.s3.stsKeySecret | default (printf "%s-gateway-sts" .Release.Name) -}}
{{- end -}}
