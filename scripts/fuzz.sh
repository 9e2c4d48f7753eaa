#!/usr/bin/env bash
# Run Schemathesis (the third-party judge of the HTTP API and its OpenAPI document) against real
# replicas: memory and Redis, each with both memory APIs, `--checks all`, a fixed seed
# (tests/fuzz). Prints the operations and cases per replica; fails on any failure.
#   scripts/fuzz.sh                other arguments go to pytest (e.g. -k redis)
# Installs what it needs: redis-server (Debian package, as root) and the venv.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"

ensure_redis_server
ensure_venv test

log "pytest tests/fuzz"
exec "${VENV}/bin/python" -m pytest tests/fuzz -p no:cacheprovider -s "$@"
