"""Backend decap programs (files/bpf/decap.c) through BPF_PROG_TEST_RUN.

Every case asserts the return code, the exact output bytes (the expectation is built with scapy
independently of the program: the inner packet behind the original Ethernet header, ethertype
fixed) and which counter moved. Three program variants run the same cases:

- xdp        decap_xdp
- tc         decap_tc as built by the Makefile (on 6.3+ kernels, 4in6 uses the adjust_room
             decap flag)
- tc_compat  decap_tc built with -DDECAP_TC_NO_DECAP_FLAG: the Linux 6.1 path for 4in6
             (adjust_room + bpf_skb_change_proto), exercised here although this kernel is newer

Besides the hand-written cases, a small reference model (`model()`) states the documented rules in
Python; truncations at every length and a seeded fuzz run check the programs against it byte for
byte. The ABI mirror (engine/bpf/decap_abi.py) is checked against the object's BTF and the header.
"""

import errno
import json
import os
import random
import re
import shutil
import subprocess

import pytest

scapy_all = pytest.importorskip("scapy.all")
from scapy.all import ARP, Dot1AD, Dot1Q, Ether, ICMP, IP, IPOption_NOP, IPv6, Padding, Raw, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6ExtHdrHopByHop  # noqa: E402

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import decap_abi as A  # noqa: E402
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import libbpf  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BPF_DIR = os.path.join(REPO, "files", "bpf")
HEADER = os.path.join(BPF_DIR, "lb_abi.h")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="BPF_PROG_TEST_RUN needs root (CAP_BPF/CAP_NET_ADMIN)")

XDP_PASS = libbpf.XDP_PASS
TC_ACT_OK = 0

MAC_SRC = "02:00:00:00:00:01"
MAC_DST = "02:00:00:00:00:02"
LOCAL4, LOCAL6 = "10.0.0.2", "2001:db8::2"
OTHER4, OTHER6 = "10.0.0.99", "2001:db8::99"
PEER4, PEER6 = "10.0.0.1", "2001:db8::1"


# ---------------------------------------------------------------- objects
def _make_decap():
    subprocess.run(["make", "-s", "-C", BPF_DIR, "decap.o"], check=True, capture_output=True)
    return os.path.join(BPF_DIR, "decap.o")


