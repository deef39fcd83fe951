"""ICMP: echo to a VIP answered by the balancer; PMTU errors follow their flow to its real."""
import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from lbtest import (CLIENT_MAC, IF_MAC, LB_V4, LB_V6, XDP_PASS, XDP_TX, encap, hexdiff, l3, per_flow_src,
                    real_for, ring_of)

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi

VIP4, VIP6 = "192.0.2.10", "2001:db8::10"
CLIENT4, CLIENT6 = "198.51.100.7", "2001:db8:c::7"
ROUTER4, ROUTER6 = "203.0.113.1", "2001:db8:ffff::1"


def assert_same(res, retval, want):
    assert res.retval == retval
    assert res.data == bytes(want), hexdiff(res.data, bytes(want))


# ------------------------------------------------------------------ echo
def test_echo_v4_answered(lb):
    lb.add_vip(VIP4, 80, "tcp")
    req = (Ether(src=CLIENT_MAC, dst=IF_MAC) / IP(src=CLIENT4, dst=VIP4, ttl=50, id=77, tos=0x10)
           / ICMP(type=8, id=0x1234, seq=7) / Raw(b"ping payload"))
    want = (Ether(src=IF_MAC, dst=CLIENT_MAC) / IP(src=VIP4, dst=CLIENT4, ttl=64, id=77, tos=0x10)
            / ICMP(type=0, id=0x1234, seq=7) / Raw(b"ping payload"))
    assert_same(lb.run(req), XDP_TX, want)
    assert lb.stats()["icmp_echo"] == 1


@pytest.mark.parametrize("payload", [b"", b"x", b"\xff" * 333])
def test_echo_v4_checksum_for_any_payload(lb, payload):
    lb.add_vip(VIP4, 80, "tcp")
    req = Ether(src=CLIENT_MAC, dst=IF_MAC) / IP(src=CLIENT4, dst=VIP4) / ICMP(type=8, id=0xffff, seq=0xfff7) / payload
    reply = ICMP(type=0, id=0xffff, seq=0xfff7)
    want = Ether(src=IF_MAC, dst=CLIENT_MAC) / IP(src=VIP4, dst=CLIENT4, ttl=64) / reply / payload
    assert_same(lb.run(req), XDP_TX, want)


def test_echo_v6_answered(lb):
    lb.add_vip(VIP6, 443, "tcp")
    req = (Ether(src=CLIENT_MAC, dst=IF_MAC) / IPv6(src=CLIENT6, dst=VIP6, hlim=50, tc=0x20, fl=7)
           / ICMPv6EchoRequest(id=0x4321, seq=9, data=b"ping6"))
    want = (Ether(src=IF_MAC, dst=CLIENT_MAC) / IPv6(src=VIP6, dst=CLIENT6, hlim=64, tc=0x20, fl=7)
            / ICMPv6EchoReply(id=0x4321, seq=9, data=b"ping6"))
    assert_same(lb.run(req), XDP_TX, want)


def test_echo_keeps_vlan_tag(lb):
    lb.add_vip(VIP4, 80, "tcp")
    req = Ether(src=CLIENT_MAC, dst=IF_MAC) / Dot1Q(vlan=7) / IP(src=CLIENT4, dst=VIP4) / ICMP(type=8)
    want = Ether(src=IF_MAC, dst=CLIENT_MAC) / Dot1Q(vlan=7) / IP(src=VIP4, dst=CLIENT4, ttl=64) / ICMP(type=0)
    assert_same(lb.run(req), XDP_TX, want)


def test_echo_not_for_a_vip_or_disabled_is_passed(lb):
    lb.add_vip(VIP4, 80, "tcp", addr_flags=abi.ADDR_F_NO_ECHO)
    for dst in (VIP4, "192.0.2.11"):
        req = Ether(src=CLIENT_MAC, dst=IF_MAC) / IP(src=CLIENT4, dst=dst) / ICMP(type=8)
        assert_same(lb.run(req), XDP_PASS, req)


@pytest.mark.parametrize("icmp", [ICMP(type=0), ICMP(type=3, code=3), ICMP(type=11), ICMP(type=8, code=1)],
                         ids=["echo-reply", "port-unreach", "time-exceeded", "echo-bad-code"])
def test_other_icmp_to_a_vip_is_passed(lb, icmp):
    lb.add_vip(VIP4, 80, "tcp", reals=[1])
    pkt = Ether(src=CLIENT_MAC, dst=IF_MAC) / IP(src=CLIENT4, dst=VIP4) / icmp / Raw(bytes(28))
    assert_same(lb.run(pkt), XDP_PASS, pkt)


def test_other_icmpv6_to_a_vip_is_passed(lb):
    lb.add_vip(VIP6, 80, "tcp", reals=[1])
    pkt = Ether(src=CLIENT_MAC, dst=IF_MAC) / IPv6(src=CLIENT6, dst=VIP6) / ICMPv6DestUnreach() / Raw(bytes(48))
    assert_same(lb.run(pkt), XDP_PASS, pkt)


# ------------------------------------------------------------------ PMTU errors
REALS4 = {i: "10.0.0.%d" % i for i in range(1, 6)}


