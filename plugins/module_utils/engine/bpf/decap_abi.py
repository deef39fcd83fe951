"""Decap part of the map ABI: the engine's mirror of lb_abi.h's "decap ABI" section.

files/bpf/lb_abi.h is the source of truth; tests/dataplane/test_decap_abi.py checks every
struct here against the BTF of the built decap.o (member names, offsets, sizes) and every
constant against the header, so the two cannot drift. Kept apart from abi.py (the balancer's
mirror) only because it was written separately; it may be merged into abi.py as is.

Stdlib only, no Ansible imports (runs inside modules and as the host CLI).
"""

import ctypes
import ipaddress
import struct

# Object, program and map names (decap.o).
OBJECT = "decap.o"
PROG_XDP = "decap_xdp"
PROG_TC = "decap_tc"
MAP_LOCALS = "decap_locals"
MAP_STATS = "decap_stats"

# Shared with the balancer section of the header (LB_FAMILY_*).
FAMILY_V4 = 4
FAMILY_V6 = 6

# Build-time default (-DDECAP_MAX_LOCALS=N overrides it; read max_entries from the map
# when it matters, not this constant).
DECAP_MAX_LOCALS = 256

# decap_stats slots. Every packet lands in exactly one.
DECAP_STAT_DECAP_V4 = 0     # outer IPv4 stripped (IPIP)
DECAP_STAT_DECAP_V6 = 1     # outer IPv6 stripped (IP6IP6, 4in6)
DECAP_STAT_PASS = 2         # not a tunnel packet
DECAP_STAT_NOT_FOR_US = 3   # tunnel packet, outer destination not in decap_locals
DECAP_STAT_MALFORMED = 4    # truncated or inconsistent headers
DECAP_STAT_UNSUPPORTED = 5  # ours but not stripped (IPv4 options/fragment; tc: in-packet VLAN tag)
DECAP_STAT_ERROR = 6        # the kernel refused to resize the packet
DECAP_STAT_MAX = 7

# Index -> name, as reported by status/stats commands.
STAT_NAMES = (
    "decap_v4",
    "decap_v6",
    "pass",
    "not_for_us",
    "malformed",
    "unsupported",
    "error",
)


class DecapLocalKey(ctypes.Structure):
    """struct decap_local_key: addr in network order (IPv4 in addr[0]), family LB_FAMILY_*."""

    _fields_ = [
        ("addr", ctypes.c_uint32 * 4),
        ("family", ctypes.c_uint32),
    ]


class DecapLocalMeta(ctypes.Structure):
    """struct decap_local_meta: flags reserved, write 0."""

    _fields_ = [
        ("flags", ctypes.c_uint32),
    ]


class DecapStat(ctypes.Structure):
    """struct decap_stat: one per-CPU counter slot."""

    _fields_ = [
        ("packets", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
    ]


# C struct name -> mirror, for the BTF layout check.
STRUCTS = {
    "decap_local_key": DecapLocalKey,
    "decap_local_meta": DecapLocalMeta,
    "decap_stat": DecapStat,
}

_U32 = struct.Struct("=I")  # host order, as the kernel reads a __u32
_STAT = struct.Struct("=QQ")


def local_key(address):
    """Key bytes for decap_locals from an address ("192.0.2.1", "2001:db8::1" or ip_address).

    Only plain host addresses make sense as tunnel endpoints: IPv4-mapped IPv6 addresses
    are refused rather than silently stored in a form no packet will ever match.
    """
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        raise ValueError("%s: IPv4-mapped address; use the IPv4 form" % address)
    family = FAMILY_V4 if ip.version == 4 else FAMILY_V6
    return ip.packed.ljust(16, b"\0") + _U32.pack(family)


def parse_local_key(raw):
    """The address string a decap_locals key stands for (inverse of local_key)."""
    raw = bytes(raw)
    if len(raw) != ctypes.sizeof(DecapLocalKey):
        raise ValueError("decap_local_key is %d bytes, got %d" % (ctypes.sizeof(DecapLocalKey), len(raw)))
    (family,) = _U32.unpack_from(raw, 16)
    if family == FAMILY_V4:
        if raw[4:16] != b"\0" * 12:
            raise ValueError("IPv4 key with non-zero addr[1..3]")
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == FAMILY_V6:
        return str(ipaddress.IPv6Address(raw[:16]))
    raise ValueError("unknown family %d in decap_local_key" % family)


def local_meta(flags=0):
    """Value bytes for decap_locals. No flag is defined yet: anything but 0 is refused."""
    if flags:
        raise ValueError("decap_local_meta.flags is reserved: must be 0")
    return _U32.pack(0)


def stat_index(key_bytes):
    """Counter index from a decap_stats key."""
    return _U32.unpack(bytes(key_bytes))[0]


def stat_key(index):
    """decap_stats key bytes for a DECAP_STAT_* index."""
    if not 0 <= index < DECAP_STAT_MAX:
        raise ValueError("decap stat index %r out of range" % (index,))
    return _U32.pack(index)


def sum_percpu(values):
    """Sum one slot's per-CPU values (list of struct decap_stat bytes) -> {packets, bytes}."""
    packets = total = 0
    for raw in values:
        p, b = _STAT.unpack_from(bytes(raw))
        packets += p
        total += b
    return {"packets": packets, "bytes": total}


def read_stats(stats_map):
    """All counters of a decap_stats map, summed over CPUs: {name: {packets, bytes}}.

    stats_map is anything with lookup_percpu(key) -> [bytes per CPU] (libbpf.Map).
    """
    out = {}
    for idx, name in enumerate(STAT_NAMES):
        out[name] = sum_percpu(stats_map.lookup_percpu(stat_key(idx)) or [])
    return out
