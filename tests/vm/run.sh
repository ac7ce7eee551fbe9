#!/usr/bin/env bash
# weft on three real VMs (Debian 12, their own kernels), installed as users install it
# (deploy/install.sh, deploy/weftd.service under systemd), driven from outside with `weft` over
# ssh and over `weft -H https://` with an admin certificate.
#
#   bash tests/vm/run.sh [--bin-dir DIR] [--keep-going]
#
#   --bin-dir DIR   weftd and weft to install (or WEFT_BIN_DIR); default target/release of this
#                   checkout, built with `cargo build --release --bins` when missing
#   --keep-going    record a failed check and go on with the next steps (exit 1 at the end)
# Environment: WEFT_VM_ACCEL=kvm|tcg|auto (default auto: kvm only where a guest kernel really runs
# with it, else tcg), WEFT_VM_MEMORY (MiB per VM, default 512), WEFT_VM_LEASE_TTL (seconds,
# default 60: the lease TTL of the power-off step; until then it is 600 s, so that a slow reboot of
# vm3 under TCG never costs c3 its address), WEFT_VM_CACHE (image cache, default target/vm).
#
# What it does: builds or reuses the VM image (tests/vm/image.sh), creates a network namespace
# with only loopback, and inside it boots three QEMU VMs with a qcow2 overlay each, a user-mode NIC
# (eth0: restrict=on, no route off this machine, ssh and the cluster API forwarded from 127.0.0.1
# of the namespace) and a NIC on one private L2 (eth1: a QEMU multicast socket on the namespace's
# loopback) with 198.51.100.11-13/24; vm2 and vm3 have an underlay MTU of 1400 on it (the pair),
# vm1 1500. Then the scenario, one step at a time, each with its time; at the end (also on failure
# or Ctrl-C) every VM is stopped and the namespace and the work directory are removed. The VMs'
# serial consoles and weftd journals of the last run are kept in target/vm/last-run/.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

bin_dir="${WEFT_BIN_DIR:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --keep-going) KEEP_GOING=true; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "tests/vm/run.sh must run as root: it creates a network namespace"

PRIV_NET=198.51.100
ADDR=("" "$PRIV_NET.11" "$PRIV_NET.12" "$PRIV_NET.13")
UNDERLAY_MTU=("" 1500 1400 1400)
OVERLAY_SUBNET=203.0.113.0/24   # TEST-NET-3, only inside the VMs
NETWORK=vmnet
IMAGE=weft-vmtest
MEMORY="${WEFT_VM_MEMORY:-512}"
LEASE_TTL="${WEFT_VM_LEASE_TTL:-60}"
FIRST_LEASE_TTL=600  # until the power-off step
SSH_PORT_BASE=2200   # vm N: 127.0.0.1:2200+N in the namespace -> its port 22
API_PORT_BASE=7940   # vm N: 127.0.0.1:7940+N in the namespace -> its port 7946
MCAST_PORT=10000
VM_NS="weftvm-$$-$RANDOM"
RESULTS=()           # measurements, printed at the end
QEMU_PIDS=("" "" "" "")
work=""
netns_made=false

