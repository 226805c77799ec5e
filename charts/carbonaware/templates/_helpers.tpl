{{/* The full name of the operator's objects: <release>-operator, at most 63 characters. */}}
{{- define "carbonaware.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "carbonaware.serviceAccountName" -}}
{{- default (include "carbonaware.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "carbonaware.providerSecretName" -}}
{{- default (printf "%s-provider-tokens" (include "carbonaware.fullname" .)) .Values.providerSecrets.existingSecret -}}
{{- end -}}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "carbonaware.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The full app.kubernetes.io set. Call with (dict "ctx" . "component" "operator"). */}}
{{- define "carbonaware.labels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: carbonaware
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}
