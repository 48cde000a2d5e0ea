#!/usr/bin/env bash
# Installs the PostgreSQL server binaries the tests, the demo and the benchmarks run (initdb, postgres, psql),
# from Debian's `postgresql` package. Does nothing when they are already there. The harness never skips for lack
# of them: without this, the tests fail with a message pointing here.
set -euo pipefail

have_postgres() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" && -x "$dir/postgres" && -x "$dir/psql" ]] && return 0
    done
    [[ -n "${PG_BIN:-}" && -x "$PG_BIN/initdb" ]]
}

# The locale tests run a PostgreSQL whose messages are Russian; the harness compiles ru_RU.UTF-8 with localedef
# from these sources into a directory of its own, so no locale is installed on the machine.
have_locale_sources() {
    command -v localedef >/dev/null && [[ -f /usr/share/i18n/locales/ru_RU && -f /usr/share/i18n/charmaps/UTF-8.gz ]]
}

if have_postgres && have_locale_sources; then
    echo "install-postgres: PostgreSQL server binaries and locale sources present"
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "install-postgres: no apt-get here; install the PostgreSQL server (initdb, postgres, psql) and set PG_BIN to its bin directory" >&2
    exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "install-postgres: need root or sudo to apt-get install postgresql" >&2; exit 1; }
    sudo=(sudo)
fi
echo "install-postgres: installing Debian's postgresql and locales packages"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql locales >/dev/null
have_locale_sources || { echo "install-postgres: locales installed but /usr/share/i18n/locales/ru_RU or localedef not found" >&2; exit 1; }
have_postgres || { echo "install-postgres: postgresql installed but initdb/postgres/psql not found under /usr/lib/postgresql/*/bin" >&2; exit 1; }
echo "install-postgres: done"
