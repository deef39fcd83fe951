"""The agent's /metrics (engine/health/metrics.py) with the real agent, balancer.o on a veth and
real packets, in a network namespace of its own (BalancerNS: lb0 <-> peer0, addresses only there).

A TCP VIP and a UDP VIP share two reals (10.203.0.11, 10.203.0.12: nobody answers there, so the
agent finds them down and both VIPs fail open, keeping their rings). N UDP datagrams of a known
size go from peer0 to the UDP VIP through the XDP program on lb0 (generic mode). The scrape must
count exactly those, per VIP and per (VIP, real), and nothing for the TCP VIP: before issue 17
a VIP's reals showed every packet their real got, whichever VIP it came through.
"""
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import pytest
from balancer_env import BALANCER_O, BPF_DIR, BalancerNS
from backend_netns import run_in_ns

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer, vips, vipspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import program

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF, network namespaces)")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE_UTILS = os.path.join(REPO, "plugins", "module_utils")
HC_O = os.path.join(BPF_DIR, "hc_encap.o")
LB, PEER, VIP = "10.203.0.1", "10.203.0.2", "10.203.100.1"
REALS = ["10.203.0.11", "10.203.0.12"]
LISTEN = "127.0.0.1:19437"
HEALTH = {"kind": "tcp", "interval": 0.2, "timeout": 0.2, "rise": 2, "fall": 2}
DATAGRAMS, PAYLOAD = 40, 100
L3 = 20 + 8 + PAYLOAD  # what the per-VIP and per-pair byte counters count: the inner packet's L3 bytes
SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')


