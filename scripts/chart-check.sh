#!/usr/bin/env bash
# Check the Helm chart offline: lint and render every ci/*-values.yaml, validate the output
# against the Kubernetes JSON schemas (strict), check k8s/ for drift, run tests/chart.
# Installs what it needs: the pinned helm (scripts/tools.sh; needs Go the first time on a
# machine) and the project venv.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CHART="${REPO_ROOT}/helm/chat-history"
: "${PYTHON:=${VENV}/bin/python}"
# The cluster version CI runs, and the chart's kubeVersion floor.
: "${KUBE_VERSIONS:=1.35.0 1.29.0}"

if [[ "${PYTHON}" == "${VENV}/bin/python" ]]; then ensure_venv test; fi
[[ -x "${PYTHON}" ]] || die "${PYTHON} not found: unset PYTHON to use the project venv"
"${PYTHON}" -c 'import kubernetes_validate, pytest, yaml' 2>/dev/null ||
  die "kubernetes-validate, pytest or pyyaml missing: ${PYTHON} -m pip install -c constraints.txt -e '.[test]'"

"${REPO_ROOT}/scripts/tools.sh"
HELM="$(helm_bin)"
log "$("${HELM}" version --short)"

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

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
  "${HELM}" template chat-history "${CHART}" --namespace chat-history "${args[@]}" >"${work}/${name}.yaml"
done

for version in ${KUBE_VERSIONS}; do
  log "validating ${#value_sets[@]} renders against Kubernetes ${version} schemas (strict, offline)"
  "${PYTHON}" -m kubernetes_validate --strict --quiet -k "${version}" "${work}"/*.yaml
done

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
