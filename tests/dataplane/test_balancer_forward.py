"""VIP traffic is encapsulated to the right real with exactly the headers a backend expects."""
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from lbtest import CLIENT_MAC, IF_MAC, LB_V4, LB_V6, XDP_TX, encap, hexdiff, l3, per_flow_src, vlan_tag

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi

VIP4, VIP6 = "192.0.2.10", "2001:db8::10"
CLIENT4, CLIENT6 = "198.51.100.7", "2001:db8:c::7"
REAL4, REAL6 = "10.0.0.11", "fd00::11"


def client_v4(proto=TCP, dport=80, sport=40000, tos=0x28, ttl=37, df=True, dst=VIP4, **l4):
    return (Ether(src=CLIENT_MAC, dst=IF_MAC)
            / IP(src=CLIENT4, dst=dst, tos=tos, ttl=ttl, flags="DF" if df else 0, id=4242)
            / proto(sport=sport, dport=dport, **l4) / Raw(b"hello vip"))


def client_v6(proto=TCP, dport=80, sport=40000, tc=0xb8, hlim=51, dst=VIP6):
    return (Ether(src=CLIENT_MAC, dst=IF_MAC) / IPv6(src=CLIENT6, dst=dst, tc=tc, hlim=hlim, fl=0x12345)
            / proto(sport=sport, dport=dport) / Raw(b"hello vip6"))


def assert_tx(res, want):
    assert res.retval == XDP_TX
    assert res.data == want, hexdiff(res.data, want)


@pytest.mark.parametrize("proto", [TCP, UDP], ids=["tcp", "udp"])
def test_v4_vip_to_v4_real(lb, proto):
    lb.set_real(1, REAL4)
    lb.add_vip(VIP4, 80, proto.__name__.lower(), reals=[1])
    pkt = client_v4(proto)
    assert_tx(lb.run(pkt), encap(l3(pkt), REAL4, LB_V4, tos=0x28, ttl=37, df=True))


def test_outer_ttl_tos_df_follow_inner(lb):
    lb.set_real(1, REAL4)
    lb.add_vip(VIP4, 80, "tcp", reals=[1])
    pkt = client_v4(tos=0x03, ttl=1, df=False)
    assert_tx(lb.run(pkt), encap(l3(pkt), REAL4, LB_V4, tos=0x03, ttl=1, df=False))


def test_v4_vip_to_v6_real_4in6(lb):
    lb.set_real(7, REAL6)
    lb.add_vip(VIP4, 443, "tcp", reals=[7])
    pkt = client_v4(dport=443, tos=0x10, ttl=99)
    assert_tx(lb.run(pkt), encap(l3(pkt), REAL6, LB_V6, tos=0x10, ttl=99))


@pytest.mark.parametrize("proto", [TCP, UDP], ids=["tcp", "udp"])
def test_v6_vip_to_v6_real(lb, proto):
    lb.set_real(2, REAL6)
    lb.add_vip(VIP6, 80, proto.__name__.lower(), reals=[2])
    pkt = client_v6(proto)
    assert_tx(lb.run(pkt), encap(l3(pkt), REAL6, LB_V6, tos=0xb8, ttl=51))


def test_v6_vip_never_goes_to_a_v4_real(lb):
    lb.set_real(1, REAL4)
    lb.add_vip(VIP6, 80, "tcp", reals=[1])
    res = lb.run(client_v6())
    assert res.retval == abi.libbpf.XDP_DROP
    assert lb.stats()["drop_no_real"] == 1


def test_any_port_vip_and_exact_port_wins(lb):
    lb.set_real(1, REAL4)
    lb.set_real(2, "10.0.0.12")
    lb.add_vip(VIP4, 0, "udp", vip_num=0, reals=[1])
    lb.add_vip(VIP4, 53, "udp", vip_num=1, reals=[2])
    for dport in (1, 5353, 65535):
        pkt = client_v4(UDP, dport=dport)
        assert_tx(lb.run(pkt), encap(l3(pkt), REAL4, LB_V4, tos=0x28, ttl=37, df=True))
    pkt = client_v4(UDP, dport=53)
    assert_tx(lb.run(pkt), encap(l3(pkt), "10.0.0.12", LB_V4, tos=0x28, ttl=37, df=True))
    # port 0 is per protocol: TCP to the same address is not a VIP
    pkt = client_v4(TCP, dport=5353)
    res = lb.run(pkt)
    assert res.retval == abi.libbpf.XDP_PASS and res.data == bytes(pkt)


