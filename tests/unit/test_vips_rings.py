# SPDX-License-Identifier: GPL-3.0-or-later
"""vips' ring planning: VIPs sharing their reals share one ring build, layout and diff, and each
still gets exactly the ring and slot count it would get alone (no kernel: the installed rings are
fakes handed to the planner)."""
import array
import operator
import struct

import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer, maglev, vips, vipspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi

SIZE = 251
REALS = ["10.30.1.1", "10.30.1.2", "10.30.1.3", "10.30.1.4"]
INDEX = {a: i + 1 for i, a in enumerate(REALS)}


def _vip(n, weights):
    return {"address": "10.99.0.%d" % n, "port": 80, "reals": [{"address": a, "weight": w} for a, w in weights.items()]}


def _ring(weights):
    """The ring of these weights as real indices, built alone (the reference)."""
    reals = sorted(weights.items())
    return [INDEX[reals[i][0]] for i in maglev.build_ring(reals, SIZE)]


class _Bal:
    max_reals = 8
    maps = {abi.MAP_RINGS: "lb_rings"}


def _state(installed):
    """A balancer.State holding `installed`: {VIP number: (VIP key, weights of its record, ring)}."""
    st = balancer.State.__new__(balancer.State)
    st.bal, st.addrs = None, {}
    st.real_addr = {i: a for a, i in INDEX.items()}
    st.real_order = {i: (4, bytes(map(int, a.split(".")))) for a, i in INDEX.items()}
    st.vips, st.records, st.ring_ids, st.rings, st._decoded = {}, {}, {}, {}, {}  # pylint: disable=protected-access
    for num, (key, weights, ring) in installed.items():
        addr = key.split(":")[0]
        st.vips[key] = {"key": key, "address": addr, "port": 80, "protocol": "tcp", "vip_num": num, "flags": 0}
        rec = array.array("I", bytes(4 * _Bal.max_reals))
        rec[0] = 1000 + num
        for a, w in weights.items():
            rec[INDEX[a]] = w + 1
        st.records[num] = rec.tobytes()
        st.ring_ids[num] = 1000 + num
        st.rings[num] = abi.ring_slots(ring)
    return st


@pytest.fixture
def planner(monkeypatch):
    monkeypatch.setattr(maglev, "USE_KERNEL", False)
    maglev._canonical_ring.cache_clear()  # pylint: disable=protected-access
    builds = []

    def counting_job(job):
        builds.append(job)
        return maglev.build_ring_u32(*job)
    monkeypatch.setattr(vips, "_ring_job", counting_job)

    def run(state, desired):
        monkeypatch.setattr(abi, "ring_read_slots", lambda rings_map, num: state.rings.get(num))
        p = vips.Plan()
        nums = {v["key"]: state.vips[v["key"]]["vip_num"] if v["key"] in state.vips else 50 + i
                for i, v in enumerate(desired)}
        vips._plan_upserts(p, _Bal, state, desired, INDEX, nums, SIZE, False, False)  # pylint: disable=protected-access
        return {u["key"]: u for u in p.upserts}, builds
    return run


def test_vips_sharing_reals_build_once_and_each_gets_its_own_diff(planner):
    all_up = {a: 1 for a in REALS}
    fallen = dict(all_up, **{REALS[1]: 0})
    other = {REALS[0]: 3, REALS[2]: 1}
    installed = {}
    for n in range(6):  # six VIPs on one pool, one of them with other weights before
        before = other if n == 5 else all_up
        installed[n] = (vipspec.key_text("10.99.0.%d" % n, 80, "tcp"), before, _ring(before))
    installed[6] = (vipspec.key_text("10.99.0.6", 80, "tcp"), all_up, _ring(other))  # a ring not matching its record
    state = _state(installed)
    desired = vipspec.parse_vips([_vip(n, fallen) for n in range(7)] + [_vip(7, other)])
    ups, builds = planner(state, desired)
    assert len(builds) == 2  # the fallen pool once, `other` once (new VIP 7)
    new = _ring(fallen)
    for n in range(7):
        u = ups[vipspec.key_text("10.99.0.%d" % n, 80, "tcp")]
        old = installed[n][2]
        assert list(u["ring"]) == new
        assert u["ring_written"] and u["slots"] == sum(map(operator.ne, old, new)) > 0
    assert ups[desired[0]["key"]]["slots"] == ups[desired[4]["key"]]["slots"]
    assert ups[desired[5]["key"]]["slots"] != ups[desired[0]["key"]]["slots"]
    u7 = ups[desired[7]["key"]]
    assert u7["new"] and list(u7["ring"]) == _ring(other) and u7["slots"] == SIZE
    # Rings are shared read-only between upserts: one inner map each is still created from them.
    assert ups[desired[0]["key"]]["ring"] is ups[desired[3]["key"]]["ring"]


