#!/usr/bin/env bash
# weft's demo: three virtual hosts (network namespaces on one virtual switch), weftd on each
# (one bootstrap, two joins), an overlay network, a busybox image made from the machine's own
# busybox-static, a container on host 1 and one on host 2 pinging each other by name, then
# `weft node ls` and `weft network inspect`. Everything it made is removed at the end, also when
# it fails. Run as root from anywhere in the checkout; it touches nothing outside its namespaces
# (the root namespace gets no link, address, route or rule).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "deploy/demo.sh must run as root: it creates network namespaces" >&2
  exit 1
fi
bash tests/deps.sh

if [ -n "${WEFT_BIN_DIR:-}" ]; then
  bin="$WEFT_BIN_DIR"   # prebuilt binaries (the test that runs this demo sets it)
else
  echo "== building weftd and weft"
  cargo build --bins --quiet
  bin="$PWD/target/debug"
fi
weftd="$bin/weftd"
weft="$bin/weft"

tag="weftdemo$$"
work="$(mktemp -d /tmp/weft-demo.XXXXXX)"
subnet="192.0.2"   # TEST-NET-1: documentation addresses, only inside the demo's namespaces
pids=()

cleanup() {
  set +e
  echo "== cleaning up"
  for i in 1 2 3; do
    if [ -S "$work/h$i.sock" ]; then
      ids=$("$weft" -H "unix://$work/h$i.sock" ps -a --format json 2>/dev/null | grep -o '"id": "[0-9a-f]\{64\}"' | cut -d'"' -f4)
      for id in $ids; do "$weft" -H "unix://$work/h$i.sock" rm -f "$id" >/dev/null 2>&1; done
    fi
  done
  # SIGTERM: weftd stops serving and exits 0 (containers are gone already).
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "weftd $pid did not stop within 5 s of SIGTERM; killing it" >&2
      kill -9 "$pid" 2>/dev/null
    fi
  done
  wait 2>/dev/null
  for ns in "$work"/h*/netns/*; do [ -e "$ns" ] && umount -l "$ns" 2>/dev/null; done
  for n in sw h1 h2 h3; do ip netns del "$tag-$n" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== three virtual hosts on one switch ($subnet.0/24)"
ip netns add "$tag-sw"
ip -n "$tag-sw" link add sw type bridge
ip -n "$tag-sw" link set sw up
for i in 1 2 3; do
  ip netns add "$tag-h$i"
  ip -n "$tag-sw" link add "p$i" type veth peer name eth0 netns "$tag-h$i"
  ip -n "$tag-sw" link set "p$i" master sw up
  ip -n "$tag-h$i" addr add "$subnet.$i/24" dev eth0
  ip -n "$tag-h$i" link set eth0 up
  ip -n "$tag-h$i" link set lo up
done

# weftd on host i: nsenter switches only the network namespace and then becomes weftd, so $!
# is weftd's own pid. weft talks to each host's weftd through its socket.
weft_on() { local i=$1; shift; "$weft" -H "unix://$work/h$i.sock" "$@"; }
start() {
  local i=$1; shift
  nsenter --net="/run/netns/$tag-h$i" "$weftd" --state-dir "$work/h$i" --socket "$work/h$i.sock" \
    --listen "$subnet.$i:7946" --advertise "$subnet.$i" --name "host$i" --down-after 3s "$@" \
    >"$work/weftd-h$i.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$work/h$i.sock" ] && return 0; sleep 0.1; done
  echo "weftd on host$i did not start:" >&2; cat "$work/weftd-h$i.log" >&2; return 1
}
show() { local i=$1; shift; echo "\$ weft $*    # on host$i"; weft_on "$i" "$@"; }

echo "== weftd: bootstrap on host1, join host2 and host3"
start 1 --bootstrap
token=$(weft_on 1 cluster token worker)
start 2 --join "$subnet.1:7946" --token "$token"
start 3 --join "$subnet.1:7946" --token "$token"
for _ in $(seq 100); do
  [ "$(weft_on 1 node ls | grep -c Ready)" = 3 ] && break
  sleep 0.2
done

echo "== a busybox image, made from this machine's busybox-static"
rootfs="$work/rootfs"; mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh ping nslookup sleep ip cat hostname; do ln -s busybox "$rootfs/bin/$applet"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
image="$work/image"; mkdir -p "$image/layer"
tar -C "$rootfs" -cf "$image/layer/layer.tar" .
diff_id="sha256:$(sha256sum "$image/layer/layer.tar" | cut -d' ' -f1)"
config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"/bin/sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"$diff_id\"]}}"
config_name="$(printf '%s' "$config" | sha256sum | cut -d' ' -f1).json"
printf '%s' "$config" >"$image/$config_name"
printf '[{"Config":"%s","RepoTags":["busybox:latest"],"Layers":["layer/layer.tar"]}]' "$config_name" >"$image/manifest.json"
tar -C "$image" -cf "$work/busybox.tar" manifest.json "$config_name" layer/layer.tar
for i in 1 2 3; do weft_on "$i" image import "$work/busybox.tar"; done

echo "== an overlay network across the three hosts"
show 1 network create --driver overlay --subnet 10.44.0.0/16 demo

echo "== db on host2, web on host1"
weft_on 2 run -d --name db --network demo busybox sleep 3600 >/dev/null
weft_on 1 run -d --name web --network demo busybox sleep 3600 >/dev/null
show 1 ps

echo "== web (host1) -> db (host2), and back, by name"
show 1 exec web ping -c 3 db
show 2 exec db ping -c 3 web

echo "== the cluster and the network"
show 1 node ls
show 3 network inspect demo
echo "== demo done: containers on different hosts reached each other by name over one overlay"
