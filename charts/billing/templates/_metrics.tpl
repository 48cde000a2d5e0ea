{{/*
Metrics helpers: the pods' prometheus.io/* annotations, Prometheus durations,
the label that marks the Service a ServiceMonitor scrapes, and what the
PrometheusRule's alerts select (job, claims, the bundled backup, runbook links).
*/}}

{{/*
Metrics. The billing pods' annotations: podAnnotations over the chart's
prometheus.io/* scrape annotations (metrics.scrapeAnnotations), so a key the
user sets wins. Printed as YAML ("{}" when there are none).
*/}}
{{- define "billing.podAnnotations" -}}
{{- $annotations := dict -}}
{{- if and .Values.metrics.enabled .Values.metrics.scrapeAnnotations -}}
{{- $_ := set $annotations "prometheus.io/scrape" "true" -}}
{{- $_ := set $annotations "prometheus.io/port" (toString (int .Values.config.port)) -}}
{{- $_ := set $annotations "prometheus.io/path" "/metrics" -}}
{{- end -}}
{{- merge (deepCopy (.Values.podAnnotations | default dict)) $annotations | toYaml -}}
{{- end -}}

{{/*
A Prometheus duration (1m30s, 500ms, 2h) in milliseconds; the schema has
already checked its form.
*/}}
{{- define "billing.durationMs" -}}
{{- $ms := 0 -}}
{{- $units := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000 "w" 604800000 "y" 31536000000 -}}
{{- range regexFindAll "[0-9]+(ms|[smhdwy])" . -1 -}}
{{- $unit := regexReplaceAll "^[0-9]+" . "" -}}
{{- $ms = add $ms (mul (regexReplaceAll "[a-z]+$" . "" | int64) (index $units $unit)) -}}
{{- end -}}
{{- $ms -}}
{{- end -}}

{{/*
The Service a ServiceMonitor scrapes through carries this label, so that the
ServiceMonitor selects exactly one Service and every pod is scraped once: in
StatefulSet mode the ClusterIP Service and the headless Service select the
same pods.
*/}}
{{- define "billing.metricsTargetLabel" -}}
billing/metrics-target: "true"
{{- end -}}

{{/*
PrometheusRule (metrics.prometheusRule). The job label of billing's scrape
targets: the value if set; else the ServiceMonitor's job, the name of the
Service it scrapes; else "kubernetes-pods", the usual annotation-based job.
*/}}
{{- define "billing.prometheusRule.job" -}}
{{- if .Values.metrics.prometheusRule.job -}}
{{- .Values.metrics.prometheusRule.job -}}
{{- else if .Values.metrics.serviceMonitor.enabled -}}
{{- ternary (include "billing.statefulName" .) (include "billing.fullname" .) (eq .Values.workload.kind "StatefulSet") -}}
{{- else -}}
kubernetes-pods
{{- end -}}
{{- end -}}

{{/* The label matchers of billing's own series: the release's namespace and the job. */}}
{{- define "billing.prometheusRule.selector" -}}
namespace={{ .Release.Namespace | quote }}, job={{ include "billing.prometheusRule.job" . | quote }}
{{- end -}}

{{/*
The claims of the release whose space the volume alerts watch, as one regex
of claim names ("" when there are none): the bundled PostgreSQL's, the
StatefulSet's log claims (task 2), the CloudNativePG instances' (data and
WAL), and the bundled backup's.
*/}}
{{- define "billing.prometheusRule.claims" -}}
{{- $claims := list -}}
{{- if .Values.postgresql.enabled -}}
{{- $claims = append $claims (.Values.postgresql.persistence.existingClaim | default (include "billing.postgresql.fullname" .)) -}}
{{- end -}}
{{- if and .Values.logs.enabled (eq .Values.workload.kind "StatefulSet") -}}
{{- $claims = append $claims (printf "log-%s-[0-9]+" (include "billing.statefulName" .)) -}}
{{- end -}}
{{- if .Values.database.cnpg.enabled -}}
{{- $claims = append $claims (printf "%s-[0-9]+(-wal)?" (include "billing.cnpg.clusterName" .)) -}}
{{- end -}}
{{- if include "billing.prometheusRule.bundledBackup" . -}}
{{- $claims = append $claims (include "billing.backup.claimName" .) -}}
{{- end -}}
{{- join "|" $claims -}}
{{- end -}}

{{/*
"true" when the bundled PostgreSQL's backup CronJob runs (backup.enabled,
bundled mode): billing.backup.fullname, writing to billing.backup.claimName
(_backup.tpl).
*/}}
{{- define "billing.prometheusRule.bundledBackup" -}}
{{- if and .Values.postgresql.enabled (not .Values.database.cnpg.enabled) .Values.backup.enabled -}}
true
{{- end -}}
{{- end -}}

{{/* Usage: include "billing.prometheusRule.runbook" (list $ "BillingDown") */}}
{{- define "billing.prometheusRule.runbook" -}}
{{- $root := index . 0 -}}
{{- printf "%s#%s" $root.Values.metrics.prometheusRule.runbookBaseUrl (index . 1 | lower) -}}
{{- end -}}

{{/* A Prometheus duration in whole seconds. */}}
{{- define "billing.prometheusRule.seconds" -}}
{{- div (include "billing.durationMs" . | int64) 1000 -}}
{{- end -}}
