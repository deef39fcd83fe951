"""The lab's router with routing bgp: FRR learns the balancers' VIP routes over BGP (ECMP) and
withdraws a balancer that dies within BFD's detection time.

The balancers' BGP speaker here is a minimal hand-written BIRD 2 (a blackhole route per family,
exported over both sessions), so the test does not depend on the balancer role."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from lab_playbook import changed_total, playbook
from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import lab, labrouting

PREFIX = "xkg-"
ROLE_PREFIX = "xkgr-"
STATE_ROOT = "/run/xdplb-labtest-bgp"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASS_OBJECT = os.path.join(REPO, "files", "bpf", "pass.o")
LAB_ONLY = os.path.join(REPO, "tests", "integration", "playbooks", "lab_only.yml")
VIP4, VIP6 = "10.99.0.20/32", "fd00:99::20/128"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)"),
    pytest.mark.skipif(not shutil.which("bird") or not os.path.exists("/usr/lib/frr/bgpd"), reason="needs bird2 and frr"),
    pytest.mark.skipif(not os.path.exists(PASS_OBJECT), reason="needs files/bpf/pass.o (make bpf)"),
]

BIRD_CONF = """\
router id {ipv4};
log "{dir}/bird.log" all;
protocol device {{ scan time 10; }}
protocol bfd {{ interface "eth0" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }}; }}
protocol static vips4 {{ ipv4; route 10.99.0.20/32 blackhole; route 10.98.0.1/32 blackhole; }}
protocol static vips6 {{ ipv6; route fd00:99::20/128 blackhole; }}
protocol bgp router4 {{
  local {ipv4} as 65010; neighbor {gw4} as 65000; bfd on; hold time 9; connect retry time 2; error wait time 1, 5;
  ipv4 {{ import all; export where proto = "vips4"; }};
}}
protocol bgp router6 {{
  local {ipv6} as 65010; neighbor {gw6} as 65000; bfd on; hold time 9; connect retry time 2; error wait time 1, 5;
  ipv6 {{ import all; export where proto = "vips6"; }};
}}
"""


def vtysh(plan, command):
    argv = labrouting.vtysh_argv(labrouting.frr_dir(STATE_ROOT, plan["router"])) + ["-c", command]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout


def nexthops(plan, prefix):
    """The router's FRR route to prefix: how many of its nexthops are installed (in the kernel)."""
    command = "show ipv6 route" if ":" in prefix else "show ip route"
    routes = json.loads(vtysh(plan, f"{command} {prefix} json") or "{}").get(prefix, [])
    return sum(1 for route in routes if route.get("selected") for hop in route.get("nexthops", []) if hop.get("fib"))


def wait_for(what, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return time.monotonic()
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s")


def start_bird(host):
    directory = f"{STATE_ROOT}/{host['netns']}/bird"
    os.makedirs(directory, exist_ok=True)
    with open(directory + "/bird.conf", "w") as handle:
        handle.write(BIRD_CONF.format(dir=directory, ipv4=host["ipv4"].split("/")[0], ipv6=host["ipv6"].split("/")[0],
                                      gw4=host["gateway_ipv4"], gw6=host["gateway_ipv6"]))
    subprocess.run(["nsenter", f"--net=/run/netns/{host['netns']}", "bird", "-c", directory + "/bird.conf",
                    "-s", directory + "/bird.ctl", "-P", directory + "/bird.pid"], check=True, timeout=10)
    # BIRD writes its pid file after it has gone to the background.
    wait_for(lambda: os.path.exists(directory + "/bird.pid") and open(directory + "/bird.pid").read().strip(), 5)
    with open(directory + "/bird.pid") as handle:
        return int(handle.read())


@pytest.fixture(scope="module")
def bgp_lab():
    lab.absent(PREFIX, [STATE_ROOT])
    plan = lab.plan(PREFIX, balancers=2, backends=1)
    changes = lab.present(plan, PASS_OBJECT, routing="bgp", state_root=STATE_ROOT)
    assert any("start FRR" in c for c in changes), changes
    yield plan
    if os.environ.get("XDPLB_KEEP_LAB"):
        return
    lab.absent(PREFIX, [STATE_ROOT])
    assert not os.path.exists(STATE_ROOT)
    assert not [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout.splitlines()
                if STATE_ROOT in line]


def test_no_static_routes_and_a_second_run_changes_nothing(bgp_lab):
    router = bgp_lab["router"]
    for flag, prefix in (("-4", "10.99.0.0/24"), ("-6", "fd00:99::/64")):
        out = subprocess.run(["ip", flag, "-n", router, "route", "show", "exact", prefix], capture_output=True, text=True, check=True).stdout
        assert out.strip() == ""
    assert lab.present(bgp_lab, PASS_OBJECT, routing="bgp", state_root=STATE_ROOT) == []
    assert lab.present(bgp_lab, PASS_OBJECT, routing="bgp", state_root=STATE_ROOT, check_mode=True) == []


def test_a_dead_daemon_or_a_new_configuration_restarts_frr(bgp_lab):
    directory = labrouting.frr_dir(STATE_ROOT, bgp_lab["router"])
    with open(directory + "/bgpd.pid") as handle:
        os.kill(int(handle.read()), signal.SIGKILL)
    time.sleep(0.2)
    changes = lab.present(bgp_lab, PASS_OBJECT, routing="bgp", state_root=STATE_ROOT)
    assert changes == [f"{bgp_lab['router']}: restart FRR (bgpd not running)"]
    other = lab.plan(PREFIX, balancers=2, backends=1, vip_prefix4="10.99.0.0/16")
    assert lab.present(other, PASS_OBJECT, routing="bgp", state_root=STATE_ROOT, check_mode=True) == [
        f"{bgp_lab['router']}: FRR configuration bgpd.conf", f"{bgp_lab['router']}: restart FRR for the new configuration"]
    assert len(lab.present(other, PASS_OBJECT, routing="bgp", state_root=STATE_ROOT)) == 2
    with open(directory + "/bgpd.conf") as handle:
        assert "permit 10.99.0.0/16 le 32" in handle.read()
    lab.present(bgp_lab, PASS_OBJECT, routing="bgp", state_root=STATE_ROOT)
    assert lab.present(bgp_lab, PASS_OBJECT, routing="bgp", state_root=STATE_ROOT) == []


def test_ecmp_over_both_balancers_and_bfd_withdraws_a_dead_one(bgp_lab):
    balancers = [h for h in bgp_lab["hosts"] if h["kind"] == "lb"]
    pids = [start_bird(h) for h in balancers]
    wait_for(lambda: nexthops(bgp_lab, VIP4) == 2 and nexthops(bgp_lab, VIP6) == 2, 20, 0.2)
    # Only the VIP prefixes are accepted; nothing is announced back to the balancers.
    assert nexthops(bgp_lab, "10.98.0.1/32") == 0
    for protocol in ("router4", "router6"):
        birdc = ["birdc", "-s", f"{STATE_ROOT}/{balancers[0]['netns']}/bird/bird.ctl", "show", "route", "protocol", protocol, "count"]
        assert "\n0 of " in subprocess.run(birdc, capture_output=True, text=True, check=True).stdout
    # A dead BIRD: the kernel closes its TCP sessions, the router withdraws at once.
    killed = time.monotonic()
    os.kill(pids[0], signal.SIGKILL)
    withdrawn = wait_for(lambda: nexthops(bgp_lab, VIP4) == 1 and nexthops(bgp_lab, VIP6) == 1, 2)
    assert withdrawn - killed < 2
    # A balancer that stops answering (frozen, sessions still open): only BFD sees it, in 3 x 100 ms.
    stopped = time.monotonic()
    os.kill(pids[1], signal.SIGSTOP)
    try:
        withdrawn = wait_for(lambda: nexthops(bgp_lab, VIP4) == 0 and nexthops(bgp_lab, VIP6) == 0, 2)
    finally:
        os.kill(pids[1], signal.SIGKILL)
    assert withdrawn - stopped < 1
    with open(labrouting.frr_dir(STATE_ROOT, bgp_lab["router"]) + "/frr.log") as handle:
        log = handle.read()
    # The report's evidence of which event withdrew a balancer.
    assert f"neighbor {balancers[0]['ipv4'].split('/')[0]}(Unknown) in vrf default Down Peer closed the session" in log
    assert f"sent to neighbor {balancers[1]['ipv4'].split('/')[0]} 6/10 (Cease/BFD Down)" in log
    assert f"sent to neighbor {balancers[1]['ipv6'].split('/')[0]} 6/10 (Cease/BFD Down)" in log


def test_back_to_static_stops_frr_and_restores_the_routes(bgp_lab):
    changes = lab.present(bgp_lab, PASS_OBJECT, routing="static", state_root=STATE_ROOT)
    assert any("stop FRR" in c for c in changes), changes
    out = subprocess.run(["ip", "-4", "-n", bgp_lab["router"], "route", "show", "exact", "10.99.0.0/24"],
                         capture_output=True, text=True, check=True).stdout
    assert out.count("nexthop") == 2, out
    assert lab.present(bgp_lab, PASS_OBJECT, routing="static", state_root=STATE_ROOT) == []
    changes = lab.present(bgp_lab, PASS_OBJECT, routing="bgp", state_root=STATE_ROOT)
    assert any("remove static route" in c for c in changes) and any("start FRR" in c for c in changes), changes


def test_the_lab_role_with_bgp_gives_the_balancers_their_bgp_variables_and_converges_both_ways():
    """The lab role (its default routing is bgp): the balancers' BIRD variables and the router's
    lab_vtysh in the inventory, a second run changes nothing, and static and back converge."""
    prefix, root = ROLE_PREFIX, STATE_ROOT + "-role"
    args = ["-e", f"lab_prefix={prefix}", "-e", f"lab_state_root={root}", "-e", "lab_pin_root=/sys/fs/bpf/xdplb-labtest-bgp-role",
            "-e", "lab_balancers=2", "-e", "lab_backends=1"]
    try:
        playbook(LAB_ONLY, *args)
        with open(root + "/inventory.yml") as handle:
            groups = yaml.safe_load(handle)["all"]["children"]
        lb2 = groups["balancers"]["hosts"][prefix + "lb2"]
        assert lb2["balancer_bgp_enabled"] is True and lb2["balancer_bgp_local_as"] == 65010
        assert lb2["balancer_bgp_peers"] == [{"address": "10.20.2.1", "as": 65000}, {"address": "fd00:20:2::1", "as": 65000}]
        assert lb2["balancer_bgp_config_file"] == f"{root}/{prefix}lb2/bird/bird.conf"
        assert lb2["balancer_bgp_drain_file"] == f"{root}/{prefix}lb2/etc/bgp-drained"
        assert (lb2["balancer_bgp_mode"], lb2["balancer_bgp_packages"]) == ("process", [])
        assert not any(k.startswith("balancer_bgp_") for k in groups["backends"]["hosts"][prefix + "be1"])
        vtysh = groups["lab_routers"]["hosts"][prefix + "router"]["lab_vtysh"]
        assert vtysh == ["vtysh", "--vty_socket", f"{root}/{prefix}router/frr"]
        assert "65000" in subprocess.run(vtysh + ["-c", "show bgp summary"], capture_output=True, text=True, check=True).stdout
        _rc, data = playbook(LAB_ONLY, *args)
        assert changed_total(data) == 0
        _rc, data = playbook(LAB_ONLY, *args, "-e", "lab_routing=static")
        assert changed_total(data) > 0
        with open(root + "/inventory.yml") as handle:
            assert "balancer_bgp_" not in handle.read()
        _rc, data = playbook(LAB_ONLY, *args, "-e", "lab_routing=static")
        assert changed_total(data) == 0
    finally:
        playbook(LAB_ONLY, *args, "-e", "lab_state=absent")
    assert not os.path.exists(root)
