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

{{/*
Database connection. DATABASE_URL never holds the password: the service reads
DATABASE_PASSWORD separately, straight from a Secret, so any character is fine
and nothing needs URL-encoding.
*/}}
{{- define "billing.databaseUrl" -}}
{{- if .Values.database.cnpg.enabled -}}
{{- include "billing.cnpg.check" . -}}
{{- /* The operator's server certificate names the short Service "<cluster>-rw" among its SANs, so verify-full works from the same namespace. */ -}}
{{- printf "postgres://%s@%s-rw:5432/%s?sslmode=verify-full" .Values.database.cnpg.owner (include "billing.cnpg.clusterName" .) .Values.database.cnpg.database -}}
{{- else if .Values.postgresql.enabled -}}
{{- printf "postgres://%s@%s:%d/%s" .Values.postgresql.auth.username (include "billing.postgresql.fullname" .) (int .Values.postgresql.service.port) .Values.postgresql.auth.database -}}
{{- else -}}
{{- $ext := .Values.externalDatabase -}}
{{- $url := "" -}}
{{- if and $ext.url $ext.host -}}
{{- fail "\n\nexternalDatabase.url and externalDatabase.host are both set: give the whole URL, or host, port, database, user and sslmode, not both.\n" -}}
{{- else if $ext.host -}}
{{- range $key := list "database" "user" -}}
{{- if not (index $ext $key) -}}
{{- fail (printf "\n\nexternalDatabase.host is set, so externalDatabase.%s is required too.\n" $key) -}}
{{- end -}}
{{- end -}}
{{- $url = printf "postgres://%s@%s:%d/%s" $ext.user $ext.host (int $ext.port) $ext.database -}}
{{- if $ext.sslmode -}}
{{- $url = printf "%s?sslmode=%s" $url $ext.sslmode -}}
{{- end -}}
{{- else if $ext.url -}}
{{- if $ext.sslmode -}}
{{- fail "\n\nexternalDatabase.sslmode goes with externalDatabase.host; with externalDatabase.url, put sslmode= in the URL.\n" -}}
{{- end -}}
{{- $url = $ext.url -}}
{{- else -}}
{{- fail "\n\npostgresql.enabled is false, so externalDatabase.host (with port, database, user) or externalDatabase.url is required (postgres://user@host:5432/db, without the password).\n" -}}
{{- end -}}
{{- /* The TLS settings billing would refuse at start are refused here first. */ -}}
{{- $mode := regexReplaceAll "^[?&]sslmode=" (regexFind "[?&]sslmode=[^&]*" $url) "" -}}
{{- $root := regexReplaceAll "^[?&]sslrootcert=" (regexFind "[?&]sslrootcert=[^&]*" $url) "" -}}
{{- $ca := include "billing.databaseCaSource" . -}}
{{- if and $mode (not (has $mode (list "disable" "allow" "prefer" "require" "verify-ca" "verify-full"))) -}}
{{- fail (printf "\n\nexternalDatabase.url asks for sslmode=%s, which billing does not know: use disable, allow, prefer, require, verify-ca or verify-full.\n" $mode) -}}
{{- end -}}
{{- if and (eq $root "system") $mode (ne $mode "verify-full") -}}
{{- fail (printf "\n\nexternalDatabase.url combines sslrootcert=system with sslmode=%s: the system's CAs vouch for any host, so billing accepts them only with sslmode=verify-full.\n" $mode) -}}
{{- end -}}
{{- if and $root $ca -}}
{{- fail "\n\nexternalDatabase.url names sslrootcert= and externalDatabase.caCert is set too: give the CA one way.\n" -}}
{{- end -}}
{{- if and (has $mode (list "verify-ca" "verify-full")) (not $root) (not $ca) -}}
{{- fail (printf "\n\nexternalDatabase asks for sslmode=%s, which needs the CA certificate that signed the server's.\nSet externalDatabase.caCert.secretName (or .configMapName) and .key to the CA's PEM file, or add sslrootcert=system to the URL (verify-full, for a certificate from a public CA, checked against the image's trusted CAs).\n" $mode) -}}
{{- end -}}
{{- $url -}}
{{- end -}}
{{- end -}}

