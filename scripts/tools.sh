#!/usr/bin/env bash
# Install the pinned command-line tools the chart checks need into $REPO_ROOT/.tools/bin, and keep
# a copy in $CHAT_HISTORY_CACHE/tools so other clones on this machine (and cluster/build.sh) reuse
# it. Idempotent: a tool whose pinned version is already there is not rebuilt.
#   scripts/tools.sh     then run .tools/bin/helm (the chart scripts call this first)
# The pin (HELM_VERSION) lives in scripts/lib.sh.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TOOLS_BIN="${REPO_ROOT}/.tools/bin"
HELM_MODULE="helm.sh/helm/${HELM_VERSION%%.*}"
CACHED_HELM="${CHAT_HISTORY_CACHE}/tools/helm-${HELM_VERSION}"

mkdir -p "${TOOLS_BIN}"

# helm prints e.g. "v4.3.1+g<sha>"; compare the tag only.
installed_helm_version() {
  [[ -x "${TOOLS_BIN}/helm" ]] || return 0
  "${TOOLS_BIN}/helm" version --template '{{ .Version }}' 2>/dev/null | sed 's/+.*//'
}

if [[ "$(installed_helm_version)" == "${HELM_VERSION}" ]]; then
  log "helm ${HELM_VERSION} already installed"
elif [[ -x "${CACHED_HELM}" ]]; then
  cp "${CACHED_HELM}" "${TOOLS_BIN}/helm"
  log "helm ${HELM_VERSION} copied from ${CACHED_HELM}"
else
  require go "install Go >= 1.26 (https://go.dev/doc/install); helm is built with go install"
  log "building helm ${HELM_VERSION} with go install (first time takes a few minutes)"
  # The version is injected the way helm's Makefile does, so `helm version` reports the tag
  # rather than the default "v4.x-dev" string.
  GOBIN="${TOOLS_BIN}" CGO_ENABLED=0 GOTOOLCHAIN=local go install -trimpath \
    -ldflags "-s -w -X ${HELM_MODULE}/internal/version.version=${HELM_VERSION} -X ${HELM_MODULE}/internal/version.gitTreeState=clean" \
    "${HELM_MODULE}/cmd/helm@${HELM_VERSION}"
  log "helm $("${TOOLS_BIN}/helm" version --short)"
fi
# The machine-wide copy, when the cache directory is writable (it is for root).
if [[ ! -x "${CACHED_HELM}" ]] && mkdir -p "${CHAT_HISTORY_CACHE}/tools" 2>/dev/null; then
  cp "${TOOLS_BIN}/helm" "${CACHED_HELM}.partial" && mv "${CACHED_HELM}.partial" "${CACHED_HELM}"
fi
