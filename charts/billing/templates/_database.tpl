{{/*
The database billing connects to: DATABASE_URL, the CA certificate it verifies
the server with, and the Secrets and passwords (billing's role and the bundled
PostgreSQL's superuser).
*/}}

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
