#!/usr/bin/env bash
# Builds the Debian 12 VM image the VM tests boot, from Debian's packages only, and caches it under
# target/vm/bookworm-<hash>/ (the hash is this file's: a change to the recipe or the package list
# builds a new image; older ones are removed). Prints the cache directory on its last line.
#
#   bash tests/vm/image.sh [--force]
#
# The cache directory holds:
#   disk.qcow2        4 GiB, MBR with one ext4 partition labelled "root" at 1 MiB (no boot loader:
#                     QEMU boots the kernel directly; tests/vm/vagrant.sh adds extlinux to its box)
#   vmlinuz, initrd.img, cmdline   the kernel, a small initramfs (MODULES=list), its command line
#   id_ed25519[.pub]  the key pair root's authorized_keys holds (made here, for the tests only)
#   testimage.tar     a docker-save container image: busybox-static, iputils ping and iperf3 with
#                     their libraries, taken from the same packages (imported with weft image import)
#   packages.txt      what the image has (dpkg -l)
#
# The image: systemd, systemd-networkd (DHCP on eth0, the NAT/management NIC; other NICs are left to
# the test or to Vagrant), sshd with an ed25519 host key only (generated here, not at first boot:
# RSA key generation takes seconds under TCG), an empty machine-id (each VM makes its own at first
# boot, so DHCP client ids differ), no timers, and the packages weftd and the scenario use
# (libseccomp2, nftables, iproute2, kmod, util-linux, iputils-ping, iperf3, busybox-static).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

force=false
[ "${1:-}" = --force ] && force=true
[ "$(id -u)" -eq 0 ] || die "tests/vm/image.sh must run as root (mmdebstrap, mkfs)"

SUITE=bookworm
MIRROR="${WEFT_VM_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=(
  linux-image-amd64 initramfs-tools
  systemd systemd-sysv udev dbus
  openssh-server openssh-client sudo
  iproute2 nftables libseccomp2 kmod util-linux procps
  iputils-ping iperf3 busybox-static
)
# The initramfs loads only these (and what they need): disks on virtio, SCSI, SATA or IDE, ext4.
INITRD_MODULES=(virtio_pci virtio_blk virtio_scsi sd_mod ahci ata_piix ata_generic ext4 crc32c_generic)
DISK_SIZE_MIB=4096
CMDLINE="root=LABEL=root rw console=ttyS0,115200 net.ifnames=0 mitigations=off"

hash=$(sha256sum "$0" | cut -c1-12)
out="$VM_CACHE/$SUITE-$hash"
if [ -e "$out/ok" ] && ! $force; then
  echo "$out"
  exit 0
fi

host_packages "${VM_HOST_PACKAGES[@]}"
mkdir -p "$VM_CACHE"
exec 9>"$VM_CACHE/.lock"
flock 9
if [ -e "$out/ok" ] && ! $force; then echo "$out"; exit 0; fi

build="$(mktemp -d "$VM_CACHE/build.XXXXXX")"
rootfs="$build/rootfs"
cleanup_build() {
  set +e
  # Whatever is still mounted below the build directory (mmdebstrap unmounts its own on success).
  grep -o " $build/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$build"
}
trap cleanup_build EXIT

t0=$EPOCHREALTIME
echo "== VM image: mmdebstrap $SUITE (minbase + ${#PACKAGES[@]} packages) into $build"
# Before any package is installed: the initramfs is made with only the listed modules (36 MB ->
# about 7 MB, and a faster boot under TCG).
setup_hook=$(cat <<EOF
mkdir -p "\$1/etc/initramfs-tools/conf.d" "\$1/etc/initramfs-tools/hooks"
echo MODULES=list >"\$1/etc/initramfs-tools/conf.d/weft-vm.conf"
cat >"\$1/etc/initramfs-tools/hooks/weft-vm" <<'HOOK'
#!/bin/sh
case "\$1" in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in ${INITRD_MODULES[*]}; do manual_add_modules "\$m"; done
HOOK
chmod 0755 "\$1/etc/initramfs-tools/hooks/weft-vm"
EOF
)
mmdebstrap --quiet --mode=root --variant=minbase --format=directory \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --setup-hook="$setup_hook" \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  "$SUITE" "$rootfs" "$MIRROR" >"$build/mmdebstrap.log" 2>&1 || {
    tail -40 "$build/mmdebstrap.log" >&2
    die "mmdebstrap failed (log above)"
  }
echo "   mmdebstrap: $(since "$t0") s, $(du -sm "$rootfs" | cut -f1) MiB"

echo "== VM image: configuration"
echo "weft-vm" >"$rootfs/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tweft-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
echo 'LABEL=root / ext4 rw,errors=remount-ro 0 0' >"$rootfs/etc/fstab"
# No resolver: the VMs reach nothing outside this machine.
: >"$rootfs/etc/resolv.conf"
# A machine-id of its own for every VM, made at its first boot; no first-boot prompts.
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
ln -sf /dev/null "$rootfs/etc/systemd/system/systemd-firstboot.service"
# No KVM inside the VMs (QEMU's -cpu max offers SVM): loading it only costs boot time.
printf 'blacklist kvm\nblacklist kvm_amd\nblacklist kvm_intel\n' >"$rootfs/etc/modprobe.d/weft-vm.conf"
# A persistent journal: the boot before a reboot stays readable.
mkdir -p "$rootfs/var/log/journal"
# Timers that would compete for the one emulated CPU.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done

