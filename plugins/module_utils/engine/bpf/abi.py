"""Python mirror of files/bpf/lb_abi.h: the balancer's map names, structs, flags and sizes.

tests/unit/test_abi_btf.py checks every struct here against the BTF of the built balancer.o
and every constant against the header, so the two cannot drift. Change both together.

Conventions (as in the header): addresses are 16 network-order bytes plus a family
(FAMILY_V4: IPv4 in the first 4 bytes, rest zero); ports are network order. Network-order
fields are byte arrays here, host-order ones plain integers, so nothing depends on the
host's endianness.

Public API
----------
Constants: MAX_VIPS, MAX_REALS, RING_SIZE, CONN_TABLE_SIZE (build defaults; the loaded
object's map max_entries are authoritative), FAMILY_*, ADDR_F_*, VIP_F_*, CFG_F_*,
MAP_* (map names), PROG_BALANCER, OBJECT_BALANCER.
Structs (ctypes; bytes(s) is the map key/value): LbAddr, LbAddrMeta, LbVipKey, LbVipMeta, LbVipEntry,
LbReal, LbFlow, LbFlow4, LbConn4, LbConn6, LbConnSet4, LbConnSet6, LbConfig, LbStats, LbGlobalStats,
LbVipPairs;
STRUCTS maps C name -> class.
Builders: ip_bytes(ip) -> (16 bytes, family), addr_key(ip), vip_key(ip, port, proto), vip_meta(num, flags), real(ip),
conn_key(src, dst, sport, dport, proto) -> (MAP_CONNS4 | MAP_CONNS, key), config(if_mac, gw_mac, ...).
Connection table: two set-associative arrays, CONN_MAPS = (lb_conns4: LbConnSet4 values,
lb_conns: LbConnSet6 values). conn_set_index(key) -> set, conn_get(conns_map, key) -> real index
| None, conn_real_refs(conns_map) -> set of real indices recorded. jhash_2words/3words/4words and
jhash_final mirror the kernel's, as balancer.c uses them.
Decoders: LbAddr/LbReal/LbVipKey/LbFlow .ip-style properties, from_bytes(cls, raw).
VIPs (never write lb_vip_table directly): vip_set(table_map, key, meta), vip_delete(table_map,
key) -> bool, vip_get(table_map, key) -> LbVipMeta | None, vips(table_map) -> [(key, meta)].
Address filter: addr_filter_sync(filter_map, addresses) rewrites the bitmap for the full set of
VIP addresses (call it with the new set BEFORE adding VIPs on a new address, and AFTER removing
the last VIP of an address); addr_filter_bit(ip) -> (word, bit).
Readers (per-CPU values summed): read_stats(map, key_index, cls=LbStats) -> dict,
global_stats(map) -> dict, sum_percpu(blob, fields, ncpu) -> [array per field] of a batch read.
Rings: ring_replace(rings_map, vip_num, ring, on_step=None) swaps in a new ring atomically (or
ring_new(ring) for each, then rings_install(rings_map, {vip_num: inner}) for many in one batch);
ring_read(rings_map, vip_num) -> list | None; ring_read_slots(rings_map, vip_num) -> bytes | None
(the same ring as the raw mmap layout ring_slots(values) gives: many rings compare without
decoding); ring_remove(rings_map, vip_num).
"""

import array
import ctypes
import errno
import ipaddress
import operator
import socket
import struct

from . import libbpf

# ---- build-time sizes (defaults of lb_abi.h) ----
MAX_VIPS = 512
MAX_REALS = 4096
RING_SIZE = 65537
CONN_TABLE_SIZE = 65536
CONN_WAYS = 4
CONN_SETS = CONN_TABLE_SIZE // CONN_WAYS
CONN_MAGIC = 0x434F4E4E
CONN_HASH_SEED = 0x6C62636E
ADDR_FILTER_SHIFT = 14
ADDR_FILTER_BITS = 1 << ADDR_FILTER_SHIFT
ADDR_FILTER_MULT = 0x9E3779B1
VIP_TABLE_SHIFT = 11
VIP_TABLE_SIZE = 1 << VIP_TABLE_SHIFT
VIP_PROBES = 4
VIP_ENTRY_MAGIC = 0x5649504B
MAX_PAIRS = 65536  # pair ids are 16 bits; 0 is "unattributed"