{{/*
Where the database's CA certificate comes from: "secret", "configMap", or ""
for none. In CloudNativePG mode it is the operator's "<cluster>-ca" Secret;
for an external database, externalDatabase.caCert (both set is refused).
*/}}
{{- define "billing.databaseCaSource" -}}
{{- if .Values.database.cnpg.enabled -}}
secret
{{- else if not .Values.postgresql.enabled -}}
{{- $ca := .Values.externalDatabase.caCert -}}
{{- if and $ca.secretName $ca.configMapName -}}
{{- fail "\n\nexternalDatabase.caCert.secretName and .configMapName are both set: the CA comes from one of them.\n" -}}
{{- else if $ca.secretName -}}
secret
{{- else if $ca.configMapName -}}
configMap
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Secret or ConfigMap holding the CA certificate, and the key of its PEM file. */}}
{{- define "billing.databaseCaName" -}}
{{- if .Values.database.cnpg.enabled -}}
{{- printf "%s-ca" (include "billing.cnpg.clusterName" .) -}}
{{- else -}}
{{- .Values.externalDatabase.caCert.secretName | default .Values.externalDatabase.caCert.configMapName -}}
{{- end -}}
{{- end -}}

{{- define "billing.databaseCaKey" -}}
{{- ternary "ca.crt" .Values.externalDatabase.caCert.key .Values.database.cnpg.enabled -}}
{{- end -}}

{{/* The CA file's directory in the billing container. */}}
{{- define "billing.databaseCaDir" -}}/etc/billing/database-ca{{- end -}}

