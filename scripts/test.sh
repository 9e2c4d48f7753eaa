#!/usr/bin/env bash
# The README's test command, and CI's: installs what it needs, then lint, types, tests.
# Stages run in order and stop at the first failure. Long stages print progress.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

: "${PYTHON:=python3}"
: "${VENV:=$REPO_ROOT/.venv}"

log() { printf '[test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stage_started=0
stage() {
  local now
  now=$(date +%s)
  if [ "$stage_started" -ne 0 ]; then log "... took $((now - stage_started)) s"; fi
  stage_started=$now
  log "== $*"
}

# Debian packages this stage needs: installed when we are root on Debian, else named.
ensure_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    die "missing packages: ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]}; macOS: brew install redis shellcheck nginx)"
  fi
}

ensure_venv() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python >= 3.11 is required (found $("$PYTHON" --version 2>&1))"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  log "installing the project with test, e2e and bench extras from constraints.txt"
  "$VENV/bin/pip" install -q --disable-pip-version-check -c constraints.txt -e '.[test,e2e,bench]'
}

stage "setup: Debian packages and virtualenv"
ensure_debian_packages redis-server shellcheck
ensure_venv
export PATH="$VENV/bin:$PATH"

stage "lint: ruff, shellcheck"
ruff check .
ruff format --check .
mapfile -t shell_scripts < <(git ls-files -co --exclude-standard '*.sh' .ci/run)
shellcheck "${shell_scripts[@]}"

stage "types: mypy --strict on service/"
mypy

stage "tests: pytest tests/ (real redis-server, real HTTP)"
pytest tests

stage "done"
log "all stages passed"
