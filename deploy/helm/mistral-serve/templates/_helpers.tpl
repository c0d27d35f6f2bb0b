{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "mistral-serve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name if it already contains the chart name. */}}
{{- define "mistral-serve.fullname" -}}
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

{{- define "mistral-serve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release. */}}
{{- define "mistral-serve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mistral-serve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mistral-serve.labels" -}}
helm.sh/chart: {{ include "mistral-serve.chart" . }}
{{ include "mistral-serve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Where the optional settings file is mounted. */}}
{{- define "mistral-serve.configPath" -}}
/etc/mistral-serve/config/config.yaml
{{- end }}

{{/* Where stored responses live (values: responses), as the server's environment variables. */}}
{{- define "mistral-serve.responsesEnv" -}}
{{- if .Values.responses.storeSecret.name }}
- name: MSERVE_RESPONSES_STORE
  valueFrom:
    secretKeyRef:
      name: {{ .Values.responses.storeSecret.name }}
      key: {{ .Values.responses.storeSecret.key }}
{{- else if .Values.responses.store }}
- name: MSERVE_RESPONSES_STORE
  value: {{ .Values.responses.store | quote }}
{{- end }}
{{- if .Values.responses.ttl }}
- name: MSERVE_RESPONSES_TTL
  value: {{ .Values.responses.ttl | int | quote }}
{{- end }}
{{- if .Values.responses.maxRows }}
- name: MSERVE_RESPONSES_MAX_ROWS
  value: {{ .Values.responses.maxRows | int | quote }}
{{- end }}
{{- if .Values.responses.maxBytes }}
- name: MSERVE_RESPONSES_MAX_BYTES
  value: {{ .Values.responses.maxBytes | int64 | quote }}
{{- end }}
{{- if .Values.responses.maxRowsPerKey }}
- name: MSERVE_RESPONSES_MAX_ROWS_PER_KEY
  value: {{ .Values.responses.maxRowsPerKey | int64 | quote }}
{{- end }}
{{- if .Values.responses.maxBytesPerKey }}
- name: MSERVE_RESPONSES_MAX_BYTES_PER_KEY
  value: {{ .Values.responses.maxBytesPerKey | int64 | quote }}
{{- end }}
{{- if .Values.responses.maxRecordBytes }}
- name: MSERVE_RESPONSES_MAX_RECORD_BYTES
  value: {{ .Values.responses.maxRecordBytes | int64 | quote }}
{{- end }}
{{- if .Values.responses.maxChainDepth }}
- name: MSERVE_RESPONSES_MAX_CHAIN_DEPTH
  value: {{ .Values.responses.maxChainDepth | int64 | quote }}
{{- end }}
{{- if .Values.responses.maxChainBytes }}
- name: MSERVE_RESPONSES_MAX_CHAIN_BYTES
  value: {{ .Values.responses.maxChainBytes | int64 | quote }}
{{- end }}
{{- end }}
