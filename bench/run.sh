#!/usr/bin/env bash
# The benchmark of issue 5: billing (release build) against PostgreSQL's own ceiling (pgbench running the same SQL),
# on a throwaway PostgreSQL at default durability, all on this machine over loopback. Prints one table and writes
# it as JSON (default bench/results/latest.json). Not part of the tests; never run by CI.
#
#   bash bench/run.sh                      # 3 runs x 10 s per case (~8 min), medians
#   bash bench/run.sh --runs 1 --duration 5 --cases get add
#   bash bench/run.sh --runs 1 --duration 3 --warmup 1 --cases add add_keyed   # keyed /add beside unkeyed, quick
#   bash bench/run.sh --billing-env RUST_LOG=warn --label "access log off"
#   bash bench/run.sh --compare bench/results/a.json bench/results/b.json
#   bash bench/run.sh --merge a.json b.json --out merged.json   # medians over the runs of both
#
# Everything it starts is stopped by PID when it ends (bench/bench.py owns the processes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for arg in "$@"; do
    if [[ "$arg" == "--compare" || "$arg" == "--merge" || "$arg" == "-h" || "$arg" == "--help" ]]; then
        exec python3 bench/bench.py "$@"
    fi
done

bash scripts/install-postgres.sh >/dev/null
if ! command -v wrk >/dev/null; then
    echo "bench: installing wrk (Debian package)" >&2
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
    command -v wrk >/dev/null || { echo "bench: wrk could not be installed; install the Debian package wrk" >&2; exit 1; }
fi
for tool in python3 cargo curl; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done
echo "bench: building billing (release)" >&2
cargo build --release --locked -p billing -p billing-testkit --bins >&2
exec python3 bench/bench.py "$@"
