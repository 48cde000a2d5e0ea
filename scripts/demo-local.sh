#!/usr/bin/env bash
# billing on this machine, without Kubernetes: a throwaway PostgreSQL (the one the tests use), the release build of
# the service with its transaction log on, and the course's curl commands run against it, output shown.
# Interactive: keeps serving until Ctrl-C so you can try more. Non-interactive or --once: stops after the tour.
# Everything it starts is stopped by PID on exit, and the database directory is deleted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

once=false
[[ "${1:-}" == "--once" || ! -t 0 ]] && once=true

bash scripts/install-postgres.sh >/dev/null
echo "==> building billing (release)"
cargo build --release --locked -p billing -p billing-testkit --bins

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

target/release/billing-tempdb >"$work/tempdb.out" 2>"$work/tempdb.err" &
pids+=("$!")
for _ in $(seq 1 600); do
    grep -q '^DATABASE_URL=' "$work/tempdb.out" 2>/dev/null && break
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/tempdb.err" >&2; exit 1; }
    sleep 0.1
done
database_url=$(sed -n 's/^DATABASE_URL=//p' "$work/tempdb.out")
[[ -n "$database_url" ]] || { echo "demo: PostgreSQL did not start" >&2; cat "$work/tempdb.err" >&2; exit 1; }

port=${PORT:-8080}
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi
base="http://127.0.0.1:$port"
DATABASE_URL=$database_url LISTEN_ADDR=127.0.0.1:$port LOG_FILE=$work/log/app.log \
    target/release/billing >"$work/billing.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 300); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && break
    kill -0 "${pids[1]}" 2>/dev/null || { cat "$work/billing.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null || { echo "demo: billing did not become ready" >&2; cat "$work/billing.log" >&2; exit 1; }

# Prints a command as you would type it (quoting what the shell would otherwise split or expand), then runs it.
run() {
    local arg shown=()
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_./:=@-]+$ ]]; then shown+=("$arg"); else shown+=("'$arg'"); fi
    done
    printf '\n$ %s\n' "${shown[*]}"
    "$@"
    echo
}
echo
echo "billing is serving at $base (PostgreSQL: ${database_url})"
run curl -sS "$base/ping"
run curl -sS -X POST "$base/add?client_id=1&amount=1000"
run curl -sS -X POST "$base/add?client_id=2&amount=250" -H 'Accept: application/json'
run curl -sS "$base/getall"
run curl -sS "$base/get/1"
run curl -sS "$base/get/42"
run curl -sS -X POST "$base/add?client_id=1&amount=-5"
printf '\n$ cat %s\n' "$work/log/app.log"
cat "$work/log/app.log"

if $once; then
    echo
    echo "demo finished; stopping billing and PostgreSQL"
    exit 0
fi
echo
echo "Try more from another terminal, e.g.:  curl -X POST '$base/add?client_id=3&amount=30'"
echo "Press Ctrl-C to stop billing and delete the throwaway database."
wait "${pids[1]}"
