#!/usr/bin/env bash
# Benchmarks: the Redis history store against langchain-community's and raw redis-py, the HTTP
# path against a bare FastAPI endpoint, memory, and LangGraph checkpointers (this project's,
# InMemorySaver, SQLite, PostgreSQL) against the history path. Everything runs on 127.0.0.1 in
# processes this script's Python starts and stops (redis-server, PostgreSQL, uvicorn replicas,
# nginx, wrk).
#
#   scripts/bench.sh            # full run (~12 min): rewrites docs/benchmarks.md + docs/img/
#   scripts/bench.sh --smoke    # tiny sizes (~45 s), report in a temp dir; checks the counts
#   scripts/bench.sh --only store,http        # a subset (store, http, profile, memory, checkpoint)
#   scripts/bench.sh --only checkpoint        # updates only that section of docs/benchmarks.md
#
# Installs what it needs: the venv with the bench extra, and (Debian, root) redis-server,
# redis-tools, wrk, nginx-light and postgresql.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"

ensure_debian_packages redis-server redis-tools wrk nginx-light postgresql
ensure_venv test,e2e,bench
if ! "${VENV}/bin/python" -c 'import langchain_community, matplotlib, langgraph.checkpoint.sqlite.aio, langgraph.checkpoint.postgres.aio' 2>/dev/null; then
  log "the bench extra is not installed: ${VENV}/bin/pip install -c constraints.txt -e '.[bench]'"
  exit 1
fi

log "python -m bench.run $*"
exec "${VENV}/bin/python" -m bench.run "$@"