# Networking: systemd-networkd, DHCP on eth0 only (QEMU's user-mode NAT, or Vagrant's management
# network). The private network is configured by the test (or by Vagrant) on eth1.
mkdir -p "$rootfs/etc/systemd/network"
cat >"$rootfs/etc/systemd/network/90-eth0.network" <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=ipv4
IPv6AcceptRA=no
LinkLocalAddressing=no
EOF
chroot "$rootfs" systemctl enable systemd-networkd.service >/dev/null 2>&1
# network-online.target waits for the links networkd manages (eth0, and what the test adds).
mkdir -p "$rootfs/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat >"$rootfs/etc/systemd/system/systemd-networkd-wait-online.service.d/weft-vm.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --timeout=60
EOF

# sshd: an ed25519 host key only, keys only, no DNS look-ups.
ssh-keygen -q -t ed25519 -N '' -C weft-vm-host -f "$rootfs/etc/ssh/ssh_host_ed25519_key"
cat >"$rootfs/etc/ssh/sshd_config.d/weft-vm.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
EOF
mkdir -p "$build/out"
ssh-keygen -q -t ed25519 -N '' -C weft-vm-test -f "$build/out/id_ed25519"
install -d -m 0700 "$rootfs/root/.ssh"
install -m 0600 "$build/out/id_ed25519.pub" "$rootfs/root/.ssh/authorized_keys"

# The kernel's postinst made the initramfs with the hook above in place already.
kernel=$(cd "$rootfs/boot" && ls vmlinuz-* | sort -V | tail -1)
initrd="initrd.img-${kernel#vmlinuz-}"
cp "$rootfs/boot/$kernel" "$build/out/vmlinuz"
cp "$rootfs/boot/$initrd" "$build/out/initrd.img"
echo "$CMDLINE" >"$build/out/cmdline"
echo "   kernel ${kernel#vmlinuz-}, initramfs $(du -m "$build/out/initrd.img" | cut -f1) MiB"
chroot "$rootfs" dpkg -l >"$build/out/packages.txt"

echo "== VM image: the container image (busybox-static, ping, iperf3 from the same packages)"
img="$build/testimage"
mkdir -p "$img/rootfs/bin" "$img/rootfs/etc" "$img/rootfs/tmp" "$img/rootfs/usr/bin" "$img/layer"
chmod 1777 "$img/rootfs/tmp"
cp "$rootfs/bin/busybox" "$img/rootfs/bin/busybox"
# busybox's ping cannot set DF (-M do): ping is iputils' (in /usr/bin, with its libraries).
for applet in sh sleep cat echo ls ip hostname nslookup wget ps kill true false grep sed head tail wc; do
  ln -s busybox "$img/rootfs/bin/$applet"
done
for bin in /usr/bin/ping /usr/bin/iperf3; do
  cp "$rootfs$bin" "$img/rootfs$bin"
  chroot "$rootfs" ldd "$bin" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
    mkdir -p "$img/rootfs$(dirname "$lib")"
    cp -L "$rootfs$lib" "$img/rootfs$lib"
  done
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$img/rootfs/etc/passwd"
echo 'root:x:0:' >"$img/rootfs/etc/group"
echo 'hosts: files dns' >"$img/rootfs/etc/nsswitch.conf"
tar --numeric-owner --owner=0 --group=0 -C "$img/rootfs" -cf "$img/layer/layer.tar" .
diff_id="sha256:$(sha256sum "$img/layer/layer.tar" | cut -d' ' -f1)"
config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"Cmd\":[\"/bin/sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"$diff_id\"]}}"
config_name="$(printf '%s' "$config" | sha256sum | cut -d' ' -f1).json"
printf '%s' "$config" >"$img/$config_name"
printf '[{"Config":"%s","RepoTags":["weft-vmtest:latest"],"Layers":["layer/layer.tar"]}]' "$config_name" >"$img/manifest.json"
tar -C "$img" -cf "$build/out/testimage.tar" manifest.json "$config_name" layer/layer.tar
echo "   testimage.tar $(du -m "$build/out/testimage.tar" | cut -f1) MiB"

echo "== VM image: ext4 file system and disk"
raw="$build/disk.raw"
truncate -s "${DISK_SIZE_MIB}M" "$raw"
# ext4 in the file at 1 MiB, filled from the tree (no loop device, no mount); 64bit off so that
# extlinux (the Vagrant box's boot loader) can read it.
mkfs.ext4 -q -F -L root -O ^64bit -E offset=1048576,nodiscard -d "$rootfs" "$raw" "$((DISK_SIZE_MIB - 1))M"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk --quiet --wipe never "$raw" 2>&1 |
  { grep -v 'contains a ext4 signature' || true; }
qemu-img convert -f raw -O qcow2 "$raw" "$build/out/disk.qcow2"
rm -f "$raw"
echo "   disk.qcow2 $(du -m "$build/out/disk.qcow2" | cut -f1) MiB on disk"

# Replace any older image (another recipe) by this one.
rm -rf "$out"
for old in "$VM_CACHE/$SUITE"-*; do
  [ -d "$old" ] && [ "$old" != "$out" ] && rm -rf "$old"
done
mv "$build/out" "$out"
date -u +%FT%TZ >"$out/ok"
echo "== VM image built in $(since "$t0") s"
echo "$out"
