#!/usr/bin/env bash
# The README's test command, and CI's: every stage in order, stopping at the first failure, with
# each stage's duration and the total. Each stage is a script of its own that also runs alone
# (and installs what it needs); this file only lists them.
#   CHAT_HISTORY_SKIP_IMAGE=1    skip the image stage on purpose;
#   CHAT_HISTORY_SKIP_COMPOSE=1  skip the compose stage on purpose;
#   CHAT_HISTORY_SKIP_KIND=1     skip the kind stage (the real Kubernetes) on purpose. Without
#                                them, these three stages are skipped (with the reason) only when
#                                this machine cannot run them: not root, no Go (kind), or no
#                                Debian/Ubuntu apt-get.
# One cluster path: the kind stage runs everything the host-process cluster stage
# (scripts/cluster-e2e.sh) ran, with the same outcome test by test, on the path users take;
# both in one run would not fit CI's 30-minute budget (docs/kind.md, "This project's CI").
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

# optional_stage NAME BLOCKER COMMAND... : a stage that needs root; skipped, with the reason
# BLOCKER prints, on machines that cannot run it. CHAT_HISTORY_SKIP_<NAME>=1 skips it on purpose.
optional_stage() {
  local name="$1" blocker="$2" why="" var
  shift 2
  var="CHAT_HISTORY_SKIP_${name^^}"
  if [[ "${!var:-0}" != 0 ]]; then
    why="${var} is set"
  else
    why="$("${blocker}")"
  fi
  if [[ -n "${why}" ]]; then
    log "-- ${name} SKIPPED: ${why}. It runs as root on Debian/Ubuntu: sudo $*"
    summary+=("${name} skipped")
  else
    stage "${name}" "$@"
  fi
}

# One install of the venv for every stage below: each stage's own ensure_venv finds it done.
stage venv ensure_venv test,e2e,bench
stage lint ./scripts/lint.sh
stage chart ./scripts/chart-check.sh
stage unit ./scripts/unit.sh
stage fuzz ./scripts/fuzz.sh
optional_stage image image_blocker ./scripts/image-check.sh
# compose.yaml for real, on the image the stage above built (same docker daemon, same needs).
optional_stage compose image_blocker ./scripts/compose-check.sh
# --require-target: a suite that could not deploy fails here, it does not pass as skipped.
stage e2e ./scripts/e2e.sh --target local --require-target -p no:cacheprovider
stage bench ./scripts/bench.sh --smoke
# The user's kind path (docs/kind.md) on a node image built from source: nothing is pulled.
optional_stage kind kind_blocker ./scripts/kind-e2e.sh

printf -v recap '%s, ' "${summary[@]}"
log "all stages passed in $((SECONDS - run_started)) s (${recap%, })"
