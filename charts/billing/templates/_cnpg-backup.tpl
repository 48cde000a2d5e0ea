{{/*
CloudNativePG mode's backups and point-in-time recovery
(database.cnpg.backup, database.cnpg.recovery): continuous WAL archiving and
scheduled base backups to an S3-compatible object store, and a Cluster that
bootstraps from them. Either through the Barman Cloud plugin (method plugin:
an ObjectStore per object store, named in the Cluster's spec.plugins and
externalClusters) or through the operator's in-tree barmanObjectStore
(method barmanObjectStore, deprecated, removed in CloudNativePG 1.32).
*/}}

{{/* The plugin's name, as the Barman Cloud plugin registers itself with the operator. */}}
{{- define "billing.cnpg.barmanPlugin" -}}
barman-cloud.cloudnative-pg.io
{{- end -}}

{{/* True ("true") when the chart renders anything of the Barman Cloud plugin's. */}}
{{- define "billing.cnpg.usesPlugin" -}}
{{- $c := .Values.database.cnpg -}}
{{- if and $c.enabled (or $c.backup.enabled $c.recovery.enabled) (eq $c.backup.method "plugin") -}}
true
{{- end -}}
{{- end -}}

{{/* This Cluster's folder under backup.destinationPath: backup.serverName, else the Cluster's name. */}}
{{- define "billing.cnpg.backup.serverName" -}}
{{- .Values.database.cnpg.backup.serverName | default (include "billing.cnpg.clusterName" .) -}}
{{- end -}}

{{/* The ObjectStore the Cluster archives to (method plugin). */}}
{{- define "billing.cnpg.backup.objectStoreName" -}}
{{- printf "%s-backup" (include "billing.cnpg.clusterName" .) -}}
{{- end -}}

{{/* The ObjectStore the Cluster recovers from (method plugin). */}}
{{- define "billing.cnpg.recovery.objectStoreName" -}}
{{- printf "%s-recovery" (include "billing.cnpg.clusterName" .) -}}
{{- end -}}

{{/* The externalClusters entry that recovery's bootstrap reads from. */}}
{{- define "billing.cnpg.recovery.sourceName" -}}
recovery-source
{{- end -}}

{{/*
The object store that recovery reads: recovery's own destinationPath with its
endpoint, CA and credentials, or, when that is empty, backup's. As a dict
with CloudNativePG's keys.
*/}}
{{- define "billing.cnpg.recovery.store" -}}
{{- $c := .Values.database.cnpg -}}
{{- $from := ternary $c.recovery $c.backup (ne $c.recovery.destinationPath "") -}}
{{- toYaml (dict "destinationPath" $from.destinationPath "endpointURL" $from.endpointURL "endpointCA" $from.endpointCA "s3Credentials" $from.s3Credentials) -}}
{{- end -}}

