#!/bin/sh
# Entrypoint of the local curl image, with the same contract as curlimages/curl's:
# a command that exists runs as it is (`sh -c ...`, `curl ...`), anything else
# is taken as curl's arguments.
set -e
if [ "$#" -eq 0 ]; then set -- curl --help; fi
if [ "${1#-}" != "$1" ] || ! command -v "$1" >/dev/null 2>&1; then set -- curl "$@"; fi
exec "$@"
