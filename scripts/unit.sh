#!/usr/bin/env bash
# Run the fast tests of tests/ (unit and integration tests: a real redis-server per test, real
# HTTP through uvicorn; no cluster, no docker). tests/chart runs in scripts/chart-check.sh.
#   scripts/unit.sh                other arguments go to pytest (e.g. -k redis, -x)
# Installs what it needs: redis-server (Debian package, as root) and the venv.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"

ensure_redis_server
ensure_venv test

log "pytest tests --ignore=tests/chart"
exec "${VENV}/bin/python" -m pytest tests --ignore=tests/chart -p no:cacheprovider "$@"
