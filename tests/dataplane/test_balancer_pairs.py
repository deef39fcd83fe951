"""Per-(VIP, real) counters: real packets through the balancer set up by the engine (vips.ensure on
pinned maps), read back by lb_info's balancer.info() and by counters.Reader."""
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lbtest import CLIENT_MAC, GW_MAC, IF_MAC, LB_V4, XDP_TX

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer, counters, vips, vipspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi, libbpf

VIP = "192.0.2.10"
REALS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
E = Ether(src=CLIENT_MAC, dst=IF_MAC)


class Pinned:
    """balancer.o loaded with its maps pinned under a bpffs directory, as the role leaves it."""

    def __init__(self, path, pin_root):
        self.pin_root = pin_root
        self.obj = libbpf.BpfObject(path, pin_root_path=pin_root).load()
        self.fd = self.obj.program_fd(abi.PROG_BALANCER)
        self.obj.map(abi.MAP_CONFIG).update(struct.pack("=I", 0), bytes(abi.config(IF_MAC, GW_MAC, src_v4=LB_V4)))

    def ensure(self, *specs, **kw):
        return vips.ensure(self.pin_root, vipspec.parse_vips(list(specs)), purge=True, **kw)

    def send(self, pkt, n=1):
        for _unused in range(n):
            assert libbpf.prog_test_run(self.fd, bytes(pkt)).retval == XDP_TX

    def read(self):
        with counters.Reader(self.pin_root) as reader:
            return reader.read()


@pytest.fixture
def lbp(bpf_objects, bpffs_dir):
    b = Pinned("%s/balancer.o" % bpf_objects, bpffs_dir)
    yield b
    b.obj.close()


def tcp_vip(reals=tuple(REALS)):
    return {"address": VIP, "port": 80, "protocol": "tcp", "reals": list(reals)}


def udp_vip(reals=tuple(REALS)):
    return {"address": VIP, "port": 53, "protocol": "udp", "reals": list(reals)}


def syn(sport):
    return E / IP(src="198.51.100.1", dst=VIP) / TCP(sport=sport, dport=80, flags="S") / Raw(bytes(60))  # L3 100


def ack(sport):
    return E / IP(src="198.51.100.1", dst=VIP) / TCP(sport=sport, dport=80, flags="A") / Raw(bytes(60))


def dns(sport):
    return E / IP(src="198.51.100.1", dst=VIP) / UDP(sport=sport, dport=53) / Raw(bytes(22))  # L3 50


def by_key(snap):
    return {v["key"]: v for v in snap["vips"]}


def test_a_vips_packets_count_only_in_its_own_pairs(lbp):
    lbp.ensure(tcp_vip(), udp_vip())
    for sport in range(1000, 1030):
        lbp.send(syn(sport))
    snap = lbp.read()
    tcp, udp = by_key(snap)["192.0.2.10:80/tcp"], by_key(snap)["192.0.2.10:53/udp"]
    assert [r["address"] for r in tcp["reals"]] == REALS == [r["address"] for r in udp["reals"]]
    assert sum(r["packets"] for r in tcp["reals"]) == 30 and sum(r["bytes"] for r in tcp["reals"]) == 3000
    assert all(r["packets"] == 0 for r in udp["reals"]), "the UDP VIP shows none of the TCP VIP's packets"
    for sport in range(2000, 2010):
        lbp.send(dns(sport))
    snap = lbp.read()
    per_pair = {}
    for v in snap["vips"]:
        assert v["packets"] == sum(r["packets"] for r in v["reals"])
        for r in v["reals"]:
            per_pair.setdefault(r["address"], []).append(r["packets"])
    assert sum(r["packets"] for r in by_key(snap)["192.0.2.10:53/udp"]["reals"]) == 10
    # Per real over all its VIPs (lb_real_stats) is the sum of its pairs.
    assert {r["address"]: r["packets"] for r in snap["reals"]} == {a: sum(p) for a, p in per_pair.items()}
    assert snap["unattributed"] == {"packets": 0, "bytes": 0}
    g = snap["global"]
    assert set(g) == {n for n, _u in abi.LbGlobalStats._fields_} and g["tx"] == 40 and g["conn_evict"] == 0
    assert snap["conn_table"] == {"ipv4": abi.CONN_TABLE_SIZE, "ipv6": abi.CONN_TABLE_SIZE}
    assert set(tcp) == {"key", "address", "port", "protocol", "vip_num", "packets", "bytes", "ring_id", "reals"}
    assert tcp["ring_id"] and tcp["port"] == 80 and tcp["protocol"] == "tcp"
    assert set(tcp["reals"][0]) == {"address", "index", "packets", "bytes"}

    # lb_info shows the same numbers: per (VIP, real) in vips[].reals[], per real in reals[].
    info = balancer.info(lbp.pin_root)
    got = {(v["key"], r["address"]): r["stats"]["packets"] for v in info["vips"] for r in v["reals"]}
    want = {(v["key"], r["address"]): r["packets"] for v in snap["vips"] for r in v["reals"]}
    assert got == want
    assert {r["address"]: r["stats"]["packets"] for r in info["reals"]} == {a: sum(p) for a, p in per_pair.items()}
    assert info["unattributed"] == {"packets": 0, "bytes": 0} and info["global"]["conn_evict"] == 0


def test_the_same_request_again_writes_nothing_and_check_mode_never_writes(lbp):
    first = lbp.ensure(tcp_vip(), udp_vip())
    assert first["summary"]["pairs_allocated"] == 6 and first["repairs"] == []
    with balancer.Balancer(lbp.pin_root) as bal:
        before = bal.read().pair_owner
    again = lbp.ensure(tcp_vip(), udp_vip())
    assert not again["changed"] and again["summary"]["pairs_allocated"] == again["summary"]["pairs_freed"] == 0
    check = lbp.ensure(tcp_vip(REALS[:1]), check_mode=True)
    assert check["changed"] and check["summary"]["pairs_freed"] == 5
    with balancer.Balancer(lbp.pin_root) as bal:
        assert bal.read().pair_owner == before, "check mode wrote no pair"


