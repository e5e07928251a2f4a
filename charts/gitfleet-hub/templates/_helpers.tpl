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

{{/* Refusals of value combinations the schema cannot express (or not clearly): each names the
values at fault and what to do. Included by the StatefulSet, so every render checks them. */}}
{{- define "gitfleet-hub.validate" -}}
{{- $replicas := int .Values.replicas }}
{{- if gt $replicas 1 }}
{{- if ne .Values.hub.store "etcd" }}
{{- fail (printf "replicas is %d but hub.store is %s: several replicas need hub.store etcd (a sled store belongs to one process)" $replicas .Values.hub.store) }}
{{- end }}
{{- if not .Values.pki.existingSecret }}
{{- fail (printf "replicas is %d but pki.existingSecret is empty: several replicas need one PKI from a Secret (gitfleet-hub init --data-dir DIR, then kubectl create secret generic NAME --from-file=DIR/pki; see the chart README)" $replicas) }}
{{- end }}
{{- if .Values.persistence.existingClaim }}
{{- fail (printf "replicas is %d but persistence.existingClaim is set: each replica needs a data volume of its own; leave it empty for a claim per replica" $replicas) }}
{{- end }}
{{- end }}
{{- if .Values.etcd.embedded.enabled }}
{{- if ne .Values.hub.store "etcd" }}
{{- fail (printf "etcd.embedded.enabled needs hub.store etcd, not %s" .Values.hub.store) }}
{{- end }}
{{- if .Values.hub.etcd.endpoints }}
{{- fail "hub.etcd.endpoints must be empty with etcd.embedded.enabled: the chart points the hub at the embedded members" }}
{{- end }}
{{- if .Values.hub.etcd.tls.existingSecret }}
{{- fail "hub.etcd.tls.existingSecret cannot be used with etcd.embedded.enabled: the embedded etcd speaks plain http" }}
{{- end }}
{{- else if and (eq .Values.hub.store "etcd") (not .Values.hub.etcd.endpoints) }}
{{- fail "hub.etcd.endpoints is required with hub.store etcd (or etcd.embedded.enabled, for trying it out)" }}
{{- end }}
{{- end }}

{{/* The embedded etcd's name, kept short enough for its pods' names and labels. */}}
{{- define "gitfleet-hub.etcdName" -}}
{{- printf "%s-etcd" (include "gitfleet-hub.fullname" . | trunc 47 | trimSuffix "-") }}
{{- end }}

{{- define "gitfleet-hub.etcdSelectorLabels" -}}
app.kubernetes.io/name: {{ include "gitfleet-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: etcd
{{- end }}

{{- define "gitfleet-hub.etcdLabels" -}}
helm.sh/chart: {{ include "gitfleet-hub.chart" . }}
{{ include "gitfleet-hub.etcdSelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.etcd.embedded.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gitfleet
{{- end }}

{{/* The embedded etcd's members, comma-separated, as http URLs on `port`. */}}
{{- define "gitfleet-hub.etcdMemberUrls" -}}
{{- $name := include "gitfleet-hub.etcdName" .root }}
{{- $urls := list }}
{{- range $i := until 3 }}
{{- $urls = append $urls (printf "http://%s-%d.%s.%s.svc.%s:%d" $name $i $name $.root.Release.Namespace $.root.Values.hub.clusterDomain (int $.port)) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{/* The hub's --etcd-endpoints: the embedded members, or hub.etcd.endpoints. */}}
{{- define "gitfleet-hub.etcdEndpoints" -}}
{{- if .Values.etcd.embedded.enabled }}
{{- include "gitfleet-hub.etcdMemberUrls" (dict "root" . "port" 2379) }}
{{- else }}
{{- join "," .Values.hub.etcd.endpoints }}
{{- end }}
{{- end }}

{{/* The pod's affinity: `affinity`, plus the replicas' anti-affinity (podAntiAffinity) when there
are several and `affinity` sets none of its own. */}}
{{- define "gitfleet-hub.affinity" -}}
{{- $affinity := deepCopy .Values.affinity }}
{{- if and (gt (int .Values.replicas) 1) (ne .Values.podAntiAffinity.type "none") (not (hasKey $affinity "podAntiAffinity")) }}
{{- $term := dict "labelSelector" (dict "matchLabels" (include "gitfleet-hub.selectorLabels" . | fromYaml)) "topologyKey" .Values.podAntiAffinity.topologyKey }}
{{- if eq .Values.podAntiAffinity.type "hard" }}
{{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
{{- else }}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
{{- end }}
{{- end }}
{{- with $affinity }}
{{- toYaml . }}
{{- end }}
{{- end }}
