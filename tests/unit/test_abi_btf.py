"""engine/bpf/abi.py must match files/bpf/lb_abi.h as compiled: checked against balancer.o's BTF.

Structs: name, size, every field's name, offset and size. Maps: names, key/value types,
max_entries and flags from the BTF map definitions. Constants: every #define of the
header's balancer part. A change on one side only fails here.
"""
import ctypes
import json
import os
import re
import shutil
import subprocess

import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BPF_DIR = os.path.join(REPO, "files", "bpf")
OBJECT = os.path.join(BPF_DIR, abi.OBJECT_BALANCER)
HEADER = os.path.join(BPF_DIR, "lb_abi.h")


@pytest.fixture(scope="module")
def btf():
    if shutil.which("clang"):
        subprocess.run(["make", "-s", "-C", BPF_DIR, abi.OBJECT_BALANCER], check=True)
    if not os.path.exists(OBJECT):
        pytest.fail("%s missing and clang unavailable to build it" % OBJECT)
    if not shutil.which("bpftool"):
        pytest.fail("bpftool is needed to read BTF (Debian package: bpftool)")
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", OBJECT], check=True,
                         capture_output=True, text=True).stdout
    return {t["id"]: t for t in json.loads(out)["types"]}


def _strip(types, tid):
    """Skip typedef/const/volatile to the type that has a layout."""
    t = types[tid]
    while t["kind"] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
        t = types[t["type_id"]]
    return t


def _size(types, tid):
    t = _strip(types, tid)
    if t["kind"] == "ARRAY":
        return t["nr_elems"] * _size(types, t["type_id"])
    return t["size"]


def _structs(types):
    return {t["name"]: t for t in types.values() if t["kind"] == "STRUCT"}


def _maps(types):
    """{map name: {field: value}} from the BTF-defined .maps section."""
    sec = next(t for t in types.values() if t["kind"] == "DATASEC" and t["name"] == ".maps")
    maps = {}
    for v in sec["vars"]:
        var = types[v["type_id"]]
        maps[var["name"]] = _map_def(types, _strip(types, var["type_id"]))
    return maps


def _map_def(types, struct):
    d = {}
    for m in struct["members"]:
        target = _strip(types, types[m["type_id"]]["type_id"])  # every field is a pointer
        if m["name"] in ("type", "max_entries", "map_flags", "pinning"):
            d[m["name"]] = target["nr_elems"]  # __uint(x, N) is int (*x)[N]
        elif m["name"] in ("key", "value"):
            d[m["name"]] = target.get("name") if target["kind"] == "STRUCT" else ("int", _size(types, target["id"]))
        elif m["name"] == "values":  # __array(values, struct inner) is struct inner *values[]
            ptr = _strip(types, _strip(types, m["type_id"])["type_id"])
            d["inner"] = _map_def(types, _strip(types, ptr["type_id"]))
    return d


@pytest.mark.parametrize("name", sorted(abi.STRUCTS))
def test_struct_layout_matches_btf(btf, name):
    cls = abi.STRUCTS[name]
    structs = _structs(btf)
    assert name in structs, "struct %s is not in the object's BTF" % name
    s = structs[name]
    assert ctypes.sizeof(cls) == s["size"], "sizeof(struct %s)" % name
    got = [(f[0], getattr(cls, f[0]).offset, getattr(cls, f[0]).size) for f in cls._fields_]
    want = [(m["name"], m["bits_offset"] // 8, _size(btf, m["type_id"])) for m in s["members"]]
    assert got == want
    assert all(m["bits_offset"] % 8 == 0 for m in s["members"])  # no bitfields in the ABI


BPF_MAP_TYPE = {"HASH": 1, "ARRAY": 2, "PERCPU_ARRAY": 6, "LRU_HASH": 9, "ARRAY_OF_MAPS": 12}
EXPECTED_MAPS = {
    abi.MAP_ADDR_FILTER: ("ARRAY", abi.ADDR_FILTER_BITS // 64, ("int", 4), ("int", 8)),
    abi.MAP_VIP_ADDRS: ("HASH", abi.MAX_VIPS, "lb_addr", "lb_addr_meta"),
    abi.MAP_VIP_TABLE: ("ARRAY", abi.VIP_TABLE_SIZE, ("int", 4), "lb_vip_entry"),
    abi.MAP_REALS: ("ARRAY", abi.MAX_REALS, ("int", 4), "lb_real"),
    abi.MAP_RINGS: ("ARRAY_OF_MAPS", abi.MAX_VIPS, ("int", 4), None),
    abi.MAP_CONNS: ("ARRAY", abi.CONN_SETS, ("int", 4), "lb_conn_set6"),
    abi.MAP_CONNS4: ("ARRAY", abi.CONN_SETS, ("int", 4), "lb_conn_set4"),
    abi.MAP_CONFIG: ("ARRAY", 1, ("int", 4), "lb_config"),
    abi.MAP_VIP_STATS: ("PERCPU_ARRAY", abi.MAX_VIPS, ("int", 4), "lb_stats"),
    abi.MAP_REAL_STATS: ("PERCPU_ARRAY", abi.MAX_REALS, ("int", 4), "lb_stats"),
    abi.MAP_GLOBAL: ("PERCPU_ARRAY", 1, ("int", 4), "lb_global_stats"),
    abi.MAP_VIP_PAIRS: ("ARRAY", abi.MAX_VIPS, ("int", 4), "lb_vip_pairs"),
    abi.MAP_PAIR_STATS: ("PERCPU_ARRAY", abi.MAX_PAIRS, ("int", 4), "lb_stats"),
}


def test_maps_match_the_mirror(btf):
    maps = _maps(btf)
    assert set(maps) == set(EXPECTED_MAPS)
    mirrored = set(abi.STRUCTS)
    for name, (kind, entries, key, value) in EXPECTED_MAPS.items():
        d = maps[name]
        assert (d["type"], d["max_entries"], d["key"], d.get("value")) == (BPF_MAP_TYPE[kind], entries, key, value), name
        assert d.get("map_flags", 0) == 0, name
        for t in (d["key"], d.get("value")):
            assert not isinstance(t, str) or t in mirrored, "%s uses struct %s, not mirrored in abi.py" % (name, t)
    inner = maps[abi.MAP_RINGS]["inner"]
    assert inner == {"type": BPF_MAP_TYPE["ARRAY"], "max_entries": abi.RING_SIZE,
                     "key": ("int", abi.RING_INNER_KEY_SIZE), "value": ("int", abi.RING_INNER_VALUE_SIZE),
                     "map_flags": abi.RING_INNER_FLAGS}


def _header_defines():
    text = open(HEADER).read()
    text = text.split("decap ABI (owned by decap.c) begin")[0]  # the decap part has its own mirror
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    defines = {}
    for name, value in re.findall(r"^#define[ \t]+LB_(\w+)[ \t]+(\S.*?)[ \t]*$", text, flags=re.M):
        known = {"LB_" + k: v for k, v in defines.items()}
        defines[name] = eval(re.sub(r"\b(0x[0-9a-fA-F]+|\d+)U\b", r"\1", value), known)  # "(1U << 2)" -> 4
    return defines


def test_every_header_constant_is_mirrored():
    defines = _header_defines()
    assert {"RING_SIZE", "VIP_F_NO_SPORT", "CFG_F_PER_FLOW_SRC"} <= set(defines)  # the parser sees them
    for name, value in defines.items():
        assert getattr(abi, name, None) == value, "LB_%s = %r in lb_abi.h, abi.%s = %r" % (
            name, value, name, getattr(abi, name, None))
