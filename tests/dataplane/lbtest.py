"""Helpers for the balancer packet tests.

- Balancer: balancer.o loaded without pinning, plus the few control-plane writes tests need,
  done through the engine (abi.py + libbpf.py) exactly as the modules will do them.
- flow_slot(): the data plane's flow hash re-done in Python, so a test can say which ring
  slot (hence which real) a flow must reach. If the C hash changes, these tests say so.
- encap(): the packet the balancer must emit, built independently with scapy (scapy computes
  lengths and the outer checksum, so a wrong checksum in the program shows as a byte diff).
"""
import ipaddress
import os
import struct

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi, libbpf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BPF_DIR = os.path.join(REPO, "files", "bpf")

IF_MAC = "02:00:00:00:00:01"
GW_MAC = "02:00:00:00:00:fe"
CLIENT_MAC = "02:00:00:00:00:c1"
LB_V4 = "10.255.0.1"
LB_V6 = "fc00::1"

XDP_DROP, XDP_PASS, XDP_TX = libbpf.XDP_DROP, libbpf.XDP_PASS, libbpf.XDP_TX


class Balancer:
    def __init__(self, path):
        self.obj = libbpf.BpfObject(path, pin_maps=False).load()
        self.fd = self.obj.program_fd(abi.PROG_BALANCER)
        self.m = {name: self.obj.map(name) for name in self.obj.map_names()}
        self.vip_addrs = set()
        self.configure()

    def close(self):
        self.obj.close()

    def configure(self, **kw):
        args = dict(if_mac=IF_MAC, gw_mac=GW_MAC, src_v4=LB_V4, src_v6=LB_V6)
        args.update(kw)
        self.m[abi.MAP_CONFIG].update(struct.pack("=I", 0), bytes(abi.config(**args)))

    def set_real(self, idx, ip):
        self.m[abi.MAP_REALS].update(struct.pack("=I", idx), bytes(abi.real(ip)))

    def free_real(self, idx):
        self.m[abi.MAP_REALS].update(struct.pack("=I", idx), bytes(abi.LbReal()))

    def add_vip(self, ip, port, proto, vip_num=0, flags=0, reals=None, addr_flags=0):
        """VIP whose ring cycles through `reals` (slot i -> reals[i % len])."""
        self.vip_addrs.add(ip)
        abi.addr_filter_sync(self.m[abi.MAP_ADDR_FILTER], self.vip_addrs)
        self.m[abi.MAP_VIP_ADDRS].update(bytes(abi.addr_key(ip)), bytes(abi.LbAddrMeta(flags=addr_flags)))
        abi.vip_set(self.m[abi.MAP_VIP_TABLE], abi.vip_key(ip, port, proto), abi.vip_meta(vip_num, flags))
        if reals is not None:
            self.set_ring(vip_num, ring_of(reals))

    def set_ring(self, vip_num, ring, on_step=None):
        abi.ring_replace(self.m[abi.MAP_RINGS], vip_num, ring, on_step=on_step)

    def run(self, pkt):
        return libbpf.prog_test_run(self.fd, bytes(pkt))

    def stats(self):
        return abi.global_stats(self.m[abi.MAP_GLOBAL])

    def vip_stats(self, vip_num):
        return abi.read_stats(self.m[abi.MAP_VIP_STATS], vip_num)

    def real_stats(self, idx):
        return abi.read_stats(self.m[abi.MAP_REAL_STATS], idx)

    def conn(self, src, dst, sport, dport, proto):
        name, key = abi.conn_key(src, dst, sport, dport, proto)
        return abi.conn_get(self.m[name], key)


def ring_of(reals, size=abi.RING_SIZE):
    return [reals[i % len(reals)] for i in range(size)]


# ------------------------------------------------------------------ flow hash (mirror of balancer.c)
SEED = abi.RING_SIZE
jhash_2words, jhash_4words = abi.jhash_2words, abi.jhash_4words


def _le32(raw):
    # The program loads network-order bytes as host (little-endian) words.
    return struct.unpack("<I", raw)[0]


def flow_slot(src, sport, dport, flags=0, ring_size=abi.RING_SIZE):
    src_ip = ipaddress.ip_address(src)
    sp = struct.unpack("<H", struct.pack("!H", sport))[0]
    dp = struct.unpack("<H", struct.pack("!H", dport))[0]
    if flags & abi.VIP_F_DPORT_HASH:
        srcw, sp = 0, dp
    else:
        if flags & abi.VIP_F_NO_SPORT:
            sp = 0
        raw = src_ip.packed
        srcw = _le32(raw) if src_ip.version == 4 else jhash_4words(
            [_le32(raw[i:i + 4]) for i in range(0, 16, 4)], SEED)
    return jhash_2words(srcw, (sp << 16) | dp, SEED) % ring_size


def real_for(reals, src, sport, dport, flags=0):
    """Which of `reals` (ring_of(reals)) a new flow must reach."""
    return reals[flow_slot(src, sport, dport, flags) % len(reals)]


# ------------------------------------------------------------------ expected packets
def per_flow_src(client, sport, outer_version):
    c = ipaddress.ip_address(client).packed[-4:]
    p = struct.pack("!H", sport)
    if outer_version == 4:
        return str(ipaddress.IPv4Address(bytes([172, 16, c[2] ^ p[0], c[3] ^ p[1]])))
    return str(ipaddress.IPv6Address(bytes([1, 0]) + bytes(10) + bytes([c[0] ^ p[0], c[1] ^ p[1], c[2], c[3]])))


def l3(pkt):
    """The IP packet (header + payload) inside an Ether frame, as bytes."""
    return bytes(pkt[IP] if IP in pkt else pkt[IPv6])


def encap(inner_l3, real, src, tos, ttl, df=False, vlan=None):
    real = ipaddress.ip_address(real)
    proto = 4 if inner_l3[0] >> 4 == 4 else 41
    frame = Ether(dst=GW_MAC, src=IF_MAC)
    if vlan is not None:
        frame = frame / Dot1Q(prio=vlan.prio, dei=vlan.dei, vlan=vlan.vlan)
    if real.version == 4:
        outer = IP(src=src, dst=str(real), tos=tos, ttl=ttl, id=0, flags="DF" if df else 0, proto=proto)
    else:
        outer = IPv6(src=src, dst=str(real), tc=tos, fl=0, hlim=ttl, nh=proto)
    return bytes(frame / outer / Raw(inner_l3))


def vlan_tag(vid, prio=0):
    return Dot1Q(prio=prio, vlan=vid)


def hexdiff(got, want):
    """Assertion message locating the first differing byte."""
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return "first difference at byte %d: got %02x want %02x (len %d vs %d)" % (i, a, b, len(got), len(want))
    return "lengths differ: got %d want %d" % (len(got), len(want))
