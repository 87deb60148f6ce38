{{/* Chart name, truncated to 63 characters. */}}
{{- define "drehscheibe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release and chart, unless overridden. */}}
{{- define "drehscheibe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "drehscheibe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "drehscheibe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "drehscheibe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "drehscheibe.labels" -}}
helm.sh/chart: {{ include "drehscheibe.chart" . }}
{{ include "drehscheibe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: node
drehscheibe.ch/node-id: {{ .Values.node.id | quote }}
{{- end -}}

{{- define "drehscheibe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "drehscheibe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "drehscheibe.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* A Kubernetes-safe volume name for a participant ID ("1-1061-1" -> "p-1-1061-1", "T1-X-1" -> "p-t1-x-1"). */}}
{{- define "drehscheibe.participantVolume" -}}
{{- printf "p-%s" (lower .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Checks that stop a render with a message naming the value. */}}
{{- define "drehscheibe.validate" -}}
{{- if not .Values.node.id -}}
{{- fail "node.id is required (the CN of the node's TLS certificate)" -}}
{{- end -}}
{{- if not .Values.tls.existingSecret -}}
{{- fail "tls.existingSecret is required (a Secret with tls.crt, tls.key and ca.crt)" -}}
{{- end -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) (float64 .Values.delivery.shutdownSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than delivery.shutdownSeconds (%v)" .Values.terminationGracePeriodSeconds .Values.delivery.shutdownSeconds) -}}
{{- end -}}
{{- $backend := include "drehscheibe.storeBackend" . -}}
{{- if and (gt (int .Values.replicaCount) 1) (ne $backend "postgresql") -}}
{{- fail "replicaCount > 1 needs store.backend postgresql: the SQLite store allows one node process per store directory" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.persistence.existingSharedClaim) -}}
{{- fail "replicaCount > 1 needs persistence.existingSharedClaim: every replica must see the payload blobs at the same path (a ReadWriteMany claim)" -}}
{{- end -}}
{{- if and .Values.persistence.existingSharedClaim (ne $backend "postgresql") -}}
{{- fail "persistence.existingSharedClaim needs store.backend postgresql: a SQLite store does not belong on a shared filesystem" -}}
{{- end -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- range .Values.participants -}}
{{- if .folder -}}
{{- fail (printf "participant %s: folder: true needs replicaCount 1 (the sedex folder interface runs on one process; its folders and receipt cursor are not shared between replicas)" .id) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq $backend "postgresql" -}}
{{- if not .Values.store.postgresql.dsn -}}
{{- fail "store.postgresql.dsn is required with store.backend postgresql" -}}
{{- end -}}
{{- if not .Values.store.postgresql.existingSecret -}}
{{- fail "store.postgresql.existingSecret is required with store.backend postgresql (the Secret with the database password)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The store backend: sqlite (default) or postgresql. */}}
{{- define "drehscheibe.storeBackend" -}}
{{- (.Values.store).backend | default "sqlite" -}}
{{- end -}}
