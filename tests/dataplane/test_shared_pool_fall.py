# SPDX-License-Identifier: GPL-3.0-or-later
"""A real shared by many VIPs falls and rises through the health overlay (the agent's path):
every VIP gets the Maglev ring of its effective weights in an inner map of its own, and the
slot counts reported are the per-VIP differences of the installed rings."""
import operator
import os

from lbtest import BPF_DIR

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer, maglev, overlay, vips, vipspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi, libbpf

POOL = ["10.30.1.1", "10.30.1.2", "10.30.1.3"]


def _request():
    shared = [{"address": "192.0.2.%d" % (10 + n), "port": 80, "reals": [{"address": a, "weight": 1} for a in POOL]}
              for n in range(12)]
    other = [{"address": "192.0.2.%d" % (40 + n), "port": 443, "reals": [{"address": "10.30.2.1", "weight": 1}]}
             for n in range(2)]
    return vipspec.parse_vips(shared + other)


def _rings(pin_root):
    with balancer.Balancer(pin_root) as bal:
        st = bal.read()
        out = {}
        for key, v in st.vips.items():
            num = v["vip_num"]
            assert st.ring_ok(num), key
            out[key] = (st.ring_ids[num], [st.real_addr.get(i) for i in st.ring(num)])
        return out


def _expected(weights):
    reals = sorted(weights.items())
    return [reals[i][0] for i in maglev.build_ring(reals, abi.RING_SIZE)]


def _through(doc):
    return lambda vip_list, state: overlay.apply(vip_list, doc, state)[0]


def test_a_shared_real_falls_and_rises_in_every_vip(bpf_objects, bpffs_dir):
    with libbpf.BpfObject(os.path.join(BPF_DIR, "balancer.o"), pin_root_path=bpffs_dir) as obj:
        obj.load()
    desired = _request()
    vips.ensure(bpffs_dir, desired)
    before = _rings(bpffs_dir)
    down = {"version": 1, "vips": {}, "reals": {v["key"]: {POOL[1]: {"state": "down"}} for v in desired}}
    res = vips.ensure(bpffs_dir, desired, overlay=_through(down))
    fallen = _rings(bpffs_dir)
    shared = [v["key"] for v in desired if v["port"] == 80]
    new = _expected({POOL[0]: 1, POOL[2]: 1})
    assert res["summary"]["rings_written"] == len(shared)
    for key in shared:
        assert fallen[key][1] == new
    assert len({ring_id for ring_id, _ring in fallen.values()}) == len(desired)  # one inner map per VIP
    assert {k: fallen[k] for k in fallen if k not in shared} == {k: before[k] for k in before if k not in shared}
    changed = {c["key"]: c["ring_slots_changed"] for c in res["vips"]}
    for key in shared:
        assert changed[key] == sum(map(operator.ne, before[key][1], fallen[key][1])) > 0
    up = dict(down, reals={k: {POOL[1]: {"state": "up"}} for k in down["reals"]})
    res = vips.ensure(bpffs_dir, desired, overlay=_through(up))
    back = _rings(bpffs_dir)
    assert res["summary"]["ring_slots_changed"] == sum(changed.values())
    assert {k: r for k, (_id, r) in back.items()} == {k: r for k, (_id, r) in before.items()}
