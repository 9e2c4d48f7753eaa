#!/usr/bin/env bash
# Run the fast tests of tests/ (unit and integration tests: a real redis-server per test, real
# HTTP through uvicorn; no cluster, no docker). tests/chart runs in scripts/chart-check.sh,
# tests/fuzz (Schemathesis) in scripts/fuzz.sh.
#   scripts/unit.sh                other arguments go to pytest (e.g. -k redis, -x, -n 0)
# Installs what it needs: redis-server, and for tests/web's browser tests chromium (Debian's, driven
# by Playwright; no browser is downloaded) and nginx-light (Debian packages, as root), and the venv.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"

ensure_redis_server
if can_apt; then
  # redis-sentinel: tests/history/test_redis_sentinel.py runs real Sentinels.
  ensure_debian_packages chromium nginx-light redis-sentinel
else
  # tests/web then skips its browser tests, saying so; with CI set it fails instead.
  have chromium || log "chromium not found: tests/web's browser tests need it (Debian package chromium)"
  have nginx || have /usr/sbin/nginx ||
    log "nginx not found: tests/web's browser tests need it (Debian package nginx-light)"
  have redis-sentinel ||
    log "redis-sentinel not found: the Sentinel tests need it (Debian package redis-sentinel)"
fi
ensure_venv test

# pytest-xdist: one worker per core, at most 2 (the timing-sensitive tests are checked with 2,
# as on CI's 2 cores). Each worker starts its own Redis servers and cluster on free ports.
# A later -n wins: scripts/unit.sh -n 0 -x runs in one process.
workers=$(nproc 2>/dev/null || echo 1)
((workers > 2)) && workers=2
log "pytest tests --ignore=tests/chart --ignore=tests/fuzz on ${workers} workers"
exec "${VENV}/bin/python" -m pytest tests --ignore=tests/chart --ignore=tests/fuzz -p no:cacheprovider \
  -n "${workers}" "$@"
