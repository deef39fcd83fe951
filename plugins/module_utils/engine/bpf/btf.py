"""BTF of a loaded map, read from the kernel, and a codec between map bytes and plain values.

The kernel keeps the BTF a map was created with (bpf_map_info.btf_id plus the key and value type
ids); libbpf hands it over as the raw .BTF blob (btf__load_from_kernel_by_id + btf__raw_data),
which is parsed here in Python, so keys and values can be given as dicts by C field names.

Value forms (encode) by C type:
  integers, enums (value or enumerator name), bool; pointers as integers; floats;
  struct: dict by member name, members left out are zero (explicit padding needs no mention);
  union: dict with one member;
  u8/char arrays: hex string ("0a000001", separators ':' '-' ' ' allowed), an IP address (16-byte
    fields take IPv4 in the first 4 bytes, the lb_abi.h convention), a MAC (6 bytes), a list of
    integers; char arrays also a text string;
  arrays of big-endian 32-bit words (__be32 addr[4]): an IP address as well, or a list;
  other arrays: a list (shorter lists are zero-padded).
Decoding gives hex strings for u8 and big-endian word arrays, text for char arrays.
Integer typedefs named __be16/__be32/__be64 are big-endian (an IPv4 address string is accepted
for __be32). Bitfields are not supported: use raw hex for such maps.
"""
import ctypes
import ipaddress
import struct
import sys

from . import libbpf
from ..errors import EngineError

_MAGIC = 0xEB9F
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)
_INT_SIGNED, _INT_CHAR, _INT_BOOL = 1, 2, 4


