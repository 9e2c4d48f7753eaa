# shellcheck shell=bash
# Helpers shared by every shell script of the repository (scripts/*.sh and cluster/*.sh).
# Source it, don't run it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
: "${VENV:=${REPO_ROOT}/.venv}"
# Build outputs reused across clones on this machine (helm, the cluster's binaries, rootfs
# tarballs), keyed by version.
: "${CHAT_HISTORY_CACHE:=/var/cache/chat-history}"
# The one helm every script uses; scripts/tools.sh builds it.
: "${HELM_VERSION:=v4.3.1}"
# The docker compose scripts/compose-check.sh uses; scripts/tools.sh builds it (its go.mod's Go
# version must not be newer than the Go on the machine).
: "${COMPOSE_VERSION:=v5.6.0}"
# The kind the kind stage (scripts/kind-e2e.sh) builds and runs; cluster/kind-node-image.sh
# writes the node-side setup this version expects.
: "${KIND_VERSION:=v0.33.0}"
# The chart linters scripts/chart-check.sh runs over the rendered chart (scripts/tools.sh).
: "${KUBE_SCORE_VERSION:=v1.20.0}"
: "${CHECKOV_VERSION:=3.3.30}"

# The speaking script as the log shows it: "test" for scripts/test.sh, "cluster/up" for
# cluster/up.sh.
LOG_NAME="$(basename "$0" .sh)"
_log_dir="$(cd "$(dirname "$0")" 2>/dev/null && pwd)" || _log_dir=""
case "${_log_dir}" in
  "${REPO_ROOT}/scripts") ;;
  "${REPO_ROOT}"/*) LOG_NAME="${_log_dir#"${REPO_ROOT}/"}/${LOG_NAME}" ;;
esac
unset _log_dir

# log MESSAGE... : progress and errors go to stderr, tagged with the script's name.
log() { printf '[%s] %s\n' "${LOG_NAME}" "$*" >&2; }

# die MESSAGE... : say what is wrong (and how to fix it), then exit 1.
die() {
  log "$*"
  exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# require COMMAND HOW-TO-GET-IT : exit with a clear message when COMMAND is missing.
require() { have "$1" || die "$1 not found: $2"; }

# ensure_venv [EXTRAS] : create .venv and install the project with EXTRAS (default: $VENV_EXTRAS,
# else test,e2e), pinned by constraints.txt. Installs only when no earlier install covers EXTRAS
# (a stamp per install, e.g. .installed-test-e2e-bench also covers "test"), or when
# pyproject.toml or constraints.txt is newer than that install: so scripts/test.sh installs
# once, and each stage run alone installs at most what it lacks.
# shellcheck disable=SC2120 # EXTRAS is optional
ensure_venv() {
  local extras="${1:-${VENV_EXTRAS:-test,e2e}}" stamp have_extras extra covered
  if [[ ! -x "${VENV}/bin/python" ]]; then
    require python3 "install Python >= 3.11 (Debian/Ubuntu: apt-get install python3 python3-venv)"
    log "creating ${VENV}"
    python3 -m venv "${VENV}" ||
      die "python3 -m venv failed: apt-get install python3-venv (Debian/Ubuntu)"
  fi
  for stamp in "${VENV}"/.installed-*; do
    [[ -f "${stamp}" && ! "${REPO_ROOT}/pyproject.toml" -nt "${stamp}" &&
      ! "${REPO_ROOT}/constraints.txt" -nt "${stamp}" ]] || continue
    have_extras="-${stamp##*/.installed-}-"
    covered=1
    for extra in ${extras//,/ }; do
      [[ "${have_extras}" == *"-${extra}-"* ]] || covered=""
    done
    [[ -n "${covered}" ]] && return 0
  done
  log "installing chat-history-k8s[${extras}] into ${VENV} (versions pinned by constraints.txt)"
  # uv (its version pinned in constraints.txt too) installs the same pins in about 25 s where
  # pip took about a minute (CI, 127 packages, warm caches). Like pip, it compiles the bytecode
  # at install time: without it, with PYTHONDONTWRITEBYTECODE set (as on CI), every process
  # compiled every module it imported (CI's unit stage took 40 s longer, e2e 90 s). Where uv
  # cannot be installed (no wheel for this platform), pip does the install itself.
  if [[ ! -x "${VENV}/bin/uv" ]]; then
    "${VENV}/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q \
      -c "${REPO_ROOT}/constraints.txt" uv ||
      log "uv could not be installed (see above): pip installs the packages, in a few minutes"
  fi
  if [[ -x "${VENV}/bin/uv" ]]; then
    "${VENV}/bin/uv" pip install --compile-bytecode --python "${VENV}/bin/python" \
      -c "${REPO_ROOT}/constraints.txt" -e "${REPO_ROOT}[${extras}]" 2>&1 | uv_progress ||
      die "uv pip install of chat-history-k8s[${extras}] failed (see above)"
  else
    "${VENV}/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
      -c "${REPO_ROOT}/constraints.txt" -e "${REPO_ROOT}[${extras}]" | pip_progress ||
      die "pip install of chat-history-k8s[${extras}] failed (see above)"
  fi
  touch "${VENV}/.installed-${extras//,/-}"
}

# uv_progress : uv's summary lines (resolved, prepared, installed, with their times) and its
# errors; not the line per package.
uv_progress() {
  local line
  while IFS= read -r line; do
    case "${line}" in
      " + "* | " - "* | " ~ "*) ;;
      *) log "uv: ${line}" ;;
    esac
  done
  return 0
}

