#!/usr/bin/env bash
# deploy/Vagrantfile on this machine, offline, with libvirt and QEMU's TCG: builds (and caches
# beside the VM image) a libvirt box from tests/vm/image.sh's image, starts libvirtd and virtlogd
# by hand in a sandbox, runs `vagrant up` (three VMs, provisioning with install.sh, the Vagrantfile's
# smoke test), checks the cluster from outside with `vagrant ssh`, `vagrant destroy -f`, checks that
# no domain or network is left, and removes everything it made, also when it fails.
#
#   bash tests/vm/vagrant.sh [--bin-dir DIR]
#
#   --bin-dir DIR   weftd and weft (or WEFT_BIN_DIR); default target/release of this checkout,
#                   built with `cargo build --release --bins` when missing
#
# The sandbox: a network namespace with only loopback (the VMs' management and private networks,
# their bridges, dnsmasq and firewall rules live there; no route leaves it) and a mount namespace
# in which /etc/libvirt (a copy, with QEMU run as root without cgroups or a security driver),
# /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and /run are temporary directories: libvirt
# domains, networks, storage pools and volumes vanish with it. Vagrant's home and its .vagrant
# directory are temporary too.
#
# The box alone (for `vagrant box add`): bash tests/vm/vagrant.sh --box-only prints its path.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

bin_dir="${WEFT_BIN_DIR:-}"
box_only=false
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --box-only) box_only=true; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "tests/vm/vagrant.sh must run as root: it creates namespaces"

BOX_NAME=local/weft-bookworm
SUBNET=198.51.100
SB_NS="weftvag-$$-$RANDOM"
work="" holder="" netns_made=false vagrant_up=false

