#!/usr/bin/env bash
# weft's test command: installs what the tests need, checks formatting and lints, runs every test
# of the workspace and the multi-VM test (tests/vm), and then checks that the root network namespace is exactly as it was before
# (no namespace, link, address, route, weft cgroup, mount or weftd process left behind). Run as root from anywhere in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "tests/run.sh must run as root: the tests create network namespaces" >&2
  exit 1
fi
bash tests/deps.sh

root_state() {
  echo "## netns"; ip netns list | awk '{print $1}' | sort
  echo "## links"; ip -o link show | sed -E 's/^[0-9]+: //' | sort
  echo "## addresses"; ip -o addr show | awk '{print $2, $3, $4}' | sort
  echo "## routes"; ip route show table all | sort
  echo "## weft cgroups"; find /sys/fs/cgroup -maxdepth 2 -name 'weft*' 2>/dev/null | sort
  echo "## weft mounts"; grep -E 'weft|/run/netns/wt' /proc/mounts | awk '{print $2}' | sort || true
  echo "## weftd processes (agents and container monitors)"; { pgrep -x weftd || true; } | wc -l
}
before=$(mktemp); after=$(mktemp)
trap 'rm -f "$before" "$after"' EXIT
root_state >"$before"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build --bins (end-to-end tests run weftd and weft)"
cargo build --workspace --bins --quiet
echo "== cargo test"
status=0
cargo test --workspace --no-fail-fast -- "$@" || status=$?

# weft on three QEMU VMs with their own kernels (tests/vm/README.md; about 11 minutes under TCG),
# with the debug binaries built above (copied in without their debug info). Skipped when a test
# name filter is given or WEFT_SKIP_VM=1.
if [ "$#" -eq 0 ] && [ "${WEFT_SKIP_VM:-0}" != 1 ]; then
  echo "== multi-VM test (tests/vm/run.sh)"
  WEFT_BIN_DIR=target/debug bash tests/vm/run.sh || status=$?
fi

root_state >"$after"
if ! diff -u "$before" "$after"; then
  echo "FAIL: the root network namespace changed during the tests (diff above)" >&2
  status=1
else
  echo "root network namespace unchanged: $(grep -c . "$before") lines of netns/link/address/route state compared"
fi
exit "$status"