def _compile_compat(out_dir):
    """decap.o with the 6.1-only tc path, built with the Makefile's compiler flags."""
    out = os.path.join(out_dir, "decap_compat.o")
    arch = os.uname().machine
    subprocess.run(
        ["clang", "-target", "bpf", "-O2", "-g", "-Wall", "-Werror",
         "-I/usr/include/%s-linux-gnu" % arch, "-DDECAP_TC_NO_DECAP_FLAG",
         "-c", os.path.join(BPF_DIR, "decap.c"), "-o", out],
        check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def decap_obj_path():
    return _make_decap()


@pytest.fixture(scope="session")
def compat_obj_path(tmp_path_factory):
    if not shutil.which("clang"):
        pytest.skip("clang not installed")
    return _compile_compat(str(tmp_path_factory.mktemp("decap-compat")))


class Loaded:
    """A loaded decap object with both local addresses configured."""

    def __init__(self, path):
        self.obj = libbpf.BpfObject(path, pin_maps=False)
        self.obj.load()
        self.locals = self.obj.map(A.MAP_LOCALS)
        self.stats_map = self.obj.map(A.MAP_STATS)
        for addr in (LOCAL4, LOCAL6):
            self.locals.update(A.local_key(addr), A.local_meta())

    def stats(self):
        return A.read_stats(self.stats_map)

    def close(self):
        self.obj.close()


class Variant:
    def __init__(self, name, loaded, prog, ok):
        self.name, self.loaded, self.ok = name, loaded, ok
        self.fd = loaded.obj.program_fd(prog)
        self.is_tc = prog == A.PROG_TC

    def run(self, frame):
        """Run once; return (retval, output bytes, {counter: (packets, bytes) delta})."""
        frame = bytes(frame)
        before = self.loaded.stats()
        res = libbpf.prog_test_run(self.fd, frame)
        after = self.loaded.stats()
        delta = {}
        for name in A.STAT_NAMES:
            dp = after[name]["packets"] - before[name]["packets"]
            db = after[name]["bytes"] - before[name]["bytes"]
            if dp or db:
                delta[name] = (dp, db)
        return res.retval, res.data, delta

    def __repr__(self):
        return self.name


@pytest.fixture(scope="module")
def loaded(decap_obj_path):
    lo = Loaded(decap_obj_path)
    yield lo
    lo.close()


@pytest.fixture(scope="module")
def loaded_compat(compat_obj_path):
    lo = Loaded(compat_obj_path)
    yield lo
    lo.close()


@pytest.fixture(params=["xdp", "tc", "tc_compat"])
def variant(request):
    if request.param == "xdp":
        return Variant("xdp", request.getfixturevalue("loaded"), A.PROG_XDP, XDP_PASS)
    if request.param == "tc":
        return Variant("tc", request.getfixturevalue("loaded"), A.PROG_TC, TC_ACT_OK)
    return Variant("tc_compat", request.getfixturevalue("loaded_compat"), A.PROG_TC, TC_ACT_OK)


# ---------------------------------------------------------------- packets
def eth(ethertype=None):
    if ethertype is None:
        return Ether(src=MAC_SRC, dst=MAC_DST)
    return Ether(src=MAC_SRC, dst=MAC_DST, type=ethertype)


def inner4_tcp():
    return IP(src="198.51.100.7", dst="192.0.2.80", ttl=61) / TCP(sport=40001, dport=80, flags="S", seq=1000)


def inner4_udp():
    return IP(src="198.51.100.7", dst="192.0.2.80", tos=0x10) / UDP(sport=40002, dport=53) / Raw(b"q" * 23)


def inner6_tcp():
    return IPv6(src="2001:db8:c::7", dst="2001:db8:80::80", hlim=60) / TCP(sport=40003, dport=443, flags="S")


def inner6_udp():
    return IPv6(src="2001:db8:c::7", dst="2001:db8:80::80", tc=0x20) / UDP(sport=40004, dport=53) / Raw(b"r" * 9)


def outer4(dst=LOCAL4, **kw):
    return IP(src=PEER4, dst=dst, proto=4, **kw)


def outer6(nh, dst=LOCAL6, **kw):
    return IPv6(src=PEER6, dst=dst, nh=nh, **kw)


# name -> (frame, expected output, counter)
DECAP_CASES = {
    "ipip_tcp": lambda: (eth() / outer4() / inner4_tcp(), eth(0x0800) / inner4_tcp(), "decap_v4"),
    "ipip_udp": lambda: (eth() / outer4() / inner4_udp(), eth(0x0800) / inner4_udp(), "decap_v4"),
    # Balancers may set DF on the outer header; only MF/offset make a fragment.
    "ipip_df": lambda: (eth() / outer4(flags="DF") / inner4_tcp(), eth(0x0800) / inner4_tcp(), "decap_v4"),
    "ip6ip6_tcp": lambda: (eth() / outer6(41) / inner6_tcp(), eth(0x86DD) / inner6_tcp(), "decap_v6"),
    "ip6ip6_udp": lambda: (eth() / outer6(41) / inner6_udp(), eth(0x86DD) / inner6_udp(), "decap_v6"),
    "4in6_tcp": lambda: (eth() / outer6(4) / inner4_tcp(), eth(0x0800) / inner4_tcp(), "decap_v6"),
    "4in6_udp": lambda: (eth() / outer6(4) / inner4_udp(), eth(0x0800) / inner4_udp(), "decap_v6"),
    # Ethernet padding behind the tunnel stays behind the inner packet: the stack trims to the
    # inner length itself, and the program must not read the padding as header.
    "ipip_padded": lambda: (eth() / outer4() / IP(src="198.51.100.7", dst="192.0.2.80", proto=253)
                            / Padding(b"\0" * 6),
                            eth(0x0800) / IP(src="198.51.100.7", dst="192.0.2.80", proto=253)
                            / Padding(b"\0" * 6), "decap_v4"),
}

VLAN_CASES = {
    "vlan_ipip": lambda: (eth() / Dot1Q(vlan=7, prio=5) / outer4() / inner4_tcp(),
                          eth(0x8100) / Dot1Q(vlan=7, prio=5, type=0x0800) / inner4_tcp(), "decap_v4"),
    "vlan_ip6ip6": lambda: (eth() / Dot1Q(vlan=7) / outer6(41) / inner6_tcp(),
                            eth(0x8100) / Dot1Q(vlan=7, type=0x86DD) / inner6_tcp(), "decap_v6"),
    "vlan_4in6": lambda: (eth() / Dot1Q(vlan=4094) / outer6(4) / inner4_udp(),
                          eth(0x8100) / Dot1Q(vlan=4094, type=0x0800) / inner4_udp(), "decap_v6"),
}


def _raw(pkt, offset, value):
    b = bytearray(bytes(pkt))
    b[offset] = value
    return bytes(b)


# name -> (frame, counter): the frame must come out byte-identical.
UNTOUCHED_CASES = {
    # not for us
    "ipip_other_dst": lambda: (eth() / outer4(dst=OTHER4) / inner4_tcp(), "not_for_us"),
    "ip6ip6_other_dst": lambda: (eth() / outer6(41, dst=OTHER6) / inner6_tcp(), "not_for_us"),
    "4in6_other_dst": lambda: (eth() / outer6(4, dst=OTHER6) / inner4_tcp(), "not_for_us"),
    "vlan_ipip_other_dst": lambda: (eth() / Dot1Q(vlan=7) / outer4(dst=OTHER4) / inner4_tcp(), "not_for_us"),
    # an IPv4 local address written as IPv6 is a different key
    "4in6_mapped_dst": lambda: (eth() / outer6(4, dst="::ffff:10.0.0.2") / inner4_tcp(), "not_for_us"),
    # not a tunnel at all
    "tcp4_to_local": lambda: (eth() / IP(src=PEER4, dst=LOCAL4) / TCP(dport=22, flags="S"), "pass"),
    "tcp6_to_local": lambda: (eth() / IPv6(src=PEER6, dst=LOCAL6) / TCP(dport=22, flags="S"), "pass"),
    "icmp4_to_local": lambda: (eth() / IP(src=PEER4, dst=LOCAL4) / ICMP(), "pass"),
    "arp": lambda: (Ether(src=MAC_SRC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=PEER4, pdst=LOCAL4), "pass"),
    "6in4_to_local": lambda: (eth() / IP(src=PEER4, dst=LOCAL4, proto=41) / inner6_tcp(), "pass"),
    "gre_to_local": lambda: (eth() / IP(src=PEER4, dst=LOCAL4, proto=47) / Raw(b"\0\0\x08\0" + bytes(inner4_tcp())),
                             "pass"),
    "v6_hopbyhop_then_tunnel": lambda: (eth() / IPv6(src=PEER6, dst=LOCAL6) / IPv6ExtHdrHopByHop(nh=41)
                                        / inner6_tcp(), "pass"),
    "qinq_8021ad": lambda: (eth() / Dot1AD(vlan=3) / Dot1Q(vlan=4) / outer4() / inner4_tcp(), "pass"),
    "vlan_in_vlan": lambda: (eth() / Dot1Q(vlan=3) / Dot1Q(vlan=4) / outer4() / inner4_tcp(), "pass"),
    "ethertype_only": lambda: (bytes(eth(0x0800)), "malformed"),
    # ours, but not stripped
    "ipip_options": lambda: (eth() / outer4(options=[IPOption_NOP()] * 4) / inner4_tcp(), "unsupported"),
    "ipip_first_fragment": lambda: (eth() / outer4(flags="MF") / inner4_tcp(), "unsupported"),
    "ipip_later_fragment": lambda: (eth() / outer4(frag=3) / Raw(b"x" * 40), "unsupported"),
    # malformed
    "ipip_tot_len_beyond_frame": lambda: (eth() / outer4(len=200) / inner4_tcp(), "malformed"),
    "ipip_tot_len_below_two_headers": lambda: (eth() / outer4(len=39) / inner4_tcp(), "malformed"),
    "ipip_inner_is_v6": lambda: (eth() / outer4() / inner6_tcp(), "malformed"),
    "ipip_version_6_on_0800": lambda: (eth(0x0800) / outer6(4) / inner4_tcp(), "malformed"),
    "ipip_ihl_4": lambda: (_raw(eth() / outer4() / inner4_tcp(), 14, 0x44), "malformed"),
    "ip6ip6_plen_beyond_frame": lambda: (eth() / outer6(41, plen=500) / inner6_tcp(), "malformed"),
    "ip6ip6_plen_below_inner": lambda: (eth() / outer6(41, plen=39) / inner6_tcp(), "malformed"),
    "4in6_inner_is_v6": lambda: (eth() / outer6(4) / inner6_tcp(), "malformed"),
    "ip6ip6_version_4_on_86dd": lambda: (eth(0x86DD) / IP(src=PEER4, dst=LOCAL4, proto=41) / inner6_tcp(),
                                         "malformed"),
}


# ---------------------------------------------------------------- reference model
def model(frame, tc, locals4=(LOCAL4,), locals6=(LOCAL6,)):
    """The documented rules (docs/decap.md) -> (counter, output bytes). Independent of the C code."""
    import ipaddress

    f = bytes(frame)
    n = len(f)
    l4 = {ipaddress.ip_address(a).packed for a in locals4}
    l6 = {ipaddress.ip_address(a).packed for a in locals6}
    if n < 14:
        return "malformed", f
    proto, l2, vlan = f[12:14], 14, False
    if proto == b"\x81\x00":
        if n < 18:
            return "malformed", f
        proto, l2, vlan = f[16:18], 18, True
    if proto == b"\x08\x00":
        if n < l2 + 20 or f[l2] >> 4 != 4 or f[l2] & 15 < 5:
            return "malformed", f
        if f[l2 + 9] != 4:
            return "pass", f
        if f[l2 + 16:l2 + 20] not in l4:
            return "not_for_us", f
        if f[l2] & 15 != 5 or int.from_bytes(f[l2 + 6:l2 + 8], "big") & 0x3FFF:
            return "unsupported", f
        tot = int.from_bytes(f[l2 + 2:l2 + 4], "big")
        if tot < 40 or tot > n - l2 or n < l2 + 40 or f[l2 + 20] >> 4 != 4:
            return "malformed", f
        counter, outer, inner_type = "decap_v4", 20, b"\x08\x00"
    elif proto == b"\x86\xdd":
        if n < l2 + 40 or f[l2] >> 4 != 6:
            return "malformed", f
        nh = f[l2 + 6]
        if nh == 41:
            version, imin, inner_type = 6, 40, b"\x86\xdd"
        elif nh == 4:
            version, imin, inner_type = 4, 20, b"\x08\x00"
        else:
            return "pass", f
        if f[l2 + 24:l2 + 40] not in l6:
            return "not_for_us", f
        plen = int.from_bytes(f[l2 + 4:l2 + 6], "big")
        if plen < imin or plen > n - l2 - 40 or n < l2 + 40 + imin or f[l2 + 40] >> 4 != version:
            return "malformed", f
        counter, outer = "decap_v6", 40
    else:
        return "pass", f
    if tc and vlan:
        return "unsupported", f
    return counter, f[:l2 - 2] + inner_type + f[l2 + outer:]


def _refused_by_test_run(variant, frame):
    """Whether BPF_PROG_TEST_RUN itself (the kernel, not the program) may refuse this frame.

    Always under 14 bytes; for tc on recent kernels (6.18 here, not 6.1) also when the ethertype
    announces IPv4/IPv6 but the frame lacks that header. Such frames cannot be injected here.
    """
    if len(frame) < 14:
        return True
    if variant.is_tc:
        need = {b"\x08\x00": 34, b"\x86\xdd": 54}.get(bytes(frame[12:14]), 14)
        return len(frame) < need
    return False


def _check_against_model(variant, frame):
    try:
        retval, out, delta = variant.run(frame)
    except libbpf.BpfError as exc:
        assert exc.errno == errno.EINVAL and _refused_by_test_run(variant, frame), exc
        return "refused"
    counter, expected = model(frame, variant.is_tc)
    assert retval == variant.ok
    assert delta == {counter: (1, len(frame))}, (bytes(frame).hex(), delta, counter)
    assert out == expected, bytes(frame).hex()
    return counter


# ---------------------------------------------------------------- tests: exact bytes
@pytest.mark.parametrize("case", sorted(DECAP_CASES))
def test_decapsulates_to_exact_bytes(variant, case):
    frame, expected, counter = DECAP_CASES[case]()
    retval, out, delta = variant.run(frame)
    assert retval == variant.ok
    assert out == bytes(expected)
    assert delta == {counter: (1, len(frame))}
    assert model(frame, variant.is_tc) == (counter, bytes(expected))


@pytest.mark.parametrize("case", sorted(VLAN_CASES))
def test_vlan_tag_kept(variant, case):
    """XDP keeps the in-packet 802.1Q tag and fixes the ethertype inside it.

    tc never sees a received tag in the packet (the stack has moved it into skb metadata, where
    it stays); an in-packet tag at tc can only be a stacked one and is left alone.
    """
    frame, expected, counter = VLAN_CASES[case]()
    retval, out, delta = variant.run(frame)
    assert retval == variant.ok
    if variant.is_tc:
        assert out == bytes(frame)
        assert delta == {"unsupported": (1, len(frame))}
    else:
        assert out == bytes(expected)
        assert delta == {counter: (1, len(frame))}


@pytest.mark.parametrize("case", sorted(UNTOUCHED_CASES))
def test_passes_untouched(variant, case):
    frame, counter = UNTOUCHED_CASES[case]()
    try:
        retval, out, delta = variant.run(frame)
    except libbpf.BpfError as exc:
        if exc.errno == errno.EINVAL and _refused_by_test_run(variant, bytes(frame)):
            pytest.skip("this kernel's BPF_PROG_TEST_RUN refuses the frame for %s" % variant)
        raise
    assert retval == variant.ok
    assert out == bytes(frame)
    assert delta == {counter: (1, len(bytes(frame)))}
    assert model(frame, variant.is_tc) == (counter, bytes(frame))


def test_local_address_map_is_the_switch(loaded):
    """Removing an address stops decapsulation for it at once; adding it back resumes it."""
    xdp = Variant("xdp", loaded, A.PROG_XDP, XDP_PASS)
    frame, expected, _unused = DECAP_CASES["ipip_tcp"]()
    key = A.local_key(LOCAL4)
    assert loaded.locals.delete(key)
    try:
        retval, out, delta = xdp.run(frame)
        assert (retval, out, delta) == (XDP_PASS, bytes(frame), {"not_for_us": (1, len(frame))})
        # The v6 address is untouched by the v4 removal.
        f6, e6, _unused = DECAP_CASES["ip6ip6_tcp"]()
        assert xdp.run(f6)[1] == bytes(e6)
    finally:
        loaded.locals.update(key, A.local_meta())
    assert xdp.run(frame)[1] == bytes(expected)


# ---------------------------------------------------------------- tests: truncation and fuzz
TRUNCATION_SOURCES = ["ipip_tcp", "ip6ip6_tcp", "4in6_udp", "vlan_4in6", "ipip_other_dst"]


@pytest.mark.parametrize("source", TRUNCATION_SOURCES)
def test_truncated_at_every_length(variant, source):
    """Every prefix from a bare Ethernet header (the kernel's test-run minimum) to one byte short.

    A tunnel packet cut anywhere is passed untouched and counted malformed (or not_for_us once the
    outer destination is readable and not ours); never stripped, never an out-of-bounds read (the
    verifier proves the latter; this proves the former).
    """
    table = dict(DECAP_CASES, **VLAN_CASES)
    if source in table:
        frame = bytes(table[source]()[0])
    else:
        frame = bytes(UNTOUCHED_CASES[source]()[0])
    seen = set()
    for length in range(14, len(frame)):
        counter = _check_against_model(variant, frame[:length])
        assert counter in ("malformed", "not_for_us", "refused"), length
        seen.add(counter)
    if source.endswith("other_dst"):
        assert "not_for_us" in seen
    else:
        assert "malformed" in seen


def test_shorter_than_ethernet_is_refused_by_test_run(loaded):
    """Documents the test limit: BPF_PROG_TEST_RUN itself rejects frames under 14 bytes, so the
    programs' own "shorter than Ethernet" branch (malformed, passed) cannot be driven from here."""
    with pytest.raises(libbpf.BpfError):
        libbpf.prog_test_run(loaded.obj.program_fd(A.PROG_XDP), b"\0" * 13)


def _fuzz_frames(seed, count):
    rng = random.Random(seed)
    bases = [bytes(f()[0]) for f in list(DECAP_CASES.values()) + list(VLAN_CASES.values())]
    bases += [bytes(f()[0]) for f in UNTOUCHED_CASES.values()]
    hot = {  # offsets (after L2) whose bytes decide the path: version/IHL, lengths, proto, frag, dst
        4: [0, 2, 3, 6, 7, 9, 16, 17, 18, 19, 20],
        6: [0, 4, 5, 6, 24, 39, 40],
    }
    for _unused in range(count):
        f = bytearray(rng.choice(bases))
        l2 = 18 if f[12:14] == b"\x81\x00" else 14
        for _unused in range(rng.randint(1, 3)):
            r = rng.random()
            if r < 0.6:
                fam = f[l2] >> 4 if len(f) > l2 else 4
                offs = hot.get(fam, hot[4])
                pos = l2 + rng.choice(offs)
            elif r < 0.8:
                pos = rng.randrange(len(f))
            else:
                if len(f) > 15:
                    del f[rng.randrange(15, len(f)):]
                continue
            if pos < len(f):
                f[pos] = rng.choice([0, 1, 4, 5, 6, 0x29, 0x40, 0x45, 0x46, 0x60, 0xFF, rng.randrange(256)])
        yield bytes(f)


def test_fuzz_matches_model(variant):
    """Seeded mutations of every case: output is either byte-identical or exactly the stripped
    frame, and the counter moved is the one the rules predict."""
    outcomes = {}
    for frame in _fuzz_frames(seed=0xDECA, count=400):
        c = _check_against_model(variant, frame)
        outcomes[c] = outcomes.get(c, 0) + 1
    outcomes.pop("refused", None)
    # The mutations must reach the interesting branches, or the test proves little.
    for name in ("decap_v4", "decap_v6", "pass", "not_for_us", "malformed", "unsupported"):
        assert outcomes.get(name, 0) > 0, outcomes
    assert "error" not in outcomes


# ---------------------------------------------------------------- tests: ABI mirror
def _btf_structs(obj_path):
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", obj_path],
                         check=True, capture_output=True, text=True).stdout
    types = {t["id"]: t for t in json.loads(out)["types"]}
    return types, {t["name"]: t for t in types.values() if t["kind"] == "STRUCT" and t.get("name")}


