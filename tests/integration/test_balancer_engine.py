"""The balancer engine against real pinned maps: diff-only writes, reference counting, ordering,
interrupted runs, reload and atomic replace, gateway resolution and the generic map codec."""
import os
import shutil
import struct
import subprocess
import threading

import pytest

from backend_netns import NetNS
from balancer_env import BALANCER_O, BPF_DIR, PASS_O, BalancerNS, build_objects, dump, logical

from ansible_collections.xdplb.katran.plugins.module_utils.engine import hostnet
from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer, maglev, vips, vipspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi, bpfmap, libbpf, program
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: run as root")


@pytest.fixture(scope="module", autouse=True)
def objects():
    build_objects()


@pytest.fixture
def lbns():
    ns = BalancerNS()
    try:
        ns.load()
        yield ns
    finally:
        ns.close()


def spec(*vip_list):
    return vipspec.parse_vips(list(vip_list))


def vip(address="192.0.2.10", port=80, reals=None, **kw):
    reals = reals if reals is not None else ["10.1.0.%d" % i for i in range(1, 5)]
    return dict(address=address, port=port, reals=reals, **kw)


def ring_ids(pin_root):
    with balancer.Balancer(pin_root) as bal:
        return dict(bal.read().ring_ids)


def test_apply_writes_only_what_differs(lbns):
    pin = lbns.pin_root
    want = spec(vip(), vip(port=443), vip(address="2001:db8::10", reals=["2001:db8:1::1", "2001:db8:1::2"]))
    first = vips.ensure(pin, want, purge=True)
    assert first["changed"] and first["summary"]["added"] == 3 and first["summary"]["rings_written"] == 3
    assert first["summary"]["reals_allocated"] == 6  # 4 IPv4 reals shared by two VIPs
    before = dump(pin)
    ids = ring_ids(pin)
    again = vips.ensure(pin, want, purge=True)
    assert not again["changed"] and again["summary"]["unchanged"] == 3 and again["summary"]["rings_written"] == 0
    assert dump(pin) == before and ring_ids(pin) == ids

    want[1]["reals"][2]["weight"] = 3
    changed = vips.ensure(pin, want, purge=True)
    entry = [v for v in changed["vips"] if v["action"] != "unchanged"]
    assert [v["key"] for v in entry] == ["192.0.2.10:443/tcp"]
    assert entry[0]["weights_changed"] == [{"address": "10.1.0.3", "before": 1, "after": 3}]
    assert changed["summary"]["rings_written"] == 1 and 0 < entry[0]["ring_slots_changed"] < abi.RING_SIZE
    after = ring_ids(pin)
    moved = [num for num in ids if after[num] != ids[num]]
    assert moved == [entry[0]["vip_num"]], "only the changed VIP's ring is swapped"


def test_ring_is_the_maglev_ring_of_the_reals(lbns):
    reals = [{"address": "10.1.0.1", "weight": 1}, {"address": "10.1.0.2", "weight": 3},
             {"address": "2001:db8:1::9", "weight": 2}]
    vips.ensure(lbns.pin_root, spec(vip(reals=reals)))
    with balancer.Balancer(lbns.pin_root) as bal:
        st = bal.read()
        got = [st.real_addr[i] for i in st.ring(0)]
    expect = maglev.build_ring([(r["address"], r["weight"]) for r in reals])
    assert got == [reals[i]["address"] for i in expect]


def test_reals_are_reference_counted_and_freed_indices_not_reused(lbns):
    pin = lbns.pin_root
    a = vip(reals=["10.1.0.1", "10.1.0.2"])
    b = vip(port=443, reals=["10.1.0.2", "10.1.0.3"])
    vips.ensure(pin, spec(a, b), purge=True)
    with balancer.Balancer(pin) as bal:
        idx = dict(bal.read().live)
    res = vips.ensure(pin, spec(b), purge=True)
    assert res["summary"]["reals_freed"] == 1
    with balancer.Balancer(pin) as bal:
        st = bal.read()
    assert st.live == {"10.1.0.2": idx["10.1.0.2"], "10.1.0.3": idx["10.1.0.3"]}, "the shared real stays"
    assert st.tomb == {"10.1.0.1": idx["10.1.0.1"]}, "freed: family 0, address kept"
    raw = libbpf.Map.from_pin(os.path.join(pin, abi.MAP_REALS)).lookup(struct.pack("=I", idx["10.1.0.1"]))
    assert abi.LbReal.from_bytes(raw).family == 0
    vips.ensure(pin, spec(b, vip(port=8080, reals=["10.1.0.4"])), purge=True)
    with balancer.Balancer(pin) as bal:
        st = bal.read()
    assert st.live["10.1.0.4"] not in idx.values(), "a never-used index is preferred over a freed one"
    vips.ensure(pin, spec(b, vip(port=8080, reals=["10.1.0.4", "10.1.0.1"])), purge=True)
    with balancer.Balancer(pin) as bal:
        assert bal.read().live["10.1.0.1"] == idx["10.1.0.1"], "a real coming back gets its own index"