# Runs a command in the sandbox (its network and mount namespaces).
sb() { nsenter -t "$holder" -m -n -- "$@"; }
in_vagrant_env() {
  sb env VAGRANT_HOME="$work/vagrant.d" VAGRANT_DOTFILE_PATH="$work/dotvagrant" \
    VAGRANT_CWD="$ROOT/deploy" VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_CHECKPOINT_DISABLE=1 \
    VAGRANT_BOX_UPDATE_CHECK_DISABLE=1 LIBVIRT_DEFAULT_URI=qemu:///system \
    WEFT_BIN_DIR="$work/bin" WEFT_VAGRANT_BOX="$BOX_NAME" WEFT_VAGRANT_DRIVER=qemu \
    WEFT_VAGRANT_SUBNET="$SUBNET" WEFT_VAGRANT_MGMT=none WEFT_VAGRANT_MEMORY="${WEFT_VM_MEMORY:-512}" \
    "$@"
}
vagrant_() { in_vagrant_env timeout "${VAGRANT_TIMEOUT:-600}" vagrant --no-color "$@"; }
virsh_() { sb timeout 60 virsh -q -c qemu:///system "$@"; }
# Prefixes each line with the run's clock (mm:ss).
stamp() {
  local line s
  while IFS= read -r line; do
    s=$((EPOCHSECONDS - ${T_START%.*}))
    printf '   %02d:%02d | %s\n' $((s / 60)) $((s % 60)) "$line"
  done
}

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
  if [ -n "$holder" ] && kill -0 "$holder" 2>/dev/null; then
    if $vagrant_up; then VAGRANT_TIMEOUT=300 vagrant_ destroy -f >/dev/null 2>&1; fi
    local d
    for d in $(virsh_ list --all --name 2>/dev/null); do
      virsh_ destroy "$d" >/dev/null 2>&1
      virsh_ undefine "$d" --remove-all-storage >/dev/null 2>&1
    done
    local logs="$VM_CACHE/last-vagrant" pid
    rm -rf "$logs" && mkdir -p "$logs"
    cp -r "$work/log/." "$logs/" 2>/dev/null
    cp "$work"/*.log "$logs/" 2>/dev/null
    echo "   logs of this run: $logs"
    for pid in "$work/libvirtd.pid" "$work/virtlogd.pid"; do
      [ -e "$pid" ] && kill "$(cat "$pid")" 2>/dev/null
    done
    sleep 1
  fi
  # Whatever still runs in the sandbox's network namespace was started by this script (libvirtd,
  # virtlogd, dnsmasq, QEMU, the holder): end it.
  if $netns_made; then
    local pids
    pids=$(ip netns pids "$SB_NS" 2>/dev/null)
    # shellcheck disable=SC2086 # a list of pids
    [ -n "$pids" ] && kill $pids 2>/dev/null && sleep 1
    pids=$(ip netns pids "$SB_NS" 2>/dev/null)
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    ip netns del "$SB_NS"
  fi
  [ -n "$holder" ] && wait "$holder" 2>/dev/null
  [ -n "$work" ] && rm -rf "$work"
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
  $box_only || echo "vagrant: $passed passed, $failed failed"
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM
root_before="$(root_ns_state)"

# The libvirt box, made from the VM image: the same disk plus a "vagrant" user (passwordless sudo,
# Vagrant's insecure public key from the vagrant package) and extlinux as boot loader (in the MBR
# and the partition), so libvirt (or any BIOS) boots it without a kernel given from outside.
build_box() {
  local img="$1" out="$2" raw="$work/box.raw" mnt="$work/mnt" key
  key=$(find /usr/share/rubygems-integration /usr/share/vagrant /usr/lib/ruby -path '*vagrant*/keys/vagrant.pub' 2>/dev/null | head -1 || true)
  [ -n "$key" ] || die "Vagrant's insecure public key (keys/vagrant.pub of the vagrant package) not found"
  qemu-img convert -f qcow2 -O raw "$img/disk.qcow2" "$raw"
  mkdir -p "$mnt"
  # In a mount namespace of its own: should anything fail, the mount (and its loop device) goes
  # with the namespace.
  unshare --mount --propagation private bash -euo pipefail -c '
    mnt=$1 raw=$2 key=$3 cmdline=$4
    mount -o loop,offset=1048576 "$raw" "$mnt"
    trap "umount \"$mnt\"" EXIT
    chroot "$mnt" useradd --create-home --shell /bin/bash --user-group vagrant
    echo "vagrant ALL=(ALL) NOPASSWD: ALL" >"$mnt/etc/sudoers.d/vagrant"
    chmod 0440 "$mnt/etc/sudoers.d/vagrant"
    install -d -m 0700 "$mnt/home/vagrant/.ssh"
    install -m 0600 "$key" "$mnt/home/vagrant/.ssh/authorized_keys"
    chroot "$mnt" chown -R vagrant:vagrant /home/vagrant/.ssh
    kernel=$(cd "$mnt/boot" && ls vmlinuz-* | sort -V | tail -1)
    mkdir -p "$mnt/boot/extlinux"
    printf "%s\n" "DEFAULT debian" "PROMPT 0" "TIMEOUT 0" "LABEL debian" \
      "  LINUX /boot/$kernel" "  INITRD /boot/initrd.img-${kernel#vmlinuz-}" \
      "  APPEND $cmdline console=tty0" >"$mnt/boot/extlinux/extlinux.conf"
    extlinux --install "$mnt/boot/extlinux" >/dev/null 2>&1
  ' _ "$mnt" "$raw" "$key" "$(cat "$img/cmdline")"
  dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none
  mkdir -p "$work/box"
  qemu-img convert -f raw -O qcow2 "$raw" "$work/box/box.img"
  rm -f "$raw"
  echo '{"provider":"libvirt","format":"qcow2","virtual_size":4}' >"$work/box/metadata.json"
  cat >"$work/box/Vagrantfile" <<'EOF'
# The box of weft's tests/vm/vagrant.sh: Debian 12 with systemd-networkd, sshd and every package
# weft and its smoke test use; no network needed.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.disk_bus = "virtio"
  end
end
EOF
  tar -C "$work/box" -cf "$out.tmp" metadata.json Vagrantfile box.img
  mv "$out.tmp" "$out"
  rm -rf "$work/box"
}

step "host packages, binaries, VM image, Vagrant box"
host_packages "${VM_HOST_PACKAGES[@]}" "${VAGRANT_HOST_PACKAGES[@]}"
work="$(mktemp -d /tmp/weft-vagrant.XXXXXX)"
IMG=$(bash "$VM_LIB_DIR/image.sh" | tail -1)
[ -e "$IMG/ok" ] || die "tests/vm/image.sh did not build the image"
box="$IMG/vagrant-libvirt-$(sha256sum "$0" | cut -c1-12).box"
if [ ! -e "$box" ]; then
  rm -f "$IMG"/vagrant-libvirt-*.box
  build_box "$IMG" "$box"
  log "box built: $box ($(du -m "$box" | cut -f1) MiB)"
else
  log "box (cached): $box"
fi
if $box_only; then echo "$box"; exit 0; fi
if [ -z "$bin_dir" ]; then
  bin_dir="$TARGET_DIR/release"
  if [ ! -x "$bin_dir/weftd" ] || [ ! -x "$bin_dir/weft" ]; then
    log "no release binaries in $bin_dir: cargo build --release --bins"
    (cd "$ROOT" && cargo build --release --bins --quiet)
  fi
fi
for b in weftd weft; do [ -x "$bin_dir/$b" ] || die "no executable $bin_dir/$b (--bin-dir)"; done
mkdir -p "$work/bin"
cp "$bin_dir/weftd" "$bin_dir/weft" "$work/bin/"
command -v strip >/dev/null && strip --strip-debug "$work/bin/weftd" "$work/bin/weft"
log "binaries from $bin_dir (copies without debug info)"

