{{/*
Names and labels: the objects' names (release, StatefulSet, PostgreSQL), the
app.kubernetes.io/* label sets and their selectors, the image, and the
StorageClass names. Every template starts here.
*/}}

{{/*
Names. Kubernetes object names are DNS labels (63 characters at most), and a
StatefulSet pod's name adds "-<ordinal>" and a controller-revision label to
its StatefulSet's name, so the bases are kept well short of that.
*/}}

{{- define "billing.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Base name: the release name when it already contains the chart name, so that
release "billing" gives the names the course uses (billing, billing-stateful,
billing-postgresql).
*/}}
{{- define "billing.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* StatefulSet and its headless Service share this name, as pod DNS names need. */}}
{{- define "billing.statefulName" -}}
{{- printf "%s-stateful" (include "billing.fullname" .) -}}
{{- end -}}

{{- define "billing.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "billing.fullname" .) -}}
{{- end -}}

{{- define "billing.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels on every object: the recommended app.kubernetes.io/* set plus the
user's commonLabels. They carry versions, so they are NEVER used as selectors
or in volumeClaimTemplates (both are immutable; see billing.selectorLabels).
*/}}
{{- define "billing.commonLabels" -}}
helm.sh/chart: {{ include "billing.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "billing.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Selector labels of the billing pods. Constant for the life of a release:
Deployment and StatefulSet selectors cannot be changed, and the labels of a
StatefulSet's volumeClaimTemplates cannot either. "app: billing" is the
course's short label (kubectl get pods -l app=billing).
*/}}
{{- define "billing.selectorLabels" -}}
app: {{ include "billing.name" . }}
app.kubernetes.io/name: {{ include "billing.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end -}}

{{- define "billing.labels" -}}
{{ include "billing.selectorLabels" . }}
{{ include "billing.commonLabels" . }}
app.kubernetes.io/version: {{ include "billing.imageTag" . | quote }}
{{- end -}}

{{/*
Selector labels of PostgreSQL. "app: postgres" is what the course's
`kubectl delete pod -l app=postgres` selects.
*/}}
{{- define "billing.postgresql.selectorLabels" -}}
app: postgres
app.kubernetes.io/name: postgresql
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: database
{{- end -}}

{{/*
PostgreSQL's labels carry PostgreSQL's version, not the chart's or the
service's: moving from task 1 to task 2 must not touch any PostgreSQL object.
*/}}
{{- define "billing.postgresql.labels" -}}
{{ include "billing.postgresql.selectorLabels" . }}
{{ include "billing.commonLabels" . }}
app.kubernetes.io/version: {{ .Values.postgresql.image.tag | quote }}
{{- end -}}

{{/* Labels of cluster-wide or shared objects (StorageClass, Secrets). */}}
{{- define "billing.sharedLabels" -}}
app.kubernetes.io/name: {{ include "billing.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "billing.commonLabels" . }}
{{- end -}}

{{/* Labels of the chart's own pods that may reach PostgreSQL besides billing (role setup, helm test). */}}
{{- define "billing.postgresql.clientLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
billing/postgresql-client: "true"
{{- end -}}

{{- define "billing.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{- define "billing.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "billing.imageTag" .) -}}
{{- end -}}

{{/*
Storage. The chart's StorageClass name, and the storageClassName a volume
uses: its own setting, else the chart's class, else none (the cluster default).
*/}}
{{- define "billing.storageClassName" -}}
{{- if .Values.storageClass.name -}}
{{- .Values.storageClass.name -}}
{{- else if .Values.storageClass.create -}}
{{- printf "%s-retain" (include "billing.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Usage: include "billing.volumeStorageClass" (list $ .Values.x.persistence); "" = cluster default */}}
{{- define "billing.volumeStorageClass" -}}
{{- $root := index . 0 -}}
{{- $persistence := index . 1 -}}
{{- $persistence.storageClassName | default (include "billing.storageClassName" $root) -}}
{{- end -}}
