{{/* Chart name, overridable. */}}
{{- define "gitfleet-hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "gitfleet-hub.fullname" -}}
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

{{- define "gitfleet-hub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gitfleet-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gitfleet-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end }}

{{- define "gitfleet-hub.labels" -}}
helm.sh/chart: {{ include "gitfleet-hub.chart" . }}
{{ include "gitfleet-hub.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gitfleet
{{- end }}

{{- define "gitfleet-hub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gitfleet-hub.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gitfleet-hub.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Secret holding the webhook secret: the user's, or the one the chart creates. Empty: none. */}}
{{- define "gitfleet-hub.webhookSecretName" -}}
{{- if .Values.hub.webhookSecret.existingSecret }}
{{- .Values.hub.webhookSecret.existingSecret }}
{{- else if .Values.hub.webhookSecret.value }}
{{- printf "%s-webhook" (include "gitfleet-hub.fullname" .) }}
{{- end }}
{{- end }}

{{/* In-cluster DNS name of the Service, fully qualified. */}}
{{- define "gitfleet-hub.serviceFQDN" -}}
{{- printf "%s.%s.svc.%s" (include "gitfleet-hub.fullname" .) .Release.Namespace .Values.hub.clusterDomain }}
{{- end }}

{{/* Names for the server certificate: the Service's DNS names, externalHost and the extras. */}}
{{- define "gitfleet-hub.serverNames" -}}
{{- $svc := include "gitfleet-hub.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (include "gitfleet-hub.serviceFQDN" .) }}
{{- with .Values.hub.externalHost }}
{{- $names = append $names . }}
{{- end }}
{{- $names = concat $names .Values.hub.serverNames | uniq }}
{{- join "," $names }}
{{- end }}

{{/* The URL written into the admin credential. */}}
{{- define "gitfleet-hub.advertiseUrl" -}}
{{- if .Values.hub.advertiseUrl }}
{{- .Values.hub.advertiseUrl }}
{{- else if .Values.hub.externalHost }}
{{- $port := ternary .Values.externalService.port .Values.service.grpcPort .Values.externalService.enabled }}
{{- printf "https://%s:%v" .Values.hub.externalHost $port }}
{{- else }}
{{- printf "https://%s:%v" (include "gitfleet-hub.serviceFQDN" .) .Values.service.grpcPort }}
{{- end }}
{{- end }}
