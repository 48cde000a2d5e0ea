{{/*
Backups of the bundled PostgreSQL (values: backup.*): the CronJob's and the
backup claim's names, their labels, the checks of the values, and the pieces
the PostgreSQL Deployment and its init scripts take when restoring.
*/}}

{{- define "billing.backup.fullname" -}}
{{- printf "%s-backup" (include "billing.fullname" .) -}}
{{- end -}}

{{/* The claim holding the dumps: backup.storage.existingClaim, else "<fullname>-backup". */}}
{{- define "billing.backup.claimName" -}}
{{- .Values.backup.storage.existingClaim | default (include "billing.backup.fullname" .) -}}
{{- end -}}

{{/* Where the backup claim is mounted, in the backup Job and (read-only) in PostgreSQL when restoring. */}}
{{- define "billing.backup.mountPath" -}}
/backup
{{- end -}}

{{/*
The marker a restore leaves beside PGDATA (not in it) while it runs: found on
a later start, it means the restore was cut off, and the restore-check init
container starts it over on an emptied data directory.
*/}}
{{- define "billing.backup.restoreMarker" -}}
{{- printf "%s/billing-restore-incomplete" .Values.postgresql.persistence.mountPath -}}
{{- end -}}

{{- define "billing.backup.labels" -}}
{{ include "billing.sharedLabels" . }}
app.kubernetes.io/component: backup
app.kubernetes.io/version: {{ .Values.postgresql.image.tag | quote }}
{{- end -}}

{{/*
Refuses backup settings that cannot work, naming the values to change. The
schema checks each value alone; these are the combinations.
*/}}
{{- define "billing.backup.check" -}}
{{- $b := .Values.backup -}}
{{- if and $b.enabled .Values.database.cnpg.enabled -}}
{{- fail "\n\nbackup.enabled is true with database.cnpg.enabled: billing's ledger is then in the CloudNativePG Cluster, and backup.* dumps only the bundled PostgreSQL.\nBack the Cluster up with CloudNativePG's own backups (continuous WAL archiving and base backups; see docs/operations.md, Backups and restore), and set backup.enabled=false.\n" -}}
{{- end -}}
{{- if and $b.enabled (not .Values.postgresql.enabled) -}}
{{- fail "\n\nbackup.enabled is true but postgresql.enabled is false: backup.* dumps the bundled PostgreSQL, and billing uses an external database.\nBack that database up where it runs (your provider's or your DBA's backups and point-in-time recovery), and set backup.enabled=false.\n" -}}
{{- end -}}
{{- if and $b.restore.enabled (not $b.enabled) -}}
{{- fail "\n\nbackup.restore.enabled is true but backup.enabled is false: the dumps to restore are on the backup claim, which only backup.enabled=true mounts.\nSet backup.enabled=true with the same backup.storage settings as when the dumps were written (the kept claim \"<fullname>-backup\", or backup.storage.existingClaim).\n" -}}
{{- end -}}
{{- end -}}

