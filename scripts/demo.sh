#!/usr/bin/env bash
# The main job: billing running end to end. For now, on this machine against a throwaway PostgreSQL
# (scripts/demo-local.sh); see README.md for running it on Kubernetes with the chart.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/demo-local.sh" "$@"
