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

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test (real PostgreSQL, real service processes)"
cargo test --workspace --locked

step "chart checks"
bash scripts/check-chart.sh

printf '\nall tests and checks passed in %ss\n' "$((SECONDS - started))"
