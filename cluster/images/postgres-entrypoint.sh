#!/bin/bash
# Entrypoint of the local PostgreSQL image. Honours the official image's
# contract for what the chart uses (each also as VAR_FILE): POSTGRES_USER (default postgres),
# POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust),
# POSTGRES_DB (default $POSTGRES_USER), POSTGRES_INITDB_ARGS, PGDATA
# (default /var/lib/postgresql/data), /docker-entrypoint-initdb.d/*.sql|*.sh;
# an initialised PGDATA is used as it is. Extra arguments go to postgres, as
# with `postgres -c key=value`.
set -euo pipefail
# VAR_FILE: read VAR from a file (Docker/Kubernetes secrets), as the official image does
file_env() {
  local var=$1 file_var=${1}_FILE
  if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
    echo "error: both $var and $file_var are set (but are exclusive)" >&2
    exit 1
  fi
  if [[ -n ${!file_var:-} ]]; then
    export "$var"="$(<"${!file_var}")"
    unset "$file_var"
  fi
}
for v in POSTGRES_PASSWORD POSTGRES_USER POSTGRES_DB POSTGRES_INITDB_ARGS; do file_env "$v"; done
PGBIN=/usr/lib/postgresql/@PG_MAJOR@/bin
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
if [[ ${1:-} == postgres ]]; then shift; fi

if [[ $(id -u) == 0 ]]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres /var/run/postgresql
  chmod 2777 /var/run/postgresql
  # only fix ownership of a fresh or already-ours directory (same as the official image)
  if [[ ! -s $PGDATA/PG_VERSION ]] || [[ $(stat -c %u "$PGDATA") != "$(id -u postgres)" ]]; then
    chown -R postgres:postgres "$PGDATA"
  fi
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
# not root (e.g. runAsUser: 999): make what we may, as the official image does
mkdir -p "$PGDATA" 2>/dev/null || true
chmod 700 "$PGDATA" 2>/dev/null || true

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  : "${POSTGRES_USER:=postgres}"
  : "${POSTGRES_DB:=$POSTGRES_USER}"
  auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  if [[ -z ${POSTGRES_PASSWORD:-} && $auth != trust ]]; then
    echo "error: database is uninitialized and POSTGRES_PASSWORD is not specified" >&2
    exit 1
  fi
  # the password reaches initdb through a pipe: no temporary file (the root filesystem may be read-only)
  # shellcheck disable=SC2086
  "$PGBIN/initdb" --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
    --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
  {
    echo
    echo "host all all all $auth"
  } >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  # temporary server on the socket only, to create the database and run init scripts
  "$PGBIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start
  export PGUSER=$POSTGRES_USER PGPASSWORD=${POSTGRES_PASSWORD:-}
  if [[ $POSTGRES_DB != postgres ]]; then
    "$PGBIN/psql" -v ON_ERROR_STOP=1 --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    [[ -e $f ]] || continue
    case $f in
      *.sh) echo "running $f"; bash "$f" ;;
      *.sql) echo "running $f"; "$PGBIN/psql" -v ON_ERROR_STOP=1 --dbname "$POSTGRES_DB" -f "$f" ;;
      *) echo "ignoring $f" ;;
    esac
  done
  "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop
  echo "PostgreSQL init process complete; ready for start up."
fi
exec "$PGBIN/postgres" -D "$PGDATA" "$@"
