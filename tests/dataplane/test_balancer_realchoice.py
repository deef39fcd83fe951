"""Which real a packet reaches: connection table first, else the VIP's ring; VIP flags."""
import ipaddress

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from lbtest import CLIENT_MAC, IF_MAC, LB_V4, XDP_DROP, XDP_TX, encap, hexdiff, l3, real_for, ring_of

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi

VIP, VIP6 = "192.0.2.10", "2001:db8::10"
REALS = {i: "10.0.0.%d" % i for i in range(1, 8)}


def tcp(src="198.51.100.7", sport=40000, dport=80, flags="A"):
    tcp = TCP(sport=sport, dport=dport, flags=flags)
    return Ether(src=CLIENT_MAC, dst=IF_MAC) / IP(src=src, dst=VIP, ttl=64) / tcp


def udp(src="198.51.100.7", sport=40000, dport=53):
    return Ether(src=CLIENT_MAC, dst=IF_MAC) / IP(src=src, dst=VIP, ttl=64) / UDP(sport=sport, dport=dport)


def real_of(res):
    """Index of the real a TX'd packet went to (outer IPv4 destination)."""
    assert res.retval == XDP_TX, res
    dst = str(ipaddress.IPv4Address(res.data[30:34]))  # outer IPv4 daddr, untagged frame
    return next(i for i, a in REALS.items() if a == dst)


@pytest.fixture
def lb7(lb):
    for i, a in REALS.items():
        lb.set_real(i, a)
    return lb


def test_new_flows_follow_the_ring_hash(lb7):
    reals = [1, 2, 3, 4, 5, 6, 7]
    lb7.add_vip(VIP, 80, "tcp", reals=reals)
    for sport in range(30000, 30040):
        for src in ("198.51.100.7", "203.0.113.99"):
            pkt = tcp(src, sport, flags="S")
            res = lb7.run(pkt)
            want = real_for(reals, src, sport, 80)
            assert res.data == encap(l3(pkt), REALS[want], LB_V4, tos=0, ttl=64), hexdiff(
                res.data, encap(l3(pkt), REALS[want], LB_V4, tos=0, ttl=64))


def test_v6_flows_follow_the_ring_hash(lb7):
    for i in (1, 2, 3):
        lb7.set_real(i, "fd00::%d" % i)
    lb7.add_vip(VIP6, 80, "tcp", reals=[1, 2, 3])
    for sport in range(100, 130):
        tcp = TCP(sport=sport, dport=80, flags="S")
        pkt = Ether(src=CLIENT_MAC, dst=IF_MAC) / IPv6(src="2001:db8:c::7", dst=VIP6) / tcp
        res = lb7.run(pkt)
        assert IPv6(res.data[14:]).dst == "fd00::%d" % real_for([1, 2, 3], "2001:db8:c::7", sport, 80)


def test_flow_keeps_its_real_after_the_ring_changes(lb7):
    lb7.add_vip(VIP, 80, "tcp", reals=[1])
    assert real_of(lb7.run(tcp(flags="S"))) == 1
    lb7.set_ring(0, ring_of([2]))
    assert real_of(lb7.run(tcp(flags="A"))) == 1        # established: connection table
    assert real_of(lb7.run(tcp(flags="PA"))) == 1
    assert real_of(lb7.run(tcp(sport=40001, flags="S"))) == 2  # a new flow takes the new ring
    s = lb7.stats()
    assert (s["conn_hit"], s["conn_miss"]) == (2, 2)


def test_syn_always_takes_the_ring(lb7):
    lb7.add_vip(VIP, 80, "tcp", reals=[1])
    assert real_of(lb7.run(tcp(flags="S"))) == 1
    lb7.set_ring(0, ring_of([2]))
    # A reused 5-tuple starting over must not stick to the old real,
    assert real_of(lb7.run(tcp(flags="S"))) == 2
    # and the table now says the new real.
    assert lb7.conn("198.51.100.7", VIP, 40000, 80, "tcp") == 2
    assert real_of(lb7.run(tcp(flags="A"))) == 2


def test_mid_flow_packet_without_entry_is_recorded(lb7):
    # e.g. after a balancer restart or on a second balancer behind ECMP
    lb7.add_vip(VIP, 80, "tcp", reals=[3])
    assert real_of(lb7.run(tcp(flags="A"))) == 3
    assert lb7.conn("198.51.100.7", VIP, 40000, 80, "tcp") == 3


def test_udp_flows_are_recorded_too(lb7):
    lb7.add_vip(VIP, 53, "udp", reals=[4])
    assert real_of(lb7.run(udp())) == 4
    lb7.set_ring(0, ring_of([5]))
    assert real_of(lb7.run(udp())) == 4


