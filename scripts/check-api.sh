#!/usr/bin/env bash
# The API against its document: Schemathesis (installed by scripts/install-tools.sh into .tools/venv) runs against the
# real billing binary on a throwaway PostgreSQL, with the document the binary serves (GET /openapi.json, which is
# billing/openapi.json). Its phases: the document's examples, coverage (boundary and negative values of every
# parameter, header and body, unexpected methods), fuzzing (generated valid and invalid requests) and stateful
# (POST /add, then GET /get/{id} of what it made), with every check: no 5xx, statuses, content types, headers and
# bodies as documented, invalid data refused, valid data accepted, 405 with the right Allow. Any failure fails the
# script.
#
# Bounded: API_FUZZ_EXAMPLES examples per operation and phase (default 40) and API_FUZZ_SECONDS for the whole run
# (default 180). API_FUZZ_SEED repeats a run (Schemathesis prints the seed it used). Everything it starts is stopped
# by PID on exit, and the database directory is deleted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

examples=${API_FUZZ_EXAMPLES:-40}
seconds=${API_FUZZ_SECONDS:-180}
schemathesis=.tools/venv/bin/schemathesis
[[ -x $schemathesis ]] || { echo "check-api: $schemathesis is missing: run bash scripts/install-tools.sh" >&2; exit 1; }

echo "==> building billing and billing-tempdb (debug)"
cargo build --locked -p billing -p billing-testkit --bins
bin=${CARGO_TARGET_DIR:-target}/debug

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

"$bin/billing-tempdb" >"$work/tempdb.out" 2>"$work/tempdb.err" &
pids+=("$!")
for _ in $(seq 1 600); do
    grep -q '^DATABASE_URL=' "$work/tempdb.out" 2>/dev/null && break
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/tempdb.err" >&2; exit 1; }
    sleep 0.1
done
database_url=$(sed -n 's/^DATABASE_URL=//p' "$work/tempdb.out")
[[ -n "$database_url" ]] || { echo "check-api: PostgreSQL did not start" >&2; cat "$work/tempdb.err" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
DATABASE_URL=$database_url LISTEN_ADDR=127.0.0.1:$port LOG_FILE=$work/log/app.log RUST_LOG=warn \
    "$bin/billing" >"$work/billing.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 300); do
    curl -fsS "$base/readyz" >/dev/null 2>&1 && break
    kill -0 "${pids[1]}" 2>/dev/null || { cat "$work/billing.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null || { echo "check-api: billing did not become ready" >&2; cat "$work/billing.log" >&2; exit 1; }

echo "==> schemathesis against $base ($examples examples per operation and phase, at most ${seconds}s)"
seed=()
[[ -n "${API_FUZZ_SEED:-}" ]] && seed=(--seed "$API_FUZZ_SEED")
status=0
SCHEMATHESIS_HOOKS=hooks PYTHONPATH=tests/api "$schemathesis" --config-file tests/api/schemathesis.toml run "$base/openapi.json" \
    --url "$base" --checks all --phases examples,coverage,fuzzing,stateful --mode all \
    --max-examples "$examples" --max-time "$seconds" --workers 1 --request-timeout 15 "${seed[@]}" \
    --report junit --report-dir "$work/report" || status=$?
if ! kill -0 "${pids[1]}" 2>/dev/null; then
    echo "check-api: billing exited during the run" >&2
    status=1
fi
if grep -E '(ERROR|panicked)' "$work/billing.log" >&2; then
    echo "check-api: billing logged the errors above" >&2
    status=1
fi
[[ $status -eq 0 ]] || { echo "check-api: FAILED (billing's log: above; schemathesis's findings: above)" >&2; exit "$status"; }
echo "check-api: no 5xx, and every answer as the document says"
