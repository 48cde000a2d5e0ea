#!/usr/bin/env bash
# Every test and check in the repository, from a fresh machine: installs what they need (PostgreSQL, helm 3 and 4,
# the validators), then runs formatting and lint checks, the Rust test suites against real PostgreSQL servers,
# and the chart checks. Exits non-zero on the first failure. This is the command README.md and CI run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

step "installing PostgreSQL server binaries"
bash scripts/install-postgres.sh
step "installing chart tools"
bash scripts/install-tools.sh

step "billing's layers: no import circle, no upward import (docs/architecture.md)"
# The self-test first: the check must still catch a circle and an upward import in fake trees before its verdict
# on the real one means anything.
python3 scripts/check-layers.py --self-test
python3 scripts/check-layers.py billing/src

step "docs that cannot drift: settings, metrics, error kinds, files, English/Russian sections (scripts/check-docs.py)"
# The same order: the self-test proves on a fake repository that each kind of drift is caught, then the real one.
python3 scripts/check-docs.py --self-test
python3 scripts/check-docs.py

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Output is also kept to count the tests at the end.
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

step "cargo test (real PostgreSQL, real service processes)"
cargo test --workspace --locked 2>&1 | tee "$out/cargo.log"

step "the API against its document: Schemathesis on the real binary and PostgreSQL (scripts/check-api.sh)"
# A fixed seed, so that the test command finds the same cases on every run (and CI does not fail one day on a case
# it never met before); `bash scripts/check-api.sh` alone draws a new seed each time, to look further.
API_FUZZ_SEED=${API_FUZZ_SEED:-20261206} bash scripts/check-api.sh

step "chart checks"
bash scripts/check-chart.sh 2>&1 | tee "$out/chart.log"

# pipefail has already stopped the script on any failure; what is left is to say how many tests ran.
cargo_passed=$(awk '/^test result: ok\./ { n += $4 } END { print n + 0 }' "$out/cargo.log")
pytest_passed=$(awk '$2 == "passed" && $1 ~ /^[0-9]+$/ { n = $1 } END { print n + 0 }' "$out/chart.log")
printf '\nall checks passed in %ss (cargo tests: %s, chart tests: %s)\n' \
    "$((SECONDS - started))" "${cargo_passed:-0}" "${pytest_passed:-0}"
echo "tests: $((${cargo_passed:-0} + ${pytest_passed:-0})) passed, 0 failed"