def test_a_real_leaving_one_vip_frees_its_pair_and_its_reused_id_starts_from_zero(lbp):
    lbp.ensure(tcp_vip(REALS[:2]), udp_vip(REALS[:2]))
    flows = {}
    for sport in range(1000, 1040):
        lbp.send(syn(sport))
    with balancer.Balancer(lbp.pin_root) as bal:
        st = bal.read()
        index = dict(st.live)
    conns = libbpf.Map.from_pin("%s/%s" % (lbp.pin_root, abi.MAP_CONNS4))
    try:
        for sport in range(1000, 1040):
            flows[sport] = abi.conn_get(conns, abi.conn_key("198.51.100.1", VIP, sport, 80, "tcp")[1])
    finally:
        conns.close()
    to_second = [s for s, idx in flows.items() if idx == index[REALS[1]]]
    assert to_second, "some flows reached the second real"
    old = {r["address"]: r for r in by_key(lbp.read())["192.0.2.10:80/tcp"]["reals"]}

    res = lbp.ensure(tcp_vip(REALS[:1]), udp_vip(REALS[:2]))
    assert res["summary"]["pairs_freed"] == 1 and res["summary"]["reals_freed"] == 0, "the real stays: the UDP VIP has it"
    # Established flows to the removed real still reach it through the connection table; their
    # (VIP, real) has no pair any more: unattributed.
    for sport in to_second:
        lbp.send(ack(sport))
    snap = lbp.read()
    assert snap["unattributed"] == {"packets": len(to_second), "bytes": 100 * len(to_second)}
    assert [r["address"] for r in by_key(snap)["192.0.2.10:80/tcp"]["reals"]] == REALS[:1]

    # A new real takes the lowest free id, the one just freed: it starts from zero.
    lbp.ensure(tcp_vip([REALS[0], REALS[2]]), udp_vip(REALS[:2]))
    reals = {r["address"]: r for r in by_key(lbp.read())["192.0.2.10:80/tcp"]["reals"]}
    assert reals[REALS[2]]["packets"] == 0 and old[REALS[1]]["packets"] > 0
    assert reals[REALS[0]]["packets"] == old[REALS[0]]["packets"], "the kept pair keeps its counts"
    with balancer.Balancer(lbp.pin_root) as bal:
        owners = bal.read().pair_owner
    assert sorted(owners) == [1, 2, 3, 4], "ids stay dense: the freed one was reused"


def test_an_interrupted_apply_converges_and_says_what_it_repaired(lbp):
    lbp.ensure(tcp_vip(), udp_vip())

    def stop(name):
        if name.startswith("vip "):
            raise RuntimeError("interrupted at %s" % name)

    # A real leaves the TCP VIP: the run stops after its new ring, before the old pair is freed.
    with pytest.raises(RuntimeError):
        lbp.ensure(tcp_vip(REALS[:2]), udp_vip(), on_step=stop)
    rerun = lbp.ensure(tcp_vip(REALS[:2]), udp_vip())
    assert rerun["changed"]
    assert "1 counter ids belonged to reals no longer in their VIP (an interrupted run): freed" in rerun["repairs"]
    assert [r["address"] for r in by_key(lbp.read())["192.0.2.10:80/tcp"]["reals"]] == REALS[:2]
    again = lbp.ensure(tcp_vip(REALS[:2]), udp_vip())
    assert not again["changed"] and again["repairs"] == []

    # A new VIP stops after its pairs were written, before its table entry: the rerun gives it
    # fresh ids and frees the ones the interrupted run took.
    def stop_at_pairs(name):
        if name == "pairs":
            raise RuntimeError("interrupted at %s" % name)

    with pytest.raises(RuntimeError):
        lbp.ensure(tcp_vip(REALS[:2]), udp_vip(), dict(tcp_vip(), port=443), on_step=stop_at_pairs)
    rerun = lbp.ensure(tcp_vip(REALS[:2]), udp_vip(), dict(tcp_vip(), port=443))
    assert "3 counter ids belonged to VIP numbers without a VIP (an interrupted run): freed" in rerun["repairs"], \
        rerun["repairs"]
    snap = lbp.read()
    assert len(by_key(snap)["192.0.2.10:443/tcp"]["reals"]) == 3
    assert not lbp.ensure(tcp_vip(REALS[:2]), udp_vip(), dict(tcp_vip(), port=443))["changed"]


def test_rows_lost_with_their_map_are_rewritten_and_reported(lbp):
    lbp.ensure(tcp_vip(), udp_vip())
    rows = libbpf.Map.from_pin("%s/%s" % (lbp.pin_root, abi.MAP_VIP_PAIRS))
    try:
        for num in range(rows.info["max_entries"]):
            rows.update(struct.pack("=I", num), bytes(rows.value_size))  # as a re-created map is
    finally:
        rows.close()
    lbp.send(syn(1000))
    assert lbp.read()["unattributed"]["packets"] == 1, "no row: counted as unattributed"
    res = lbp.ensure(tcp_vip(), udp_vip())
    assert res["changed"] and any(x.startswith("2 VIPs (") and "written" in x for x in res["repairs"]), res["repairs"]
    lbp.send(syn(1000))
    assert sum(r["packets"] for r in by_key(lbp.read())["192.0.2.10:80/tcp"]["reals"]) == 1
    assert not lbp.ensure(tcp_vip(), udp_vip())["changed"]
