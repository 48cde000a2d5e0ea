#!/usr/bin/env bash
# How long the idempotency-key migration (2026-12-06-000001, issue 21) blocks writes on a 1,000,000-row ledger, and
# what a key costs per row (bench/migration.py says how). A throwaway PostgreSQL at default durability, the real
# billing binary (release build), a pgbench writer; all on this machine over loopback. Prints a summary and writes
# JSON (default bench/results/migration-latest.json). Not part of the tests; never run by CI. About 1.5 minutes.
#
#   bash bench/migration.sh
#   bash bench/migration.sh --out bench/results/2026-12-06-migration-1.json --label "first run"
#   bash bench/migration.sh --rows 100000 --window 10 --storage-rows 10000     # a quick look
#
# Everything it starts is stopped by PID when it ends (bench/bench.py's bookkeeping).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for arg in "$@"; do
    if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
        exec python3 bench/migration.py "$@"
    fi
done
bash scripts/install-postgres.sh >/dev/null
for tool in python3 cargo; do
    command -v "$tool" >/dev/null || { echo "migration: $tool is required" >&2; exit 1; }
done
echo "migration: building billing (release)" >&2
cargo build --release --locked -p billing -p billing-testkit --bins >&2
exec python3 bench/migration.py "$@"
