"""The VIP table (open addressing in an array) and the address filter, as packets see them."""
import errno
import itertools
import struct

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from lbtest import CLIENT_MAC, IF_MAC, XDP_PASS, XDP_TX

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi, libbpf

E = Ether(src=CLIENT_MAC, dst=IF_MAC)


def colliding_keys(n):
    """n TCP VIP keys on 192.0.2.0/24 whose probe windows start at the same slot."""
    by_slot = {}
    for host, port in itertools.product(range(1, 255), range(1, 400)):
        k = abi.vip_key("192.0.2.%d" % host, port, "tcp")
        by_slot.setdefault(abi.vip_slot(k), []).append(k)
        if len(by_slot[abi.vip_slot(k)]) == n:
            return by_slot[abi.vip_slot(k)]
    raise AssertionError("no collision found")


def send(lb, key):
    pkt = E / IP(src="198.51.100.1", dst=str(key.ip)) / TCP(dport=key.port_num, flags="S")
    return lb.run(pkt).retval


@pytest.fixture
def lbt(lb):
    lb.set_real(1, "10.0.0.1")
    lb.set_ring(0, [1] * abi.RING_SIZE)
    return lb


def _add(lb, key, vip_num=0, flags=0):
    lb.vip_addrs.add(str(key.ip))
    abi.addr_filter_sync(lb.m[abi.MAP_ADDR_FILTER], lb.vip_addrs)
    lb.m[abi.MAP_VIP_ADDRS].update(bytes(abi.addr_key(str(key.ip))), bytes(abi.LbAddrMeta()))
    abi.vip_set(lb.m[abi.MAP_VIP_TABLE], key, abi.vip_meta(vip_num, flags))


def test_every_slot_of_a_probe_window_is_found(lbt):
    keys = colliding_keys(abi.VIP_PROBES)
    for k in keys:
        _add(lbt, k)
    assert all(send(lbt, k) == XDP_TX for k in keys)
    # A removed VIP leaves a hole; the ones behind it stay reachable.
    assert abi.vip_delete(lbt.m[abi.MAP_VIP_TABLE], keys[0])
    assert send(lbt, keys[0]) == XDP_PASS
    assert all(send(lbt, k) == XDP_TX for k in keys[1:])
    assert abi.vip_delete(lbt.m[abi.MAP_VIP_TABLE], keys[0]) is False


def test_a_full_probe_window_is_refused_not_overwritten(lbt):
    keys = colliding_keys(abi.VIP_PROBES + 1)
    for k in keys[:-1]:
        _add(lbt, k)
    with pytest.raises(libbpf.BpfError) as exc:
        abi.vip_set(lbt.m[abi.MAP_VIP_TABLE], keys[-1], abi.vip_meta(0))
    assert exc.value.errno == errno.ENOSPC
    # changing an existing VIP still works when the window is full (in place)
    abi.vip_set(lbt.m[abi.MAP_VIP_TABLE], keys[0], abi.vip_meta(0, abi.VIP_F_NO_SPORT))
    assert abi.vip_get(lbt.m[abi.MAP_VIP_TABLE], keys[0]).flags == abi.VIP_F_NO_SPORT


def test_changing_a_vip_moves_it_to_a_free_slot_first(lbt):
    key = abi.vip_key("192.0.2.10", 80, "tcp")
    _add(lbt, key, flags=0)
    table = lbt.m[abi.MAP_VIP_TABLE]
    before = [s for s, e in abi._window(table, key) if e is not None]
    abi.vip_set(table, key, abi.vip_meta(0, abi.VIP_F_NO_CONN_TABLE))
    after = [s for s, e in abi._window(table, key) if e is not None]
    assert len(before) == len(after) == 1 and before != after
    assert [(bytes(k), m.flags) for k, m in abi.vips(table)] == [(bytes(key), abi.VIP_F_NO_CONN_TABLE)]
    assert send(lbt, key) == XDP_TX
    assert lbt.conn("198.51.100.1", "192.0.2.10", 20, 80, "tcp") is None  # bypass flag in effect


def test_a_half_written_slot_is_never_used(lbt):
    key = abi.vip_key("192.0.2.10", 80, "tcp")
    _add(lbt, key)
    table = lbt.m[abi.MAP_VIP_TABLE]
    slot = next(s for s, e in abi._window(table, key) if e is not None)
    torn = bytearray(table.lookup(struct.pack("=I", slot)))
    torn[20:24] = (7).to_bytes(4, "little")  # new vip_num written, check word not yet
    table.update(struct.pack("=I", slot), bytes(torn))
    res = lbt.run(E / IP(src="198.51.100.1", dst="192.0.2.10") / TCP(dport=80))
    assert res.retval == XDP_PASS  # missed, not sent with a wrong vip_num
    assert lbt.vip_stats(7)["packets"] == 0


def test_address_filter_gates_everything(lbt):
    key = abi.vip_key("192.0.2.10", 80, "tcp")
    _add(lbt, key)
    pkt = E / IP(src="198.51.100.1", dst="192.0.2.10") / TCP(dport=80)
    assert lbt.run(pkt).retval == XDP_TX
    abi.addr_filter_sync(lbt.m[abi.MAP_ADDR_FILTER], [])
    res = lbt.run(pkt)
    assert (res.retval, res.data) == (XDP_PASS, bytes(pkt))


def test_address_filter_false_positive_still_passes_other_traffic(lbt):
    _add(lbt, abi.vip_key("192.0.2.10", 80, "tcp"))
    target = abi.addr_filter_bit("192.0.2.10")
    twin = next("10.%d.%d.%d" % (a, b, c) for a, b, c in itertools.product(range(256), range(256), range(1, 255))
                if abi.addr_filter_bit("10.%d.%d.%d" % (a, b, c)) == target)
    for pkt in (E / IP(src="198.51.100.1", dst=twin) / TCP(dport=80),
                E / IP(src="198.51.100.1", dst=twin, flags="MF") / TCP(dport=80)):
        res = lbt.run(pkt)
        assert (res.retval, res.data) == (XDP_PASS, bytes(pkt))