{{/*
Name of the Secret holding the database password ("" when there is none). In
CloudNativePG mode the operator makes "<cluster>-app" for the owner role.
*/}}
{{- define "billing.databaseSecretName" -}}
{{- if .Values.database.cnpg.enabled -}}
{{- printf "%s-app" (include "billing.cnpg.clusterName" .) -}}
{{- else if .Values.postgresql.enabled -}}
{{- include "billing.postgresql.secretName" . -}}
{{- else if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecret -}}
{{- else if .Values.externalDatabase.password -}}
{{- printf "%s-database" (include "billing.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "billing.databaseSecretKey" -}}
{{- if .Values.database.cnpg.enabled -}}
password
{{- else if .Values.postgresql.enabled -}}
{{- include "billing.postgresql.secretKey" . -}}
{{- else if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecretPasswordKey -}}
{{- else -}}
password
{{- end -}}
{{- end -}}

{{/*
The bundled PostgreSQL's Secret and key for billing's role, whichever mode
billing is in: the CloudNativePG import reads them too.
*/}}
{{- define "billing.postgresql.secretName" -}}
{{- .Values.postgresql.auth.existingSecret | default (include "billing.postgresql.fullname" .) -}}
{{- end -}}

{{- define "billing.postgresql.secretKey" -}}
{{- ternary .Values.postgresql.auth.existingSecretPasswordKey "password" (ne .Values.postgresql.auth.existingSecret "") -}}
{{- end -}}

{{/*
The bundled PostgreSQL's password: the value if set; else the one already in
the release's Secret (so an upgrade never changes it); else a new random one.
lookup returns nothing under `helm template` and client-side --dry-run, which
therefore show a fresh random password: only a real install/upgrade reads the
cluster.
*/}}
{{- define "billing.postgresql.password" -}}
{{- if .Values.postgresql.auth.password -}}
{{- .Values.postgresql.auth.password -}}
{{- else -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "billing.postgresql.fullname" .) -}}
{{- if and $secret $secret.data (hasKey $secret.data "password") -}}
{{- index $secret.data "password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The bootstrap superuser's password and Secret. billing never mounts this
Secret: only the PostgreSQL pod (initdb) and the role-setup Job do.
*/}}
{{- define "billing.postgresql.superuserSecretName" -}}
{{- .Values.postgresql.auth.superuser.existingSecret | default (printf "%s-superuser" (include "billing.postgresql.fullname" .)) -}}
{{- end -}}

{{- define "billing.postgresql.superuserSecretKey" -}}
{{- ternary .Values.postgresql.auth.superuser.existingSecretPasswordKey "password" (ne .Values.postgresql.auth.superuser.existingSecret "") -}}
{{- end -}}

{{- define "billing.postgresql.superuserPassword" -}}
{{- if .Values.postgresql.auth.superuser.password -}}
{{- .Values.postgresql.auth.superuser.password -}}
{{- else -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (printf "%s-superuser" (include "billing.postgresql.fullname" .)) -}}
{{- if and $secret $secret.data (hasKey $secret.data "password") -}}
{{- index $secret.data "password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Refuses role settings that cannot work. */}}
{{- define "billing.postgresql.checkRoles" -}}
{{- if eq .Values.postgresql.auth.username .Values.postgresql.auth.superuser.username -}}
{{- fail (printf "\n\npostgresql.auth.username and postgresql.auth.superuser.username are both %q: billing's application role must not be the superuser.\nChoose another name for one of them.\n" .Values.postgresql.auth.username) -}}
{{- end -}}
{{- end -}}

{{/* Labels of the chart's own pods that may reach PostgreSQL besides billing (role setup, helm test). */}}
{{- define "billing.postgresql.clientLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
billing/postgresql-client: "true"
{{- end -}}

{{/* The log volume's mount point: the directory of logs.file. */}}
{{- define "billing.logDir" -}}
{{- dir .Values.logs.file -}}
{{- end -}}

{{/*
The bundled PostgreSQL runs with its default max_connections of 100, of which
superuser_reserved_connections (3) are kept for superusers: billing's role
(not a superuser) gets at most 97. Of those the chart keeps 7 for the helm
test, a migration and an operator's psql, so billing may use 90. Every pod
may open databasePoolSize + databaseReadConnections connections, and the pods
that can run at once are more than workload.replicas: with autoscaling, up to
autoscaling.maxReplicas; in Deployment mode a rolling update adds the surge
pods (Kubernetes' default maxSurge, 25 % rounded up) while the old ones still
hold their connections. Past the limit PostgreSQL refuses new connections
("too many clients") and requests fail under load, long after the install
looked fine, so the chart refuses such a total. A CloudNativePG cluster is
counted the same way against its own parameters (CloudNativePG leaves
max_connections at PostgreSQL's 100 unless told otherwise); its replication
and the operator's connections do not count: walsenders have their own
limit, and the operator connects as the superuser.
*/}}
{{- define "billing.checkConnectionBudget" -}}
{{- $cnpg := .Values.database.cnpg.enabled -}}
{{- if or .Values.postgresql.enabled $cnpg -}}
{{- $max := 100 -}}
{{- $reserved := 3 -}}
{{- if $cnpg -}}
{{- $params := .Values.database.cnpg.parameters -}}
{{- range $key := list "max_connections" "superuser_reserved_connections" "reserved_connections" -}}
{{- if and (hasKey $params $key) (not (regexMatch "^[0-9]+$" (toString (index $params $key)))) -}}
{{- fail (printf "\n\ndatabase.cnpg.parameters.%s is %q: give a whole number of connections, which the chart checks billing's connection budget against.\n" $key (toString (index $params $key))) -}}
{{- end -}}
{{- end -}}
{{- $max = int (toString (get $params "max_connections" | default "100")) -}}
{{- $reserved = add (int (toString (get $params "superuser_reserved_connections" | default "3"))) (int (toString (get $params "reserved_connections" | default "0"))) -}}
{{- end -}}
{{- $limit := sub (sub $max $reserved) 7 -}}
{{- $perPod := add .Values.config.databasePoolSize .Values.config.databaseReadConnections -}}
{{- $replicas := int .Values.workload.replicas -}}
{{- if .Values.autoscaling.enabled -}}
{{- $replicas = int .Values.autoscaling.maxReplicas -}}
{{- end -}}
{{- $surge := 0 -}}
{{- if eq .Values.workload.kind "Deployment" -}}
{{- $surge = div (add $replicas 3) 4 -}}
{{- end -}}
{{- $pods := add $replicas $surge -}}
{{- $total := mul $pods $perPod -}}
{{- if gt (int $total) (int $limit) -}}
{{- $count := printf "%d pods at once (%s%d surge pods of a rolling update) x (config.databasePoolSize %d + config.databaseReadConnections %d) = %d connections" (int $pods) (ternary (printf "autoscaling.maxReplicas %d + " $replicas) (printf "workload.replicas %d + " $replicas) .Values.autoscaling.enabled) (int $surge) (int .Values.config.databasePoolSize) (int .Values.config.databaseReadConnections) (int $total) -}}
{{- if $cnpg -}}
{{- fail (printf "\n\n%s to the CloudNativePG cluster %s, which serves billing at most %d (database.cnpg.parameters.max_connections %d, less %d reserved for superusers and 7 for helm test, migrations and psql).\nLower config.databasePoolSize, workload.replicas or autoscaling.maxReplicas, or raise database.cnpg.parameters.max_connections, so that pods x (pool + read connections) <= %d.\n" $count (include "billing.cnpg.clusterName" .) (int $limit) (int $max) (int $reserved) (int $limit)) -}}
{{- else -}}
{{- fail (printf "\n\n%s to the bundled PostgreSQL, which serves billing at most 90 (max_connections 100, less 3 reserved for superusers and 7 for helm test, migrations and psql).\nLower config.databasePoolSize, workload.replicas or autoscaling.maxReplicas so that pods x (pool + read connections) <= 90.\n" $count) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Shutdown: after the preStop pause (the pod is already out of the Services'
endpoints, but kube-proxy and clients may still send to it for a moment)
billing gets SIGTERM and drains within SHUTDOWN_TIMEOUT_SECS; the grace
period must cover both, or the kubelet kills it mid-drain.
*/}}
{{- define "billing.checkShutdown" -}}
{{- range .Values.extraEnv -}}
{{- if eq (toString .name) "SHUTDOWN_TIMEOUT_SECS" -}}
{{- fail "\n\nextraEnv sets SHUTDOWN_TIMEOUT_SECS: set config.shutdownTimeoutSecs instead, which the chart checks against terminationGracePeriodSeconds.\n" -}}
{{- end -}}
{{- end -}}
{{- $pause := int .Values.preStopSleepSeconds -}}
{{- $drain := int .Values.config.shutdownTimeoutSecs -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- if le $grace (add $pause $drain) -}}
{{- fail (printf "\n\nterminationGracePeriodSeconds (%d) must be larger than preStopSleepSeconds (%d) + config.shutdownTimeoutSecs (%d) = %d: the kubelet kills the pod when the grace period ends, which would cut billing's drain short.\nRaise terminationGracePeriodSeconds or lower the other two.\n" $grace $pause $drain (add $pause $drain)) -}}
{{- end -}}
{{- end -}}

{{/* Refuses autoscaling and disruption settings that cannot work. */}}
{{- define "billing.checkScaling" -}}
{{- if and .Values.autoscaling.enabled (eq .Values.workload.kind "StatefulSet") -}}
{{- fail "\n\nautoscaling.enabled is true but workload.kind is StatefulSet: the chart scales only the Deployment automatically. In StatefulSet mode every pod has its own name, DNS name and log claim (task 2), which `helm test` checks one by one and which scale-downs would leave behind.\nSet autoscaling.enabled=false and choose workload.replicas, or use workload.kind=Deployment.\n" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "\n\nautoscaling.minReplicas (%d) is larger than autoscaling.maxReplicas (%d).\n" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- $pdb := .Values.podDisruptionBudget -}}
{{- if and $pdb.enabled (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) -}}
{{- fail "\n\npodDisruptionBudget sets both minAvailable and maxUnavailable; a PodDisruptionBudget takes one of them. Set the other to null.\n" -}}
{{- end -}}
{{- if and $pdb.enabled (kindIs "invalid" $pdb.minAvailable) (kindIs "invalid" $pdb.maxUnavailable) -}}
{{- fail "\n\npodDisruptionBudget.enabled is true but neither minAvailable nor maxUnavailable is set.\n" -}}
{{- end -}}
{{- end -}}

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

{{/* Refuses metrics settings that cannot work together, saying which value to change. */}}
{{- define "billing.checkMetrics" -}}
{{- $m := .Values.metrics -}}
{{- if and $m.serviceMonitor.enabled (not $m.enabled) -}}
{{- fail "\n\nmetrics.serviceMonitor.enabled is true but metrics.enabled is false: billing would answer /metrics with 404 (METRICS_ENABLED=false) and every scrape would fail.\nSet metrics.enabled=true, or metrics.serviceMonitor.enabled=false.\n" -}}
{{- end -}}
{{- if and $m.dashboard.enabled (not $m.enabled) -}}
{{- fail "\n\nmetrics.dashboard.enabled is true but metrics.enabled is false: billing would export no metrics and every panel of the dashboard would stay empty.\nSet metrics.enabled=true, or metrics.dashboard.enabled=false.\n" -}}
{{- end -}}
{{- if and $m.serviceMonitor.enabled (eq .Values.workload.kind "Deployment") (not .Values.service.enabled) -}}
{{- fail "\n\nmetrics.serviceMonitor.enabled is true but service.enabled is false: in Deployment mode the ServiceMonitor scrapes the pods through the ClusterIP Service, and there is none.\nSet service.enabled=true, or scrape by pod annotations instead (metrics.scrapeAnnotations=true, metrics.serviceMonitor.enabled=false).\n" -}}
{{- end -}}
{{- if $m.serviceMonitor.enabled -}}
{{- range $key := list "interval" "scrapeTimeout" -}}
{{- $v := index $m.serviceMonitor $key -}}
{{- if not (regexMatch "^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$" $v) -}}
{{- fail (printf "\n\nmetrics.serviceMonitor.%s is %q, which Prometheus does not read as a duration: give each unit at most once, from the largest to the smallest (y, w, d, h, m, s, ms), e.g. 1m30s.\n" $key $v) -}}
{{- end -}}
{{- end -}}
{{- $interval := include "billing.durationMs" $m.serviceMonitor.interval | int64 -}}
{{- $timeout := include "billing.durationMs" $m.serviceMonitor.scrapeTimeout | int64 -}}
{{- if le $interval 0 -}}
{{- fail (printf "\n\nmetrics.serviceMonitor.interval is %q, which is no time at all; give a duration such as 30s.\n" $m.serviceMonitor.interval) -}}
{{- end -}}
{{- if gt $timeout $interval -}}
{{- fail (printf "\n\nmetrics.serviceMonitor.scrapeTimeout (%s) is longer than metrics.serviceMonitor.interval (%s): Prometheus refuses a scrape timeout greater than the scrape interval.\nLower scrapeTimeout or raise interval.\n" $m.serviceMonitor.scrapeTimeout $m.serviceMonitor.interval) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The billing pod template, shared by the Deployment and the StatefulSet so the
two modes cannot drift apart. Usage: include "billing.podTemplate" (dict
"root" $ "logVolume" "claim"|"emptyDir")
*/}}
{{- define "billing.podTemplate" -}}
{{- $root := .root -}}
{{- include "billing.checkConnectionBudget" $root -}}
{{- include "billing.checkShutdown" $root -}}
{{- include "billing.checkScaling" $root -}}
{{- with $root -}}
metadata:
  labels:
    {{- include "billing.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with include "billing.podAnnotations" . | fromYaml }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  # The service talks to PostgreSQL and nothing else; it has no use for an
  # API token.
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  containers:
    - name: billing
      image: {{ include "billing.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      ports:
        - name: http
          containerPort: {{ .Values.config.port }}
          protocol: TCP
      env:
        - name: LISTEN_ADDR
          value: {{ printf "0.0.0.0:%d" (int .Values.config.port) | quote }}
        - name: DATABASE_URL
          value: {{ include "billing.databaseUrl" . | quote }}
        {{- $secretName := include "billing.databaseSecretName" . }}
        {{- if $secretName }}
        - name: DATABASE_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ $secretName | quote }}
              key: {{ include "billing.databaseSecretKey" . | quote }}
        {{- end }}
        {{- if include "billing.databaseCaSource" . }}
        # The CA that signed the database server's certificate, for
        # sslmode=verify-ca/verify-full (and checked chains under prefer/require).
        - name: PGSSLROOTCERT
          value: {{ printf "%s/%s" (include "billing.databaseCaDir" .) (include "billing.databaseCaKey" .) | quote }}
        {{- end }}
        - name: DATABASE_POOL_SIZE
          value: {{ .Values.config.databasePoolSize | quote }}
        - name: DATABASE_READ_CONNECTIONS
          value: {{ .Values.config.databaseReadConnections | quote }}
        - name: DATABASE_TIMEOUT_SECS
          value: {{ .Values.config.databaseTimeoutSecs | quote }}
        {{- $pool := int .Values.config.databasePoolSize }}
        {{- with .Values.config.getallMaxConcurrent }}
        {{- if gt (int .) $pool }}
        {{- fail (printf "config.getallMaxConcurrent (%d) must be at most config.databasePoolSize (%d): each listing holds one of the pool's connections" (int .) $pool) }}
        {{- end }}
        - name: GETALL_MAX_CONCURRENT
          value: {{ . | quote }}
        {{- end }}
        - name: GETALL_STALL_TIMEOUT_SECS
          value: {{ .Values.config.getallStallTimeoutSecs | quote }}
        - name: GETALL_TIMEOUT_SECS
          value: {{ .Values.config.getallTimeoutSecs | quote }}
        - name: RUST_LOG
          value: {{ .Values.config.rustLog | quote }}
        - name: LOG_FORMAT
          value: {{ .Values.config.logFormat | quote }}
        - name: HEADER_READ_TIMEOUT_SECS
          value: {{ .Values.config.headerReadTimeoutSecs | quote }}
        - name: BODY_READ_TIMEOUT_SECS
          value: {{ .Values.config.bodyReadTimeoutSecs | quote }}
        - name: MAX_HEADER_BYTES
          value: {{ .Values.config.maxHeaderBytes | quote }}
        - name: MAX_CONNECTIONS
          value: {{ .Values.config.maxConnections | quote }}
        - name: LOG_WRITE_TIMEOUT_SECS
          value: {{ .Values.config.logWriteTimeoutSecs | quote }}
        - name: SHUTDOWN_TIMEOUT_SECS
          value: {{ .Values.config.shutdownTimeoutSecs | quote }}
        - name: METRICS_ENABLED
          value: {{ .Values.metrics.enabled | quote }}
        {{- if .Values.logs.enabled }}
        - name: LOG_FILE
          value: {{ .Values.logs.file | quote }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if gt (int .Values.preStopSleepSeconds) 0 }}
      # The pod leaves the Services' endpoints when its deletion starts, but
      # kube-proxy on every node, and clients holding a connection, take a
      # moment to notice: billing keeps serving for preStopSleepSeconds, then
      # gets SIGTERM and drains. An exec of the image's sleep (busybox's in
      # the distroless :debug image), not the sleep action of Kubernetes 1.30,
      # so the chart keeps working on 1.27-1.29.
      lifecycle:
        preStop:
          exec:
            command: ["sleep", {{ .Values.preStopSleepSeconds | quote }}]
      {{- end }}
      readinessProbe:
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      livenessProbe:
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      {{- $caSource := include "billing.databaseCaSource" . }}
      {{- if or .Values.logs.enabled $caSource }}
      volumeMounts:
        {{- if .Values.logs.enabled }}
        - name: log
          mountPath: {{ include "billing.logDir" . | quote }}
        {{- end }}
        {{- if $caSource }}
        - name: database-ca
          mountPath: {{ include "billing.databaseCaDir" . | quote }}
          readOnly: true
        {{- end }}
      {{- end }}
  {{- $emptyDirLog := and .Values.logs.enabled (eq $.logVolume "emptyDir") }}
  {{- if or $emptyDirLog $caSource }}
  volumes:
    {{- if $emptyDirLog }}
    # A Deployment's replicas cannot each own a claim: the log lives as long
    # as the pod. StatefulSet mode gives every pod a volume of its own.
    - name: log
      emptyDir:
        sizeLimit: {{ .Values.logs.persistence.size | quote }}
    {{- end }}
    {{- $caKey := include "billing.databaseCaKey" . }}
    {{- if eq $caSource "secret" }}
    # Only the certificate: a CloudNativePG "<cluster>-ca" Secret also holds
    # the CA's private key, which billing must never see.
    - name: database-ca
      secret:
        secretName: {{ include "billing.databaseCaName" . | quote }}
        items:
          - key: {{ $caKey | quote }}
            path: {{ $caKey | quote }}
    {{- else if eq $caSource "configMap" }}
    - name: database-ca
      configMap:
        name: {{ include "billing.databaseCaName" . | quote }}
        items:
          - key: {{ $caKey | quote }}
            path: {{ $caKey | quote }}
    {{- end }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    {{- $c := deepCopy . }}
    {{- if not (hasKey $c "labelSelector") }}
    {{- $_ := set $c "labelSelector" (dict "matchLabels" (include "billing.selectorLabels" $root | fromYaml)) }}
    {{- end }}
    {{- list $c | toYaml | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
{{- end -}}

{{/*
CloudNativePG mode (database.cnpg). The operator, not the chart, makes the
Cluster's pods, volumes, Services and Secrets; the chart names them from the
Cluster's name.
*/}}
{{- define "billing.cnpg.clusterName" -}}
{{- .Values.database.cnpg.clusterName | default (printf "%s-db" (include "billing.fullname" .)) -}}
{{- end -}}

{{/*
The Cluster's labels: the chart's shared set, as on its Secrets. Not the
bundled PostgreSQL's selector labels, which an operator configured to copy a
Cluster's labels to its pods would put under the bundled NetworkPolicy (the
operator must reach those pods' status port); and no app.kubernetes.io/version,
since the instances' PostgreSQL version is the operator's default or
imageName's, which the chart cannot read.
*/}}
{{/*
The instances' image: database.cnpg.imageName, else the operator's default for
CloudNativePG 1.30 (values.yaml). Only the helm test pod needs the name (it
runs psql from it); the Cluster itself leaves an empty imageName to the
operator.
*/}}
{{- define "billing.cnpg.image" -}}
{{- .Values.database.cnpg.imageName | default "ghcr.io/cloudnative-pg/postgresql:18.4-system-trixie" -}}
{{- end -}}

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

{{/*
Refuses CloudNativePG settings that cannot work together, naming the values
to change. The schema checks each value alone; these are the combinations.
*/}}
{{- define "billing.cnpg.check" -}}
{{- $c := .Values.database.cnpg -}}
{{- if $c.enabled -}}
{{- if or .Values.externalDatabase.url .Values.externalDatabase.host -}}
{{- fail "\n\ndatabase.cnpg.enabled is true and externalDatabase.url or externalDatabase.host is set: billing uses one database.\nClear externalDatabase.url and externalDatabase.host, or set database.cnpg.enabled=false.\n" -}}
{{- end -}}
{{- $importsBundled := include "billing.cnpg.importsBundled" . -}}
{{- if and .Values.postgresql.enabled (not $importsBundled) -}}
{{- fail "\n\ndatabase.cnpg.enabled and postgresql.enabled are both true: billing would use the CloudNativePG cluster while the bundled PostgreSQL kept the old data beside it.\nSet postgresql.enabled=false, or import from it with database.cnpg.import.enabled=true and database.cnpg.import.source=bundled (the migration step, see docs/operations.md).\n" -}}
{{- end -}}
{{- if and $c.import.enabled (eq $c.import.source "bundled") (not .Values.postgresql.enabled) -}}
{{- fail "\n\ndatabase.cnpg.import.enabled is true with database.cnpg.import.source=bundled, but postgresql.enabled is false: there is no bundled PostgreSQL to import from.\nKeep postgresql.enabled=true until the import is checked (then drop the import values), or import from another server with database.cnpg.import.source=external.\n" -}}
{{- end -}}
{{- if and $c.import.enabled (eq $c.import.source "external") -}}
{{- if not $c.import.external.host -}}
{{- fail "\n\ndatabase.cnpg.import.source is external, so database.cnpg.import.external.host is required: the server to import from.\n" -}}
{{- end -}}
{{- if not $c.import.external.passwordSecret.name -}}
{{- fail "\n\ndatabase.cnpg.import.source is external, so database.cnpg.import.external.passwordSecret.name is required: the Secret holding the password of database.cnpg.import.external.user.\n" -}}
{{- end -}}
{{- end -}}
{{- $instances := int $c.instances -}}
{{- $number := int $c.synchronous.number -}}
{{- if lt $instances 2 -}}
{{- fail (printf "\n\ndatabase.cnpg.instances is %d: CloudNativePG mode is for high availability, and one instance survives no pod, node or disk loss that the bundled PostgreSQL does not.\nSet database.cnpg.instances to at least 2 (3 keeps writes going while one standby is down).\n" $instances) -}}
{{- end -}}
{{- if or (lt $number 1) (ge $number $instances) -}}
{{- fail (printf "\n\ndatabase.cnpg.synchronous.number is %d with database.cnpg.instances %d: it must be at least 1, so that every acknowledged commit is on two servers or more, and less than instances, so that a standby may be down or failed over to.\nSet database.cnpg.synchronous.number between 1 and %d, or raise database.cnpg.instances.\n" $number $instances (sub $instances 1)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