# pip_progress : condenses pip's stdout into a progress line every 10 packages, with the time.
pip_progress() {
  local line count=0 started=${SECONDS}
  while IFS= read -r line; do
    case "${line}" in
      Collecting*)
        count=$((count + 1))
        ((count % 10 == 0)) && log "pip: ${count} packages resolved ($((SECONDS - started)) s)"
        ;;
      "Installing collected packages"*) log "pip: installing ${count} packages ($((SECONDS - started)) s)" ;;
      "Successfully installed"*) log "pip: done in $((SECONDS - started)) s" ;;
    esac
  done
  return 0
}

# can_apt : this machine installs Debian packages itself (root on Debian/Ubuntu with apt-get).
can_apt() { [[ -r /etc/debian_version && "${EUID}" -eq 0 ]] && have apt-get; }

# ensure_debian_packages PKG... : installs the missing ones with apt-get when root on Debian or
# Ubuntu; elsewhere says exactly what is missing and exits. apt's output goes to stderr, so
# callers' stdout stays theirs.
ensure_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("${pkg}")
  done
  ((${#missing[@]} == 0)) && return 0
  if can_apt; then
    log "installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >&2
  else
    die "missing Debian packages: ${missing[*]}. As root on Debian/Ubuntu:" \
      "apt-get install ${missing[*]}; elsewhere install their equivalents" \
      "(e.g. Fedora: dnf install redis nginx ShellCheck; macOS: brew install redis nginx shellcheck)"
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

# wait_for SECONDS WHAT COMMAND... : poll COMMAND until it succeeds; after SECONDS, say what was
# awaited and return 1.
wait_for() {
  local seconds="$1" what="$2" deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${seconds}s waiting for ${what}"
      return 1
    fi
    sleep 0.5
  done
}

# image_blocker : prints why this machine cannot run the image stage (scripts/image-check.sh),
# or nothing when it can. scripts/test.sh skips the stage then.
image_blocker() {
  if ((EUID != 0)); then
    echo "not root (it builds the base image with debootstrap and starts its own dockerd)"
  elif ! have docker && ! { [[ -r /etc/debian_version ]] && have apt-get; }; then
    echo "no docker, and no Debian/Ubuntu apt-get to install docker.io and debootstrap with"
  fi
}

# cluster_blocker : prints why this machine cannot run the real-Kubernetes stage
# (scripts/cluster-e2e.sh, run by hand since CI runs the kind stage), or nothing when it can.
cluster_blocker() {
  if ((EUID != 0)); then
    echo "not root (it runs etcd, containerd, a kubelet and iptables rules as host processes)"
  elif ! have containerd && ! { [[ -r /etc/debian_version ]] && have apt-get; }; then
    echo "no containerd, and no Debian/Ubuntu apt-get to install it with runc and the CNI plugins"
  fi
}

# prepare_target ARGS... : the options shared by scripts/e2e.sh and scripts/demo.sh. Reads
# --target local|kube, --kind (kind-up.sh + deploy.sh kind, then kube) and --minikube
# (deploy.sh minikube, then kube); prepares that target (local: redis-server, redis-cli, nginx;
# kube: the cluster and the image of IMAGE_REPOSITORY:IMAGE_TAG); sets `target` and
# `target_args` (every other argument, plus the kube target's --kube-set image values).
prepare_target() {
  local prepare=""
  target=local
  target_args=()
  while (($#)); do
    case "$1" in
      --target) target="${2:?--target needs local or kube}"; shift 2 ;;
      --target=*) target="${1#*=}"; shift ;;
      --kind) target=kube; prepare=kind; shift ;;
      --minikube) target=kube; prepare=minikube; shift ;;
      *) target_args+=("$1"); shift ;;
    esac
  done
  case "${target}" in
    local)
      if can_apt; then
        ensure_debian_packages redis-server redis-tools redis-sentinel nginx-light
      else
        ensure_redis_server
        have redis-cli || log "redis-cli not found: runbook steps will be skipped (package redis-tools)"
        have nginx || have /usr/sbin/nginx ||
          log "nginx not found: no load balancer, its test will be skipped (package nginx-light)"
      fi
      ;;
    kube)
      case "${prepare}" in
        kind) "${REPO_ROOT}/scripts/kind-up.sh" && "${REPO_ROOT}/scripts/deploy.sh" kind ;;
        minikube) "${REPO_ROOT}/scripts/deploy.sh" minikube ;;
      esac
      target_args+=(--kube-set "image.repository=${IMAGE_REPOSITORY:-chat-history}"
        --kube-set "image.tag=${IMAGE_TAG:-dev}")
      ;;
    *) die "unknown target ${target}: use local or kube" ;;
  esac
}

# kind_volumes_dir <cluster> : where scripts/kind-up.sh keeps the nodes' volumes with
# KIND_VOLUMES_TMPFS=1 (scripts/kind-down.sh removes it).
kind_volumes_dir() {
  echo "/dev/shm/chat-history-kind/$1"
}

# shm_is_tmpfs : whether /dev/shm, where kind_volumes_dir is, is a tmpfs (memory, not disk).
shm_is_tmpfs() {
  [[ "$(stat -f -c %T /dev/shm 2>/dev/null)" == tmpfs ]]
}

# kind_blocker : prints why this machine cannot run the kind stage (scripts/kind-e2e.sh), or
# nothing when it can. scripts/test.sh skips the stage then.
kind_blocker() {
  if ((EUID != 0)); then
    echo "not root (it builds the node image with debootstrap and runs privileged containers)"
  elif ! have go; then
    echo "no Go to build kind and the node image's binaries with"
  elif ! have docker && ! { [[ -r /etc/debian_version ]] && have apt-get; }; then
    echo "no docker, and no Debian/Ubuntu apt-get to install docker.io with"
  fi
}
