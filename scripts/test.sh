#!/usr/bin/env bash
# The README's test command, and CI's: every stage in order, stopping at the first failure, with
# each stage's duration and the total. Each stage is a script of its own that also runs alone
# (and installs what it needs); this file only lists them.
#   CHAT_HISTORY_SKIP_CLUSTER=1  skip the real-Kubernetes stage on purpose. Without it, the stage
#                                is skipped (with the reason) only when this machine cannot run
#                                it: not root, or neither containerd nor Debian's apt-get.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"

run_started=${SECONDS}
summary=()

# stage NAME COMMAND... : run one stage, print its duration; a failure ends the run.
stage() {
  local name="$1" started=${SECONDS} rc=0
  shift
  log "== ${name}: $*"
  "$@" || rc=$?
  if ((rc != 0)); then
    log "-- ${name} FAILED (exit ${rc}) after $((SECONDS - started)) s; rerun it alone: $*"
    exit "${rc}"
  fi
  log "-- ${name}: $((SECONDS - started)) s"
  summary+=("${name} $((SECONDS - started)) s")
}

# One install of the venv for every stage below: each stage's own ensure_venv finds it done.
stage venv ensure_venv test,e2e,bench
stage lint ./scripts/lint.sh
stage chart ./scripts/chart-check.sh
stage unit ./scripts/unit.sh
stage image ./scripts/image-check.sh
stage e2e ./scripts/e2e.sh --target local -p no:cacheprovider
stage bench ./scripts/bench.sh --smoke

skipped=""
if [[ "${CHAT_HISTORY_SKIP_CLUSTER:-0}" != 0 ]]; then
  skipped="CHAT_HISTORY_SKIP_CLUSTER is set"
else
  skipped="$(cluster_blocker)"
fi
if [[ -n "${skipped}" ]]; then
  log "-- cluster SKIPPED: ${skipped}. It runs alone as root on Debian/Ubuntu:" \
    "sudo ./scripts/cluster-e2e.sh"
  summary+=("cluster skipped")
else
  stage cluster ./scripts/cluster-e2e.sh
fi

printf -v recap '%s, ' "${summary[@]}"
log "all stages passed in $((SECONDS - run_started)) s (${recap%, })"
