#!/usr/bin/env bash
# First check of the kernel tier, run INSIDE the guest (see run_in_vm.sh):
#   tests/kernel/run_in_vm.sh bash tests/kernel/guest_smoke.sh
# Checks everything the netns lab needs from the kernel and the userspace:
# ipip/ip6_tunnel modules, netns + veth, "external" (collect-metadata) ipip and
# ip6tnl devices, bpffs, and the venv python with pyroute2 + scapy.
# Prints one line per check and exits 0 only if all of them passed.
set -uo pipefail

PY="${VENV:+$VENV/bin/python}"
PY="${PY:-python3}"
NS=ktier-smoke
fails=0
declare -a RESULTS=()

check() {
    # check NAME CMD...: run CMD, record PASS/FAIL, show its output on failure.
    local name="$1" out rc t0 dt
    shift
    t0=$EPOCHREALTIME
    out="$("$@" 2>&1)"
    rc=$?
    dt=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -eq 0 ]; then
        RESULTS+=("PASS  $name (${dt}s)")
    else
        RESULTS+=("FAIL  $name (exit $rc, ${dt}s)")
        fails=$((fails + 1))
        printf '  %s failed:\n%s\n' "$name" "$(printf '%s\n' "$out" | sed 's/^/    | /')"
    fi
}

cleanup() { ip netns del "$NS" 2>/dev/null || true; ip netns del "$NS-peer" 2>/dev/null || true; }
trap cleanup EXIT
cleanup

echo "kernel: $(uname -r)"
echo "python: $PY ($("$PY" -V 2>&1))"
[ "$(id -u)" -eq 0 ] || { echo "not root"; exit 1; }

# shellcheck disable=SC2016  # expanded by the inner bash
check "kernel is a 6.1 Debian kernel" bash -c '[[ $(uname -r) == 6.1.* ]]'
check "modprobe ipip" modprobe ipip
check "modprobe ip6_tunnel" modprobe ip6_tunnel
check "tunl0 exists in init netns" ip link show tunl0
check "netns add" ip netns add "$NS"
check "netns add (peer)" ip netns add "$NS-peer"
check "veth pair across netns" bash -c "
    ip -n $NS link add v0 type veth peer name v1 netns $NS-peer &&
    ip -n $NS addr add 10.99.0.1/24 dev v0 && ip -n $NS link set v0 up &&
    ip -n $NS-peer addr add 10.99.0.2/24 dev v1 && ip -n $NS-peer link set v1 up &&
    ip -n $NS link set lo up && ip -n $NS-peer link set lo up"
check "ping over veth" ip netns exec "$NS" ping -c1 -W5 10.99.0.2
check "ipip external device in netns" bash -c "
    ip -n $NS link add name ipip0 type ipip external && ip -n $NS link set ipip0 up &&
    ip -n $NS -d link show ipip0 | grep -q external"
check "ip6tnl external device in netns" bash -c "
    ip -n $NS link add name ip6tnl1 type ip6tnl external && ip -n $NS link set ip6tnl1 up &&
    ip -n $NS -d link show ip6tnl1 | grep -q external"
check "tunl0 + ip6tnl0 auto-created in netns" bash -c "
    ip -n $NS link show tunl0 && ip -n $NS link show ip6tnl0"
# shellcheck disable=SC2016  # expanded by the inner bash
check "bpffs mounted" bash -c '
    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
    [ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ]'
# One python process for all python checks: under TCG a python start-up with
# these imports takes tens of seconds (README "Timings").
check "python: import pyroute2, scapy; pyroute2 sees ipip0 in the netns" \
    ip netns exec "$NS" "$PY" -c '
import pyroute2, scapy
from pyroute2 import IPRoute
with IPRoute() as ipr:
    links = ipr.link_lookup(ifname="ipip0")
    assert links, "ipip0 not found"
    kind = ipr.get_links(links[0])[0].get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND")
    assert kind == "ipip", kind
print("pyroute2", pyroute2.__version__, "scapy", scapy.__version__)'
# The engine runs Maglev's population loop as a BPF program where the kernel can (6.1 must):
# the rings it builds must be the Python loop's, byte for byte.
check "Maglev rings built by the kernel equal the Python loop's" "$PY" -c '
import random, sys
sys.path.insert(0, ".build/collections")
from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import maglev, maglev_kernel
assert maglev_kernel.unavailable_reason(4099) is None, maglev_kernel.unavailable_reason(4099)
for seed in range(20):
    rnd = random.Random(seed)
    reals = [("10.0.%d.%d" % (i // 250, i % 250 + 1), rnd.randint(0, 3) or 1) for i in range(rnd.choice([2, 30, 300]))]
    rings = []
    for maglev.USE_KERNEL in (True, False):
        maglev._canonical_ring.cache_clear()
        rings.append(maglev.build_ring(reals, 4099))
    assert rings[0] == rings[1], seed
print("20 rings equal")'

echo
echo "kernel tier smoke on $(uname -r):"
printf '  %s\n' "${RESULTS[@]}"
if [ "$fails" -eq 0 ]; then
    echo "smoke: OK, all ${#RESULTS[@]} checks"
else
    echo "smoke: FAILED $fails of ${#RESULTS[@]} checks"
fi
[ "$fails" -eq 0 ]