FAMILY_V4 = 4
FAMILY_V6 = 6

ADDR_F_NO_ECHO = 1 << 0
VIP_F_NO_SPORT = 1 << 0
VIP_F_NO_CONN_TABLE = 1 << 1
VIP_F_DPORT_HASH = 1 << 2
CFG_F_PER_FLOW_SRC = 1 << 0

RING_INNER_KEY_SIZE = 4
RING_INNER_VALUE_SIZE = 4
RING_INNER_FLAGS = 1024  # BPF_F_MMAPABLE: filled through mmap

PROG_BALANCER = "xdp_balancer"
OBJECT_BALANCER = "balancer.o"
MAP_ADDR_FILTER = "lb_addr_filter"
MAP_VIP_ADDRS = "lb_vip_addrs"
MAP_VIP_TABLE = "lb_vip_table"
MAP_REALS = "lb_reals"
MAP_RINGS = "lb_rings"
MAP_CONNS = "lb_conns"    # IPv6 flows, key LbFlow
MAP_CONNS4 = "lb_conns4"  # IPv4 flows, key LbFlow4
CONN_MAPS = (MAP_CONNS4, MAP_CONNS)
MAP_CONFIG = "lb_config"
MAP_VIP_STATS = "lb_vip_stats"
MAP_REAL_STATS = "lb_real_stats"
MAP_GLOBAL = "lb_global"
MAP_VIP_PAIRS = "lb_vip_pairs"    # by vip_num: LbVipPairs (pair id per real index)
MAP_PAIR_STATS = "lb_pair_stats"  # by pair id: LbStats per CPU

PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}

_u8, _u32, _u64 = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_uint64


def ip_bytes(ip):
    """(16 network-order bytes, family) for an address string or ipaddress object."""
    ip = ipaddress.ip_address(ip)
    if ip.version == 4:
        return ip.packed + bytes(12), FAMILY_V4
    return ip.packed, FAMILY_V6


def _ip(raw16, family):
    raw16 = bytes(raw16)
    if family == FAMILY_V4:
        return ipaddress.IPv4Address(raw16[:4])
    if family == FAMILY_V6:
        return ipaddress.IPv6Address(raw16)
    return None


def _port(n):
    return struct.pack("!H", n)


def _proto(p):
    return PROTOS[p.lower()] if isinstance(p, str) else int(p)


class _Struct(ctypes.Structure):
    _c_name_ = None

    @classmethod
    def from_bytes(cls, raw):
        return cls.from_buffer_copy(bytes(raw)[:ctypes.sizeof(cls)])

    def to_dict(self):
        return {name: (bytes(getattr(self, name)) if isinstance(getattr(self, name), ctypes.Array)
                       else getattr(self, name)) for name, _unused in self._fields_}


class LbAddr(_Struct):
    _c_name_ = "lb_addr"
    _fields_ = [("addr", _u8 * 16), ("family", _u32)]

    @property
    def ip(self):
        return _ip(self.addr, self.family)


class LbAddrMeta(_Struct):
    _c_name_ = "lb_addr_meta"
    _fields_ = [("flags", _u32)]


class LbVipKey(_Struct):
    _c_name_ = "lb_vip_key"
    _fields_ = [("addr", _u8 * 16), ("port", _u8 * 2), ("proto", _u8), ("family", _u8)]

    @property
    def ip(self):
        return _ip(self.addr, self.family)

    @property
    def port_num(self):
        return struct.unpack("!H", bytes(self.port))[0]


