#!/usr/bin/env bash
# Installs the Debian packages weft's tests and demo use, when any is missing. Root only.
set -euo pipefail
packages=(iproute2 nftables iptables iputils-ping iperf3 busybox-static procps umoci skopeo tar util-linux curl libseccomp-dev debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Docker API's tests: the docker client and docker-compose, unless an engine's client is here.
for tool in docker:docker.io docker-compose:docker-compose; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${tool#*:}" >/dev/null
  fi
done
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain (1.88 or newer), e.g. with rustup, then run again" >&2
  exit 1
fi
