#!/usr/bin/env bash
# Build the image, load it into the cluster, and install both releases (memory and redis).
#   scripts/deploy.sh             kind cluster ${CLUSTER} if the context is kind-*, minikube if
#                                 the context is minikube, else the image must already be there
#   scripts/deploy.sh kind|minikube|none    choose how the image gets into the cluster
# Each backend gets its namespace: chat-history-memory and chat-history-redis. The releases get
# the chart's defaults (the files under helm/chat-history/ci/ are CI's own, never installed
# here); VALUES=my-values.yaml scripts/deploy.sh adds values of yours to both.
# Without a registry (docs/kind.md, "Air-gapped"): DOCKER_BUILD_ARGS adds arguments to the
# `docker build` (e.g. "--build-arg BASE_IMAGE=my/python:3.11 --network=host"), and
# EXTRA_IMAGES="img:tag ..." loads more local images into the cluster (e.g. your Redis image,
# named in your VALUES file).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${CLUSTER:=chat-history}"
: "${IMAGE_REPOSITORY:=chat-history}"
: "${IMAGE_TAG:=dev}"
: "${NAMESPACE_PREFIX:=chat-history}"
: "${HELM_TIMEOUT:=5m}"
image="${IMAGE_REPOSITORY}:${IMAGE_TAG}"

require docker "install Docker: https://docs.docker.com/engine/install/"
require kubectl "install kubectl: https://kubernetes.io/docs/tasks/tools/"
HELM="$(helm_bin)"
context="$(kubectl config current-context 2>/dev/null)" ||
  die "no current kubeconfig context: create a cluster first (scripts/kind-up.sh)"

loader="${1:-}"
if [[ -z "${loader}" ]]; then
  case "${context}" in
    kind-*) loader=kind; CLUSTER="${context#kind-}" ;;
    minikube) loader=minikube ;;
    *) loader=none ;;
  esac
fi

[[ -f "${REPO_ROOT}/Dockerfile" ]] || die "no Dockerfile in ${REPO_ROOT}"
log "building ${image}"
# shellcheck disable=SC2086 # DOCKER_BUILD_ARGS is a list of arguments
docker build ${DOCKER_BUILD_ARGS:-} --tag "${image}" "${REPO_ROOT}"
images=("${image}")
for extra in ${EXTRA_IMAGES:-}; do
  docker image inspect "${extra}" >/dev/null 2>&1 || die "EXTRA_IMAGES: ${extra} is not a local image"
  images+=("${extra}")
done

case "${loader}" in
  kind)
    require kind "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
    log "loading ${images[*]} into kind cluster ${CLUSTER}"
    kind load docker-image "${images[@]}" --name "${CLUSTER}"
    ;;
  minikube)
    require minikube "install minikube: https://minikube.sigs.k8s.io/docs/start/"
    log "loading ${images[*]} into minikube"
    for extra in "${images[@]}"; do minikube image load "${extra}"; done
    ;;
  none) log "context ${context}: not loading ${images[*]}; the nodes must be able to get them" ;;
  *) die "unknown loader ${loader}: use kind, minikube or none" ;;
esac

for backend in memory redis; do
  namespace="${NAMESPACE_PREFIX}-${backend}"
  values=()
  if [[ -n "${VALUES:-}" ]]; then
    [[ -f "${VALUES}" ]] || die "VALUES=${VALUES}: no such file"
    values+=(--values "${VALUES}")
  fi
  log "installing release chat-history (${backend}) in namespace ${namespace}; waiting up to ${HELM_TIMEOUT}"
  "${HELM}" upgrade --install chat-history "${REPO_ROOT}/helm/chat-history" \
    --namespace "${namespace}" --create-namespace ${values[@]+"${values[@]}"} \
    --set "history.backend=${backend}" \
    --set "image.repository=${IMAGE_REPOSITORY}" --set "image.tag=${IMAGE_TAG}" \
    --wait --timeout "${HELM_TIMEOUT}"
done

log "done. Try: kubectl -n ${NAMESPACE_PREFIX}-redis port-forward svc/chat-history 8080:80"
log "then:     scripts/e2e.sh --target kube   and   scripts/demo.sh --target kube"
