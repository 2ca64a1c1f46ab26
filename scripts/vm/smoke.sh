#!/usr/bin/env bash
# Smoke check of the test VM, run inside it: `scripts/vm-test.sh -- scripts/vm/smoke.sh`
# (the default `scripts/vm-test.sh` run starts with it too). Proves the guest kernel has what the
# host kernel lacks and that the host's tools work in the guest:
#   1. an ipip device can be created (the host kernel says "Unknown device type");
#   2. two network namespaces joined by a veth pair ping each other through a flannel-style
#      ipip tunnel (flannel.ipip with local = underlay address, onlink routes), and the tunnel
#      device counted the packets;
#   3. modules load on demand (dummy link; nft masquerade pulls nft_chain_nat/nft_masq);
#   4. etcd starts, answers `etcdctl endpoint health`, stores and returns a key.
# Exits non-zero with a message naming the failed step.
set -euo pipefail

IP=/usr/sbin/ip
NFT=/usr/sbin/nft
[[ ${WEFT_IN_VM:-} == 1 ]] || { echo "smoke.sh: run me inside the VM: scripts/vm-test.sh -- $0" >&2; exit 2; }

tag=s$$
nsa=$tag-a
nsb=$tag-b
tmp=$(mktemp -d)
etcd_pid=
cleanup() {
    local rc=$?
    if [[ -n $etcd_pid ]]; then
        kill "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
    fi
    $IP netns del "$nsa" 2>/dev/null || true
    $IP netns del "$nsb" 2>/dev/null || true
    $IP link del "$tag-t0" 2>/dev/null || true
    $IP link del "$tag-d0" 2>/dev/null || true
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
step() { echo "smoke: $*"; }
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }

# Poll a command until it succeeds or the deadline (seconds) passes.
wait_for() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        (($(date +%s) < deadline)) || return 1
        sleep 0.1
    done
}

step "kernel $(uname -r)"

step "1. ipip device"
$IP link add "$tag-t0" type ipip local 198.18.0.1 || fail "ip link add type ipip"
$IP -j -d link show "$tag-t0" | grep -q '"info_kind":"ipip"' ||
    fail "$tag-t0 is not ipip: $($IP -d link show "$tag-t0")"
$IP link del "$tag-t0"

step "2. netns + veth + ipip tunnel ping"
$IP netns add "$nsa"
$IP netns add "$nsb"
$IP link add "$tag-va" netns "$nsa" type veth peer name "$tag-vb" netns "$nsb"
node() { # node NS VETH UNDERLAY_IP POD_NET PEER_IP PEER_POD_NET
    local ns=$1 dev=$2 ip=$3 pod=$4 peer=$5 peerpod=$6
    $IP -n "$ns" link set lo up
    $IP -n "$ns" addr add "$ip/24" dev "$dev"
    $IP -n "$ns" link set "$dev" up
    $IP -n "$ns" link add flannel.ipip type ipip local "$ip"
    $IP -n "$ns" addr add "$pod.0/32" dev flannel.ipip
    $IP -n "$ns" link set flannel.ipip up
    $IP -n "$ns" route add "$peerpod.0/24" via "$peer" dev flannel.ipip onlink
}
node "$nsa" "$tag-va" 198.18.0.1 10.244.1 198.18.0.2 10.244.2 || fail "configure node a"
node "$nsb" "$tag-vb" 198.18.0.2 10.244.2 198.18.0.1 10.244.1 || fail "configure node b"
$IP netns exec "$nsa" ping -c1 -W2 198.18.0.2 >/dev/null || fail "underlay ping 198.18.0.1 -> 198.18.0.2"
$IP netns exec "$nsa" ping -c3 -i0.2 -W2 10.244.2.0 || fail "ping through ipip 10.244.1.0 -> 10.244.2.0"
$IP netns exec "$nsb" ping -c1 -W2 10.244.1.0 >/dev/null || fail "ping through ipip 10.244.2.0 -> 10.244.1.0"
tx=$($IP -n "$nsa" -j -s link show flannel.ipip | sed -n 's/.*"tx":{"bytes":[0-9]*,"packets":\([0-9]*\).*/\1/p')
[[ ${tx:-0} -ge 3 ]] || fail "flannel.ipip in $nsa sent ${tx:-?} packets, expected >= 3 (ping bypassed the tunnel?)"
step "   flannel.ipip tx packets: $tx"

step "3. on-demand module loading"
$IP link add "$tag-d0" type dummy || fail "ip link add type dummy (module autoload through /sbin/weft-modprobe)"
$IP link del "$tag-d0"
$IP netns exec "$nsa" $NFT -f - <<'EOF' || fail "nft masquerade rule (nft_chain_nat/nft_masq autoload)"
table ip weftsmoke {
    chain post {
        type nat hook postrouting priority 100;
        ip saddr 10.244.0.0/16 masquerade
    }
}
EOF

step "4. etcd"
v=$(etcd --version) || fail "etcd --version"
step "   ${v%%$'\n'*}"
cp=$((20000 + RANDOM % 20000))
pp=$((cp + 1))
etcd --name smoke --data-dir "$tmp/etcd" \
    --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "smoke=http://127.0.0.1:$pp" --heartbeat-interval 10 --election-timeout 100 \
    >"$tmp/etcd.log" 2>&1 &
etcd_pid=$!
export ETCDCTL_API=3
t0=$(date +%s.%N)
wait_for 60 etcdctl --endpoints="127.0.0.1:$cp" endpoint health ||
    { tail -n 20 "$tmp/etcd.log" >&2; fail "etcd not healthy within 60 s"; }
step "   etcd healthy after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
etcdctl --endpoints="127.0.0.1:$cp" put /weft/smoke ok >/dev/null || fail "etcdctl put"
got=$(etcdctl --endpoints="127.0.0.1:$cp" get --print-value-only /weft/smoke) || fail "etcdctl get"
[[ $got == ok ]] || fail "etcdctl get returned '$got'"

step "all passed"