def frag_needed(sport, proto=TCP, vport=80):
    # What a router sends back when a real's reply (VIP -> client, DSR) is too big.
    reply = IP(src=VIP4, dst=CLIENT4, ttl=60) / proto(sport=vport, dport=sport) / Raw(b"y" * 1400)
    return (Ether(src=CLIENT_MAC, dst=IF_MAC) / IP(src=ROUTER4, dst=VIP4, ttl=250, tos=0xc0)
            / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(bytes(reply)[:28]))


def test_frag_needed_goes_to_the_flows_ring_real(lb):
    reals = [1, 2, 3, 4, 5]
    for i, a in REALS4.items():
        lb.set_real(i, a)
    lb.add_vip(VIP4, 80, "tcp", reals=reals)
    seen = set()
    for sport in range(40000, 40030):
        pkt = frag_needed(sport)
        real = REALS4[real_for(reals, CLIENT4, sport, 80)]
        seen.add(real)
        assert_same(lb.run(pkt), XDP_TX, encap(l3(pkt), real, LB_V4, tos=0xc0, ttl=250))
    assert len(seen) > 1
    s = lb.stats()
    assert (s["icmp_too_big"], s["conn_miss"]) == (30, 0)  # errors never create entries


def test_frag_needed_follows_the_connection_table(lb):
    for i, a in REALS4.items():
        lb.set_real(i, a)
    lb.add_vip(VIP4, 80, "tcp", reals=[1])
    syn = Ether(src=CLIENT_MAC, dst=IF_MAC) / IP(src=CLIENT4, dst=VIP4) / TCP(sport=40000, dport=80, flags="S")
    assert lb.run(syn).retval == XDP_TX
    lb.set_ring(0, ring_of([2]))
    pkt = frag_needed(40000)
    assert_same(lb.run(pkt), XDP_TX, encap(l3(pkt), REALS4[1], LB_V4, tos=0xc0, ttl=250))
    assert lb.stats()["conn_hit"] == 1


def test_frag_needed_uses_the_flows_per_flow_source(lb):
    lb.configure(per_flow_src=True)
    lb.set_real(1, "10.0.0.1")
    lb.add_vip(VIP4, 0, "udp", reals=[1])
    pkt = frag_needed(5555, proto=UDP, vport=53)
    assert_same(lb.run(pkt), XDP_TX, encap(l3(pkt), "10.0.0.1", per_flow_src(CLIENT4, 5555, 4), tos=0xc0, ttl=250))


def test_frag_needed_about_a_non_vip_flow_is_passed(lb):
    lb.set_real(1, "10.0.0.1")
    lb.add_vip(VIP4, 443, "tcp", reals=[1])
    pkt = frag_needed(40000, vport=80)
    assert_same(lb.run(pkt), XDP_PASS, pkt)


def packet_too_big(sport):
    reply = IPv6(src=VIP6, dst=CLIENT6, hlim=60) / TCP(sport=80, dport=sport) / Raw(b"y" * 1300)
    return (Ether(src=CLIENT_MAC, dst=IF_MAC) / IPv6(src=ROUTER6, dst=VIP6, hlim=200, tc=0x08)
            / ICMPv6PacketTooBig(mtu=1280) / Raw(bytes(reply)[:1184]))


def test_packet_too_big_goes_to_the_flows_real(lb):
    reals = [1, 2, 3, 4, 5]
    for i in reals:
        lb.set_real(i, "fd00::%d" % i)
    lb.add_vip(VIP6, 80, "tcp", reals=reals)
    seen = set()
    for sport in range(40000, 40020):
        pkt = packet_too_big(sport)
        real = "fd00::%d" % real_for(reals, CLIENT6, sport, 80)
        seen.add(real)
        assert_same(lb.run(pkt), XDP_TX, encap(l3(pkt), real, LB_V6, tos=0x08, ttl=200))
    assert len(seen) > 1


def test_packet_too_big_follows_the_connection_table(lb):
    lb.set_real(1, "fd00::1")
    lb.set_real(2, "fd00::2")
    lb.add_vip(VIP6, 80, "tcp", reals=[1])
    syn = Ether(src=CLIENT_MAC, dst=IF_MAC) / IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=41000, dport=80, flags="S")
    assert lb.run(syn).retval == XDP_TX
    lb.set_ring(0, ring_of([2]))
    res = lb.run(packet_too_big(41000))
    assert str(ipaddress.IPv6Address(res.data[38:54])) == "fd00::1"


def test_echo_reply_checksum_of_an_all_zero_message_is_valid(lb):
    # id 0, seq 0, no data: the reply's ones'-complement sum is zero, whose
    # only valid checksum is 0xffff (a naive incremental update gives 0x0000).
    lb.add_vip(VIP4, 80, "tcp")
    req = Ether(src=CLIENT_MAC, dst=IF_MAC) / IP(src=CLIENT4, dst=VIP4) / ICMP(type=8, id=0, seq=0)
    res = lb.run(req)
    assert res.retval == XDP_TX
    assert res.data[34:38] == b"\x00\x00\xff\xff"
