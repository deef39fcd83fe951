"""The connection table as a set-associative cache (lb_abi.h): where a flow lives, which entry a new
flow replaces when its set is full, and that a half-written entry is a miss, never a wrong real."""
import struct
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from lbtest import CLIENT_MAC, IF_MAC, XDP_TX, ring_of

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi

VIP4, VIP6 = "192.0.2.10", "2001:db8::10"
FAMILIES = {
    4: (VIP4, "198.51.100.%d", IP, {1: "10.0.0.1", 2: "10.0.0.2", 3: "10.0.0.3"}),
    6: (VIP6, "2001:db8:c::%x", IPv6, {1: "fd00::1", 2: "fd00::2", 3: "fd00::3"}),
}
# Longer than one jiffy at any HZ (100-1000): entries recorded apart get different ages.
JIFFY = 0.03


def flows_in_one_set(lb, family, count):
    """`count` client (address, port) pairs whose flows to the VIP share one set of the table."""
    vip, src_fmt, _unused, _unused2 = FAMILIES[family]
    name = abi.MAP_CONNS4 if family == 4 else abi.MAP_CONNS
    sets = lb.m[name].info["max_entries"]
    by_set = {}
    for sport in range(1024, 65536):
        src = src_fmt % 7
        set_idx = abi.conn_set_index(abi.conn_key(src, vip, sport, 80, "tcp")[1], sets)
        by_set.setdefault(set_idx, []).append((src, sport))
        if len(by_set[set_idx]) == count:
            return by_set[set_idx]
    raise AssertionError("no set with %d flows" % count)


def packet(family, src, sport, flags):
    vip, _unused, ip, _unused2 = FAMILIES[family]
    return Ether(src=CLIENT_MAC, dst=IF_MAC) / ip(src=src, dst=vip) / TCP(sport=sport, dport=80, flags=flags)


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def fam(request, lb):
    family = request.param
    vip, _unused, _unused2, reals = FAMILIES[family]
    for idx, addr in reals.items():
        lb.set_real(idx, addr)
    lb.add_vip(vip, 80, "tcp", reals=[1])
    return family


def recorded(lb, family, src, sport):
    return lb.conn(src, FAMILIES[family][0], sport, 80, "tcp")


def flow_set(lb, family, src, sport):
    """(map, set index as a key, the set's entries, the flow's key) of a flow to the VIP."""
    name, key = abi.conn_key(src, FAMILIES[family][0], sport, 80, "tcp")
    set_key = struct.pack("=I", abi.conn_set_index(key, lb.m[name].info["max_entries"]))
    cls = abi.LbConnSet4 if family == 4 else abi.LbConnSet6
    return lb.m[name], set_key, cls.from_bytes(lb.m[name].lookup(set_key)), key


def test_a_full_set_gives_way_to_its_least_recently_used_flow(lb, fam):
    flows = flows_in_one_set(lb, fam, abi.CONN_WAYS + 1)
    for src, sport in flows[:abi.CONN_WAYS]:
        assert lb.run(packet(fam, src, sport, "S")).retval == XDP_TX
        time.sleep(JIFFY)
    # The oldest flow sends a packet: now the second one is the least recently used.
    assert lb.run(packet(fam, *flows[0], "A")).retval == XDP_TX
    time.sleep(JIFFY)
    lb.set_ring(0, ring_of([2]))
    assert lb.run(packet(fam, *flows[-1], "S")).retval == XDP_TX
    got = [recorded(lb, fam, *f) for f in flows]
    assert got == [1, None, 1, 1, 2], "the newcomer replaced the flow idle the longest"
    # The evicted flow follows the ring now, and is recorded again.
    res = lb.run(packet(fam, *flows[1], "A"))
    assert res.retval == XDP_TX and recorded(lb, fam, *flows[1]) == 2
    # Two live flows lost their entry: the newcomer's, then flows[1]'s on its return (it took the
    # entry of the least recently used flow again); filling empty entries evicted nobody.
    s = lb.stats()
    assert s["conn_evict"] == 2 and s["conn_miss"] == abi.CONN_WAYS + 2
    assert s["tx"] + s["pass"] + s["drop"] == abi.CONN_WAYS + 3


def test_a_flow_replacing_its_own_entry_is_no_eviction(lb, fam):
    flows = flows_in_one_set(lb, fam, abi.CONN_WAYS)
    for src, sport in flows:
        assert lb.run(packet(fam, src, sport, "S")).retval == XDP_TX
    # A full set: a repeated SYN (a new connection on the same 5-tuple) takes its own entry back,
    # and a flow whose real was freed (its entry ignored) re-records in place: nobody is evicted.
    assert lb.run(packet(fam, *flows[0], "S")).retval == XDP_TX
    lb.free_real(1)
    lb.set_real(2, FAMILIES[fam][3][2])
    lb.set_ring(0, ring_of([2]))
    assert lb.run(packet(fam, *flows[1], "A")).retval == XDP_TX
    assert recorded(lb, fam, *flows[1]) == 2
    s = lb.stats()
    assert s["conn_evict"] == 0 and s["conn_miss"] == abi.CONN_WAYS + 2 and s["conn_hit"] == 0


def test_a_flow_seen_again_keeps_its_entry(lb, fam):
    (src, sport), = flows_in_one_set(lb, fam, 1)
    for flags in ("S", "A", "PA", "A"):
        assert lb.run(packet(fam, src, sport, flags)).retval == XDP_TX
    entries = flow_set(lb, fam, src, sport)[2]
    assert sum(1 for e in entries.way if e.check) == 1, "one entry per flow, not one per packet"
    assert lb.stats()["conn_hit"] == 3


def test_a_half_written_entry_is_a_miss_not_a_wrong_real(lb, fam):
    (src, sport), = flows_in_one_set(lb, fam, 1)
    assert lb.run(packet(fam, src, sport, "S")).retval == XDP_TX
    conns, set_key, entries, key = flow_set(lb, fam, src, sport)
    way = next(e for e in entries.way if bytes(e.flow) == bytes(key))
    way.real_idx = 3  # a racing writer's real next to the old check word
    conns.update(set_key, bytes(entries))
    lb.set_ring(0, ring_of([2]))
    res = lb.run(packet(fam, src, sport, "A"))
    assert res.retval == XDP_TX
    assert recorded(lb, fam, src, sport) == 2, "the ring decided and the entry was rewritten whole"
    assert lb.stats()["conn_hit"] == 0


def test_the_engine_sees_which_reals_the_table_points_at(lb, fam):
    flows = flows_in_one_set(lb, fam, 2)
    lb.run(packet(fam, *flows[0], "S"))
    lb.set_ring(0, ring_of([3]))
    lb.run(packet(fam, *flows[1], "S"))
    name = abi.MAP_CONNS4 if fam == 4 else abi.MAP_CONNS
    other = abi.MAP_CONNS if fam == 4 else abi.MAP_CONNS4
    assert abi.conn_real_refs(lb.m[name]) == {1, 3}
    assert abi.conn_real_refs(lb.m[other]) == set()
