# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this
# Shared by tests/vm/*.sh: paths, progress lines with timings, failures that show what was expected
# and what was seen, the host packages the VM tests use, QEMU acceleration, and ssh into the VMs.
# Sourced, never run.

VM_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$VM_LIB_DIR/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
# The VM image cache (tests/vm/image.sh): one directory per version of the image recipe.
VM_CACHE="${WEFT_VM_CACHE:-$TARGET_DIR/vm}"

# ---- progress -------------------------------------------------------------------------------

T_START=$EPOCHREALTIME
STEP_NAME="" STEP_T0=""
STEP_NAMES=() STEP_SECS=() STEP_RESULTS=()
FAILURES=()
KEEP_GOING=${KEEP_GOING:-false}

# Seconds since $1 (an $EPOCHREALTIME), one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
clock() { awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { s = int(b - a); printf "%02d:%02d", s / 60, s % 60 }'; }

log() { echo "   [$(clock)] $*"; }
warn() { echo "   [$(clock)] warning: $*" >&2; }

# step "what": ends the step before (with its time) and starts a new one.
step() {
  step_end
  STEP_NAME="$*" STEP_T0=$EPOCHREALTIME
  echo "== [$(clock)] $STEP_NAME"
}
# Ends the current step; its result is "ok" unless a failure was recorded in it.
step_end() {
  [ -n "$STEP_NAME" ] || return 0
  local secs result=ok
  secs=$(since "$STEP_T0")
  [ "${STEP_FAILED:-false}" = true ] && result=FAIL
  STEP_NAMES+=("$STEP_NAME") STEP_SECS+=("$secs") STEP_RESULTS+=("$result")
  echo "   $result: $STEP_NAME (${secs} s)"
  STEP_NAME="" STEP_FAILED=false
}
# The table of steps, their times and results (also for a run that stopped early).
step_summary() {
  local i
  echo "== steps"
  for i in "${!STEP_NAMES[@]}"; do
    printf '   %-4s %7s s  %s\n' "${STEP_RESULTS[$i]}" "${STEP_SECS[$i]}" "${STEP_NAMES[$i]}"
  done
  if [ -n "$STEP_NAME" ]; then
    printf '   %-4s %7s s  %s\n' "STOP" "$(since "$STEP_T0")" "$STEP_NAME (did not finish)"
  fi
  echo "   total $(since "$T_START") s"
}

die() { echo "ERROR: $*" >&2; exit 1; }

# fail WHAT EXPECTED SEEN [VM]: prints the three (and the tail of VM's weftd journal), then stops
# the run, or with --keep-going records the failure and lets the run go on.
fail() {
  local what="$1" expected="$2" seen="$3" vm="${4:-}"
  {
    echo "FAIL: $what"
    echo "  expected: $expected"
    echo "  seen:     $(printf '%s' "$seen" | sed '2,$s/^/            /')"
    if [ -n "$vm" ] && declare -F vm_journal >/dev/null; then
      echo "  --- journalctl -u weftd on vm$vm (last 40 lines) ---"
      vm_journal "$vm" 40 2>&1 | sed 's/^/  | /'
    fi
  } >&2
  FAILURES+=("${STEP_NAME:-?}: $what")
  STEP_FAILED=true
  if [ "$KEEP_GOING" = true ]; then return 0; fi
  exit 1
}

# ---- host packages --------------------------------------------------------------------------

# Installs the Debian packages named, when any is missing. qemu-system-x86 must match the
# installed qemu-utils: where that came from bookworm-backports (as on this project's machines),
# QEMU and libvirt come from there too: the suite is added (a sources file of its own) and pinned
# for qemu-*, libvirt*, seabios and ipxe-qemu only; everything else stays on bookworm.
BACKPORTS_LIST=/etc/apt/sources.list.d/weft-bookworm-backports.sources
BACKPORTS_PIN=/etc/apt/preferences.d/weft-backports
host_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  echo "   installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q '~bpo12'; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
        'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >"$BACKPORTS_LIST"
    fi
    [ -e "$BACKPORTS_PIN" ] ||
      printf '%s\n' 'Package: qemu-* libvirt* seabios ipxe-qemu' 'Pin: release n=bookworm-backports' \
        'Pin-Priority: 990' >"$BACKPORTS_PIN"
  fi
  local attempt
  for attempt in 1 2 3; do
    apt-get update -qq && break
    [ "$attempt" = 3 ] && die "apt-get update failed"
    sleep 5
  done
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What tests/vm/image.sh and run.sh need on the host.
VM_HOST_PACKAGES=(qemu-system-x86 qemu-utils mmdebstrap e2fsprogs fdisk openssh-client iproute2 binutils)
# What tests/vm/vagrant.sh needs on top.
VAGRANT_HOST_PACKAGES=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients dnsmasq-base
  extlinux syslinux-common nftables)

