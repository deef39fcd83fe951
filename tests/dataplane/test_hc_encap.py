"""Health-check forwarding (files/bpf/hc_encap.c) through BPF_PROG_TEST_RUN.

A marked packet must leave with exactly the outer header balancer.c would give a client's packet
to the same real (IPIP, IP6IP6, 4in6); anything unmarked or marked by someone else must leave
byte-identical. Expectations are built with scapy, independently of the program. The ABI mirror
(engine/bpf/hc_abi.py) is checked against the object's BTF and the header.
"""

import ctypes
import json
import os
import re
import shutil
import struct
import subprocess

import pytest

pytest.importorskip("scapy.all")
from scapy.all import Ether, IP, IPv6, TCP, UDP  # noqa: E402

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import hc_abi as A  # noqa: E402
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import libbpf  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BPF_DIR = os.path.join(REPO, "files", "bpf")
HEADER = os.path.join(BPF_DIR, "lb_abi.h")
TC_ACT_OK, TC_ACT_SHOT = 0, 2
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
BAL4, BAL6 = "10.20.1.2", "fd00:20:1::2"
REAL4, REAL6 = "10.30.1.2", "fd00:30:1::2"
VIP4, VIP6 = "10.99.0.10", "fd00:99::10"
MARK4, MARK6 = 0x58480001, 0x58480002


@pytest.fixture(scope="module")
def prog():
    subprocess.run(["make", "-s", "-C", BPF_DIR, A.OBJECT], check=True, capture_output=True)
    obj = libbpf.BpfObject(os.path.join(BPF_DIR, A.OBJECT), pin_maps=False).load()
    reals = obj.map(A.MAP_REALS)
    reals.update(A.mark_key(MARK4), A.real_value(BAL4, REAL4))
    reals.update(A.mark_key(MARK6), A.real_value(BAL6, REAL6))
    yield obj
    obj.close()


def _run(obj, frame, mark):
    # struct __sk_buff: len, pkt_type, then mark (the kernel wants the first two zero).
    ctx = bytes(8) + struct.pack("=I", mark)
    res = libbpf.prog_test_run(obj.program_fd(A.PROG), bytes(frame), ctx=ctx)
    return res.retval, res.data


def _stats(obj):
    return {k: v["packets"] for k, v in A.read_stats(obj.map(A.MAP_STATS)).items()}


def _syn4():
    return IP(src=BAL4, dst=VIP4, id=7) / TCP(sport=40000, dport=80, flags="S", seq=1)


def _syn6():
    return IPv6(src=BAL6, dst=VIP6) / TCP(sport=40000, dport=80, flags="S", seq=1)


def test_ipip_for_a_v4_real(prog):
    inner = _syn4()
    before = _stats(prog)
    rc, out = _run(prog, Ether(**MACS) / inner, MARK4)
    want = Ether(**MACS) / IP(src=BAL4, dst=REAL4, id=0, flags="DF", ttl=64, proto=4) / inner
    assert rc == TC_ACT_OK
    assert out == bytes(want)
    assert _stats(prog)["encap_v4"] == before["encap_v4"] + 1


def test_ip6ip6_and_4in6_for_a_v6_real(prog):
    for inner, nh in ((_syn6(), 41), (_syn4(), 4)):
        rc, out = _run(prog, Ether(**MACS) / inner, MARK6)
        want = Ether(type=0x86DD, **MACS) / IPv6(src=BAL6, dst=REAL6, hlim=64, nh=nh, plen=len(inner)) / inner
        assert rc == TC_ACT_OK
        assert out == bytes(want), inner.summary()


def test_unmarked_and_foreign_marks_pass_untouched(prog):
    frame = bytes(Ether(**MACS) / IP(src=BAL4, dst=VIP4) / UDP(sport=1, dport=53))
    for mark in (0, 1, MARK4 + 100, 0xffffffff):
        assert _run(prog, frame, mark) == (TC_ACT_OK, frame)


def test_v6_inside_a_v4_real_is_dropped_not_sent_unwrapped(prog):
    before = _stats(prog)
    rc, _out = _run(prog, Ether(**MACS) / _syn6(), MARK4)
    assert rc == TC_ACT_SHOT
    assert _stats(prog)["error"] == before["error"] + 1


def test_real_value_refuses_a_family_mix():
    with pytest.raises(ValueError):
        A.real_value(BAL4, REAL6)


@pytest.mark.skipif(not shutil.which("bpftool"), reason="bpftool not installed")
def test_abi_mirror_matches_btf():
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", os.path.join(BPF_DIR, A.OBJECT)],
                         check=True, capture_output=True, text=True).stdout
    types = {t["id"]: t for t in json.loads(out)["types"]}
    btf = next(t for t in types.values() if t["kind"] == "STRUCT" and t.get("name") == "hc_real")
    assert btf["size"] == ctypes.sizeof(A.HcReal)
    got = [(m["name"], m["bits_offset"] // 8) for m in btf["members"]]
    assert got == [(name, getattr(A.HcReal, name).offset) for name, _unused in A.HcReal._fields_]


def test_abi_constants_match_header():
    text = open(HEADER).read()
    section = text[text.index("health-check encapsulation ABI (owned by hc_encap.c) begin"):
                   text.index("health-check encapsulation ABI end")]
    defines = dict(re.findall(r"#define\s+(HC_\w+)\s+(\d+)", section))
    assert set(defines) >= {"HC_MAX_REALS", "HC_STAT_MAX"}
    for name, value in defines.items():
        assert getattr(A, name) == int(value), name
    stats = sorted((int(v), k) for k, v in defines.items() if k.startswith("HC_STAT_") and k != "HC_STAT_MAX")
    assert [k[len("HC_STAT_"):].lower() for _unused, k in stats] == list(A.STAT_NAMES)
