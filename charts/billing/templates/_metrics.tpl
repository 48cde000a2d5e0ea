{{/*
Metrics helpers: the pods' prometheus.io/* annotations, Prometheus durations,
and the label that marks the Service a ServiceMonitor scrapes.
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