def test_drained_real_stays_known_but_gets_no_slots(lbns):
    pin = lbns.pin_root
    vips.ensure(pin, spec(vip(reals=[{"address": "10.1.0.1"}, {"address": "10.1.0.2", "weight": 0}])))
    data = balancer.info(pin, ring_slots=True)
    reals = {r["address"]: r for r in data["vips"][0]["reals"]}
    assert reals["10.1.0.2"]["weight"] == 0 and reals["10.1.0.2"]["ring_slots"] == 0
    assert reals["10.1.0.1"]["ring_slots"] == abi.RING_SIZE
    assert "10.1.0.2" in [r["address"] for r in data["reals"]]


def test_no_vip_ever_points_to_a_missing_ring(lbns):
    pin = lbns.pin_root
    vips.ensure(pin, spec(vip(), vip(port=443), vip(port=8443)), purge=True)
    seen = []

    def check(step):
        with balancer.Balancer(pin) as bal:
            st = bal.read()
        for v in st.vips.values():
            assert v["vip_num"] in st.ring_ids, "%s has no ring after step %s" % (v["key"], step)
        seen.append(step)

    vips.ensure(pin, spec(vip(port=443, reals=["10.1.0.9"]), vip(port=9000)), purge=True, on_step=check)
    assert len(seen) > 5


class Interrupt(Exception):
    pass


def _interrupt_after(k):
    calls = []

    def step(name):
        calls.append(name)
        if len(calls) > k:
            raise Interrupt(name)
    return step


def test_an_interrupted_run_converges_on_the_next(lbns):
    pin = lbns.pin_root
    start = spec(vip(), vip(port=443), vip(address="2001:db8::10", reals=["2001:db8:1::1"]))
    goal = spec(vip(reals=["10.1.0.1", {"address": "10.1.0.7", "weight": 2}]), vip(port=53, protocol="udp"),
                vip(address="198.51.100.1", reals=["10.1.0.8"], icmp_echo=False))
    vips.ensure(pin, goal, purge=True)
    expected = logical(pin)
    steps = []
    vips.ensure(pin, start, purge=True)
    vips.ensure(pin, goal, purge=True, on_step=steps.append)
    assert len(steps) >= 8
    for k in range(len(steps)):
        vips.ensure(pin, start, purge=True)

        with pytest.raises(Interrupt):
            vips.ensure(pin, goal, purge=True, on_step=_interrupt_after(k))
        vips.ensure(pin, goal, purge=True)
        assert logical(pin) == expected, "after an interruption at step %d (%s)" % (k, steps[k])
        assert not vips.ensure(pin, goal, purge=True)["changed"]


def test_plan_errors_change_nothing(lbns):
    pin = lbns.pin_root
    vips.ensure(pin, spec(vip()))
    before = dump(pin)
    with pytest.raises(EngineError) as info:
        vips.ensure(pin, spec(vip(port=443)), ring_size=65521)
    assert info.value.field == "ring_size" and "65521" in str(info.value)
    with pytest.raises(EngineError) as info:
        vips.ensure(pin, spec(*[vip(port=p) for p in range(1, 600)]))
    assert info.value.field == "vips" and "512" in str(info.value)
    assert dump(pin) == before


def test_config_resolves_the_gateway_from_the_default_route(lbns):
    gw = NetNS()
    try:
        lbns.ip("link", "set", "peer0", "netns", gw.name)
        lbns.ip("addr", "add", "10.9.0.1/24", "dev", "lb0")
        lbns.ip("addr", "add", "fd00:9::1/64", "dev", "lb0", "nodad")
        gw.ip("addr", "add", "10.9.0.254/24", "dev", "peer0")
        gw.ip("link", "set", "peer0", "up")
        lbns.ip("route", "add", "default", "via", "10.9.0.254", "dev", "lb0")
        gw_mac = gw.run(hostnet.interface_mac, "peer0")
        req = lbns.run(balancer.config_request, "lb0", max_packet_size=1500)
        res = lbns.run(balancer.ensure_config, lbns.pin_root, req)
        assert res["changed"] and res["gateway"] == "10.9.0.254" and res["gateway_mac_from"] == "default route"
        assert res["config"]["gateway_mac"] == gw_mac
        assert res["config"]["source_v4"] == "10.9.0.1" and res["config"]["source_v6"] == "fd00:9::1"
        assert not lbns.run(balancer.ensure_config, lbns.pin_root, req)["changed"]
        missing = lbns.run(balancer.config_request, "lb0", gateway="10.9.0.77")
        with pytest.raises(Exception) as info:
            lbns.run(balancer.ensure_config, lbns.pin_root, missing, timeout=1.0)
        assert info.value.field == "gateway" and "10.9.0.77" in str(info.value)
    finally:
        gw.delete()


def test_reload_keeps_maps_and_replace_is_never_detached(lbns):
    pin = lbns.pin_root
    vips.ensure(pin, spec(vip()))
    before = dump(pin)
    first = lbns.run(program.ensure, BALANCER_O, "lb0", pin_root=pin)
    assert first["action"] == "unchanged"

    def reload_while_watching():
        index = program.ifindex("lb0")
        samples, stop = [], threading.Event()

        def watch():
            while not stop.is_set():
                samples.append(libbpf.xdp_query(index)["prog_id"])

        t = threading.Thread(target=watch)
        t.start()
        try:
            swapped = program.ensure(PASS_O, "lb0", pin_root=pin)
            back = program.ensure(BALANCER_O, "lb0", pin_root=pin, force=True)
            undo = program.rollback("lb0", pin_root=pin)
            redo = program.rollback("lb0", pin_root=pin)
        finally:
            stop.set()
            t.join()
        return swapped, back, undo, redo, samples

    swapped, back, undo, redo, samples = lbns.run(reload_while_watching)
    assert swapped["action"] == back["action"] == "replaced"
    assert len(samples) > 2 and 0 not in samples, "an XDP program is attached at every sample"
    ids = [first["prog_id"], swapped["prog_id"], back["prog_id"]]
    assert len(set(ids)) == 3 and set(ids) <= set(samples) | {first["prog_id"]}
    assert all(m["reused"] for m in back["maps"].values())
    assert dump(pin) == before, "the reload kept every pinned map's contents"
    assert (undo["action"], undo["prog_id"]) == ("rolled back", swapped["prog_id"])
    assert redo["prog_id"] == back["prog_id"], "a second rollback undoes the first"


def _variant(tmp_path, cflags):
    """balancer.o built with other sizes, as a later release with a changed map layout would be."""
    for name in ("balancer.c", "lb_abi.h", "Makefile"):
        shutil.copy(os.path.join(BPF_DIR, name), str(tmp_path))
    subprocess.run(["make", "-s", "-C", str(tmp_path), "balancer.o", "LB_CFLAGS=" + cflags], check=True)
    return str(tmp_path / "balancer.o")


def test_upgrade_that_changes_the_connection_table_layout_keeps_the_configuration(lbns, tmp_path):
    pin = lbns.pin_root
    vips.ensure(pin, spec(vip(), vip(address="2001:db8::10", reals=["2001:db8:1::1"])))
    before = dump(pin)
    newer = _variant(tmp_path, "-DLB_CONN_TABLE_SIZE=4096")
    check = lbns.run(program.ensure, newer, "lb0", pin_root=pin, check_mode=True)
    assert check["changed"] and check["action"] == "replaced"
    assert any("lb_conns4, lb_conns: layout changed" in w for w in check["warnings"]), check["warnings"]
    with libbpf.Map.from_pin(os.path.join(pin, abi.MAP_CONNS4)) as m:
        assert m.info["max_entries"] == abi.CONN_SETS, "check mode re-created nothing"

    res = lbns.run(program.ensure, newer, "lb0", pin_root=pin)
    assert res["action"] == "replaced"
    assert {n for n, m in res["maps"].items() if not m["reused"]} == set(abi.CONN_MAPS)
    for name in abi.CONN_MAPS:
        with libbpf.Map.from_pin(os.path.join(pin, name)) as m:
            assert m.info["max_entries"] == 4096 // abi.CONN_WAYS
    assert dump(pin) == before, "VIPs, reals, rings and config are kept"
    again = lbns.run(program.ensure, newer, "lb0", pin_root=pin)
    assert again["action"] == "unchanged" and not again["warnings"]


def test_upgrade_that_changes_a_configuration_map_is_refused(lbns, tmp_path):
    pin = lbns.pin_root
    vips.ensure(pin, spec(vip()))
    before = dump(pin)
    ids = {}
    for name in abi.CONN_MAPS:
        with libbpf.Map.from_pin(os.path.join(pin, name)) as m:
            ids[name] = m.info["id"]
    with pytest.raises(Exception) as info:
        lbns.run(program.ensure, _variant(tmp_path, "-DLB_MAX_REALS=1024 -DLB_CONN_TABLE_SIZE=4096"), "lb0",
                 pin_root=pin)
    assert info.value.field == "pin_root" and "lb_reals" in str(info.value)
    assert dump(pin) == before
    for name, map_id in ids.items():
        with libbpf.Map.from_pin(os.path.join(pin, name)) as m:
            assert m.info["id"] == map_id, "the connection tables are kept when the load is refused"


def test_native_mode_fails_where_the_driver_cannot(lbns):
    with pytest.raises(Exception) as info:
        lbns.run(program.ensure, PASS_O, "lo", mode="native", pin_root=lbns.pin_root + "-lo")
    assert info.value.field == "mode" and "native" in str(info.value)
    assert not os.path.exists(lbns.pin_root + "-lo") or not os.listdir(lbns.pin_root + "-lo")
    if os.path.isdir(lbns.pin_root + "-lo"):
        os.rmdir(lbns.pin_root + "-lo")


@pytest.mark.parametrize("kw, field", [
    ({"object_path": "/nonexistent/balancer.o"}, "object"),
    ({"object_path": __file__}, "object"),
    ({"interface": "nosuch0"}, "interface"),
    ({"mode": "turbo"}, "mode"),
    ({"pin_root": "/tmp/not-bpffs"}, "pin_root"),
])
def test_program_errors_name_the_field(lbns, kw, field):
    args = dict(object_path=BALANCER_O, interface="lb0", pin_root=lbns.pin_root)
    args.update(kw)
    with pytest.raises(Exception) as info:
        lbns.run(program.ensure, **args)
    assert info.value.field == field, str(info.value)


def test_bpf_map_by_btf_field_names_and_raw(lbns):
    path = os.path.join(lbns.pin_root, abi.MAP_VIP_ADDRS)
    entry = [{"key": {"addr": "192.0.2.99", "family": 4}, "value": {"flags": 1}}]
    assert bpfmap.ensure(path, entry, check_mode=True)["changed"]
    assert bpfmap.ensure(path, entry)["changed"]
    assert not bpfmap.ensure(path, entry)["changed"]
    with libbpf.Map.from_pin(path) as m:
        assert m.lookup(bytes(abi.addr_key("192.0.2.99"))) == bytes(abi.LbAddrMeta(flags=1))
    raw_key = bytes(abi.addr_key("192.0.2.99")).hex()
    assert not bpfmap.ensure(path, [{"key": raw_key, "value": "01000000"}], raw=True)["changed"]
    before = dump(lbns.pin_root)
    for bad, field in (({"addr": "192.0.2.99", "famly": 4}, "key.famly"), ({"addr": "300.1.1.1"}, "key.addr")):
        with pytest.raises(EngineError) as info:
            bpfmap.ensure(path, [{"key": bad, "value": {"flags": 1}}])
        assert info.value.field == field
    assert dump(lbns.pin_root) == before
    assert bpfmap.ensure(path, [{"key": {"addr": "192.0.2.99", "family": 4}}], state="absent")["changed"]
    # A per-CPU array slot no real uses: traffic cannot move it under the test.
    stats = os.path.join(lbns.pin_root, abi.MAP_REAL_STATS)
    res = bpfmap.ensure(stats, [{"key": 4000, "value": {"packets": 7}}])
    assert res["entries"][0]["after"] == {"packets": 7, "bytes": 0} and res["map"]["type"] == "percpu_array"
    with libbpf.Map.from_pin(stats) as m:
        assert abi.read_stats(m, 4000)["packets"] == 7 * libbpf.num_possible_cpus()
    assert not bpfmap.ensure(stats, [{"key": 4000, "value": {"packets": 7}}])["changed"]
    assert bpfmap.ensure(stats, [{"key": 4000}], state="absent")["changed"]
    assert not bpfmap.ensure(stats, [{"key": 4000}], state="absent")["changed"], "a zeroed array slot is absent"