def test_an_installed_ring_equal_to_the_new_one_is_kept(planner):
    up = {a: 1 for a in REALS}
    doubled = {a: 2 for a in REALS}  # another record, the same ring
    key = vipspec.key_text("10.99.0.1", 80, "tcp")
    state = _state({1: (key, up, _ring(up)), 2: (vipspec.key_text("10.99.0.2", 80, "tcp"), up, _ring({REALS[0]: 1}))})
    ups, builds = planner(state, vipspec.parse_vips([_vip(1, doubled), _vip(2, doubled)]))
    assert len(builds) == 1
    assert not ups[key]["ring_written"] and ups[key]["ring"] is None and ups[key]["ring_id"] == 1001
    assert ups[key]["slots"] == 0
    assert ups[vipspec.key_text("10.99.0.2", 80, "tcp")]["ring_written"]


def test_slots_changed_counts_each_installed_ring_once_and_remembers_a_few(monkeypatch):
    new = array.array("I", [1] * 2000)
    olds = [abi.ring_slots([1] * (2000 - n) + [2] * n) for n in range(1, 7)]
    seen = []
    assert vips._slots_changed(seen, olds[0], new) == 1  # pylint: disable=protected-access
    assert vips._slots_changed(seen, olds[1], new) == 2  # pylint: disable=protected-access
    monkeypatch.setattr(vips, "operator", None)  # a count now would fail: the equal ring is found
    assert vips._slots_changed(seen, bytes(bytearray(olds[0])), new) == 1  # pylint: disable=protected-access
    monkeypatch.undo()
    for old in olds:
        vips._slots_changed(seen, old, new)  # pylint: disable=protected-access
    assert [n for _ring, n in seen] == [3, 4, 5, 6][-vips._COUNTED:]  # pylint: disable=protected-access


def test_ring_slots_layout_matches_ring_read():
    ring = [3, 0, 7, 65535]
    raw = abi.ring_slots(ring)
    assert len(raw) == 8 * len(ring)
    assert list(array.array("I", raw)[0::2]) == ring and not any(array.array("I", raw)[1::2])
    assert struct.unpack_from("=I", raw, 16)[0] == 7


def test_state_decodes_equal_records_once_and_hands_out_copies(monkeypatch):
    weights = {REALS[2]: 3, REALS[0]: 1, REALS[1]: 0}
    st = _state({1: ("10.99.0.1:80/tcp", weights, [1] * SIZE), 2: ("10.99.0.2:80/tcp", weights, [1] * SIZE),
                 3: ("10.99.0.3:80/tcp", {REALS[3]: 2}, [4] * SIZE)})
    st.vips["10.99.0.4:80/tcp"] = dict(st.vips["10.99.0.3:80/tcp"], key="10.99.0.4:80/tcp", vip_num=4)
    st.ring_ids[4] = 1004
    monkeypatch.setattr(balancer.State, "ring", lambda self, num: [0, 4, 2, 4])  # no record: the ring tells
    ring_id, rec = st.record(1)
    assert ring_id == 1001 and rec == {1: 1, 2: 0, 3: 3}
    rec[1] = 99  # a caller's change stays its own
    assert st.record(2) == (1002, {1: 1, 2: 0, 3: 3})
    assert len(st._decoded) == 1  # pylint: disable=protected-access
    want = [{"address": REALS[0], "weight": 1}, {"address": REALS[1], "weight": 0}, {"address": REALS[2], "weight": 3}]
    assert st.spec("10.99.0.1:80/tcp")["reals"] == want == st.spec("10.99.0.2:80/tcp")["reals"]
    st.spec("10.99.0.1:80/tcp")["reals"][0]["weight"] = 7
    assert st.spec("10.99.0.1:80/tcp")["reals"] == want
    assert st.spec("10.99.0.3:80/tcp")["reals"] == [{"address": REALS[3], "weight": 2}]
    assert len(st._decoded) == 2  # pylint: disable=protected-access
    by_ring = [{"address": REALS[1], "weight": None}, {"address": REALS[3], "weight": None}]
    assert st.spec("10.99.0.4:80/tcp")["reals"] == by_ring
    assert st.record(4) == (0, {})
