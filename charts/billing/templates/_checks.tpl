{{/*
Value checks: combinations of values that the schema cannot refuse (it checks
each value alone), refused at render time with a message naming the values to
change. The templates that need them include them (the pod template, the
ServiceMonitor, the database URL, the role-setup Job).
*/}}

{{/* Refuses role settings that cannot work. */}}
{{- define "billing.postgresql.checkRoles" -}}
{{- if eq .Values.postgresql.auth.username .Values.postgresql.auth.superuser.username -}}
{{- fail (printf "\n\npostgresql.auth.username and postgresql.auth.superuser.username are both %q: billing's application role must not be the superuser.\nChoose another name for one of them.\n" .Values.postgresql.auth.username) -}}
{{- end -}}
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

{{/* Refuses metrics settings that cannot work together, saying which value to change. */}}
{{- define "billing.checkMetrics" -}}
{{- $m := .Values.metrics -}}
{{- if and $m.serviceMonitor.enabled (not $m.enabled) -}}
{{- fail "\n\nmetrics.serviceMonitor.enabled is true but metrics.enabled is false: billing would answer /metrics with 404 (METRICS_ENABLED=false) and every scrape would fail.\nSet metrics.enabled=true, or metrics.serviceMonitor.enabled=false.\n" -}}
{{- end -}}
{{- if and $m.prometheusRule.enabled (not $m.enabled) -}}
{{- fail "\n\nmetrics.prometheusRule.enabled is true but metrics.enabled is false: billing would export no metrics, and its alerts would see nothing (or only BillingDown).\nSet metrics.enabled=true, or metrics.prometheusRule.enabled=false.\n" -}}
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