def parse(text):
    """[(name, {label: value}, float)] of a scrape's samples."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def value(samples, name, **labels):
    got = [v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items())]
    assert got, "no %s%s in the scrape" % (name, labels)
    return sum(got)


def _scrape():
    with urllib.request.urlopen("http://%s/metrics" % LISTEN, timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def _checksum(header):
    total = sum(struct.unpack("!%dH" % (len(header) // 2), header))
    total = (total & 0xffff) + (total >> 16)
    return ~((total & 0xffff) + (total >> 16)) & 0xffff


def _send(mac):
    """DATAGRAMS UDP datagrams (distinct source ports: distinct flows) out of peer0 towards lb0.
    Built by hand rather than with scapy: a scapy imported earlier in pytest's process keeps the
    host namespace's interfaces, and this runs in a child inside the test's namespace."""
    dst = bytes.fromhex(mac.replace(":", ""))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind(("peer0", 0))
        src = sock.getsockname()[4]
        for i in range(DATAGRAMS):
            udp = struct.pack("!HHHH", 40000 + i, 53, 8 + PAYLOAD, 0) + b"x" * PAYLOAD  # checksum 0: none (IPv4)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, L3, 0, 0, 64, 17, 0, socket.inet_aton(PEER), socket.inet_aton(VIP))
            ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
            sock.send(dst + src + b"\x08\x00" + ip + udp)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agent-metrics")
    ns = BalancerNS()
    agent = None
    try:
        ns.ip("addr", "add", LB + "/24", "dev", "lb0")
        ns.ip("addr", "add", PEER + "/24", "dev", "peer0")
        peer_mac = json.loads(ns.ip("-j", "link", "show", "peer0").stdout)[0]["address"]
        lb_mac = json.loads(ns.ip("-j", "link", "show", "lb0").stdout)[0]["address"]
        cfg = {"gateway_mac": peer_mac, "source_v4": LB}
        raw = [{"address": VIP, "port": 80, "protocol": "tcp", "reals": REALS},
               {"address": VIP, "port": 53, "protocol": "udp", "reals": REALS}]

        def load():
            program.ensure(BALANCER_O, "lb0", mode="generic", pin_root=ns.pin_root)
            balancer.ensure_config(ns.pin_root, balancer.config_request("lb0", **cfg))
            vips.ensure(ns.pin_root, vipspec.parse_vips(raw), purge=True)
        run_in_ns(ns.name, load)
        state = tmp / "balancer.json"
        state.write_text(json.dumps({"version": 1, "object": BALANCER_O, "interface": "lb0", "mode": "generic",
                                     "pin_root": ns.pin_root, "config": cfg, "vips": raw, "health": HEALTH}))
        log = tmp / "agent.log"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JOURNAL_STREAM")}
        with open(log, "wb") as out:
            agent = subprocess.Popen(  # pylint: disable=consider-using-with  # stopped below
                ["nsenter", "--net=/run/netns/%s" % ns.name, sys.executable, "-m", "engine", "agent", str(state),
                 "--health-state", str(tmp / "health.json"), "--hc-object", HC_O, "--metrics-listen", LISTEN],
                cwd=MODULE_UTILS, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while "metrics on http://" not in log.read_text():
            assert agent.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        before = run_in_ns(ns.name, _scrape)[1]
        run_in_ns(ns.name, _send, lb_mac)
        # Both reals down (fall 2 x 0.2 s) and the agent's view of it published (once a second).
        deadline = time.monotonic() + 10
        while True:
            ctype, text = run_in_ns(ns.name, _scrape)
            after = parse(text)
            if value(after, "xdplb_vip_fail_open", protocol="udp") == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        body = tmp / "scrape.txt"
        body.write_text(text)
        yield {"before": parse(before), "after": after, "ctype": ctype, "body": str(body), "log": log}
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(timeout=10)
        ns.close()


def delta(lab, name, **labels):
    return value(lab["after"], name, **labels) - value(lab["before"], name, **labels)


def test_the_vip_counts_exactly_what_was_sent(lab):
    assert delta(lab, "xdplb_vip_packets_total", vip=VIP, port="53", protocol="udp") == DATAGRAMS
    assert delta(lab, "xdplb_vip_bytes_total", vip=VIP, port="53", protocol="udp") == DATAGRAMS * L3
    assert delta(lab, "xdplb_vip_packets_total", vip=VIP, port="80", protocol="tcp") == 0


def test_per_vip_and_real_counters_belong_to_their_vip(lab):
    udp = [delta(lab, "xdplb_vip_real_packets_total", vip=VIP, port="53", protocol="udp", real=r) for r in REALS]
    tcp = [delta(lab, "xdplb_vip_real_packets_total", vip=VIP, port="80", protocol="tcp", real=r) for r in REALS]
    assert sum(udp) == DATAGRAMS and all(udp), udp  # 40 flows over two reals: both get some
    assert tcp == [0, 0]
    assert delta(lab, "xdplb_vip_real_bytes_total", vip=VIP, port="53", protocol="udp") == DATAGRAMS * L3
    # The per-real totals are the sums over the real's VIPs.
    assert [delta(lab, "xdplb_real_packets_total", real=r) for r in REALS] == udp


def test_verdicts_and_drops(lab):
    assert delta(lab, "xdplb_packets_total", verdict="tx") == DATAGRAMS
    assert delta(lab, "xdplb_drops_total") == 0
    assert {ls["reason"] for n, ls, _v in lab["after"] if n == "xdplb_drops_total"} == {
        "ip_options", "fragment", "too_big", "malformed", "no_real", "encap"}
    assert delta(lab, "xdplb_conn_table_misses_total") == DATAGRAMS  # 40 new flows
    assert value(lab["after"], "xdplb_conn_table_capacity_flows", family="ipv4") > 0


def test_health_state_of_each_pair(lab):
    # Nobody answers at the reals: both are down for both VIPs, which fail open.
    for proto, port in (("tcp", "80"), ("udp", "53")):
        for r in REALS:
            assert value(lab["after"], "xdplb_real_up", vip=VIP, port=port, protocol=proto, real=r) == 0
            assert value(lab["after"], "xdplb_real_health_transitions_total", vip=VIP, port=port, protocol=proto,
                         real=r) >= 1
        assert value(lab["after"], "xdplb_vip_healthy_reals", port=port, protocol=proto) == 0
        assert value(lab["after"], "xdplb_vip_reals", port=port, protocol=proto) == 2
        assert value(lab["after"], "xdplb_vip_fail_open", port=port, protocol=proto) == 1


def test_program_build_and_process(lab):
    info = [ls for n, ls, _v in lab["after"] if n == "xdplb_program_info"]
    assert len(info) == 1 and info[0]["interface"] == "lb0" and info[0]["name"] == "xdp_balancer", info
    assert info[0]["attach_mode"] and re.fullmatch(r"[0-9a-f]{16}", info[0]["tag"]), info
    assert value(lab["after"], "xdplb_agent_build_info") == 1
    assert value(lab["after"], "process_cpu_seconds_total") > 0
    assert lab["ctype"].startswith("text/plain; version=0.0.4")


def test_promtool_finds_the_scrape_clean(lab):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/bootstrap.sh installs Debian's prometheus"
    with open(lab["body"], "rb") as body:
        done = subprocess.run([promtool, "check", "metrics"], stdin=body, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr
