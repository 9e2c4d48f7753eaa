#!/usr/bin/env bash
# Lint everything: ruff check and ruff format --check (Python), shellcheck (every tracked shell
# script and .ci/run), mypy (strict; its file list lives in pyproject.toml).
#   scripts/lint.sh
# Installs what it needs: shellcheck (Debian package, as root) and the venv.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "${REPO_ROOT}"

have shellcheck || ensure_debian_packages shellcheck
# mypy reads every Python folder, bench/ too, so it needs every extra's packages.
ensure_venv test,e2e,bench

log "ruff check"
"${VENV}/bin/ruff" check .
log "ruff format --check"
"${VENV}/bin/ruff" format --check .

mapfile -t shell_scripts < <(git ls-files -co --exclude-standard '*.sh' .ci/run)
log "shellcheck: ${#shell_scripts[@]} scripts"
shellcheck -x "${shell_scripts[@]}"

log "mypy"
"${VENV}/bin/mypy"
