#!/usr/bin/env bash
# Prints the base image the CPU Dockerfiles build FROM (their BASE_IMAGE build argument).
#
# That is the official python:3.11-slim-bookworm when it is present or can be pulled. Where it
# cannot (no Docker Hub), this builds a stand-in from Debian's own packages, says so on stderr,
# and prints the stand-in's name: debootstrap of bookworm with python3 (3.11), python3-venv,
# python3-pip, python3-dev (headers, as the official image has them: vLLM's torch.compile and
# the CPU LoRA ops compile against them) and ca-certificates, `python` as a link to python3,
# then `docker import` (~1 minute once; reused while it exists). Needs root for debootstrap.
#   BASE_IMAGE=...      use this image, whatever it is (skips the checks)
#   DEBIAN_MIRROR=...   where debootstrap fetches packages (default http://deb.debian.org/debian)
set -euo pipefail

OFFICIAL="python:3.11-slim-bookworm"
STANDIN="loraplex/python-base:3.11-bookworm"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { printf '%s\n' "$*" >&2; }

if [[ -n "${BASE_IMAGE:-}" ]]; then
  echo "$BASE_IMAGE"
  exit 0
fi
if docker image inspect "$OFFICIAL" >/dev/null 2>&1 \
  || timeout 120 docker pull -q "$OFFICIAL" >/dev/null 2>&1; then
  echo "$OFFICIAL"
  exit 0
fi
if docker image inspect "$STANDIN" >/dev/null 2>&1; then
  say "base image: $OFFICIAL cannot be pulled; using the stand-in $STANDIN built earlier"
  echo "$STANDIN"
  exit 0
fi

say "base image: $OFFICIAL cannot be pulled; building the stand-in $STANDIN"
say "  from Debian bookworm packages ($MIRROR) with debootstrap: python3, python3-venv, python3-pip, python3-dev"
command -v debootstrap >/dev/null || {
  say "  debootstrap is missing: apt-get install -y debootstrap (or pull $OFFICIAL)"
  exit 1
}
ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT
start=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python3-dev,ca-certificates \
  bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
  tail -20 "$ROOTFS.log" >&2
  exit 1
}
rm -f "$ROOTFS.log"
ln -sf python3 "$ROOTFS/usr/bin/python"
# The same suites as the official image, so `apt-get install` in a Dockerfile gets updates.
rm -f "$ROOTFS/etc/apt/sources.list"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/tmp/*
tar -C "$ROOTFS" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$STANDIN" >/dev/null
say "  built $STANDIN in $((SECONDS - start)) s"
echo "$STANDIN"
