"""A ring change is atomic: between any two steps of a write, every packet sees one whole ring.

The check sends many flows between the fill steps of abi.ring_replace and requires that the
set of answers matches the old ring for every flow, or the new ring for every flow. The
second test runs the same check against a naive in-place writer and requires it to catch
the mix, so the first test cannot pass by being blind.
"""
import struct

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from lbtest import CLIENT_MAC, IF_MAC, XDP_TX, flow_slot, ring_of

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi, libbpf

VIP = "192.0.2.10"
FLOWS = [("198.51.100.%d" % (1 + i % 200), 10000 + 7 * i) for i in range(160)]
OLD, NEW = ring_of([1, 2, 3]), ring_of([4, 5, 6])
FRAMES = [bytes(Ether(src=CLIENT_MAC, dst=IF_MAC) / IP(src=s, dst=VIP) / UDP(sport=p, dport=53)) for s, p in FLOWS]
SLOTS = [flow_slot(s, p, 53) for s, p in FLOWS]


def _setup(lb):
    for i in range(1, 7):
        lb.set_real(i, "10.0.0.%d" % i)
    # No connection table: every packet asks the ring, so a mix would show.
    lb.add_vip(VIP, 53, "udp", flags=abi.VIP_F_NO_CONN_TABLE)
    lb.set_ring(0, OLD)


def _snapshot(lb):
    """'old', 'new', or 'MIX' for the answers all flows get right now."""
    got = []
    for frame in FRAMES:
        res = lb.run(frame)
        assert res.retval == XDP_TX
        got.append(res.data[33])  # last byte of the outer daddr 10.0.0.N = real index
    if got == [OLD[s] for s in SLOTS]:
        return "old"
    if got == [NEW[s] for s in SLOTS]:
        return "new"
    return "MIX"


def test_flows_cover_slots_that_change_in_every_step():
    # Otherwise an in-place write could go unnoticed between some steps.
    step = -(-abi.RING_SIZE // 8)
    for k in range(8):
        assert any(k * step <= s < (k + 1) * step and OLD[s] != NEW[s] for s in SLOTS), k


def test_ring_replace_never_exposes_a_mix(lb):
    _setup(lb)
    seen = []
    lb.set_ring(0, NEW, on_step=lambda: seen.append(_snapshot(lb)))
    assert seen == ["old"] * 8
    assert _snapshot(lb) == "new"
    assert abi.ring_read(lb.m[abi.MAP_RINGS], 0) == NEW


def test_the_check_catches_an_in_place_write(lb):
    _setup(lb)
    inner_id = struct.unpack("=I", lb.m[abi.MAP_RINGS].lookup(b"\0\0\0\0"))[0]
    seen = []
    with libbpf.Map.from_id(inner_id) as live:
        step = -(-abi.RING_SIZE // 8)
        for start in range(0, abi.RING_SIZE, step):
            idx = range(start, min(start + step, abi.RING_SIZE))
            live.update_batch(b"".join(struct.pack("=I", i) for i in idx),
                              b"".join(struct.pack("=I", NEW[i]) for i in idx))
            seen.append(_snapshot(lb))
    assert "MIX" in seen
    assert seen[-1] == "new"