# ---- QEMU -----------------------------------------------------------------------------------

# kvm or tcg: WEFT_VM_ACCEL when it says so; with auto (the default), kvm only where the VM's own
# kernel ($1, initramfs $2) really starts under it within 20 s (here /dev/kvm is a device stock
# kernels cannot use: QEMU aborts), else tcg.
vm_accel() {
  local kernel="$1" initrd="$2"
  case "${WEFT_VM_ACCEL:-auto}" in
    kvm | tcg) echo "$WEFT_VM_ACCEL"; return ;;
    auto) ;;
    *) die "WEFT_VM_ACCEL must be kvm, tcg or auto, not ${WEFT_VM_ACCEL}" ;;
  esac
  if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then echo tcg; return; fi
  local probe pid accel=tcg
  probe=$(mktemp)
  # No core file when QEMU aborts (as it does here).
  (ulimit -c 0; cd /; exec qemu-system-x86_64 -accel kvm -cpu host -m 256 -nodefaults -no-user-config \
    -display none -kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 panic=-1" -no-reboot \
    -serial "file:$probe" >/dev/null 2>&1 </dev/null) &
  pid=$!
  for _ in $(seq 40); do
    if grep -q 'Run /init as init process' "$probe"; then accel=kvm; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  rm -f "$probe"
  echo "$accel"
}

# ---- ssh into the VMs (run.sh sets VM_NS, VM_KEY and the ports) -----------------------------

SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
  -o BatchMode=yes -o ConnectTimeout=5 -o ServerAliveInterval=5 -o ServerAliveCountMax=6)

# in_ns CMD...: runs CMD inside the harness's network namespace.
in_ns() { ip netns exec "$VM_NS" "$@"; }

# vssh N CMD: runs the shell command CMD as root on VM N.
vssh() {
  local n="$1"; shift
  in_ns timeout "${VSSH_TIMEOUT:-300}" ssh "${SSH_OPTS[@]}" -i "$VM_KEY" -p "$((SSH_PORT_BASE + n))" root@127.0.0.1 "$@"
}

# vcopy N DIR DEST: copies the contents of DIR to DEST on VM N (tar over ssh).
vcopy() {
  local n="$1" dir="$2" dest="$3"
  tar -C "$dir" -cf - . | vssh "$n" "mkdir -p '$dest' && tar -C '$dest' -xf -"
}

vm_journal() { vssh "$1" "journalctl -u weftd --no-pager -n ${2:-40} -o short-monotonic" 2>&1 || true; }

# retry SECS CMD...: runs CMD until it succeeds, at most SECS seconds; its status is CMD's last.
retry() {
  local secs="$1"; shift
  local t0=$SECONDS
  while :; do
    if "$@"; then return 0; fi
    [ $((SECONDS - t0)) -ge "$secs" ] && return 1
    sleep 1
  done
}

# "name address role status" per node, from `weft node ls --format json` on stdin.
nodes_table() {
  awk -F'"' '/^    "name":/ { n = $4 } /^    "address":/ { a = $4 } /^    "role":/ { r = $4 }
             /^    "status":/ { s = $4 } /^  }/ { print n, a, r, s }'
}

# The root network namespace as `ip` shows it (links, addresses, routes): the VM tests compare it
# before and after (they never touch it; everything is in namespaces of their own). Docker's own
# devices are left out: the machine's Docker daemon changes them on its own (an IPv6 link-local
# address on docker0 once a container ran).
root_ns_state() {
  local docker='docker0|br-[0-9a-f]+|veth[0-9a-f]+'
  echo "## links"; ip -o link show | sed -E 's/^[0-9]+: //; s/ link\/.*//' | grep -Ev "^($docker)[:@]" | sort
  echo "## addresses"; ip -o addr show | awk '{ print $2, $3, $4 }' | grep -Ev "^($docker) " | sort
  echo "## routes"; ip route show table all | grep -Ev " dev ($docker)( |$)" | sort
}
