#!/usr/bin/env bash
# Check the Helm chart offline: lint and render every ci/*-values.yaml, validate the output
# against the Kubernetes JSON schemas (strict), judge it with kube-score and checkov, check k8s/
# for drift, run tests/chart.
# Installs what it needs: the pinned helm, kube-score and checkov (scripts/tools.sh; needs Go
# the first time on a machine), redis-cli (Debian package redis-tools: tests/chart runs the
# chart's Sentinel prepare script with it) and the project venv.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CHART="${REPO_ROOT}/helm/chat-history"
: "${PYTHON:=${VENV}/bin/python}"
# The cluster version CI runs, and the chart's kubeVersion floor.
: "${KUBE_VERSIONS:=1.35.0 1.29.0}"

have redis-cli || ensure_debian_packages redis-tools
have redis-cli || die "redis-cli is installed but not on PATH"
if [[ "${PYTHON}" == "${VENV}/bin/python" ]]; then ensure_venv test; fi
[[ -x "${PYTHON}" ]] || die "${PYTHON} not found: unset PYTHON to use the project venv"
"${PYTHON}" -c 'import kubernetes_validate, pytest, yaml' 2>/dev/null ||
  die "kubernetes-validate, pytest or pyyaml missing: ${PYTHON} -m pip install -c constraints.txt -e '.[test]'"

started=${SECONDS}
"${REPO_ROOT}/scripts/tools.sh" helm kube-score checkov
log "tools ready in $((SECONDS - started)) s"
HELM="$(helm_bin)"
log "$("${HELM}" version --short)"

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
mkdir "${work}/renders"

value_sets=("")
for f in "${CHART}"/ci/*-values.yaml; do
  value_sets+=("${f}")
done

for values in "${value_sets[@]}"; do
  name="$(basename "${values:-defaults}" -values.yaml)"
  args=()
  [[ -n "${values}" ]] && args=(-f "${values}")
  log "${name}: helm lint --strict"
  "${HELM}" lint --strict "${CHART}" "${args[@]}" >"${work}/lint.log" 2>&1 || {
    cat "${work}/lint.log" >&2
    exit 1
  }
  log "${name}: helm template"
  "${HELM}" template chat-history "${CHART}" --namespace chat-history "${args[@]}" >"${work}/renders/${name}.yaml"
done

for version in ${KUBE_VERSIONS}; do
  log "validating ${#value_sets[@]} renders against Kubernetes ${version} schemas (strict, offline)"
  "${PYTHON}" -m kubernetes_validate --strict --quiet -k "${version}" "${work}"/renders/*.yaml
done

# The linters run as they ship, over every render. The checks skipped here are deliberate
# choices, each with its reason in helm/chat-history/README.md ("What the linters say"); a
# single object's skip is an annotation on that object, with its reason.
#   container-image-pull-policy / CKV_K8S_15: IfNotPresent, so an air-gapped cluster (no
#     registry) runs locally loaded images; tags are pinned and never "latest" (the schema).
#   CKV_K8S_43 (image digests): locally built images have no registry digest.
started=${SECONDS}
log "kube-score ${KUBE_SCORE_VERSION}: ${#value_sets[@]} renders"
"${REPO_ROOT}/.tools/bin/kube-score" score --output-format ci --exit-one-on-warning \
  --ignore-test container-image-pull-policy "${work}"/renders/*.yaml >"${work}/kube-score.log" || {
  grep -v '^\[OK\]\|^\[SKIPPED\]' "${work}/kube-score.log" >&2
  die "kube-score found the problems above: fix them, or list a deliberate choice in helm/chat-history/README.md"
}
log "kube-score: no findings ($((SECONDS - started)) s)"
started=${SECONDS}
log "checkov ${CHECKOV_VERSION}: ${#value_sets[@]} renders"
# --skip-download: the rules ship with checkov; only its vendor's guideline links are online.
CKV_SKIP_PACKAGE_UPDATE_CHECK=true "${REPO_ROOT}/.tools/bin/checkov" --directory "${work}/renders" \
  --framework kubernetes --quiet --compact --skip-download \
  --skip-check CKV_K8S_15,CKV_K8S_43 >"${work}/checkov.log" 2>&1 || {
  cat "${work}/checkov.log" >&2
  die "checkov found the problems above: fix them, or list a deliberate choice in helm/chat-history/README.md"
}
log "checkov: no findings ($((SECONDS - started)) s)"

log "k8s/ drift check"
mkdir -p "${work}/k8s"
"${REPO_ROOT}/scripts/render-k8s.sh" --out "${work}/k8s" 2>/dev/null
if ! diff -ru "${REPO_ROOT}/k8s" "${work}/k8s" -x README.md >"${work}/k8s.diff"; then
  head -n 40 "${work}/k8s.diff" >&2
  log "k8s/ is out of date with helm/chat-history: run scripts/render-k8s.sh and commit k8s/"
  exit 1
fi
"${PYTHON}" -m kubernetes_validate --strict --quiet -k "${KUBE_VERSIONS%% *}" "${REPO_ROOT}"/k8s/*.yaml

log "pytest tests/chart"
cd "${REPO_ROOT}"
"${PYTHON}" -m pytest tests/chart -q