class _MapInfoFull(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32),
                ("btf_vmlinux_value_type_id", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
                ("netns_ino", ctypes.c_uint64), ("btf_id", ctypes.c_uint32), ("btf_key_type_id", ctypes.c_uint32),
                ("btf_value_type_id", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("map_extra", ctypes.c_uint64)]


def map_btf_ids(fd):
    """(btf_id, key type id, value type id) of a map; btf_id 0 when it was created without BTF."""
    lib = libbpf._L()
    info = _MapInfoFull()
    n = ctypes.c_uint32(ctypes.sizeof(info))
    libbpf._call("bpf_obj_get_info_by_fd(%d)" % fd, lib.bpf.bpf_obj_get_info_by_fd, fd,
                 ctypes.byref(info), ctypes.byref(n))
    return info.btf_id, info.btf_key_type_id, info.btf_value_type_id


def raw_btf(btf_id):
    lib = libbpf._L().bpf
    lib.btf__load_from_kernel_by_id.restype = ctypes.c_void_p
    lib.btf__load_from_kernel_by_id.argtypes = [ctypes.c_uint32]
    lib.btf__raw_data.restype = ctypes.c_void_p
    lib.btf__raw_data.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    lib.btf__free.restype = None
    lib.btf__free.argtypes = [ctypes.c_void_p]
    ctypes.set_errno(0)
    handle = lib.btf__load_from_kernel_by_id(btf_id)
    if not handle:
        raise libbpf.BpfError("btf__load_from_kernel_by_id(%d)" % btf_id, ctypes.get_errno() or 2,
                              libbpf._L().take_log())
    try:
        size = ctypes.c_uint32(0)
        ptr = lib.btf__raw_data(handle, ctypes.byref(size))
        return ctypes.string_at(ptr, size.value)
    finally:
        lib.btf__free(handle)


def _fail(path, value, problem):
    raise EngineError("%s: %r %s" % (path, value, problem), field=path, value=value)


class Btf:
    """Parsed .BTF: types by id, and encode()/decode() of values of a type."""

    def __init__(self, raw):
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", raw)
        if magic != _MAGIC:
            raise EngineError("BTF blob has a bad magic 0x%04x" % magic)
        self.strings = raw[hdr_len + str_off:hdr_len + str_off + str_len]
        self.types = [None]  # id 0 is void
        data = raw[hdr_len + type_off:hdr_len + type_off + type_len]
        pos = 0
        while pos < len(data):
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            pos += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            t = {"kind": kind, "name": self._str(name_off), "size": size_or_type, "type": size_or_type}
            if kind == INT:
                enc = struct.unpack_from("<I", data, pos)[0]
                pos += 4
                t.update(encoding=(enc >> 24) & 0xF, bit_offset=(enc >> 16) & 0xFF, bits=enc & 0xFF)
            elif kind == ARRAY:
                t["elem"], _idx, t["nelems"] = struct.unpack_from("<III", data, pos)
                pos += 12
            elif kind in (STRUCT, UNION):
                members = []
                for _i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", data, pos)
                    pos += 12
                    bitfield = (m_off >> 24) if kflag else 0
                    members.append({"name": self._str(m_name), "type": m_type,
                                    "bit_offset": (m_off & 0xFFFFFF) if kflag else m_off, "bitfield": bitfield})
                t["members"] = members
            elif kind == ENUM:
                t["values"] = {}
                for _i in range(vlen):
                    e_name, e_val = struct.unpack_from("<Ii", data, pos)
                    pos += 8
                    t["values"][self._str(e_name)] = e_val
            elif kind == ENUM64:
                t["values"] = {}
                for _i in range(vlen):
                    e_name, lo, hi = struct.unpack_from("<III", data, pos)
                    pos += 12
                    t["values"][self._str(e_name)] = (hi << 32) | lo
            elif kind in (FUNC_PROTO,):
                pos += 8 * vlen
            elif kind == DATASEC:
                pos += 12 * vlen
            elif kind in (VAR, DECL_TAG):
                pos += 4
            self.types.append(t)

    def _str(self, off):
        end = self.strings.find(b"\0", off)
        return self.strings[off:end].decode("utf-8", "replace")

    def resolve(self, tid):
        """(type dict after typedefs/qualifiers, big_endian) of a type id."""
        big = False
        t = self.types[tid]
        while t is not None and t["kind"] in _MODIFIERS:
            if t["kind"] == TYPEDEF and t["name"] in ("__be16", "__be32", "__be64"):
                big = True
            t = self.types[t["type"]]
        return t, big

    def size(self, tid):
        t = self.resolve(tid)[0]
        if t is None:
            return 0
        if t["kind"] == ARRAY:
            return self.size(t["elem"]) * t["nelems"]
        if t["kind"] == PTR:
            return 8
        return t["size"]

    def describe(self, tid):
        """A short C-like name of a type, for messages."""
        t = self.types[tid]
        if t is None:
            return "void"
        if t["kind"] == ARRAY:
            return "%s[%d]" % (self.describe(t["elem"]), t["nelems"])
        prefix = {STRUCT: "struct ", UNION: "union ", ENUM: "enum ", ENUM64: "enum "}.get(t["kind"], "")
        return prefix + (t["name"] or "(anon)")

    # -------------------------------------------------------------- encode
    def encode(self, tid, value, path):
        t, big = self.resolve(tid)
        size = self.size(tid)
        if t is None:
            _fail(path, value, "has type void")
        kind = t["kind"]
        if kind == INT:
            return self._int(t, big, size, value, path)
        if kind in (ENUM, ENUM64):
            if isinstance(value, str) and value in t["values"]:
                value = t["values"][value]
            elif isinstance(value, str):
                _fail(path, value, "is not an enumerator of %s (%s)" % (self.describe(tid), ", ".join(t["values"])))
            return self._int({"encoding": _INT_SIGNED if kind == ENUM else 0}, False, size, value, path)
        if kind == PTR:
            return self._int({"encoding": 0}, False, 8, value, path)
        if kind == FLOAT:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                _fail(path, value, "must be a number")
            return struct.pack({4: "<f", 8: "<d"}.get(size, "<d"), value)[:size]
        if kind == ARRAY:
            return self._array(tid, t, size, value, path)
        if kind in (STRUCT, UNION):
            return self._struct(t, size, value, path)
        _fail(path, value, "has a type (%s) that cannot be encoded; use raw hex" % self.describe(tid))

    def _int(self, t, big, size, value, path):
        if isinstance(value, str):
            text = value.strip()
            if big and size == 4 and "." in text:
                try:
                    return ipaddress.IPv4Address(text).packed
                except ValueError:
                    _fail(path, value, "is not an IPv4 address")
            try:
                value = int(text, 0)
            except ValueError:
                _fail(path, value, "is not an integer")
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int):
            _fail(path, value, "must be an integer")
        signed = bool(t["encoding"] & _INT_SIGNED)
        try:
            return value.to_bytes(size, "big" if big else sys.byteorder, signed=signed)
        except OverflowError:
            _fail(path, value, "does not fit in %d %s bytes" % (size, "signed" if signed else "unsigned"))

    def _array(self, tid, t, size, value, path):
        elem, ebig = self.resolve(t["elem"])
        esize = self.size(t["elem"])
        bytelike = elem is not None and elem["kind"] == INT and esize == 1
        if isinstance(value, str) and (bytelike or (ebig and esize == 4)):
            return _bytes_from_text(value, size, path, text=bytelike and elem["encoding"] & _INT_CHAR)
        if isinstance(value, (bytes, bytearray)):
            value = list(value)
        if not isinstance(value, (list, tuple)):
            _fail(path, value, "must be a list for %s" % self.describe(tid))
        if len(value) > t["nelems"]:
            _fail(path, value, "has %d elements, %s holds %d" % (len(value), self.describe(tid), t["nelems"]))
        out = b"".join(self.encode(t["elem"], v, "%s[%d]" % (path, i)) for i, v in enumerate(value))
        return out + bytes(size - len(out))

    def _struct(self, t, size, value, path):
        if not isinstance(value, dict):
            _fail(path, value, "must be a mapping of %s fields (%s)"
                  % (t["name"] or "struct", ", ".join(m["name"] for m in t["members"])))
        names = {m["name"]: m for m in t["members"]}
        for k in value:
            if k not in names:
                _fail("%s.%s" % (path, k) if path else k, value[k],
                      "is not a field of %s (fields: %s)" % (t["name"] or "the struct", ", ".join(names)))
        if t["kind"] == UNION and len(value) > 1:
            _fail(path, value, "sets %d members of a union; give one" % len(value))
        buf = bytearray(size)
        for k, v in value.items():
            m = names[k]
            sub = "%s.%s" % (path, k) if path else k
            if m["bitfield"] or m["bit_offset"] % 8:
                _fail(sub, v, "is a bitfield; give this map's key/value as raw hex")
            raw = self.encode(m["type"], v, sub)
            off = m["bit_offset"] // 8
            buf[off:off + len(raw)] = raw
        return bytes(buf)

    # -------------------------------------------------------------- decode
    def decode(self, tid, raw):
        t, big = self.resolve(tid)
        size = self.size(tid)
        raw = bytes(raw[:size])
        if t is None:
            return raw.hex()
        kind = t["kind"]
        if kind == INT:
            if t["encoding"] & _INT_BOOL:
                return bool(int.from_bytes(raw, sys.byteorder))
            return int.from_bytes(raw, "big" if big else sys.byteorder, signed=bool(t["encoding"] & _INT_SIGNED))
        if kind in (ENUM, ENUM64):
            n = int.from_bytes(raw, sys.byteorder, signed=kind == ENUM)
            names = [k for k, v in t["values"].items() if v == n]
            return names[0] if names else n
        if kind == PTR:
            return int.from_bytes(raw, sys.byteorder)
        if kind == FLOAT:
            return struct.unpack({4: "<f", 8: "<d"}[size], raw)[0] if size in (4, 8) else raw.hex()
        if kind == ARRAY:
            elem, ebig = self.resolve(t["elem"])
            esize = self.size(t["elem"])
            if ebig:
                return raw.hex()  # network-order words: the bytes as on the wire read best
            if elem is not None and elem["kind"] == INT and esize == 1:
                if elem["encoding"] & _INT_CHAR:
                    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
                return raw.hex()
            return [self.decode(t["elem"], raw[i * esize:(i + 1) * esize]) for i in range(t["nelems"])]
        if kind in (STRUCT, UNION):
            out = {}
            for m in t["members"]:
                if m["bitfield"] or m["bit_offset"] % 8:
                    continue
                off = m["bit_offset"] // 8
                out[m["name"]] = self.decode(m["type"], raw[off:off + self.size(m["type"])])
            return out
        return raw.hex()


def _bytes_from_text(value, size, path, text=False):
    s = value.strip()
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        ip = None
    if ip is not None and size in (4, 16):
        if ip.version == 6 and size == 4:
            _fail(path, value, "is IPv6 but the field holds 4 bytes")
        return ip.packed + bytes(size - len(ip.packed))
    cleaned = s.lower()
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    for sep in (":", "-", " "):
        cleaned = cleaned.replace(sep, "")
    try:
        raw = bytes.fromhex(cleaned)
    except ValueError:
        raw = None
    if raw is not None and len(raw) == size:
        return raw
    if text:
        data = s.encode("utf-8")
        if len(data) > size:
            _fail(path, value, "is longer than the %d bytes of the field" % size)
        return data + bytes(size - len(data))
    _fail(path, value, "must be %d hex bytes, or an IP address or MAC that fits, for this %d-byte field"
          % (size, size))
