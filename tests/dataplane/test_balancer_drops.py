"""What the balancer refuses (dropped and counted) and what it leaves alone (passed byte-identical)."""
import pytest
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                                IPv6ExtHdrRouting)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from lbtest import CLIENT_MAC, IF_MAC, XDP_DROP, XDP_PASS, XDP_TX, hexdiff

VIP4, VIP6 = "192.0.2.10", "2001:db8::10"
C4, C6 = "198.51.100.7", "2001:db8:c::7"
E = Ether(src=CLIENT_MAC, dst=IF_MAC)


@pytest.fixture
def lbv(lb):
    lb.set_real(1, "10.0.0.1")
    lb.set_real(2, "fd00::1")
    lb.add_vip(VIP4, 80, "tcp", vip_num=0, reals=[1])
    lb.add_vip(VIP4, 53, "udp", vip_num=1, reals=[1])
    lb.add_vip(VIP6, 80, "tcp", vip_num=2, reals=[2])
    return lb


def expect(lb, pkt, retval, counter=None):
    before = lb.stats()
    res = lb.run(pkt)
    assert res.retval == retval
    if retval == XDP_PASS:
        assert res.data == bytes(pkt), hexdiff(res.data, bytes(pkt))
    after = lb.stats()
    if counter:
        assert after[counter] == before[counter] + 1
    if retval == XDP_DROP:
        assert after["drop"] == before["drop"] + 1
    return res


# ------------------------------------------------------------------ drops
def test_ipv4_options_to_a_vip_are_dropped(lbv):
    expect(lbv, E / IP(src=C4, dst=VIP4, options=[IPOption_RR()]) / TCP(dport=80), XDP_DROP, "drop_ip_options")


@pytest.mark.parametrize("frag", [dict(flags="MF"), dict(frag=100), dict(flags="MF", frag=3)],
                         ids=["first", "last", "middle"])
def test_ipv4_fragments_to_a_vip_are_dropped(lbv, frag):
    expect(lbv, E / IP(src=C4, dst=VIP4, **frag) / TCP(dport=80), XDP_DROP, "drop_fragment")


def test_ipv6_fragments_to_a_vip_are_dropped(lbv):
    expect(lbv, E / IPv6(src=C6, dst=VIP6) / IPv6ExtHdrFragment(m=1) / TCP(dport=80), XDP_DROP, "drop_fragment")


@pytest.mark.parametrize("version", [4, 6])
def test_vip_packets_above_max_size_are_dropped(lbv, version):
    lbv.configure(max_pkt_size=100)
    if version == 4:
        fits = E / IP(src=C4, dst=VIP4) / TCP(dport=80) / Raw(bytes(60))     # L3 = 100
        big = E / IP(src=C4, dst=VIP4) / TCP(dport=80) / Raw(bytes(61))
    else:
        fits = E / IPv6(src=C6, dst=VIP6) / TCP(dport=80) / Raw(bytes(40))   # L3 = 100
        big = E / IPv6(src=C6, dst=VIP6) / TCP(dport=80) / Raw(bytes(41))
    expect(lbv, fits, XDP_TX)
    expect(lbv, big, XDP_DROP, "drop_too_big")
    # the limit is for VIP traffic only
    other = E / IP(src=C4, dst="192.0.2.99") / TCP(dport=80) / Raw(bytes(1400))
    expect(lbv, other, XDP_PASS)


@pytest.mark.parametrize("pkt", [
    E / IP(src=C4, dst=VIP4, ihl=4) / TCP(dport=80),                       # header length below minimum
    E / IP(src=C4, dst=VIP4, len=30) / TCP(dport=80),                      # IP length cuts the TCP header
    E / IP(src=C4, dst=VIP4, len=19) / UDP(dport=53),                      # IP length below the IP header
    E / IP(src=C4, dst=VIP4, len=200) / UDP(dport=53),                     # IP length beyond the frame
    E / IPv6(src=C6, dst=VIP6, plen=10) / TCP(dport=80),                   # payload length cuts TCP
    E / IPv6(src=C6, dst=VIP6, plen=400) / TCP(dport=80),                  # payload length beyond the frame
    E / IP(src=C4, dst=VIP4) / ICMP(type=3, code=4) / Raw(bytes(12)),      # quoted header cut
], ids=["ihl4", "len-cuts-tcp", "len-below-ip", "len-beyond-frame", "plen-cuts-tcp", "plen-beyond", "icmp-cut"])
def test_inconsistent_lengths_to_a_vip_are_dropped(lbv, pkt):
    expect(lbv, pkt, XDP_DROP, "drop_malformed")


# ------------------------------------------------------------------ passed untouched
@pytest.mark.parametrize("pkt", [
    E / IP(src=C4, dst="192.0.2.11") / TCP(dport=80),                           # other address
    E / IP(src=C4, dst="192.0.2.11", options=[IPOption_RR()]) / TCP(dport=80),  # options, not a VIP
    E / IP(src=C4, dst="192.0.2.11", flags="MF") / UDP(dport=53),               # fragment, not a VIP
    E / IP(src=C4, dst=VIP4) / TCP(dport=81),                                   # VIP address, other port
    E / IP(src=C4, dst=VIP4) / UDP(dport=80),                                   # VIP address, other proto
    E / IP(src=C4, dst=VIP4) / GRE() / Raw(bytes(20)),                          # not TCP/UDP/ICMP
    E / IP(src=VIP4, dst=C4) / TCP(sport=80),                                   # from the VIP
    E / IPv6(src=C6, dst="2001:db8::11") / TCP(dport=80),
    E / IPv6(src=C6, dst=VIP6) / IPv6ExtHdrHopByHop() / TCP(dport=80),          # extension headers
    E / IPv6(src=C6, dst=VIP6) / IPv6ExtHdrDestOpt() / TCP(dport=80),
    E / IPv6(src=C6, dst=VIP6) / IPv6ExtHdrRouting() / TCP(dport=80),
    E / IPv6(src=C6, dst="2001:db8::11") / IPv6ExtHdrFragment() / TCP(dport=80),
    Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=VIP4),
    E / Dot1AD(vlan=5) / Dot1Q(vlan=6) / IP(src=C4, dst=VIP4) / TCP(dport=80),  # QinQ: not ours
    E / Dot1Q(vlan=5) / Dot1Q(vlan=6) / IP(src=C4, dst=VIP4) / TCP(dport=80),   # two tags
    Ether(src=CLIENT_MAC, dst=IF_MAC, type=0x0800) / IPv6(src=C6, dst=VIP6) / TCP(dport=80),  # version mismatch
    Ether(src=CLIENT_MAC, dst=IF_MAC, type=0x88cc) / Raw(bytes(50)),            # LLDP
    Ether(src=CLIENT_MAC, dst=IF_MAC, type=0x0800) / Raw(bytes(IP(src=C4, dst=VIP4) / TCP(dport=80))[:19]),
], ids=["other-addr", "options-other", "frag-other", "other-port", "other-proto", "gre", "from-vip", "v6-other",
        "hbh", "dstopt", "routing", "v6-frag-other", "arp", "qinq", "two-tags", "v6-in-v4-ethertype", "lldp",
        "ip-header-cut"])
def test_not_for_a_vip_passes_byte_identical(lbv, pkt):
    expect(lbv, pkt, XDP_PASS, "pass")