def _btf_size(types, type_id):
    t = types[type_id]
    while t["kind"] in ("TYPEDEF", "VOLATILE", "CONST"):
        t = types[t["type_id"]]
    if t["kind"] == "ARRAY":
        return t["nr_elems"] * _btf_size(types, t["type_id"])
    return t["size"]


@pytest.mark.skipif(not shutil.which("bpftool"), reason="bpftool not installed")
@pytest.mark.parametrize("struct_name", sorted(A.STRUCTS))
def test_abi_mirror_matches_btf(decap_obj_path, struct_name):
    import ctypes

    types, structs = _btf_structs(decap_obj_path)
    btf = structs[struct_name]
    py = A.STRUCTS[struct_name]
    assert btf["size"] == ctypes.sizeof(py)
    got = [(m["name"], m["bits_offset"] // 8, _btf_size(types, m["type_id"])) for m in btf["members"]]
    want = [(name, getattr(py, name).offset, getattr(py, name).size) for name, _unused in py._fields_]
    assert got == want


def test_abi_constants_match_header():
    text = open(HEADER).read()
    begin = text.index("/* ---- decap ABI (owned by decap.c) begin ---- */")
    end = text.index("/* ---- decap ABI end ---- */")
    section = text[begin:end]
    defines = dict(re.findall(r"#define\s+(DECAP_\w+)\s+(\d+)", section))
    assert defines, "no DECAP_* defines found in the decap section of lb_abi.h"
    for name, value in defines.items():
        assert getattr(A, name) == int(value), name
    stat_defines = sorted((int(v), k) for k, v in defines.items() if k.startswith("DECAP_STAT_") and k != "DECAP_STAT_MAX")
    assert [i for i, _unused in stat_defines] == list(range(A.DECAP_STAT_MAX))
    assert [k[len("DECAP_STAT_"):].lower() for _unused, k in stat_defines] == list(A.STAT_NAMES)
    fam = dict(re.findall(r"#define\s+LB_FAMILY_(V\d)\s+(\d+)", text))
    assert (A.FAMILY_V4, A.FAMILY_V6) == (int(fam["V4"]), int(fam["V6"]))


def test_abi_maps_as_loaded(loaded):
    import ctypes

    li = loaded.locals.info
    si = loaded.stats_map.info
    assert (li["type"], li["key_size"], li["value_size"], li["max_entries"]) == (
        libbpf.BPF_MAP_TYPE_HASH, ctypes.sizeof(A.DecapLocalKey), ctypes.sizeof(A.DecapLocalMeta),
        A.DECAP_MAX_LOCALS)
    assert (si["type"], si["key_size"], si["value_size"], si["max_entries"]) == (
        libbpf.BPF_MAP_TYPE_PERCPU_ARRAY, 4, ctypes.sizeof(A.DecapStat), A.DECAP_STAT_MAX)
    assert sorted(loaded.obj.program_names()) == sorted([A.PROG_XDP, A.PROG_TC])


def test_local_key_round_trip():
    family = (4).to_bytes(4, "little" if _little() else "big")
    assert A.local_key("10.0.0.2") == bytes([10, 0, 0, 2]) + b"\0" * 12 + family
    for addr in ("10.0.0.2", "2001:db8::2", "fe80::1"):
        assert A.parse_local_key(A.local_key(addr)) == addr
    with pytest.raises(ValueError):
        A.local_key("::ffff:10.0.0.2")
    with pytest.raises(ValueError):
        A.local_meta(1)
    with pytest.raises(ValueError):
        A.parse_local_key(b"\0" * 20)


def _little():
    import sys

    return sys.byteorder == "little"