def test_connection_table_bypass(lb7):
    lb7.add_vip(VIP, 80, "tcp", flags=abi.VIP_F_NO_CONN_TABLE, reals=[1])
    assert real_of(lb7.run(tcp(flags="S"))) == 1
    assert lb7.conn("198.51.100.7", VIP, 40000, 80, "tcp") is None
    lb7.set_ring(0, ring_of([2]))
    assert real_of(lb7.run(tcp(flags="A"))) == 2       # the ring alone decides
    s = lb7.stats()
    assert (s["conn_hit"], s["conn_miss"]) == (0, 0)


def test_entry_pointing_at_a_freed_real_falls_back_to_the_ring(lb7):
    lb7.add_vip(VIP, 80, "tcp", reals=[1])
    assert real_of(lb7.run(tcp(flags="S"))) == 1
    lb7.free_real(1)
    lb7.set_ring(0, ring_of([2]))
    assert real_of(lb7.run(tcp(flags="A"))) == 2
    assert lb7.conn("198.51.100.7", VIP, 40000, 80, "tcp") == 2


def test_hash_without_source_port(lb7):
    reals = [1, 2, 3, 4, 5, 6, 7]
    lb7.add_vip(VIP, 80, "tcp", flags=abi.VIP_F_NO_SPORT | abi.VIP_F_NO_CONN_TABLE, reals=reals)
    for src in ("198.51.100.%d" % i for i in range(1, 16)):
        got = {real_of(lb7.run(tcp(src, sport, flags="S"))) for sport in range(1000, 1010)}
        assert got == {real_for(reals, src, 0, 80, abi.VIP_F_NO_SPORT)}


def test_source_port_spreads_flows_without_the_flag(lb7):
    lb7.add_vip(VIP, 80, "tcp", flags=abi.VIP_F_NO_CONN_TABLE, reals=[1, 2, 3, 4, 5, 6, 7])
    got = {real_of(lb7.run(tcp("198.51.100.1", sport, flags="S"))) for sport in range(1000, 1040)}
    assert len(got) >= 5


def test_destination_port_only_hashing(lb7):
    reals = [1, 2, 3, 4, 5, 6, 7]
    lb7.add_vip(VIP, 0, "udp", flags=abi.VIP_F_DPORT_HASH | abi.VIP_F_NO_CONN_TABLE, reals=reals)
    per_port = {}
    for dport in range(5000, 5030):
        got = {real_of(lb7.run(udp(src, sport, dport)))
               for src in ("198.51.100.1", "203.0.113.200", "192.0.2.99") for sport in (1, 999, 65000)}
        assert got == {real_for(reals, "0.0.0.0", dport, dport, abi.VIP_F_DPORT_HASH)}
        per_port[dport] = got.pop()
    assert len(set(per_port.values())) >= 4  # ports still spread over the reals


def test_weight_zero_real_gets_no_new_flows_but_keeps_its_own(lb7):
    # Weight 0 is ring content (the control plane gives the real no slots):
    # the data plane must simply honour the ring and the table.
    lb7.add_vip(VIP, 80, "tcp", reals=[1, 2, 3])
    owned = [sport for sport in range(2000, 2100) if real_of(lb7.run(tcp(sport=sport, flags="S"))) == 2]
    assert owned
    lb7.set_ring(0, ring_of([1, 3]))
    for sport in range(2000, 2100):
        got = real_of(lb7.run(tcp(sport=sport, flags="A")))
        assert (got == 2) == (sport in owned)
    for sport in range(3000, 3200):
        assert real_of(lb7.run(tcp(sport=sport, flags="S"))) in (1, 3)


def test_vip_without_ring_or_with_empty_slots_drops(lb7):
    lb7.add_vip(VIP, 80, "tcp")
    assert lb7.run(tcp(flags="S")).retval == XDP_DROP
    lb7.set_ring(0, [0] * abi.RING_SIZE)
    assert lb7.run(tcp(flags="S")).retval == XDP_DROP
    lb7.set_ring(0, ring_of([9]))  # slot points at a real never configured
    assert lb7.run(tcp(flags="S")).retval == XDP_DROP
    assert lb7.stats()["drop_no_real"] == 3
    assert lb7.conn("198.51.100.7", VIP, 40000, 80, "tcp") is None


def test_ring_of_wrong_size_is_refused(lb7):
    lb7.add_vip(VIP, 80, "tcp")
    with pytest.raises(abi.libbpf.BpfError, match="LB_RING_SIZE"):
        lb7.set_ring(0, [1] * 7)
