#!/usr/bin/env bash
# Benchmarks: the Redis history store against langchain-community's and raw redis-py, the HTTP
# path against a bare FastAPI endpoint, and memory. Everything runs on 127.0.0.1 in processes
# this script's Python starts and stops (redis-server, uvicorn replicas, nginx, wrk).
#
#   scripts/bench.sh            # full run (~10 min): rewrites docs/benchmarks.md + docs/img/
#   scripts/bench.sh --smoke    # tiny sizes (~30 s), report in a temp dir; checks the counts
#   scripts/bench.sh --only store,http        # a subset (store, http, memory)
#
# Installs what it needs: the venv with the bench extra, and (Debian, root) redis-server,
# redis-tools, wrk and nginx-light.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"

ensure_debian_packages redis-server redis-tools wrk nginx-light
ensure_venv test,e2e,bench
if ! "${VENV}/bin/python" -c 'import langchain_community, matplotlib' 2>/dev/null; then
  log "the bench extra is not installed: ${VENV}/bin/pip install -c constraints.txt -e '.[bench]'"
  exit 1
fi

log "python -m bench.run $*"
exec "${VENV}/bin/python" -m bench.run "$@"