class LbVipMeta(_Struct):
    _c_name_ = "lb_vip_meta"
    _fields_ = [("vip_num", _u32), ("flags", _u32)]


class LbVipEntry(_Struct):
    _c_name_ = "lb_vip_entry"
    _fields_ = [("key", LbVipKey), ("meta", LbVipMeta), ("check", _u32)]


class LbReal(_Struct):
    _c_name_ = "lb_real"
    _fields_ = [("addr", _u8 * 16), ("family", _u32)]

    @property
    def ip(self):
        """The real's address, or None for a free slot."""
        return _ip(self.addr, self.family)


class LbFlow(_Struct):
    _c_name_ = "lb_flow"
    _fields_ = [("src", _u8 * 16), ("dst", _u8 * 16), ("sport", _u8 * 2), ("dport", _u8 * 2),
                ("proto", _u8), ("family", _u8), ("pad", _u8 * 2)]

    @property
    def src_ip(self):
        return _ip(self.src, self.family)

    @property
    def dst_ip(self):
        return _ip(self.dst, self.family)


class LbFlow4(_Struct):
    _c_name_ = "lb_flow4"
    _fields_ = [("src", _u8 * 4), ("dst", _u8 * 4), ("sport", _u8 * 2), ("dport", _u8 * 2),
                ("proto", _u8), ("pad", _u8 * 3)]

    @property
    def src_ip(self):
        return ipaddress.IPv4Address(bytes(self.src))

    @property
    def dst_ip(self):
        return ipaddress.IPv4Address(bytes(self.dst))


class LbConn4(_Struct):
    _c_name_ = "lb_conn4"
    _fields_ = [("flow", LbFlow4), ("real_idx", _u32), ("atime", _u32), ("check", _u32), ("pad", _u32)]


class LbConn6(_Struct):
    _c_name_ = "lb_conn6"
    _fields_ = [("flow", LbFlow), ("real_idx", _u32), ("atime", _u32), ("check", _u32), ("pad", _u32)]


class LbConnSet4(_Struct):
    _c_name_ = "lb_conn_set4"
    _fields_ = [("way", LbConn4 * CONN_WAYS)]


class LbConnSet6(_Struct):
    _c_name_ = "lb_conn_set6"
    _fields_ = [("way", LbConn6 * CONN_WAYS)]


class LbConfig(_Struct):
    _c_name_ = "lb_config"
    _fields_ = [("if_mac", _u8 * 6), ("gw_mac", _u8 * 6), ("flags", _u32), ("max_pkt_size", _u32),
                ("src_v4", _u8 * 4), ("src_v6", _u8 * 16)]


class LbStats(_Struct):
    _c_name_ = "lb_stats"
    _fields_ = [("packets", _u64), ("bytes", _u64)]


class LbGlobalStats(_Struct):
    _c_name_ = "lb_global_stats"
    _fields_ = [(n, _u64) for n in (
        "pass", "tx", "drop", "conn_hit", "conn_miss", "icmp_echo", "icmp_too_big",
        "drop_ip_options", "drop_fragment", "drop_too_big", "drop_malformed", "drop_no_real",
        "drop_encap", "conn_evict")]


class LbVipPairs(_Struct):
    _c_name_ = "lb_vip_pairs"
    _fields_ = [("pair", ctypes.c_uint16 * MAX_REALS)]


STRUCTS = {cls._c_name_: cls for cls in (LbAddr, LbAddrMeta, LbVipKey, LbVipMeta, LbVipEntry, LbReal, LbFlow,
                                         LbFlow4, LbConn4, LbConn6, LbConnSet4, LbConnSet6, LbConfig, LbStats,
                                         LbGlobalStats, LbVipPairs)}


# ---------------------------------------------------------------- builders
def addr_key(ip):
    raw, fam = ip_bytes(ip)
    return LbAddr(addr=(_u8 * 16)(*raw), family=fam)


