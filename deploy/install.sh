#!/usr/bin/env bash
# Installs weft on this host: the weftd and weft binaries, the systemd unit, a configuration, the
# kernel modules weft needs at boot (vxlan, overlay; br_netfilter is not needed), and the tools
# weftd calls (nft). Then starts weftd, unless --no-start.
#
#   install.sh --advertise ADDR --bootstrap                          # the first manager
#   install.sh --advertise ADDR --join MANAGER:7946 --token T [--manager]
#
# Options:
#   --bin-dir DIR       take weftd and weft from DIR (default: build them with cargo, release)
#   --advertise ADDR    this host's underlay address (required for a new configuration)
#   --bootstrap | --join ADDR --token T [--manager] | --token-file FILE
#   --name NAME         node name (default: the host name)
#   --metrics ADDR      Prometheus endpoint (default 127.0.0.1:9946)
#   --no-start          install only
# An existing /etc/weft/weftd.toml is kept as it is.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin_dir="" advertise="" mode="" join="" token="" manager=false name="" metrics="127.0.0.1:9946" start=true
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --advertise) advertise="$2"; shift 2 ;;
    --bootstrap) mode=bootstrap; shift ;;
    --join) mode=join; join="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --token-file) token="$(cat "$2")"; shift 2 ;;
    --manager) manager=true; shift ;;
    --name) name="$2"; shift 2 ;;
    --metrics) metrics="$2"; shift 2 ;;
    --no-start) start=false; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then echo "install.sh must run as root" >&2; exit 1; fi

echo "== packages weftd uses"
export DEBIAN_FRONTEND=noninteractive
missing=()
# libseccomp2 runs weftd's seccomp filters; building from the checkout also needs its -dev package.
need=(nftables iproute2 util-linux libseccomp2)
[ -z "$bin_dir" ] && need+=(libseccomp-dev)
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; fi

echo "== binaries"
if [ -z "$bin_dir" ]; then
  (cd "$here/.." && cargo build --release --bins --quiet)
  bin_dir="${CARGO_TARGET_DIR:-$here/../target}/release"
fi
install -m 0755 "$bin_dir/weftd" /usr/local/bin/weftd
install -m 0755 "$bin_dir/weft" /usr/local/bin/weft

echo "== kernel modules (now and at boot)"
printf 'vxlan\noverlay\n' >/etc/modules-load.d/weft.conf
modprobe vxlan && modprobe overlay

echo "== configuration"
mkdir -p /etc/weft
if [ ! -e /etc/weft/weftd.toml ]; then
  if [ -z "$advertise" ] || [ -z "$mode" ]; then
    echo "install.sh: a new configuration needs --advertise ADDR and --bootstrap or --join ADDR --token T" >&2
    exit 2
  fi
  if [ "$mode" = join ] && [ -z "$token" ]; then
    echo "install.sh: --join needs --token T (run \`weft cluster token worker\` on a manager)" >&2
    exit 2
  fi
  {
    echo 'state-dir = "/var/lib/weft"'
    echo 'socket = "/run/weft/weft.sock"'
    echo "listen = \"0.0.0.0:7946\""
    echo "advertise = \"$advertise\""
    [ -n "$name" ] && echo "name = \"$name\""
    if [ "$mode" = bootstrap ]; then
      echo 'bootstrap = true'
    else
      echo "join = \"$join\""
      echo "token = \"$token\""
      echo "manager = $manager"
    fi
    echo "metrics = \"$metrics\""
  } >/etc/weft/weftd.toml
  chmod 0600 /etc/weft/weftd.toml
fi

echo "== systemd unit"
install -m 0644 "$here/weftd.service" /etc/systemd/system/weftd.service
systemctl daemon-reload
if $start; then
  systemctl enable --now weftd
  for _ in $(seq 100); do [ -S /run/weft/weft.sock ] && break; sleep 0.2; done
  weft node ls
fi
