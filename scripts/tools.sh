#!/usr/bin/env bash
# Install pinned command-line tools into $REPO_ROOT/.tools/bin, and keep a copy in
# $CHAT_HISTORY_CACHE/tools so other clones on this machine (and cluster/build.sh) reuse it.
# Idempotent: a tool whose pinned version is already there is not rebuilt. Both are built from
# source with Go (no binary download), the first time in a few minutes.
#   scripts/tools.sh            helm: .tools/bin/helm (the chart scripts call this first)
#   scripts/tools.sh compose    Docker Compose v2 or later: .tools/bin/docker-compose, run
#                               standalone (scripts/compose-check.sh calls this)
#   scripts/tools.sh kind       kind: .tools/bin/kind (scripts/kind-e2e.sh calls this)
#   scripts/tools.sh helm compose
#   scripts/tools.sh kube-score checkov   the chart linters scripts/chart-check.sh runs
#                               (kube-score built with Go; checkov from PyPI into a venv of its
#                               own, its dependencies pinned by constraints-checkov.txt)
# The pins (HELM_VERSION, COMPOSE_VERSION, KIND_VERSION, KUBE_SCORE_VERSION, CHECKOV_VERSION)
# live in scripts/lib.sh.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TOOLS_BIN="${REPO_ROOT}/.tools/bin"

mkdir -p "${TOOLS_BIN}"

# cache_copy NAME CACHED : the machine-wide copy of .tools/bin/NAME, when the cache directory is
# writable (it is for root).
cache_copy() {
  local name="$1" cached="$2"
  if [[ ! -x "${cached}" ]] && mkdir -p "${CHAT_HISTORY_CACHE}/tools" 2>/dev/null; then
    cp "${TOOLS_BIN}/${name}" "${cached}.partial" && mv "${cached}.partial" "${cached}"
  fi
}

# helm prints e.g. "v4.3.1+g<sha>"; compare the tag only.
installed_helm_version() {
  [[ -x "${TOOLS_BIN}/helm" ]] || return 0
  "${TOOLS_BIN}/helm" version --template '{{ .Version }}' 2>/dev/null | sed 's/+.*//'
}

install_helm() {
  local module="helm.sh/helm/${HELM_VERSION%%.*}"
  local cached="${CHAT_HISTORY_CACHE}/tools/helm-${HELM_VERSION}"
  if [[ "$(installed_helm_version)" == "${HELM_VERSION}" ]]; then
    log "helm ${HELM_VERSION} already installed"
  elif [[ -x "${cached}" ]]; then
    cp "${cached}" "${TOOLS_BIN}/helm"
    log "helm ${HELM_VERSION} copied from ${cached}"
  else
    require go "install Go >= 1.26 (https://go.dev/doc/install); helm is built with go install"
    log "building helm ${HELM_VERSION} with go install (first time takes a few minutes)"
    # The version is injected the way helm's Makefile does, so `helm version` reports the tag
    # rather than the default "v4.x-dev" string.
    GOBIN="${TOOLS_BIN}" CGO_ENABLED=0 GOTOOLCHAIN=local go install -trimpath \
      -ldflags "-s -w -X ${module}/internal/version.version=${HELM_VERSION} -X ${module}/internal/version.gitTreeState=clean" \
      "${module}/cmd/helm@${HELM_VERSION}"
    log "helm $("${TOOLS_BIN}/helm" version --short)"
  fi
  cache_copy helm "${cached}"
}

# `docker-compose version --short` prints e.g. "5.6.0".
installed_compose_version() {
  [[ -x "${TOOLS_BIN}/docker-compose" ]] || return 0
  printf 'v%s\n' "$("${TOOLS_BIN}/docker-compose" version --short 2>/dev/null)"
}

install_compose() {
  local module="github.com/docker/compose/${COMPOSE_VERSION%%.*}"
  local cached="${CHAT_HISTORY_CACHE}/tools/docker-compose-${COMPOSE_VERSION}" src
  if [[ "$(installed_compose_version)" == "${COMPOSE_VERSION}" ]]; then
    log "docker compose ${COMPOSE_VERSION} already installed"
  elif [[ -x "${cached}" ]]; then
    cp "${cached}" "${TOOLS_BIN}/docker-compose"
    log "docker compose ${COMPOSE_VERSION} copied from ${cached}"
  else
    require go "install Go >= 1.26 (https://go.dev/doc/install); docker compose is built with go build"
    log "building docker compose ${COMPOSE_VERSION} with go build (first time takes a few minutes)"
    # `go install module@version` refuses Compose: its go.mod has `exclude` directives. So the
    # module's source is downloaded (checksummed by the Go module proxy and sum database) and
    # built as the main module, the way its Makefile does, version injected.
    src="$(cd / && go mod download -json "${module}@${COMPOSE_VERSION}" |
      sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
    [[ -d "${src}" ]] || die "go mod download ${module}@${COMPOSE_VERSION} failed (see above)"
    (cd "${src}" && CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath \
      -ldflags "-s -w -X ${module}/internal.Version=${COMPOSE_VERSION}" \
      -o "${TOOLS_BIN}/docker-compose" ./cmd) ||
      die "go build of docker compose ${COMPOSE_VERSION} failed (it needs the Go its go.mod names)"
    log "$("${TOOLS_BIN}/docker-compose" version)"
  fi
  cache_copy docker-compose "${cached}"
}