def vip_key(ip, port, proto):
    raw, fam = ip_bytes(ip)
    return LbVipKey(addr=(_u8 * 16)(*raw), port=(_u8 * 2)(*_port(port)), proto=_proto(proto), family=fam)


def vip_meta(vip_num, flags=0):
    return LbVipMeta(vip_num=vip_num, flags=flags)


def real(ip):
    raw, fam = ip_bytes(ip)
    return LbReal(addr=(_u8 * 16)(*raw), family=fam)


def flow(src, dst, sport, dport, proto):
    s, fam = ip_bytes(src)
    d, fam_d = ip_bytes(dst)
    if fam != fam_d:
        raise ValueError("flow %s -> %s mixes address families" % (src, dst))
    return LbFlow(src=(_u8 * 16)(*s), dst=(_u8 * 16)(*d), sport=(_u8 * 2)(*_port(sport)),
                  dport=(_u8 * 2)(*_port(dport)), proto=_proto(proto), family=fam)


def conn_key(src, dst, sport, dport, proto):
    """(connection-table map name, key) for a client->VIP flow: IPv4 and IPv6 live apart."""
    f = flow(src, dst, sport, dport, proto)
    if f.family == FAMILY_V6:
        return MAP_CONNS, f
    return MAP_CONNS4, LbFlow4(src=(_u8 * 4)(*bytes(f.src)[:4]), dst=(_u8 * 4)(*bytes(f.dst)[:4]),
                               sport=f.sport, dport=f.dport, proto=f.proto)


def _mac(mac):
    raw = bytes.fromhex(mac.replace(":", "").replace("-", "")) if isinstance(mac, str) else bytes(mac)
    if len(raw) != 6:
        raise ValueError("bad MAC address %r" % (mac,))
    return (_u8 * 6)(*raw)


def config(if_mac, gw_mac, src_v4=None, src_v6=None, per_flow_src=False, max_pkt_size=0):
    """lb_config value. src_v4/src_v6: the balancer's outer source addresses."""
    cfg = LbConfig(if_mac=_mac(if_mac), gw_mac=_mac(gw_mac), max_pkt_size=max_pkt_size,
                   flags=CFG_F_PER_FLOW_SRC if per_flow_src else 0)
    if src_v4 is not None:
        cfg.src_v4 = (_u8 * 4)(*ipaddress.IPv4Address(src_v4).packed)
    if src_v6 is not None:
        cfg.src_v6 = (_u8 * 16)(*ipaddress.IPv6Address(src_v6).packed)
    return cfg


