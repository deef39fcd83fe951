"""Truncated, corrupted and random packets: the documented verdict, and non-VIP traffic untouched.

Documented (balancer.c header): a frame too short to show the destination address is passed;
(BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, so lengths start at 14 here;
the program passes those too)
a packet to a VIP address whose headers are cut short (by the frame or by its own length
field) is dropped as malformed; the complete packet is forwarded.
"""
import ipaddress
import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from lbtest import CLIENT_MAC, IF_MAC, XDP_DROP, XDP_PASS, XDP_TX, hexdiff

VIP4, VIP6 = "192.0.2.10", "2001:db8::10"
C4, C6 = "198.51.100.7", "2001:db8:c::7"
E = Ether(src=CLIENT_MAC, dst=IF_MAC)
MIN_FRAME = 14  # the kernel's test-run minimum (ETH_HLEN)
VIP_ADDRS = {ipaddress.ip_address(VIP4).packed, ipaddress.ip_address(VIP6).packed}


@pytest.fixture
def lbv(lb):
    lb.set_real(1, "10.0.0.1")
    lb.set_real(2, "fd00::1")
    lb.add_vip(VIP4, 80, "tcp", vip_num=0, reals=[1])
    lb.add_vip(VIP4, 0, "udp", vip_num=1, reals=[2])
    lb.add_vip(VIP6, 80, "tcp", vip_num=2, reals=[2])
    return lb


# (packet, L2 header bytes, minimal IP header bytes)
VIP_PACKETS = {
    "v4-tcp": (E / IP(src=C4, dst=VIP4) / TCP(dport=80) / Raw(b"abc"), 14, 20),
    "v4-udp-4in6": (E / IP(src=C4, dst=VIP4) / UDP(dport=9) / Raw(b"abc"), 14, 20),
    "v4-vlan": (E / Dot1Q(vlan=3) / IP(src=C4, dst=VIP4) / TCP(dport=80), 18, 20),
    "v4-echo": (E / IP(src=C4, dst=VIP4) / ICMP(type=8) / Raw(b"ping"), 14, 20),
    "v4-frag-needed": (E / IP(src=C4, dst=VIP4) / ICMP(type=3, code=4)
                       / Raw(bytes(IP(src=VIP4, dst=C4) / TCP(sport=80))[:28]), 14, 20),
    "v6-tcp": (E / IPv6(src=C6, dst=VIP6) / TCP(dport=80) / Raw(b"abc"), 14, 40),
    "v6-echo": (E / IPv6(src=C6, dst=VIP6) / ICMPv6EchoRequest(), 14, 40),
    "v6-too-big": (E / IPv6(src=C6, dst=VIP6) / ICMPv6PacketTooBig()
                   / Raw(bytes(IPv6(src=VIP6, dst=C6) / TCP(sport=80))[:48]), 14, 40),
}


@pytest.mark.parametrize("name", sorted(VIP_PACKETS))
def test_vip_packet_truncated_at_every_length(lbv, name):
    pkt, l2, ipmin = VIP_PACKETS[name]
    raw = bytes(pkt)
    for n in range(MIN_FRAME, len(raw) + 1):
        res = lbv.run(raw[:n])
        if n < l2 + ipmin:
            assert (res.retval, res.data) == (XDP_PASS, raw[:n]), n
        elif n < len(raw):
            assert res.retval == XDP_DROP, n
        else:
            assert res.retval == XDP_TX, n
    s = lbv.stats()
    assert s["drop_malformed"] == len(raw) - (l2 + ipmin)
    assert s["drop"] == s["drop_malformed"]


def _to_vip_address(frame):
    """Mirror of the program's first filter: would this frame reach the VIP-address check?"""
    if len(frame) < 14:
        return False
    l2, etype = 14, frame[12:14]
    if etype == b"\x81\x00":
        if len(frame) < 18:
            return False
        l2, etype = 18, frame[16:18]
    if etype == b"\x08\x00" and len(frame) >= l2 + 20 and frame[l2] >> 4 == 4:
        return frame[l2 + 16:l2 + 20] in VIP_ADDRS
    if etype == b"\x86\xdd" and len(frame) >= l2 + 40 and frame[l2] >> 4 == 6:
        return frame[l2 + 24:l2 + 40] in VIP_ADDRS
    return False


NON_VIP = [
    E / IP(src=C4, dst="192.0.2.11") / TCP(dport=80) / Raw(b"x" * 30),
    E / IP(src=C4, dst="10.1.2.3") / UDP(dport=53) / Raw(b"q" * 20),
    E / Dot1Q(vlan=9) / IP(src=C4, dst="192.0.2.12") / TCP(dport=443),
    E / IPv6(src=C6, dst="2001:db8::11") / TCP(dport=80) / Raw(b"y" * 10),
    E / IPv6(src=C6, dst="fe80::1") / ICMPv6EchoRequest(),
    Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=VIP4),
]
VIP_TEMPLATES = [p for p, _unused, _unused in VIP_PACKETS.values()]


def _check(lbv, frame):
    res = lbv.run(frame)
    assert res.retval in (XDP_PASS, XDP_DROP, XDP_TX), (res, frame.hex())
    if not _to_vip_address(frame):
        assert res.retval == XDP_PASS, frame.hex()
    if res.retval == XDP_PASS:
        assert res.data == frame, hexdiff(res.data, frame)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzz_random_frames(lbv, seed):
    rng = random.Random(seed)
    for _unused in range(400):
        n = rng.choice([rng.randrange(MIN_FRAME, 80), rng.randrange(MIN_FRAME, 300)])
        frame = bytes(rng.getrandbits(8) for _unused in range(n))
        if rng.random() < 0.5:  # steer half of them into the IP parsers
            frame = frame[:12] + rng.choice([b"\x08\x00", b"\x86\xdd", b"\x81\x00"]) + frame[14:]
        _check(lbv, frame)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_fuzz_mutated_packets(lbv, seed):
    rng = random.Random(seed)
    templates = [bytes(p) for p in NON_VIP + VIP_TEMPLATES]
    for _unused in range(500):
        frame = bytearray(rng.choice(templates))
        for _unused in range(rng.randrange(1, 4)):
            op = rng.random()
            if op < 0.6 and frame:
                frame[rng.randrange(len(frame))] = rng.getrandbits(8)
            elif op < 0.8:
                del frame[rng.randrange(MIN_FRAME, len(frame) + 1):]
            else:
                frame += bytes(rng.getrandbits(8) for _unused in range(rng.randrange(1, 40)))
        _check(lbv, bytes(frame))
