{{/*
CloudNativePG helpers (database.cnpg): the Cluster's name, image, labels and
import source. Its value checks are in _checks.tpl.
*/}}

{{/*
CloudNativePG mode (database.cnpg). The operator, not the chart, makes the
Cluster's pods, volumes, Services and Secrets; the chart names them from the
Cluster's name.
*/}}
{{- define "billing.cnpg.clusterName" -}}
{{- .Values.database.cnpg.clusterName | default (printf "%s-db" (include "billing.fullname" .)) -}}
{{- end -}}

{{/*
The instances' image: database.cnpg.imageName, else the operator's default for
CloudNativePG 1.30 (values.yaml). Only the helm test pod needs the name (it
runs psql from it); the Cluster itself leaves an empty imageName to the
operator.
*/}}
{{- define "billing.cnpg.image" -}}
{{- .Values.database.cnpg.imageName | default "ghcr.io/cloudnative-pg/postgresql:18.4-system-trixie" -}}
{{- end -}}

{{/*
The Cluster's labels: the chart's shared set, as on its Secrets. Not the
bundled PostgreSQL's selector labels, which an operator configured to copy a
Cluster's labels to its pods would put under the bundled NetworkPolicy (the
operator must reach those pods' status port); and no app.kubernetes.io/version,
since the instances' PostgreSQL version is the operator's default or
imageName's, which the chart cannot read.
*/}}

{{- define "billing.cnpg.labels" -}}
{{ include "billing.sharedLabels" . }}
app.kubernetes.io/component: database
{{- end -}}

{{/* True ("true") while the Cluster imports from this release's bundled PostgreSQL. */}}
{{- define "billing.cnpg.importsBundled" -}}
{{- $c := .Values.database.cnpg -}}
{{- if and $c.enabled $c.import.enabled (eq $c.import.source "bundled") -}}
true
{{- end -}}
{{- end -}}

{{/*
The import's source as an externalClusters entry: the bundled PostgreSQL's
Service, as billing's role (the database's owner, which may pg_dump it),
without TLS (the bundled server has none); or import.external.
*/}}
{{- define "billing.cnpg.importSource" -}}
{{- $c := .Values.database.cnpg -}}
{{- $conn := dict -}}
{{- $password := dict -}}
{{- if eq $c.import.source "bundled" -}}
{{- $p := .Values.postgresql -}}
{{- $conn = dict "host" (include "billing.postgresql.fullname" .) "port" (toString (int $p.service.port)) "user" $p.auth.username "dbname" $p.auth.database "sslmode" "disable" -}}
{{- $password = dict "name" (include "billing.postgresql.secretName" .) "key" (include "billing.postgresql.secretKey" .) -}}
{{- else -}}
{{- $e := $c.import.external -}}
{{- $conn = dict "host" $e.host "port" (toString (int $e.port)) "user" $e.user "dbname" $e.database -}}
{{- with $e.sslmode -}}
{{- $_ := set $conn "sslmode" . -}}
{{- end -}}
{{- $password = dict "name" $e.passwordSecret.name "key" $e.passwordSecret.key -}}
{{- end -}}
{{- toYaml (dict "name" "import-source" "connectionParameters" $conn "password" $password) -}}
{{- end -}}