teardown() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  if [ "$status" -ne 0 ] && [ -n "$STEP_NAME" ]; then
    echo "== stopped in step: $STEP_NAME (exit $status)" >&2
    STEP_FAILED=true
  fi
  step_end
  echo "== [$(clock)] teardown"
  local logs="$VM_CACHE/last-run" i
  rm -rf "$logs" && mkdir -p "$logs"
  for i in 1 2 3; do
    if [ -n "${QEMU_PIDS[$i]}" ] && kill -0 "${QEMU_PIDS[$i]}" 2>/dev/null; then
      VSSH_TIMEOUT=20 vssh "$i" "journalctl -u weftd --no-pager -o short-monotonic" \
        >"$logs/vm$i-weftd.log" 2>&1
    fi
    [ -n "$work" ] && [ -e "$work/vm$i.console" ] && cp "$work/vm$i.console" "$logs/vm$i.console"
  done
  for i in 1 2 3; do
    [ -n "${QEMU_PIDS[$i]}" ] && kill "${QEMU_PIDS[$i]}" 2>/dev/null
  done
  for i in 1 2 3; do
    local pid="${QEMU_PIDS[$i]}"
    [ -n "$pid" ] || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  $netns_made && ip netns del "$VM_NS"
  [ -n "$work" ] && rm -rf "$work"
  echo "   logs of this run: $logs"
  if [ "${#RESULTS[@]}" -gt 0 ]; then
    echo "== measurements"
    printf '   %s\n' "${RESULTS[@]}"
  fi
  if [ -n "${root_before:-}" ]; then
    local root_after
    root_after="$(root_ns_state)"
    if [ "$root_after" != "$root_before" ]; then
      echo "FAIL: the root network namespace changed:" >&2
      diff <(echo "$root_before") <(echo "$root_after") >&2
      FAILURES+=("teardown: root network namespace changed")
    else
      echo "   root network namespace unchanged ($(grep -c . <<<"$root_before") lines of links, addresses, routes)"
    fi
  fi
  step_summary
  if [ "${#FAILURES[@]}" -gt 0 ]; then
    echo "== failed checks"
    printf '   %s\n' "${FAILURES[@]}"
    [ "$status" -eq 0 ] && status=1
  fi
  local passed=0 failed=0 r
  for r in "${STEP_RESULTS[@]}"; do
    if [ "$r" = ok ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  done
  [ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
  echo "vm: $passed passed, $failed failed"
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM
root_before="$(root_ns_state)"

# ---- helpers --------------------------------------------------------------------------------

# weft on VM N over ssh (its local socket).
lweft() { local n="$1"; shift; vssh "$n" weft "$@"; }
# weft from this machine to manager N over mutual TLS, with the admin certificate.
rweft() {
  local n="$1"; shift
  in_ns timeout 120 "$work/bin/weft" -H "https://127.0.0.1:$((API_PORT_BASE + n))" \
    --tls-cert "$work/admin/node.pem" --tls-key "$work/admin/node-key.pem" --tls-ca "$work/admin/ca.pem" "$@"
}
node_status() { lweft "$1" node ls --format json | nodes_table | awk -v n="$2" '$1 == n { print $4 }'; }
# The packet counts of a ping's summary: "TRANSMITTED RECEIVED".
ping_counts() { sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\1 \2/p' | tail -1; }
# iperf3's receiver line as "X Mbits/sec".
iperf_rate() { awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /bits\/sec/) r = $i " " $(i + 1) } END { print r }'; }

# expect_cmd WHAT VM CMD...: CMD (on this machine) must succeed.
expect_ok() {
  local what="$1" vm="$2"; shift 2
  local out
  if ! out=$("$@" 2>&1); then fail "$what" "success" "$out" "$vm"; return 0; fi
  return 0
}

start_vm() {
  local n="$1" accel="$2" mtu_opt=""
  [ "${UNDERLAY_MTU[$n]}" != 1500 ] && mtu_opt=",host_mtu=${UNDERLAY_MTU[$n]}"
  qemu-img create -q -f qcow2 -F qcow2 -b "$IMG/disk.qcow2" "$work/vm$n.qcow2"
  local cpu=max
  [ "$accel" = kvm ] && cpu=host
  in_ns qemu-system-x86_64 -name "vm$n" -accel "$accel" -cpu "$cpu" -m "$MEMORY" -smp 1 \
    -nodefaults -no-user-config -display none \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" -append "$(cat "$IMG/cmdline")" \
    -drive "file=$work/vm$n.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap" \
    -netdev "user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:$((SSH_PORT_BASE + n))-:22,hostfwd=tcp:127.0.0.1:$((API_PORT_BASE + n))-:7946" \
    -device "virtio-net-pci,netdev=mgmt,mac=52:54:00:00:00:0$n" \
    -netdev "socket,id=priv,mcast=230.0.0.1:$MCAST_PORT,localaddr=127.0.0.1" \
    -device "virtio-net-pci,netdev=priv,mac=52:54:00:00:01:0$n$mtu_opt" \
    -object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-pci,rng=rng0 \
    -serial "file:$work/vm$n.console" -pidfile "$work/vm$n.pid" -daemonize
  QEMU_PIDS[n]=$(cat "$work/vm$n.pid")
}

# Waits until VM N answers ssh; $2: seconds.
wait_ssh() {
  local n="$1" secs="$2" t0=$SECONDS
  while ! VSSH_TIMEOUT=10 vssh "$n" true 2>/dev/null; do
    if ! kill -0 "${QEMU_PIDS[$n]}" 2>/dev/null; then
      fail "vm$n boots" "QEMU running" "QEMU exited; console: $(tail -20 "$work/vm$n.console")"
      return 1
    fi
    if [ $((SECONDS - t0)) -ge "$secs" ]; then
      fail "vm$n answers ssh within $secs s" "ssh works" "no answer; console: $(tail -20 "$work/vm$n.console")"
      return 1
    fi
    sleep 2
  done
}

# ---- the steps ------------------------------------------------------------------------------

step "host packages, binaries, VM image"
host_packages "${VM_HOST_PACKAGES[@]}"
if [ -z "$bin_dir" ]; then
  bin_dir="$TARGET_DIR/release"
  if [ ! -x "$bin_dir/weftd" ] || [ ! -x "$bin_dir/weft" ]; then
    log "no release binaries in $bin_dir: cargo build --release --bins"
    (cd "$ROOT" && cargo build --release --bins --quiet)
  fi
fi
for b in weftd weft; do [ -x "$bin_dir/$b" ] || die "no executable $bin_dir/$b (--bin-dir)"; done
work="$(mktemp -d /tmp/weft-vm.XXXXXX)"
mkdir -p "$work/payload/bin" "$work/bin" "$work/admin"
# Copies (the originals may be rebuilt meanwhile); the VMs get them without debug info.
cp "$bin_dir/weftd" "$bin_dir/weft" "$work/bin/"
for b in weftd weft; do
  cp "$work/bin/$b" "$work/payload/bin/$b"
  command -v strip >/dev/null && strip --strip-debug "$work/payload/bin/$b"
done
log "binaries from $bin_dir ($(du -m "$work/payload/bin/weftd" | cut -f1) MiB weftd without debug info)"
IMG=$(bash "$VM_LIB_DIR/image.sh" | tail -1)
[ -e "$IMG/ok" ] || die "tests/vm/image.sh did not build the image"
VM_KEY="$IMG/id_ed25519"
cp -r "$ROOT/deploy" "$work/payload/deploy"
cp "$IMG/testimage.tar" "$work/payload/testimage.tar"
log "image $IMG"

step "three VMs: boot, ssh"
accel=$(vm_accel "$IMG/vmlinuz" "$IMG/initrd.img")
ip netns add "$VM_NS"
netns_made=true
ip -n "$VM_NS" link set lo up
ip -n "$VM_NS" link set lo multicast on
for i in 1 2 3; do start_vm "$i" "$accel"; done
log "QEMU ($accel, ${MEMORY} MiB, 1 vCPU each) in network namespace $VM_NS: pids ${QEMU_PIDS[*]:1}"
for i in 1 2 3; do wait_ssh "$i" 300; done
RESULTS+=("boot to ssh, 3 VMs ($accel): $(since "$STEP_T0") s")
for i in 1 2 3; do log "vm$i: $(vssh "$i" 'uname -r; systemctl is-system-running || true' | tr '\n' ' ')"; done

step "private network: eth1 with 198.51.100.11-13/24 (MTU 1500 on vm1, 1400 on vm2 and vm3)"
for i in 1 2 3; do
  vssh "$i" "set -e
    echo vm$i >/etc/hostname && hostname vm$i
    sed -i 's/^127\\.0\\.1\\.1.*/127.0.1.1\tvm$i/' /etc/hosts
    cat >/etc/systemd/network/10-weft-private.network <<EOF
[Match]
MACAddress=52:54:00:00:01:0$i

[Network]
Address=${ADDR[$i]}/24
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
    networkctl reload
    for _ in \$(seq 50); do ip -4 addr show dev eth1 | grep -q '${ADDR[$i]}/' && break; sleep 0.2; done"
done
for i in 1 2 3; do
  seen=$(vssh "$i" "cat /sys/class/net/eth1/mtu; ip -4 -o addr show dev eth1 | awk '{print \$4}'" | tr '\n' ' ')
  [ "$seen" = "${UNDERLAY_MTU[$i]} ${ADDR[$i]}/24 " ] ||
    fail "vm$i eth1" "mtu ${UNDERLAY_MTU[$i]}, ${ADDR[$i]}/24" "$seen"
done
for i in 1 2 3; do
  for j in 1 2 3; do
    [ "$i" = "$j" ] && continue
    retry 10 vssh "$i" "ping -c 1 -W 2 ${ADDR[$j]} >/dev/null" ||
      fail "underlay vm$i -> vm$j" "ping ${ADDR[$j]} answers" "no answer"
  done
done
log "eth0 of every VM: $(vssh 1 "ip -4 -o addr show dev eth0 | awk '{print \$4}'") (QEMU's NAT, the same on all three)"

step "copy binaries, deploy/ and the container image into the VMs"
pids=()
for i in 1 2 3; do vcopy "$i" "$work/payload" /opt/weft-test & pids+=($!); done
for i in 1 2 3; do wait "${pids[$((i - 1))]}" || fail "copy to vm$i" "tar over ssh succeeds" "it failed"; done
# The lease TTL (weftd's flag; the default is 24h) in a systemd drop-in beside the unit install.sh
# installs, as an operator would add one.
lease_ttl_dropin() { # VM SECONDS
  vssh "$1" "mkdir -p /etc/systemd/system/weftd.service.d && printf '%s\n' '[Service]' 'ExecStart=' \
    'ExecStart=/usr/local/bin/weftd --config /etc/weft/weftd.toml --lease-ttl ${2}s' \
    >/etc/systemd/system/weftd.service.d/10-vm-test.conf"
}
for i in 1 2 3; do lease_ttl_dropin "$i" "$FIRST_LEASE_TTL"; done

step "install: vm1 bootstraps (deploy/install.sh, weftd under systemd)"
vssh 1 "bash /opt/weft-test/deploy/install.sh --bin-dir /opt/weft-test/bin --advertise ${ADDR[1]} --name vm1 --bootstrap 2>&1" |
  sed 's/^/   vm1| /'
manager_token=$(lweft 1 cluster token manager)
worker_token=$(lweft 1 cluster token worker)
[ -n "$manager_token" ] && [ -n "$worker_token" ] || fail "join tokens" "two tokens" "'$manager_token' '$worker_token'" 1

step "install: vm2 joins as a manager, vm3 as a worker"
vssh 2 "bash /opt/weft-test/deploy/install.sh --bin-dir /opt/weft-test/bin --advertise ${ADDR[2]} --name vm2 \
  --join ${ADDR[1]}:7946 --token $manager_token --manager 2>&1" | sed 's/^/   vm2| /'
vssh 3 "bash /opt/weft-test/deploy/install.sh --bin-dir /opt/weft-test/bin --advertise ${ADDR[3]} --name vm3 \
  --join ${ADDR[1]}:7946 --token $worker_token 2>&1" | sed 's/^/   vm3| /'
want="vm1 ${ADDR[1]} manager Ready
vm2 ${ADDR[2]} manager Ready
vm3 ${ADDR[3]} worker Ready"
all_ready() { [ "$(lweft 1 node ls --format json | nodes_table | sort)" = "$want" ]; }
retry 60 all_ready || fail "weft node ls on vm1" "$want" "$(lweft 1 node ls 2>&1)" 1
lweft 1 node ls | sed 's/^/   /'
for i in 1 2 3; do
  seen=$(vssh "$i" "systemctl is-active weftd; systemctl is-enabled weftd; cat /etc/modules-load.d/weft.conf | tr '\n' ' '")
  [ "$(tr -s ' \n' ' ' <<<"$seen" | sed 's/ $//')" = "active enabled vxlan overlay" ] ||
    fail "vm$i: weftd under systemd, enabled, modules at boot" "active enabled vxlan overlay" "$seen" "$i"
done

step "admin certificate; weft -H https:// from this machine"
vssh 1 "rm -rf /root/weft-admin && weft cluster cert admin -o /root/weft-admin >/dev/null && tar -C /root/weft-admin -cf - ." |
  tar -C "$work/admin" -xf -
ls "$work/admin/node.pem" "$work/admin/node-key.pem" "$work/admin/ca.pem" >/dev/null
for m in 1 2; do
  seen=$(rweft "$m" node ls --format json 2>&1 | nodes_table | sort) || true
  [ "$seen" = "$want" ] || fail "weft -H https://vm$m node ls" "$want" "$seen" "$m"
done
log "weft -H https://127.0.0.1:$((API_PORT_BASE + 1)) (vm1's 7946, forwarded) answers with the admin certificate"

step "the advertised addresses are the private ones, not QEMU's NAT (10.0.2.15)"
seen=$(lweft 1 node ls 2>&1)
if grep -q '10\.0\.2\.' <<<"$seen"; then fail "node addresses" "${ADDR[*]:1}" "$seen" 1; fi
for i in 1 2 3; do
  seen=$(vssh "$i" "nft list set inet weft cluster_hosts4" | tr -s ' \t\n' ' ' | sed 's/.*elements = { //; s/ }.*//')
  [ "$seen" = "${ADDR[1]}, ${ADDR[2]}, ${ADDR[3]}" ] ||
    fail "vm$i VXLAN allow-list (nft set cluster_hosts4)" "${ADDR[1]}, ${ADDR[2]}, ${ADDR[3]}" "$seen" "$i"
done

step "image import (vm1, vm2 over https; vm3 over ssh), overlay network $OVERLAY_SUBNET"
for m in 1 2; do
  rweft "$m" image import "$work/payload/testimage.tar" | tail -1 | sed "s/^/   vm$m| /"
done
lweft 3 image import /opt/weft-test/testimage.tar | tail -1 | sed 's/^/   vm3| /'
rweft 1 network create -d overlay --subnet "$OVERLAY_SUBNET" "$NETWORK" | sed 's/^/   /'

step "containers c1, c2, c3 (--restart always) on vm1, vm2, vm3; ping each other by name"
rweft 1 run -d --name c1 --network "$NETWORK" --restart always "$IMAGE" sleep 1000000 >/dev/null
rweft 2 run -d --name c2 --network "$NETWORK" --restart always "$IMAGE" sleep 1000000 >/dev/null
lweft 3 run -d --name c3 --network "$NETWORK" --restart always "$IMAGE" sleep 1000000 >/dev/null
for i in 1 2 3; do
  seen=$(lweft "$i" ps --format json | grep -c '"state": "running"' || true)
  [ "$seen" = 1 ] || fail "vm$i: c$i running" "1 running container" "$(lweft "$i" ps -a 2>&1)" "$i"
done
ping_by_name() { # FROM TO [via]: container cFROM pings cTO by name
  local from="$1" to="$2" out
  if [ "${3:-ssh}" = https ]; then
    out=$(rweft "$from" exec "c$from" ping -c 2 -W 5 "c$to" 2>&1)
  else
    out=$(lweft "$from" exec "c$from" ping -c 2 -W 5 "c$to" 2>&1)
  fi || { fail "c$from (vm$from) pings c$to by name (${3:-ssh})" "2 replies" "$out" "$from"; return 0; }
}
for i in 1 2 3; do
  for j in 1 2 3; do
    if [ "$i" != "$j" ]; then ping_by_name "$i" "$j"; fi
  done
done
ping_by_name 1 3 https
ping_by_name 2 1 https
rweft 1 network inspect "$NETWORK" | sed 's/^/   /'

step "underlay MTU: VXLAN devices and containers fit the cluster's smallest link (vm2's and vm3's eth1: 1400)"
VNI=$(vssh 1 "ip -o link show type vxlan | sed -n 's/.*: wvx-\([0-9]*\)[:@].*/\1/p' | head -1")
[ -n "$VNI" ] || fail "vm1 has a weft VXLAN device" "wvx-<vni>" "$(vssh 1 'ip -o link')" 1
SMALLEST=$(printf '%s\n' "${UNDERLAY_MTU[@]}" | grep . | sort -n | head -1)
for i in 1 2 3; do
  # Every host, vm1 on its 1500-byte link included, sizes the overlay for the smallest link.
  want_mtu=$((SMALLEST - 50))
  seen=$(vssh "$i" "ip -d -o link show wvx-$VNI | sed -n 's/.* mtu \([0-9]*\) .*/\1/p'; \
    ip -d -o link show wvx-$VNI | grep -o 'local [0-9.]*'; weft exec c$i cat /sys/class/net/eth0/mtu" | tr '\n' ' ')
  [ "$seen" = "$want_mtu local ${ADDR[$i]} $want_mtu " ] ||
    fail "vm$i: wvx-$VNI mtu, local, c$i eth0 mtu" "$want_mtu local ${ADDR[$i]} $want_mtu" "$seen" "$i"
done
# The MTU-1400 pair vm2 <-> vm3, and vm1 (1500) to vm2 (1400). Largest DF ping: 1400 - 50
# (VXLAN) - 28 (IP+ICMP) = 1322 bytes.
for pair in "2 3" "3 2" "1 2"; do
  # shellcheck disable=SC2086 # two words on purpose
  set -- $pair
  out=$(lweft "$1" exec "c$1" ping -M "do" -c 3 -W 5 -s 1322 "c$2" 2>&1) ||
    fail "c$1 -> c$2: DF ping of 1322 bytes (1350-byte packets) over the 1400 underlay" "3 replies" "$out" "$1"
  out=$(lweft "$1" exec "c$1" ping -M "do" -c 1 -W 3 -s 1323 "c$2" 2>&1) &&
    fail "c$1 -> c$2: DF ping of 1323 bytes" "refused (message too long)" "$out" "$1"
  grep -qi 'message too long\|mtu' <<<"$out" ||
    fail "c$1 -> c$2: DF ping of 1323 bytes refused locally" "'message too long, mtu=1350'" "$out" "$1"
done
RESULTS+=("MTU: wvx/containers 1350 on all three (smallest link 1400); DF 1322 passes, 1323 refused, vm1->vm2 too")

step "iperf3 on the overlay and on the underlay (recorded)"
iperf_pair() { # LABEL SERVER_VM CLIENT_VM overlay|underlay
  local label="$1" s="$2" c="$3" kind="$4" out rate
  if [ "$kind" = overlay ]; then
    lweft "$s" exec -d "c$s" iperf3 -s -1 >/dev/null
    sleep 1
    out=$(lweft "$c" exec "c$c" iperf3 -c "c$s" -t 5 -f m 2>&1) || true
  else
    vssh "$s" "iperf3 -s -1 -D"
    sleep 1
    out=$(vssh "$c" "iperf3 -c ${ADDR[$s]} -t 5 -f m" 2>&1) || true
  fi
  rate=$(iperf_rate <<<"$out")
  [ -n "$rate" ] || { fail "iperf3 $label" "a receiver rate" "$out" "$s"; return 0; }
  RESULTS+=("iperf3 $label: $rate")
  log "iperf3 $label: $rate"
}
iperf_pair "overlay c1->c2 (vm1->vm2)" 2 1 overlay
iperf_pair "overlay c2->c3 (vm2->vm3, MTU 1400 pair)" 3 2 overlay
iperf_pair "underlay vm1->vm2" 2 1 underlay
iperf_pair "underlay vm2->vm3 (MTU 1400)" 3 2 underlay

step "nftables allow-list: VXLAN to vm1 from a non-member address is dropped"
drop_count() {
  vssh 1 "nft list chain inet weft input" |
    sed -n 's/.*udp dport 4789 ip saddr != @cluster_hosts4 counter packets \([0-9]*\) .*/\1/p'
}
before=$(drop_count)
# From 198.51.100.99 (a macvlan of vm3's eth1 in a namespace of its own): real VXLAN frames with
# the overlay's VNI, sent by the kernel's vxlan device.
vssh 3 "set -e
  ip netns add probe
  ip link add probe0 link eth1 type macvlan mode bridge
  ip link set probe0 netns probe
  ip -n probe link set lo up
  ip -n probe addr add $PRIV_NET.99/24 dev probe0
  ip -n probe link set probe0 up
  ip -n probe link add vxprobe type vxlan id $VNI local $PRIV_NET.99 remote ${ADDR[1]} dstport 4789 dev probe0
  ip -n probe addr add 192.0.2.1/24 dev vxprobe
  ip -n probe link set vxprobe up
  ip -n probe neigh add 192.0.2.2 lladdr 02:00:00:00:00:02 dev vxprobe nud permanent
  ip netns exec probe ping -c 5 -i 0.2 -W 1 192.0.2.2 >/dev/null || true
  ip netns del probe"
after=$(drop_count)
[ -n "$before" ] && [ -n "$after" ] && [ $((after - before)) -ge 5 ] ||
  fail "vm1's VXLAN drop counter after 5 packets from $PRIV_NET.99" "+5 or more" "$before -> $after" 1
# The same from a member's address (vm3's own, another VNI) passes the rule: the counter stays.
vssh 3 "set -e
  ip link add vxctl type vxlan id 4242 local ${ADDR[3]} remote ${ADDR[1]} dstport 4789 dev eth1
  ip addr add 192.0.2.1/24 dev vxctl
  ip link set vxctl up
  ip neigh add 192.0.2.2 lladdr 02:00:00:00:00:02 dev vxctl nud permanent
  ping -c 5 -i 0.2 -W 1 192.0.2.2 >/dev/null || true
  ip link del vxctl"
control=$(drop_count)
[ "$control" = "$after" ] || fail "vm1's VXLAN drop counter after 5 packets from member ${ADDR[3]}" "$after (unchanged)" "$control" 1
RESULTS+=("nft allow-list: $((after - before)) VXLAN packets from $PRIV_NET.99 dropped, 0 from ${ADDR[3]}")

# A ping flood from c1 (vm1) to c2 (vm2) in the background while $1 happens on vm2; 0 lost.
flood_during() {
  local what="$1" action="$2" count=1500 out pid counts
  (lweft 1 exec c1 ping -q -i 0.01 -c "$count" -W 5 c2 >"$work/flood.out" 2>&1) &
  pid=$!
  sleep 4
  vssh 2 "$action"
  wait "$pid" || true
  out=$(cat "$work/flood.out")
  counts=$(ping_counts <<<"$out")
  [ "$counts" = "$count $count" ] ||
    fail "c1 -> c2 ping flood ($count at 100/s) during $what on vm2" "$count $count (transmitted received)" "$out" 2
  RESULTS+=("ping flood c1->c2 during $what: $counts (transmitted received)")
}
weftd_back() { # VM: weftd active again and the node Ready on vm1
  [ "$(vssh "$1" systemctl is-active weftd 2>/dev/null)" = active ] && [ "$(node_status 1 "vm$1")" = Ready ]
}

step "systemctl kill -s KILL weftd on vm2 during a ping flood: 0 lost, systemd restarts it"
restarts_before=$(vssh 2 "systemctl show -p NRestarts --value weftd")
flood_during "systemctl kill -s KILL weftd" "systemctl kill -s KILL weftd"
retry 60 weftd_back 2 || fail "weftd on vm2 back after SIGKILL" "active, Ready" \
  "$(vssh 2 'systemctl status weftd --no-pager' 2>&1 | head -5; node_status 1 vm2)" 2
restarts_after=$(vssh 2 "systemctl show -p NRestarts --value weftd")
[ "$restarts_after" -gt "$restarts_before" ] ||
  fail "systemd restarted weftd on vm2" "NRestarts > $restarts_before" "$restarts_after" 2
seen=$(lweft 2 ps --format json | grep -c '"state": "running"' || true)
[ "$seen" = 1 ] || fail "c2 still running on vm2 after weftd's SIGKILL" "1 running" "$(lweft 2 ps -a 2>&1)" 2
ping_by_name 2 3

step "systemctl restart weftd on vm2 during a ping flood: 0 lost"
flood_during "systemctl restart weftd" "systemctl restart weftd"
retry 60 weftd_back 2 || fail "weftd on vm2 back after restart" "active, Ready" "$(node_status 1 vm2)" 2
ping_by_name 2 1
ping_by_name 1 2

step "reboot vm3: weftd comes back from systemd, c3 (--restart always) with its name and routes"
boot_id=$(vssh 3 cat /proc/sys/kernel/random/boot_id)
c3_ip() { lweft 3 inspect c3 | tr -d ' \n' | grep -o '"ips":\["[0-9.]*"' | cut -d'"' -f4; }
ip_before=$(c3_ip)
t_reboot=$EPOCHREALTIME
vssh 3 "systemctl reboot" || true
new_boot() { local b; b=$(VSSH_TIMEOUT=10 vssh 3 cat /proc/sys/kernel/random/boot_id 2>/dev/null) && [ "$b" != "$boot_id" ]; }
retry 300 new_boot || fail "vm3 reboots" "a new boot id over ssh" "none within 300 s; console: $(tail -20 "$work/vm3.console")"
RESULTS+=("vm3 reboot to ssh: $(since "$t_reboot") s")
retry 120 weftd_back 3 || fail "weftd on vm3 after the reboot" "active (enabled unit), Ready on vm1" \
  "$(vssh 3 'systemctl status weftd --no-pager' 2>&1 | head -5) / $(node_status 1 vm3)" 3
RESULTS+=("vm3 reboot to weftd Ready: $(since "$t_reboot") s")
c3_running() { lweft 3 ps --format json | grep -q '"state": "running"'; }
retry 120 c3_running || fail "c3 (--restart always) running after vm3's reboot" "running" "$(lweft 3 ps -a 2>&1)" 3
c3_names() { lweft 3 exec c3 ping -c 1 -W 3 c1 >/dev/null 2>&1 && lweft 1 exec c1 ping -c 1 -W 3 c3 >/dev/null 2>&1; }
if retry 60 c3_names; then
  RESULTS+=("vm3 reboot to c3 reachable by name: $(since "$t_reboot") s")
else
  fail "c3 <-> c1 by name after vm3's reboot" "ping both ways" \
    "$(lweft 3 exec c3 ping -c 1 -W 3 c1 2>&1; lweft 3 inspect c3 2>&1 | head -40)" 3
fi
ip_after=$(c3_ip)
[ -n "$ip_before" ] && [ "$ip_after" = "$ip_before" ] ||
  fail "c3's address after vm3's reboot" "$ip_before (as before)" "$ip_after" 3
ping_by_name 3 2
ping_by_name 2 3

step "vm1 (the leader) restarts with a lease TTL of ${LEASE_TTL} s; the containers keep their traffic"
lease_ttl_dropin 1 "$LEASE_TTL"
(lweft 3 exec c3 ping -q -i 0.02 -c 500 -W 5 c1 >"$work/flood.out" 2>&1) &
flood=$!
sleep 2
vssh 1 "systemctl daemon-reload && systemctl restart weftd"
wait "$flood" || true
counts=$(ping_counts <"$work/flood.out")
[ "$counts" = "500 500" ] ||
  fail "c3 -> c1 ping flood (500 at 50/s) during a restart of vm1's weftd" "500 500" "$(cat "$work/flood.out")" 1
RESULTS+=("ping flood c3->c1 during systemctl restart weftd on vm1 (leader): $counts (transmitted received)")
all_ready_again() { [ "$(lweft 1 node ls --format json | nodes_table | awk '{ print $1, $4 }' | sort | tr '\n' ' ')" = "vm1 Ready vm2 Ready vm3 Ready " ]; }
retry 90 all_ready_again || fail "three nodes Ready after vm1's restart" "vm1 vm2 vm3 Ready" "$(lweft 1 node ls 2>&1)" 1
seen=$(vssh 1 "ps -o args= -C weftd | grep -o -- '--lease-ttl [0-9]*s' | sort -u")
[ "$seen" = "--lease-ttl ${LEASE_TTL}s" ] || fail "vm1's weftd runs with the new lease TTL" "--lease-ttl ${LEASE_TTL}s" "$seen" 1

step "power off vm2: after the lease TTL (${LEASE_TTL} s) its block leaves vm1's and vm3's routes"
block=$(vssh 2 "ip -4 route show proto kernel | awk '/ dev wbr-/ { print \$1 }'" | head -1)
[ -n "$block" ] || fail "vm2's block of $OVERLAY_SUBNET" "a route on wbr-$VNI" "$(vssh 2 'ip -4 route')" 2
route_of() { vssh "$1" "ip -4 route show $block" 2>/dev/null; }
for i in 1 3; do
  grep -q "dev wvx-$VNI" <<<"$(route_of "$i")" ||
    fail "vm$i routes vm2's block $block before" "$block ... dev wvx-$VNI" "$(route_of "$i")" "$i"
done
kill "${QEMU_PIDS[2]}"   # QEMU exits at once: the power is cut
for _ in $(seq 50); do kill -0 "${QEMU_PIDS[2]}" 2>/dev/null || break; sleep 0.1; done
QEMU_PIDS[2]=""
t_off=$EPOCHREALTIME
vm2_down() { [ "$(node_status 1 vm2)" = Down ]; }
retry 60 vm2_down || fail "vm2 Down on vm1" "Down" "$(lweft 1 node ls 2>&1)" 1
RESULTS+=("vm2 powered off -> Down: $(since "$t_off") s")
block_gone() { [ -z "$(route_of 1)" ] && [ -z "$(route_of 3)" ]; }
early=$(awk -v t="$LEASE_TTL" 'BEGIN { print int(t * 0.9) }')
sleep_until=$((SECONDS + early - 5))
while [ "$SECONDS" -lt "$sleep_until" ]; do
  if [ -z "$(route_of 1)" ]; then
    fail "vm2's block kept for the lease TTL" "route to $block on vm1 for ${LEASE_TTL} s" "gone after $(since "$t_off") s" 1
    break
  fi
  sleep 5
done
if retry $((LEASE_TTL + 90)) block_gone; then
  RESULTS+=("vm2 powered off -> its block $block gone from vm1 and vm3: $(since "$t_off") s (TTL ${LEASE_TTL} s)")
else
  fail "vm2's block $block gone from vm1 and vm3 after the lease TTL" "no route" \
    "vm1: $(route_of 1) / vm3: $(route_of 3)" 1
fi
ping_by_name 1 3
ping_by_name 3 1
rweft 1 node ls | sed 's/^/   /'

step_end
