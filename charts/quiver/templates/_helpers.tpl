{{/* The chart's name, or nameOverride. */}}
{{- define "quiver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: fullnameOverride, else release + chart name (once). */}}
{{- define "quiver.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "quiver.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "quiver.operator.fullname" -}}
{{- printf "%s-operator" (include "quiver.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "quiver.agent.fullname" -}}
{{- printf "%s-agent" (include "quiver.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "quiver.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "quiver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component ("operator" or "agent"); pass (list . "operator"). */}}
{{- define "quiver.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "quiver.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "quiver.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/* The Secret holding the operator's Iroh key. */}}
{{- define "quiver.operator.irohSecret" -}}
{{- default (printf "%s-iroh" (include "quiver.operator.fullname" .)) .Values.operator.iroh.existingSecret -}}
{{- end -}}

{{/*
Namespace the operator's Lease and CA Secret live in. quiver-operator fixes it
(operator/src/operator.rs, operator/src/pki.rs); the chart only names it once.
*/}}
{{- define "quiver.operator.coordinationNamespace" -}}default{{- end -}}