{{/*
The PostgreSQL pod's init container when backup.restore.enabled: decides,
before the server's first start, whether this start restores (an empty data
directory) or not (an initialised one: never restored over), and checks the
dump it will restore with `pg_restore --list`, so that a missing or broken
dump stops the pod here (Init:Error, with the reason in its log) instead of
leaving an empty ledger. Its choice goes to the initdb script through the
"restore" emptyDir.
*/}}
{{- define "billing.backup.restoreInitContainer" -}}
{{- $p := .Values.postgresql -}}
- name: restore-check
  image: {{ printf "%s:%s" $p.image.repository $p.image.tag | quote }}
  imagePullPolicy: {{ $p.image.pullPolicy }}
  command: ["/bin/sh", "-c"]
  args:
    - |
      set -eu
      log() { echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC') restore-check: $*"; }
      pgdata="$DATA_MOUNT/$DATA_SUBDIR"
      if [ -n "$VOLUME_LOCK" ]; then
        # The server's volume lock (postgresql.volumeLock), held while deciding: a previous pod's server, still
        # shutting down on this volume, must be gone before its data directory is judged or emptied.
        exec 9>>"$VOLUME_LOCK"
        flock -n 9 || { log "waiting for $VOLUME_LOCK: another PostgreSQL server still runs on this volume"; flock 9; }
      fi
      if [ -e "$MARKER" ]; then
        log "a restore into $pgdata was cut off before it finished ($MARKER is there): emptying the data directory to start it over"
        [ -d "$pgdata" ] && find "$pgdata" -mindepth 1 -delete
        rm -f "$MARKER"
      fi
      if [ -s "$pgdata/PG_VERSION" ]; then
        log "the data directory $pgdata is already initialised: NOT restoring (a restore never writes over existing data)."
        log "backup.restore.enabled only acts on an empty data volume; set it to false, or see docs/operations.md, Backups and restore."
        exit 0
      fi
      if [ -n "$RESTORE_FILE" ]; then
        file=$RESTORE_FILE
      else
        file=$(ls -1 "$BACKUP_DIR" | grep -E "^${DB}-[0-9]{8}T[0-9]{6}Z\.dump\$" | sort | tail -n 1 || true)
      fi
      if [ -z "$file" ] || [ ! -f "$BACKUP_DIR/$file" ]; then
        log "FAILED: no dump ${RESTORE_FILE:-named $DB-<time>.dump} in $BACKUP_DIR (claim $CLAIM). Its files:"
        ls -la "$BACKUP_DIR" >&2
        exit 1
      fi
      if ! pg_restore --list "$BACKUP_DIR/$file" >/tmp/toc; then
        log "FAILED: $file does not read as a pg_dump custom-format archive (pg_restore --list)"
        exit 1
      fi
      if ! grep -q ' TABLE DATA public transactions ' /tmp/toc; then
        log "FAILED: $file holds no ledger (no TABLE DATA public transactions in its table of contents)"
        exit 1
      fi
      echo "$file" >/run/billing-restore/file
      log "the data directory is empty: PostgreSQL's first start will restore $file ($(wc -c <"$BACKUP_DIR/$file") bytes, $(grep -c '^[0-9]' /tmp/toc) entries; $(grep -m1 '^;  *Archive created at' /tmp/toc | sed 's/^; *//'))"
  env:
    - name: DATA_MOUNT
      value: {{ $p.persistence.mountPath | quote }}
    - name: DATA_SUBDIR
      value: {{ $p.persistence.subdirectory | quote }}
    - name: MARKER
      value: {{ include "billing.backup.restoreMarker" . | quote }}
    - name: BACKUP_DIR
      value: {{ include "billing.backup.mountPath" . | quote }}
    - name: CLAIM
      value: {{ include "billing.backup.claimName" . | quote }}
    - name: DB
      value: {{ $p.auth.database | quote }}
    - name: RESTORE_FILE
      value: {{ .Values.backup.restore.file | quote }}
    - name: VOLUME_LOCK
      value: {{ ternary (printf "%s/%s" $p.persistence.mountPath $p.volumeLock.file) "" $p.volumeLock.enabled | quote }}
  resources:
    {{- toYaml $p.resources | nindent 4 }}
  securityContext:
    {{- toYaml $p.securityContext | nindent 4 }}
  volumeMounts:
    - name: data
      mountPath: {{ $p.persistence.mountPath | quote }}
    - name: backup
      mountPath: {{ include "billing.backup.mountPath" . | quote }}
      readOnly: true
    - name: restore
      mountPath: /run/billing-restore
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/*
The initdb script that restores (docker-entrypoint-initdb.d/20-restore-backup.sh).
The image runs it only when it initialises an empty data directory, after
10-application-role.sh and before the server listens on TCP, so nothing
(billing's migrations included) can write first. The ledger database appears
under its name only when the restore is complete: pg_restore runs in one
transaction into "<database>_restoring", made by billing's role (--role, with
--no-owner: every object is billing's, as the chart makes them; --no-acl: no
grant of the old server's is replayed), and only then is that database renamed.
A failure stops the temporary server and empties the data directory, so the
container's next start tries again from scratch and never serves a half-restored
or empty ledger.
*/}}
{{- define "billing.backup.restoreScript" -}}
#!/bin/sh
set -eu
log() { echo "$(date -u '+%Y-%m-%d %H:%M:%S UTC') restore: $*"; }
marker={{ include "billing.backup.restoreMarker" . | quote }}
backup_dir={{ include "billing.backup.mountPath" . | quote }}
tmpdb="${POSTGRES_DB}_restoring"
file=$(cat /run/billing-restore/file)
failed() {
  log "FAILED: $* The data directory is emptied so that the next start restores again from scratch."
  pg_ctl -D "$PGDATA" -m immediate -w stop || true
  find "$PGDATA" -mindepth 1 -delete
  rm -f "$marker"
  exit 1
}
q() { psql -v ON_ERROR_STOP=1 -X -q -t -A --username "$POSTGRES_USER" "$@"; }
: >"$marker"
log "restoring $backup_dir/$file into database $POSTGRES_DB, owned by $BILLING_APP_USER"
start=$(date +%s)
q --dbname postgres --set db="$POSTGRES_DB" --set tmp="$tmpdb" --set role="$BILLING_APP_USER" <<'SQL' || failed "could not make database $tmpdb."
DROP DATABASE :"db";
CREATE DATABASE :"tmp" OWNER :"role";
SQL
pg_restore --username "$POSTGRES_USER" --dbname "$tmpdb" --role "$BILLING_APP_USER" --no-owner --no-acl \
  --single-transaction --exit-on-error "$backup_dir/$file" || failed "pg_restore of $file failed (see above)."
# Payments made after the dump are lost, but their clients may hold their ids: the next id starts backup.restore.idGap
# past the dump's last one (its highest id, or its sequence if that was further), so no such id goes to another payment.
q --dbname "$tmpdb" --set gap={{ int64 .Values.backup.restore.idGap }} >/dev/null <<'SQL' || failed "could not move the id sequence past the gap."
SELECT setval(s.seq::regclass,
              greatest(coalesce(pg_sequence_last_value(s.seq::regclass), 0), coalesce((SELECT max(id) FROM transactions), 0))
              + :gap + 1, false)
FROM (SELECT pg_get_serial_sequence('transactions', 'id') AS seq) s;
SQL
summary=$(q --dbname "$tmpdb" -c "SELECT count(*) || ' payments, ids ' || coalesce(min(id), 0) || '..' || coalesce(max(id), 0) || ', next id from ' || (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM transactions_id_seq) FROM transactions") \
  || failed "the restored ledger cannot be read."
q --dbname postgres --set db="$POSTGRES_DB" --set tmp="$tmpdb" <<'SQL' || failed "could not rename $tmpdb to $POSTGRES_DB."
ALTER DATABASE :"tmp" RENAME TO :"db";
SQL
sync "$PGDATA" 2>/dev/null || true
rm -f "$marker"
log "restored $file in $(($(date +%s) - start))s: $summary"
{{- end -}}
