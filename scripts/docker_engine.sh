#!/usr/bin/env bash
# Makes sure a Docker engine answers here (CI, or a fresh Debian machine as root): installs
# Debian's docker.io (and debootstrap, for scripts/base_image.sh) when missing, then starts
# dockerd in the background when none runs. No bridge network and no iptables rules: the
# builds and the containers of `make test-images` use host networking on loopback only.
# Prints the pid of the dockerd it started (nothing when one was already running).
set -euo pipefail

LOG="${DOCKERD_LOG:-/tmp/loraplex-dockerd.log}"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "installing docker.io and debootstrap (apt)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if docker info >/dev/null 2>&1; then
  echo "a Docker engine already answers" >&2
  exit 0
fi
nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$LOG" 2>&1 &
pid=$!
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    echo "dockerd started (pid $pid, log $LOG)" >&2
    echo "$pid"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
echo "dockerd did not start; its log ends:" >&2
tail -20 "$LOG" >&2
exit 1
