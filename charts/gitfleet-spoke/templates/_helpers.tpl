{{/* Chart name, overridable. */}}
{{- define "gitfleet-spoke.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "gitfleet-spoke.fullname" -}}
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

{{- define "gitfleet-spoke.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gitfleet-spoke.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gitfleet-spoke.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: spoke
{{- end }}

{{- define "gitfleet-spoke.labels" -}}
helm.sh/chart: {{ include "gitfleet-spoke.chart" . }}
{{ include "gitfleet-spoke.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gitfleet
{{- end }}

{{- define "gitfleet-spoke.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gitfleet-spoke.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gitfleet-spoke.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Secret with the bootstrap token: the user's, or the one the chart creates. Empty: none. */}}
{{- define "gitfleet-spoke.tokenSecretName" -}}
{{- if .Values.bootstrapToken.existingSecret }}
{{- .Values.bootstrapToken.existingSecret }}
{{- else if .Values.bootstrapToken.value }}
{{- printf "%s-bootstrap-token" (include "gitfleet-spoke.fullname" .) }}
{{- end }}
{{- end }}

{{/* ConfigMap with the hub CA: the user's, or the one the chart creates. Empty: none. */}}
{{- define "gitfleet-spoke.caConfigMapName" -}}
{{- if .Values.hub.ca.existingConfigMap }}
{{- .Values.hub.ca.existingConfigMap }}
{{- else if .Values.hub.ca.pem }}
{{- printf "%s-hub-ca" (include "gitfleet-spoke.fullname" .) }}
{{- end }}
{{- end }}

{{/* The values without which the spoke cannot run, checked where the schema cannot say why. */}}
{{- define "gitfleet-spoke.validate" -}}
{{- if not .Values.hub.address }}
{{- fail "hub.address is required: the hub's gRPC URL, e.g. --set hub.address=https://hub.example.com:7443" }}
{{- end }}
{{- if not .Values.cluster.name }}
{{- fail "cluster.name is required: this cluster's name in the fleet, e.g. --set cluster.name=prod-eu-1" }}
{{- end }}
{{- if .Values.rbac.namespaces }}
{{- range .Values.rbac.rules }}
{{- if .nonResourceURLs }}
{{- fail "rbac.rules: nonResourceURLs cannot go into a namespaced Role; with rbac.namespaces set, put them in rbac.clusterRules" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* cluster.labels as `k=v,k=v` (sorted by key) for GITFLEET_LABELS. */}}
{{- define "gitfleet-spoke.labelList" -}}
{{- $pairs := list }}
{{- range $key, $value := . }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}
