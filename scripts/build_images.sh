#!/usr/bin/env bash
# `make images`: builds the four CPU images (loraplex/{registry,retrieval,training,inference})
# on this machine, whatever it can reach, and prints each one's build time and size.
#
# - Base: scripts/base_image.sh (the official python:3.11-slim-bookworm, or a stand-in built
#   from Debian packages where it cannot be pulled; it says which).
# - Build inputs (docker/build-inputs/, builder stage only): this machine's pip CA bundle and
#   index, so builds behind a TLS-inspecting proxy work; and, where the PyTorch CPU index cannot
#   be reached, the CPU torch wheel from pip's local find-links (and TORCH_INDEX_URL = the pip
#   index, which has torch's dependencies).
# Layers are cached by the engine: a rebuild after a code change redoes only the last layers.
#   LORAPLEX_IMAGE_TAG (0.1.0), LORAPLEX_IMAGES ("registry retrieval training inference"),
#   LORAPLEX_BUILD_CA / LORAPLEX_BUILD_INDEX_URL (default: from pip's configuration),
#   DOCKER_BUILD_NETWORK (host: no bridge needed on the build machine)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TAG="${LORAPLEX_IMAGE_TAG:-0.1.0}"
read -r -a IMAGES <<<"${LORAPLEX_IMAGES:-registry retrieval training inference}"
NETWORK="${DOCKER_BUILD_NETWORK:-host}"
INPUTS=docker/build-inputs
TORCH_INDEX="https://download.pytorch.org/whl/cpu"
TORCH_WHEEL="torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_$(uname -m).whl"
PYTHON="${PYTHON:-python3}"

step() { printf '\n== %s\n' "$*"; }
pip_config() { "$PYTHON" -m pip config get "global.$1" 2>/dev/null || true; }

command -v docker >/dev/null && docker info >/dev/null 2>&1 || {
  echo "no Docker engine answers (docker info): install and start one first" >&2
  exit 1
}

step "base image"
BASE="$(bash scripts/base_image.sh)"
echo "  $BASE"

step "build inputs ($INPUTS, builder stage only)"
find "$INPUTS" -mindepth 1 ! -name README.md ! -name .gitignore -exec rm -rf {} +
conf=()
ca="${LORAPLEX_BUILD_CA:-${PIP_CERT:-$(pip_config cert)}}"
if [[ -n "$ca" && -f "$ca" ]]; then
  cp "$ca" "$INPUTS/ca.crt"
  conf+=("cert = /build-inputs/ca.crt")
  echo "  CA bundle: $ca"
fi
index="${LORAPLEX_BUILD_INDEX_URL:-${PIP_INDEX_URL:-$(pip_config index-url)}}"
if [[ "$index" == http* ]]; then
  conf+=("index-url = $index")
  echo "  pip index: $index"
fi
torch_arg=()
if "$PYTHON" - "$TORCH_INDEX/torch/" "${ca:-}" 2>/dev/null <<'EOF'; then
import ssl, sys, urllib.request
context = ssl.create_default_context(cafile=sys.argv[2] or None)
urllib.request.urlopen(sys.argv[1], timeout=20, context=context).close()
EOF
  echo "  torch: from $TORCH_INDEX"
else
  wheel=""
  links="${PIP_FIND_LINKS:-$(pip_config find-links)}"
  for dir in $links; do
    [[ -f "$dir/$TORCH_WHEEL" ]] && wheel="$dir/$TORCH_WHEEL" && break
  done
  if [[ -z "$wheel" ]]; then
    echo "  the PyTorch CPU index ($TORCH_INDEX) cannot be reached, and no $TORCH_WHEEL" >&2
    echo "  is in pip's find-links: put it in $INPUTS/wheels/ or set PIP_FIND_LINKS" >&2
    exit 1
  fi
  mkdir -p "$INPUTS/wheels"
  ln -f "$wheel" "$INPUTS/wheels/" 2>/dev/null || cp "$wheel" "$INPUTS/wheels/"
  conf+=("find-links = /build-inputs/wheels")
  torch_arg=(--build-arg "TORCH_INDEX_URL=${index:-https://pypi.org/simple}")
  echo "  torch: the PyTorch CPU index cannot be reached; using $wheel"
fi
if ((${#conf[@]})); then
  { echo "[global]"; printf '%s\n' "${conf[@]}"; } >"$INPUTS/pip.conf"
fi

declare -A took
for svc in "${IMAGES[@]}"; do
  step "loraplex/$svc:$TAG (docker/$svc.Dockerfile)"
  start=$SECONDS
  docker build --network "$NETWORK" -f "docker/$svc.Dockerfile" \
    --build-arg "BASE_IMAGE=$BASE" "${torch_arg[@]}" -t "loraplex/$svc:$TAG" .
  took[$svc]=$((SECONDS - start))
done

step "images (base $BASE)"
printf '  %-28s %10s %8s\n' image size build
for svc in "${IMAGES[@]}"; do
  size=$(docker image inspect -f '{{.Size}}' "loraplex/$svc:$TAG")
  printf '  %-28s %7d MB %6d s\n' "loraplex/$svc:$TAG" $((size / 1000000)) "${took[$svc]}"
done