# balancer.o as released before the per-(VIP, real) counters (git show 235a993:files/bpf/balancer.o):
# lb_global one counter shorter, no lb_vip_pairs / lb_pair_stats.
BEFORE_PAIRS_O = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "balancer_before_pairs.o")


def _syn_through(prog_id, sport):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    pkt = Ether(src="02:00:00:00:00:c1") / IP(src="198.51.100.1", dst="192.0.2.10") / TCP(sport=sport, dport=80, flags="S")
    fd = libbpf.prog_fd_by_id(prog_id)
    try:
        return libbpf.prog_test_run(fd, bytes(pkt)).retval
    finally:
        libbpf.close_fd(fd)


def test_upgrade_to_per_pair_counters_keeps_vips_and_traffic(lbns):
    pin = lbns.pin_root + "-upgrade"  # the fixture's pins are the new object's already
    try:
        _upgrade_to_pairs(lbns, pin)
    finally:
        if os.path.isdir(pin):
            for name in os.listdir(pin):
                os.unlink(os.path.join(pin, name))
            os.rmdir(pin)


def _upgrade_to_pairs(lbns, pin):
    old = lbns.run(program.ensure, BEFORE_PAIRS_O, "lb0", pin_root=pin, force=True)
    request = spec(vip(), vip(port=53, protocol="udp"))
    lbns.run(vips.ensure, pin, request)
    with balancer.Balancer(pin) as bal:
        bal.write_config({"if_mac": "02:00:00:00:00:01", "gateway_mac": "02:00:00:00:00:fe", "source_v4": "10.255.0.1",
                          "source_mode": "balancer", "max_packet_size": 0})
    assert _syn_through(old["prog_id"], 1000) == libbpf.XDP_TX
    before = logical(pin)

    new = lbns.run(program.ensure, BALANCER_O, "lb0", pin_root=pin)
    assert new["action"] == "replaced"
    assert any(w.startswith("lb_global: layout changed") and "restart from zero" in w for w in new["warnings"]), \
        new["warnings"]
    assert {n for n, m in new["maps"].items() if not m["reused"]} == {abi.MAP_GLOBAL, abi.MAP_VIP_PAIRS,
                                                                      abi.MAP_PAIR_STATS}
    assert logical(pin) == before, "VIPs, reals and rings are kept"
    # Traffic flows before the next VIP run, counted as unattributed until the rows are written.
    assert _syn_through(new["prog_id"], 1001) == libbpf.XDP_TX
    assert balancer.info(pin)["unattributed"]["packets"] == 1

    res = lbns.run(vips.ensure, pin, request)
    assert res["changed"] and any(x.startswith("2 VIPs (") for x in res["repairs"]), res["repairs"]
    assert res["summary"]["unchanged"] == 2 and res["summary"]["rings_written"] == 0
    assert _syn_through(new["prog_id"], 1002) == libbpf.XDP_TX
    info = balancer.info(pin)
    tcp = next(v for v in info["vips"] if v["key"] == "192.0.2.10:80/tcp")
    assert sum(r["stats"]["packets"] for r in tcp["reals"]) == 1 and info["global"]["tx"] == 2
    again = lbns.run(vips.ensure, pin, request)
    assert not again["changed"] and again["repairs"] == []