# `kind version` prints e.g. "kind v0.33.0 go1.26.8 linux/amd64".
install_kind() {
  local cached="${CHAT_HISTORY_CACHE}/tools/kind-${KIND_VERSION}"
  if [[ -x "${TOOLS_BIN}/kind" && "$("${TOOLS_BIN}/kind" version 2>/dev/null | cut -d' ' -f2)" == "${KIND_VERSION}" ]]; then
    log "kind ${KIND_VERSION} already installed"
  elif [[ -x "${cached}" ]]; then
    cp "${cached}" "${TOOLS_BIN}/kind"
    log "kind ${KIND_VERSION} copied from ${cached}"
  else
    require go "install Go >= 1.26 (https://go.dev/doc/install); kind is built with go install"
    log "building kind ${KIND_VERSION} with go install"
    GOBIN="${TOOLS_BIN}" CGO_ENABLED=0 GOTOOLCHAIN=local go install -trimpath -ldflags "-s -w" \
      "sigs.k8s.io/kind@${KIND_VERSION}"
    log "$("${TOOLS_BIN}/kind" version)"
  fi
  cache_copy kind "${cached}"
}

# "kube-score version: v1.20.0, commit: ..." (the version is injected below).
installed_kube_score_version() {
  [[ -x "${TOOLS_BIN}/kube-score" ]] || return 0
  "${TOOLS_BIN}/kube-score" version 2>/dev/null | sed -n 's/^kube-score version: \([^,]*\),.*/\1/p'
}

install_kube_score() {
  local cached="${CHAT_HISTORY_CACHE}/tools/kube-score-${KUBE_SCORE_VERSION}" started=${SECONDS}
  if [[ "$(installed_kube_score_version)" == "${KUBE_SCORE_VERSION}" ]]; then
    log "kube-score ${KUBE_SCORE_VERSION} already installed"
  elif [[ -x "${cached}" ]]; then
    cp "${cached}" "${TOOLS_BIN}/kube-score"
    log "kube-score ${KUBE_SCORE_VERSION} copied from ${cached}"
  else
    require go "install Go >= 1.26 (https://go.dev/doc/install); kube-score is built with go install"
    log "building kube-score ${KUBE_SCORE_VERSION} with go install (first time takes a minute or two)"
    GOBIN="${TOOLS_BIN}" CGO_ENABLED=0 GOTOOLCHAIN=local go install -trimpath \
      -ldflags "-s -w -X main.version=${KUBE_SCORE_VERSION}" \
      "github.com/zegl/kube-score/cmd/kube-score@${KUBE_SCORE_VERSION}"
    log "kube-score ${KUBE_SCORE_VERSION} built in $((SECONDS - started)) s"
  fi
  cache_copy kube-score "${cached}"
}

# checkov pins its dependencies tightly (boto3, pydantic, networkx, ...): it gets a venv of its
# own, keyed by its version and the hash of constraints-checkov.txt, in the machine's cache.
install_checkov() {
  local sum venv started=${SECONDS}
  sum="$(sha256sum "${REPO_ROOT}/constraints-checkov.txt" | cut -c1-12)"
  venv="${CHAT_HISTORY_CACHE}/tools/checkov-${CHECKOV_VERSION}-${sum}"
  mkdir -p "${CHAT_HISTORY_CACHE}/tools" 2>/dev/null || venv="${REPO_ROOT}/.tools/checkov-${CHECKOV_VERSION}-${sum}"
  if [[ -f "${venv}/.done" ]]; then
    log "checkov ${CHECKOV_VERSION} already installed"
  else
    require python3 "install Python >= 3.11 (Debian/Ubuntu: apt-get install python3 python3-venv)"
    log "installing checkov ${CHECKOV_VERSION} into ${venv} (first time takes a few minutes)"
    rm -rf "${venv}"
    python3 -m venv "${venv}"
    "${venv}/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q \
      -c "${REPO_ROOT}/constraints-checkov.txt" "checkov==${CHECKOV_VERSION}" ||
      die "pip install of checkov ${CHECKOV_VERSION} failed (see above)"
    touch "${venv}/.done"
    log "checkov ${CHECKOV_VERSION} installed in $((SECONDS - started)) s"
  fi
  ln -sfn "${venv}/bin/checkov" "${TOOLS_BIN}/checkov"
}

(($#)) || set -- helm
for tool in "$@"; do
  case "${tool}" in
    helm) install_helm ;;
    compose) install_compose ;;
    kind) install_kind ;;
    kube-score) install_kube_score ;;
    checkov) install_checkov ;;
    *) die "unknown tool ${tool}: use helm, compose, kind, kube-score or checkov" ;;
  esac
done