@pytest.mark.parametrize("real", [REAL4, REAL6])
def test_vlan_tag_is_kept(lb, real):
    lb.set_real(1, real)
    lb.add_vip(VIP4, 80, "tcp", reals=[1])
    tag = vlan_tag(vid=123, prio=5)
    pkt = (Ether(src=CLIENT_MAC, dst=IF_MAC) / Dot1Q(prio=5, vlan=123)
           / IP(src=CLIENT4, dst=VIP4, tos=0x28, ttl=37, flags="DF") / TCP(dport=80) / Raw(b"x" * 20))
    src = LB_V4 if real == REAL4 else LB_V6
    assert_tx(lb.run(pkt), encap(l3(pkt), real, src, tos=0x28, ttl=37, df=True, vlan=tag))


def test_vlan_tagged_v6(lb):
    lb.set_real(1, REAL6)
    lb.add_vip(VIP6, 80, "tcp", reals=[1])
    pkt = (Ether(src=CLIENT_MAC, dst=IF_MAC) / Dot1Q(vlan=4094)
           / IPv6(src=CLIENT6, dst=VIP6, tc=0, hlim=64) / TCP(dport=80))
    assert_tx(lb.run(pkt), encap(l3(pkt), REAL6, LB_V6, tos=0, ttl=64, vlan=vlan_tag(4094)))


@pytest.mark.parametrize("sport", [40000, 1, 65535])
def test_per_flow_outer_source_v4(lb, sport):
    lb.configure(per_flow_src=True)
    lb.set_real(1, REAL4)
    lb.add_vip(VIP4, 80, "tcp", reals=[1])
    pkt = client_v4(sport=sport)
    src = per_flow_src(CLIENT4, sport, 4)
    assert src.startswith("172.16.")
    assert_tx(lb.run(pkt), encap(l3(pkt), REAL4, src, tos=0x28, ttl=37, df=True))


@pytest.mark.parametrize("client_version", [4, 6])
def test_per_flow_outer_source_v6(lb, client_version):
    lb.configure(per_flow_src=True)
    lb.set_real(1, REAL6)
    if client_version == 4:
        lb.add_vip(VIP4, 80, "tcp", reals=[1])
        pkt, client, tos, ttl = client_v4(sport=4321), CLIENT4, 0x28, 37
    else:
        lb.add_vip(VIP6, 80, "tcp", reals=[1])
        pkt, client, tos, ttl = client_v6(sport=4321), CLIENT6, 0xb8, 51
    src = per_flow_src(client, 4321, 6)
    assert src.startswith("100::")
    assert_tx(lb.run(pkt), encap(l3(pkt), REAL6, src, tos=tos, ttl=ttl))


def test_per_flow_sources_differ_per_client_port(lb):
    lb.configure(per_flow_src=True)
    lb.set_real(1, REAL4)
    lb.add_vip(VIP4, 80, "tcp", reals=[1])
    sources = {IP(lb.run(client_v4(sport=p)).data[14:]).src for p in range(1000, 1064)}
    assert len(sources) == 64


def test_macs_and_source_follow_config(lb):
    lb.configure(if_mac="0a:0b:0c:0d:0e:0f", gw_mac="aa:bb:cc:dd:ee:ff", src_v4="203.0.113.1")
    lb.set_real(1, REAL4)
    lb.add_vip(VIP4, 80, "tcp", reals=[1])
    out = Ether(lb.run(client_v4()).data)
    assert (out.dst, out.src, out[IP].src) == ("aa:bb:cc:dd:ee:ff", "0a:0b:0c:0d:0e:0f", "203.0.113.1")


def test_trailing_ethernet_padding_stays_outside_the_inner_packet(lb):
    # Minimum-size frames arrive padded to 60 bytes; the IP length, not the
    # frame length, says what belongs to the packet.
    lb.set_real(1, REAL4)
    lb.add_vip(VIP4, 80, "udp", reals=[1])
    pkt = Ether(src=CLIENT_MAC, dst=IF_MAC) / IP(src=CLIENT4, dst=VIP4, ttl=64) / UDP(dport=80)
    res = lb.run(bytes(pkt) + bytes(60 - len(pkt)))
    want = encap(l3(pkt), REAL4, LB_V4, tos=0, ttl=64)
    assert res.retval == XDP_TX
    assert res.data[:len(want)] == want
    assert res.data[len(want):] == bytes(60 - len(pkt))