# ---------------------------------------------------------------- VIP table
def _words(raw):
    return struct.unpack("=%dI" % (len(raw) // 4), raw)  # host order, like the program's loads


def vip_slot(key, table_size=VIP_TABLE_SIZE):
    """First probe slot of a VIP key (LbVipKey) in lb_vip_table."""
    w = 0
    for x in _words(bytes(key)):
        w ^= x
    return ((w * ADDR_FILTER_MULT) & 0xFFFFFFFF) >> (32 - (table_size.bit_length() - 1))


def vip_entry(key, meta):
    e = LbVipEntry(key=key, meta=meta)
    check = VIP_ENTRY_MAGIC
    for x in _words(bytes(e)[:28]):
        check ^= x
    e.check = check
    return e


def _valid(raw):
    e = LbVipEntry.from_bytes(raw)
    return e if bytes(vip_entry(e.key, e.meta)) == bytes(raw) else None


def _window(table_map, key):
    size = table_map.info["max_entries"]
    first = vip_slot(key, size)
    slots = [(first + i) % size for i in range(VIP_PROBES)]
    return [(s, _valid(table_map.lookup(_index(s)))) for s in slots]


def vip_get(table_map, key):
    """LbVipMeta of the VIP `key`, or None."""
    for _unused, e in _window(table_map, key):
        if e is not None and bytes(e.key) == bytes(key):
            return e.meta
    return None


def vip_set(table_map, key, meta):
    """Add or change a VIP without a moment where packets could see a half-written entry.

    The new entry goes to a free slot of the key's probe window, then the old one (if any)
    is zeroed; only when the window has no free slot is an entry rewritten in place (packets
    racing that write miss the VIP and are passed, never misrouted).
    """
    key_b = bytes(key)
    window = _window(table_map, key)
    old = [s for s, e in window if e is not None and bytes(e.key) == key_b]
    free = [s for s, e in window if e is None]
    if not free and not old:
        raise libbpf.BpfError("VIP table has no free slot for %s port %d: %d probe slots all taken "
                              "(build with a larger LB_VIP_TABLE_SHIFT)" % (key.ip, key.port_num, VIP_PROBES),
                              errno.ENOSPC)
    target = free[0] if free else old[0]
    table_map.update(_index(target), bytes(vip_entry(key, meta)))
    for s in old:
        if s != target:
            table_map.update(_index(s), bytes(LbVipEntry()))


def vip_delete(table_map, key):
    """Remove the VIP `key`; False if it was not there."""
    found = False
    for s, e in _window(table_map, key):
        if e is not None and bytes(e.key) == bytes(key):
            table_map.update(_index(s), bytes(LbVipEntry()))
            found = True
    return found


def vips(table_map):
    """Every VIP in the table: [(LbVipKey, LbVipMeta)]."""
    _unused, blob = table_map.lookup_batch(raw=True)
    size = ctypes.sizeof(LbVipEntry)
    out = []
    for i in range(0, len(blob), size):
        e = _valid(blob[i:i + size])
        if e is not None:
            out.append((e.key, e.meta))
    return out


# ---------------------------------------------------------------- connection table
_M32 = 0xFFFFFFFF
_JHASH_INITVAL = 0xDEADBEEF


def _rol32(x, k):
    return ((x << k) | (x >> (32 - k))) & _M32


def jhash_final(a, b, c):
    """The kernel's __jhash_final on three 32-bit words: (a, b, c) after mixing."""
    for x, y, k in ((2, 1, 14), (0, 2, 11), (1, 0, 25), (2, 1, 16), (0, 2, 4), (1, 0, 14), (2, 1, 24)):
        w = [a, b, c]
        w[x] ^= w[y]
        w[x] = (w[x] - _rol32(w[y], k)) & _M32
        a, b, c = w
    return a, b, c


def _jhash_mix(a, b, c):
    """The kernel's __jhash_mix."""
    for x, y, z, k in ((0, 2, 1, 4), (1, 0, 2, 6), (2, 1, 0, 8), (0, 2, 1, 16), (1, 0, 2, 19), (2, 1, 0, 4)):
        w = [a, b, c]
        w[x] = (w[x] - w[y]) & _M32
        w[x] ^= _rol32(w[y], k)
        w[y] = (w[y] + w[z]) & _M32
        a, b, c = w
    return a, b, c


def jhash_2words(a, b, initval):
    """The kernel's jhash_2words, as balancer.c computes it (ring slot of a flow)."""
    c = (initval + _JHASH_INITVAL + (2 << 2)) & _M32
    return jhash_final((a + c) & _M32, (b + c) & _M32, c)[2]


def jhash_3words(a, b, c, initval):
    """The kernel's jhash_3words (lookup3), as balancer.c computes it (connection-table set)."""
    initval = (initval + _JHASH_INITVAL + (3 << 2)) & _M32
    return jhash_final((a + initval) & _M32, (b + initval) & _M32, (c + initval) & _M32)[2]


def jhash_4words(k, initval):
    """jhash2() over the four words of an IPv6 address, as balancer.c computes it."""
    a = b = c = (_JHASH_INITVAL + (4 << 2) + initval) & _M32
    a, b, c = _jhash_mix((a + k[0]) & _M32, (b + k[1]) & _M32, (c + k[2]) & _M32)
    return jhash_final((a + k[3]) & _M32, b, c)[2]


def conn_set_index(key, sets=CONN_SETS):
    """Set of a connection-table key (LbFlow4 or LbFlow) in lb_conns4 / lb_conns."""
    k = _words(bytes(key))
    if len(k) == 4:
        h = jhash_3words(k[0], k[1], k[2] ^ k[3], CONN_HASH_SEED)
    else:
        h = jhash_3words(k[0] ^ k[1] ^ k[2] ^ k[3], k[4] ^ k[5] ^ k[6] ^ k[7], k[8] ^ k[9], CONN_HASH_SEED)
    return h & (sets - 1)


def conn_check(key, real_idx):
    check = CONN_MAGIC ^ real_idx
    for x in _words(bytes(key)):
        check ^= x
    return check


def conn_get(conns_map, key):
    """Real index recorded for the flow `key` (from conn_key), or None."""
    raw = conns_map.lookup(_index(conn_set_index(key, conns_map.info["max_entries"])))
    cls = LbConnSet4 if isinstance(key, LbFlow4) else LbConnSet6
    for e in cls.from_bytes(raw).way:
        if bytes(e.flow) == bytes(key) and e.check == conn_check(key, e.real_idx):
            return e.real_idx
    return None


def conn_real_refs(conns_map):
    """Real indices that any entry of a connection table points at (valid or not: a torn entry
    counts too, which only makes the caller more careful)."""
    _unused, blob = conns_map.lookup_batch(raw=True)
    if not blob:
        return set()
    words = conns_map.value_size // 4 // CONN_WAYS  # per entry: key, real_idx, atime, check, pad
    return set(array.array("I", blob)[words - 4::words]) - {0}


# ---------------------------------------------------------------- address filter
def addr_filter_bit(ip):
    """(word index, bit) of `ip` in lb_addr_filter, as the data plane computes it."""
    raw, _unused = ip_bytes(ip)
    w0, w1, w2, w3 = struct.unpack("=4I", raw)  # host-order words, like the program's loads
    h = ((w0 ^ w1 ^ w2 ^ w3) * ADDR_FILTER_MULT & 0xFFFFFFFF) >> (32 - ADDR_FILTER_SHIFT)
    return h // 64, h % 64


def addr_filter_words(addresses, bits=ADDR_FILTER_BITS):
    words = [0] * (bits // 64)
    for ip in addresses:
        w, b = addr_filter_bit(ip)
        words[w] |= 1 << b
    return words


def addr_filter_sync(filter_map, addresses):
    """Make lb_addr_filter exactly the bitmap of `addresses` (all current VIP addresses)."""
    words = addr_filter_words(addresses, filter_map.info["max_entries"] * 64)
    filter_map.update_batch(array.array("I", range(len(words))).tobytes(),
                            array.array("Q", words).tobytes())


# ---------------------------------------------------------------- readers
def _index(i):
    return struct.pack("=I", i)


def read_stats(stats_map, index, cls=LbStats):
    """Per-CPU entry `index` of a PERCPU_ARRAY summed over CPUs, as a dict of counters."""
    per_cpu = stats_map.lookup_percpu(_index(index)) or []
    total = {name: 0 for name, _unused in cls._fields_}
    for raw in per_cpu:
        v = cls.from_bytes(raw)
        for name in total:
            total[name] += getattr(v, name)
    return total


def global_stats(global_map):
    return read_stats(global_map, 0, LbGlobalStats)


def sum_percpu(blob, fields, ncpu):
    """[array('Q') per field] of a per-CPU array's batch-read values (`fields` u64 per CPU, CPUs
    back to back per entry), summed over CPUs: whole-array slices, no Python loop per entry."""
    a = array.array("Q", blob)
    stride = fields * ncpu
    out = []
    for f in range(fields):
        acc = a[f::stride]
        for c in range(1, ncpu):
            acc = array.array("Q", map(operator.add, acc, a[f + c * fields::stride]))
        out.append(acc)
    return out


# ---------------------------------------------------------------- rings
# An mmapable array's entries are 8-byte aligned: a 4-byte ring slot takes 8 bytes of the map.
RING_SLOT_BYTES = 8


def ring_slots(values):
    """Ring values laid out as the mmapable array stores them: one 8-byte slot per entry."""
    slots = array.array("I", bytes(RING_SLOT_BYTES * len(values)))
    slots[0::2] = array.array("I", values)
    return slots.tobytes()


def ring_new(ring, on_step=None, steps=8, slots=None):
    """A new inner ring map holding `ring` (real indices, len == the object's ring size), not yet
    installed: put it in place with rings_install(), then close it. on_step(), if given, is called
    between the `steps` fill steps (tests send packets mid-write). `slots`: ring_slots(ring), when
    the caller has it already (VIPs sharing one ring lay it out once)."""
    inner = libbpf.Map.create(libbpf.BPF_MAP_TYPE_ARRAY, RING_INNER_KEY_SIZE, RING_INNER_VALUE_SIZE,
                              len(ring), name="lb_ring", map_flags=RING_INNER_FLAGS)
    try:
        blob = memoryview(ring_slots(ring) if slots is None else slots)
        with inner.mmap() as mem:
            step = -(-len(ring) // steps) * 8
            for start in range(0, len(blob), step):
                mem[start:start + step] = blob[start:start + step]
                if on_step:
                    on_step()
    except BaseException:
        inner.close()
        raise
    return inner


def rings_install(rings_map, rings):
    """Install {vip_num: inner map from ring_new()} in lb_rings with one batch update.

    Each slot still swaps atomically (packets see the old ring or the new one, never a mix). One
    batch because the kernel waits for running programs (an RCU grace period, ~9 ms measured here)
    after every update of a map-in-map, and once per batch.
    """
    if not rings:
        return
    nums = sorted(rings)
    try:
        rings_map.update_batch([_index(n) for n in nums], [_index(rings[n].fd) for n in nums])
    except libbpf.BpfError as exc:
        if exc.errno == errno.EINVAL:
            raise libbpf.BpfError("ring for VIP %s has %s slots; the loaded balancer expects its built-in "
                                  "LB_RING_SIZE" % (", ".join(map(str, nums)),
                                                    "/".join(sorted({str(rings[n].info["max_entries"])
                                                                     for n in nums}))),
                                  exc.errno, exc.message)
        raise


def ring_replace(rings_map, vip_num, ring, on_step=None, steps=8):
    """Install `ring` for vip_num: written into a NEW inner map, which then replaces the slot's old
    one in a single map update (see ring_new and rings_install)."""
    inner = ring_new(ring, on_step, steps)
    try:
        rings_install(rings_map, {vip_num: inner})
    finally:
        # The outer map holds its own reference; the inner map lives as long as the slot.
        inner.close()


def ring_read_slots(rings_map, vip_num):
    """The VIP's ring as the bytes of its inner map (ring_slots' layout), or None when the slot is
    empty."""
    raw = rings_map.lookup(_index(vip_num))  # reading a map-in-map slot yields the inner map id
    if raw is None:
        return None
    with libbpf.Map.from_id(struct.unpack("=I", raw)[0]) as inner:
        with inner.mmap() as mem:
            return mem[:]


def ring_read(rings_map, vip_num):
    """The VIP's ring as a list of real indices, or None when the slot is empty."""
    raw = ring_read_slots(rings_map, vip_num)
    if raw is None:
        return None
    return array.array("I", raw)[0::2].tolist()


def ring_remove(rings_map, vip_num):
    """Empty the slot: the VIP's packets are dropped (no backend) until a ring is installed."""
    return rings_map.delete(_index(vip_num))
