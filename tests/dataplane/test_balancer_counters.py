"""Counters: per-VIP packets/bytes, per-real packets/bytes, global verdicts — per-CPU, summed by the engine."""
import os

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from lbtest import CLIENT_MAC, IF_MAC, XDP_DROP, XDP_PASS, XDP_TX

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi, libbpf

VIP = "192.0.2.10"
E = Ether(src=CLIENT_MAC, dst=IF_MAC)


def on_cpu(cpu, fn):
    """Run fn pinned to one CPU: BPF_PROG_TEST_RUN executes on the caller's CPU."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        return fn()
    finally:
        os.sched_setaffinity(0, old)


def test_vip_real_and_global_counters(lb):
    lb.set_real(3, "10.0.0.3")
    lb.set_real(4, "10.0.0.4")
    lb.add_vip(VIP, 80, "tcp", vip_num=5, reals=[3])
    lb.add_vip(VIP, 53, "udp", vip_num=6, reals=[4])
    tcp = E / IP(src="198.51.100.1", dst=VIP) / TCP(dport=80, flags="S") / Raw(bytes(100))   # L3 140
    udp = E / IP(src="198.51.100.1", dst=VIP) / UDP(dport=53) / Raw(bytes(10))               # L3 38
    for pkt, n in ((tcp, 3), (udp, 2)):
        for _unused in range(n):
            assert lb.run(pkt).retval == XDP_TX
    assert lb.run(E / IP(src="198.51.100.1", dst="192.0.2.99") / TCP()).retval == XDP_PASS
    assert lb.run(Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=VIP)).retval == XDP_PASS
    assert lb.run(E / IP(src="198.51.100.1", dst=VIP, flags="MF") / TCP(dport=80)).retval == XDP_DROP
    assert lb.run(E / IP(src="198.51.100.1", dst=VIP) / ICMP()).retval == XDP_TX

    assert lb.vip_stats(5) == {"packets": 3, "bytes": 3 * 140}
    assert lb.vip_stats(6) == {"packets": 2, "bytes": 2 * 38}
    assert lb.real_stats(3) == {"packets": 3, "bytes": 3 * 140}
    assert lb.real_stats(4) == {"packets": 2, "bytes": 2 * 38}
    s = lb.stats()
    assert (s["tx"], s["pass"], s["drop"]) == (6, 2, 1)
    # 3 SYNs + the first UDP packet were recorded; the second UDP packet hit
    assert (s["conn_miss"], s["conn_hit"], s["drop_fragment"], s["icmp_echo"]) == (4, 1, 1, 1)
    assert s["tx"] + s["pass"] + s["drop"] == 9  # every packet lands in exactly one verdict


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_per_cpu_values_are_summed(lb):
    lb.set_real(1, "10.0.0.1")
    lb.add_vip(VIP, 80, "tcp", reals=[1])
    pkt = E / IP(src="198.51.100.1", dst=VIP) / TCP(dport=80, flags="S")
    cpus = sorted(os.sched_getaffinity(0))[:2]
    for cpu, n in zip(cpus, (2, 5)):
        on_cpu(cpu, lambda n=n: [lb.run(pkt) for _unused in range(n)])
    raw = lb.m[abi.MAP_VIP_STATS].lookup_percpu(b"\0\0\0\0")
    per_cpu = [abi.LbStats.from_bytes(r).packets for r in raw]
    assert len(per_cpu) == libbpf.num_possible_cpus()
    assert per_cpu[cpus[0]] == 2 and per_cpu[cpus[1]] == 5
    assert lb.vip_stats(0)["packets"] == 7
    assert lb.stats()["tx"] == 7
