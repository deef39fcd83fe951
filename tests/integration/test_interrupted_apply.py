"""lb_vip killed (SIGKILL, no hook in the engine) between its ring swaps and its record writes: the
rerun through the real module lists what it repaired and converges; the run after it is a no-op."""
import ctypes
import os
import signal

import pytest

from backend_netns import CLONE_NEWNET
from balancer_env import BalancerNS, build_objects, logical, playbook

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import vips, vipspec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: run as root")

START = [{"address": "192.0.2.10", "port": 80, "reals": ["10.1.0.1", "10.1.0.2", "10.1.0.3"]},
         {"address": "192.0.2.10", "port": 443, "reals": ["10.1.0.1", "10.1.0.2"]},
         {"address": "2001:db8::10", "port": 80, "reals": ["2001:db8:1::1"]}]
# Port 80 changes its reals, 443 and the IPv6 VIP go, two VIPs are new (one on a new address).
GOAL = [{"address": "192.0.2.10", "port": 80, "reals": ["10.1.0.1", {"address": "10.1.0.7", "weight": 2}]},
        {"address": "192.0.2.10", "port": 53, "protocol": "udp", "reals": ["10.1.0.1", "10.1.0.2"]},
        {"address": "198.51.100.1", "port": 80, "icmp_echo": False, "reals": ["10.1.0.8"]}]


def _killed_apply(ns_name, pin_root, goal):
    """Apply `goal` in a forked child inside the namespace, SIGKILLed at its first VIP record write
    (every ring of the batch is installed by then, no record or table entry written yet)."""
    pid = os.fork()
    if pid == 0:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open("/run/netns/%s" % ns_name, os.O_RDONLY)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                os._exit(3)

            def die(*_args, **_kwargs):
                os.kill(os.getpid(), signal.SIGKILL)

            vips._write_vip = die
            vips.ensure(pin_root, vipspec.parse_vips(goal), purge=True)
        finally:
            os._exit(4)  # not killed: the test fails on the status
    _pid, status = os.waitpid(pid, 0)
    return status


@pytest.fixture
def lbns():
    build_objects()
    ns = BalancerNS()
    try:
        ns.load()
        yield ns
    finally:
        ns.close()


def test_a_killed_apply_is_repaired_and_reported(lbns, tmp_path):
    pin = lbns.pin_root
    lbns.run(vips.ensure, pin, vipspec.parse_vips(GOAL), purge=True)
    expected = logical(pin)
    lbns.run(vips.ensure, pin, vipspec.parse_vips(START), purge=True)

    status = _killed_apply(lbns.name, pin, GOAL)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert logical(pin) != expected

    task = {"xdplb.katran.lb_vip": {"vips": GOAL, "purge": True, "pin_root": pin}}
    r = playbook(lbns.name, [dict(task, name="rerun check", check_mode=True), dict(task, name="rerun"),
                             dict(task, name="third")], tmp_path, check=True)
    rerun = r["rerun"]["result"]
    repairs = rerun["repairs"]
    assert r["rerun check"]["result"]["repairs"] == repairs, "check mode lists the same repairs"
    assert "192.0.2.10:80/tcp: its installed ring does not match its record (an interrupted run): " \
           "record rewritten to match the installed ring" in repairs, repairs
    reused = [x for x in repairs if x.startswith("VIP number") and "reused for" in x]
    assert sorted(x.rsplit(" ", 1)[1] for x in reused) == ["192.0.2.10:53/udp", "198.51.100.1:80/tcp"], repairs
    assert "address 2001:db8::10 had no VIP left (an interrupted run): removed from lb_vip_addrs" in repairs
    assert any(x.startswith("real 2001:db8:1::1 ") and x.endswith("freed") for x in repairs), repairs
    assert rerun["changed"] and logical(pin) == expected

    third = r["third"]["result"]
    assert not third["changed"] and third["repairs"] == [] and third["summary"]["unchanged"] == 3