step "sandbox: network and mount namespace, libvirtd, virtlogd"
mkdir -p "$work/etc" "$work/lib" "$work/log" "$work/cache"
cp -a /etc/libvirt/. "$work/etc/"
# Without libvirt's "default" NAT network: what is left after `vagrant destroy -f` is Vagrant's.
rm -f "$work/etc/qemu/networks/default.xml" "$work/etc/qemu/networks/autostart/default.xml"
cat >>"$work/etc/qemu.conf" <<'EOF'
# tests/vm/vagrant.sh: root in a sandbox, no cgroups, no security driver, no per-VM namespaces.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
EOF
cat >>"$work/etc/libvirtd.conf" <<'EOF'
# tests/vm/vagrant.sh: only root reaches the sockets (in the sandbox's /run).
unix_sock_group = "root"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
ip netns add "$SB_NS"
netns_made=true
ip -n "$SB_NS" link set lo up
ip netns exec "$SB_NS" unshare --mount --propagation private -- sleep infinity &
holder=$!
for _ in $(seq 50); do
  [ "$(readlink "/proc/$holder/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] && break
  sleep 0.1
done
sb sh -euc "mount --bind '$work/etc' /etc/libvirt
  mount --bind '$work/lib' /var/lib/libvirt
  mount --bind '$work/log' /var/log/libvirt
  mount --bind '$work/cache' /var/cache/libvirt
  mount -t tmpfs -o mode=0755 weft-sandbox-run /run
  mkdir -p /run/libvirt"
sb virtlogd -d -p "$work/virtlogd.pid"
sb libvirtd -d -p "$work/libvirtd.pid"
libvirt_up() { virsh_ version >/dev/null 2>&1; }
retry 60 libvirt_up || fail "libvirtd answers" "virsh version" "$(tail -20 "$work/log/libvirtd.log" 2>&1)"
log "libvirtd $(cat "$work/libvirtd.pid"), virtlogd $(cat "$work/virtlogd.pid") in namespace $SB_NS"

step "vagrant box add $BOX_NAME"
vagrant_ box add --name "$BOX_NAME" "$box" 2>&1 | tr '\r' '\n' | grep -v '^.\[KProgress\|^$' | sed 's/^/   /'

step "vagrant up: three VMs (libvirt, qemu driver), install.sh, the smoke test"
vagrant_up=true
status=0
VAGRANT_TIMEOUT=1500 vagrant_ up --provider=libvirt 2>&1 | tee "$work/vagrant-up.log" | grep --line-buffered -v 'Progress: ' | stamp || status=$?
[ "$status" -eq 0 ] || fail "vagrant up" "exit 0" "exit $status (output above)"
grep -q 'weft smoke test passed' "$work/vagrant-up.log" ||
  fail "the Vagrantfile's smoke test" "'weft smoke test passed'" "$(grep -i 'error\|fail' "$work/vagrant-up.log" | tail -10)"

step "from outside: vagrant ssh node1 -c 'sudo weft node ls'"
out=$(vagrant_ ssh node1 -c "sudo weft node ls --format json" 2>&1) || true
seen=$(nodes_table <<<"$out" | awk '{ print $1, $2, $4 }' | sort | tr '\n' ';')
want="node1 $SUBNET.11 Ready;node2 $SUBNET.12 Ready;node3 $SUBNET.13 Ready;"
[ "$seen" = "$want" ] || fail "weft node ls on node1" "$want" "$out"
vagrant_ ssh node1 -c "sudo weft node ls" 2>&1 | sed 's/^/   /'
virsh_ list --all | sed 's/^/   /'

step "vagrant destroy -f: no domain, no network left"
t_destroy=$EPOCHREALTIME
vagrant_ destroy -f 2>&1 | stamp
vagrant_up=false
log "vagrant destroy -f: $(since "$t_destroy") s"
seen=$(virsh_ list --all --name | grep -v '^$' || true)
[ -z "$seen" ] || fail "libvirt domains after vagrant destroy -f" "none" "$seen"
seen=$(virsh_ net-list --all --name | grep -v '^$' || true)
[ -z "$seen" ] || fail "libvirt networks after vagrant destroy -f" "none" "$seen"
# vagrant-libvirt keeps the box's base volume in the pool for the next `vagrant up` (by design);
# the box itself stays in Vagrant's home. Both go with the sandbox.
seen=$(virsh_ vol-list default 2>/dev/null | awk '{ print $1 }' | grep -v '^$' || true)
if grep -v 'vagrant_box_image' <<<"$seen" | grep -q .; then
  fail "libvirt volumes after vagrant destroy -f" "only the box's base volume" "$seen"
fi
log "left by vagrant destroy -f (removed with the sandbox): volume(s) $(tr '\n' ' ' <<<"$seen")box $BOX_NAME"
step_end
