# shellcheck shell=bash
# Helpers shared by scripts/*.sh. Source it, don't run it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
: "${VENV:=${REPO_ROOT}/.venv}"

# log MESSAGE... : progress and errors go to stderr, tagged with the script's name.
log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

# die MESSAGE... : say what is wrong (and how to fix it), then exit 1.
die() {
  log "$*"
  exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# require COMMAND HOW-TO-GET-IT : exit with a clear message when COMMAND is missing.
require() { have "$1" || die "$1 not found: $2"; }

# ensure_venv : create .venv and install the project with the extras in VENV_EXTRAS (default
# test,e2e), pinned by constraints.txt. Reinstalls only when pyproject.toml or constraints.txt is
# newer than the last install.
ensure_venv() {
  local extras="${VENV_EXTRAS:-test,e2e}"
  local stamp="${VENV}/.installed-${extras//,/-}"
  if [[ ! -x "${VENV}/bin/python" ]]; then
    require python3 "install Python >= 3.11 (Debian/Ubuntu: apt-get install python3 python3-venv)"
    log "creating ${VENV}"
    python3 -m venv "${VENV}" ||
      die "python3 -m venv failed: apt-get install python3-venv (Debian/Ubuntu)"
  fi
  if [[ ! -f "${stamp}" || "${REPO_ROOT}/pyproject.toml" -nt "${stamp}" ||
    "${REPO_ROOT}/constraints.txt" -nt "${stamp}" ]]; then
    log "installing chat-history[${extras}] into ${VENV} (versions pinned by constraints.txt)"
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
      -c "${REPO_ROOT}/constraints.txt" -e "${REPO_ROOT}[${extras}]"
    touch "${stamp}"
  fi
}

# ensure_debian_packages PKG... : installs the missing ones with apt-get when root on Debian or
# Ubuntu; elsewhere says exactly what is missing and exits.
ensure_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("${pkg}")
  done
  ((${#missing[@]} == 0)) && return 0
  if [[ -r /etc/debian_version && "${EUID}" -eq 0 ]] && have apt-get; then
    log "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    die "missing: ${missing[*]}. Debian/Ubuntu: sudo apt-get install ${missing[*]};" \
      "Fedora: sudo dnf install redis nginx ShellCheck; macOS: brew install redis nginx shellcheck"
  fi
}

# ensure_redis_server : redis-server on PATH; installed with apt-get on Debian/Ubuntu as root.
ensure_redis_server() {
  have redis-server && return 0
  ensure_debian_packages redis-server
  have redis-server || die "redis-server is installed but not on PATH"
}

# helm_bin : the helm that scripts/tools.sh built, else the one on PATH.
helm_bin() {
  if [[ -x "${REPO_ROOT}/.tools/bin/helm" ]]; then
    printf '%s\n' "${REPO_ROOT}/.tools/bin/helm"
  elif have helm; then
    command -v helm
  else
    die "helm not found: scripts/tools.sh builds it (needs Go), or see" \
      "https://helm.sh/docs/intro/install/"
  fi
}