{{/*
A BarmanObjectStoreConfiguration (CloudNativePG's barmanObjectStore, and the
plugin's ObjectStore spec.configuration) from a dict holding destinationPath,
endpointURL, endpointCA, s3Credentials and optionally serverName, wal
(compression and maxParallel) and data (compression and the base backups'
immediateCheckpoint), for the store that is written to. maxParallel is
rendered only above 1, CloudNativePG's own default when it is unset.
*/}}
{{- define "billing.cnpg.barmanObjectStore" -}}
destinationPath: {{ .destinationPath | quote }}
{{- with .endpointURL }}
endpointURL: {{ . | quote }}
{{- end }}
{{- with .serverName }}
serverName: {{ . | quote }}
{{- end }}
{{- if .endpointCA.name }}
endpointCA:
  name: {{ .endpointCA.name | quote }}
  key: {{ .endpointCA.key | quote }}
{{- end }}
s3Credentials:
  accessKeyId:
    name: {{ .s3Credentials.accessKeyId.name | quote }}
    key: {{ .s3Credentials.accessKeyId.key | quote }}
  secretAccessKey:
    name: {{ .s3Credentials.secretAccessKey.name | quote }}
    key: {{ .s3Credentials.secretAccessKey.key | quote }}
{{- with .wal }}
{{- $parallel := int (.maxParallel | default 1) }}
{{- if or .compression (gt $parallel 1) }}
wal:
  {{- with .compression }}
  compression: {{ . }}
  {{- end }}
  {{- if gt $parallel 1 }}
  maxParallel: {{ $parallel }}
  {{- end }}
{{- end }}
{{- end }}
{{- with .data }}
{{- if or .compression .immediateCheckpoint }}
data:
  {{- with .compression }}
  compression: {{ . }}
  {{- end }}
  {{- if .immediateCheckpoint }}
  immediateCheckpoint: true
  {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Refuses backup and recovery settings that cannot work, naming the values to
change. The schema refuses each value alone (and these same omissions); the
templates refuse them again for --skip-schema-validation, and refuse the
combinations.
*/}}
{{- define "billing.cnpg.backup.check" -}}
{{- $c := .Values.database.cnpg -}}
{{- $b := $c.backup -}}
{{- $r := $c.recovery -}}
{{- if $b.enabled -}}
{{- if not $b.destinationPath -}}
{{- fail "\n\ndatabase.cnpg.backup.enabled is true, so database.cnpg.backup.destinationPath is required: the bucket and path the backups go to, s3://<bucket>/<path>.\n" -}}
{{- end -}}
{{- if or (not $b.s3Credentials.accessKeyId.name) (not $b.s3Credentials.secretAccessKey.name) -}}
{{- fail "\n\ndatabase.cnpg.backup.enabled is true, so database.cnpg.backup.s3Credentials.accessKeyId.name and database.cnpg.backup.s3Credentials.secretAccessKey.name are required: the Secret(s) holding the object store's access key pair.\n" -}}
{{- end -}}
{{- end -}}
{{- if $r.enabled -}}
{{- if not $r.serverName -}}
{{- fail "\n\ndatabase.cnpg.recovery.enabled is true, so database.cnpg.recovery.serverName is required: the serverName (folder under destinationPath) of the Cluster whose backups are restored, usually its clusterName.\n" -}}
{{- end -}}
{{- if $c.import.enabled -}}
{{- fail "\n\ndatabase.cnpg.recovery.enabled and database.cnpg.import.enabled are both true: a Cluster is bootstrapped once, from a backup or by an import.\nSet one of them to false.\n" -}}
{{- end -}}
{{- $store := include "billing.cnpg.recovery.store" . | fromYaml -}}
{{- if not $store.destinationPath -}}
{{- fail "\n\ndatabase.cnpg.recovery.enabled is true, but neither database.cnpg.recovery.destinationPath nor database.cnpg.backup.destinationPath is set: recovery needs the object store holding the backups.\n" -}}
{{- end -}}
{{- if or (not $store.s3Credentials.accessKeyId.name) (not $store.s3Credentials.secretAccessKey.name) -}}
{{- $which := ternary "recovery" "backup" (ne $r.destinationPath "") -}}
{{- fail (printf "\n\ndatabase.cnpg.recovery.enabled is true, so database.cnpg.%s.s3Credentials.accessKeyId.name and database.cnpg.%s.s3Credentials.secretAccessKey.name are required: the Secret(s) holding the access key pair of the object store that recovery reads.\n" $which $which) -}}
{{- end -}}
{{- if and $b.enabled (eq $store.destinationPath $b.destinationPath) (eq $r.serverName (include "billing.cnpg.backup.serverName" .)) -}}
{{- fail (printf "\n\nThe recovered Cluster would archive its WAL into the backups it recovers from (%s/%s), which CloudNativePG refuses (its archive must start empty).\nSet database.cnpg.backup.serverName to a new folder (e.g. %s-2), or give the new Cluster another database.cnpg.clusterName.\n" $b.destinationPath $r.serverName $r.serverName) -}}
{{- end -}}
{{- end -}}
{{- end -}}
