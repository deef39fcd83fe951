"""Health-check encapsulation part of the map ABI: the engine's mirror of lb_abi.h's
"health-check encapsulation ABI" section (hc_encap.c).

files/bpf/lb_abi.h is the source of truth; tests/dataplane/test_hc_encap.py checks the struct
against the BTF of the built hc_encap.o and the constants against the header.

Stdlib only, no Ansible imports.
"""

import ctypes
import ipaddress
import struct

OBJECT = "hc_encap.o"
PROG = "hc_encap"
MAP_REALS = "hc_reals"
MAP_STATS = "hc_stats"

FAMILY_V4 = 4
FAMILY_V6 = 6

HC_MAX_REALS = 4096  # build-time default; read max_entries from the map when it matters

HC_STAT_ENCAP_V4 = 0
HC_STAT_ENCAP_V6 = 1
HC_STAT_ERROR = 2
HC_STAT_MAX = 3
STAT_NAMES = ("encap_v4", "encap_v6", "error")


class HcReal(ctypes.Structure):
    """struct hc_real: outer source and destination (16 bytes, network order), outer family."""

    _fields_ = [
        ("src", ctypes.c_uint32 * 4),
        ("dst", ctypes.c_uint32 * 4),
        ("family", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


STRUCTS = {"hc_real": HcReal}

_U32 = struct.Struct("=I")
_STAT = struct.Struct("=QQ")


def mark_key(mark):
    return _U32.pack(mark)


def real_value(source, destination):
    """hc_reals value: wrap towards `destination` (the real) from `source` (this balancer)."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    if src.version != dst.version:
        raise ValueError("outer source %s and real %s are of different families" % (src, dst))
    family = FAMILY_V4 if dst.version == 4 else FAMILY_V6
    return src.packed.ljust(16, b"\0") + dst.packed.ljust(16, b"\0") + _U32.pack(family) + _U32.pack(0)


def read_stats(stats_map):
    """{name: {packets, bytes}} summed over CPUs."""
    out = {}
    for idx, name in enumerate(STAT_NAMES):
        packets = total = 0
        for raw in stats_map.lookup_percpu(_U32.pack(idx)) or []:
            p, b = _STAT.unpack_from(bytes(raw))
            packets += p
            total += b
        out[name] = {"packets": packets, "bytes": total}
    return out
