"""Thin ctypes binding on libbpf.so.1 (Debian libbpf1 >= 1.1): just what the engine needs.

Stdlib + ctypes only, no Ansible imports: this runs inside modules and as a CLI.
Every failure raises BpfError(errno, message), the message carrying what libbpf
printed (verifier log included) while the failing call ran.

Public API
----------
Objects (ELF files built from files/bpf)::

    with libbpf.BpfObject("balancer.o", pin_root_path="/sys/fs/bpf/xdplb") as obj:
        obj.load()                         # maps marked LIBBPF_PIN_BY_NAME are pinned/reused
        fd = obj.program_fd("xdp_balancer")
        m = obj.map("lb_reals")            # -> Map view (its fd belongs to the object)
    BpfObject(path, pin_maps=False)        # load without pinning anything
    obj.program_names() / obj.map_names()

Maps (keys/values are bytes of exactly key_size/value_size)::

    Map(fd, owned=False) / Map.from_pin(path) / Map.from_id(map_id) / Map.create(...)
    m.update(key, value, flags=BPF_ANY); m.lookup(key) -> bytes | None
    m.delete(key) -> bool; m.keys(); m.items()
    m.update_batch(keys, values)           # falls back to a loop where unsupported
    m.lookup_batch() -> [(key, value)]     # whole map, few syscalls (raw=True: two blobs)
    m.lookup_percpu(key) -> [bytes per possible CPU]   (PERCPU_* maps)
    m.mmap() -> mmap.mmap                  # BPF_F_MMAPABLE arrays: slots of round_up(value_size, 8)
    m.info -> dict(type, id, key_size, value_size, max_entries, map_flags, name)
    m.close()

Programs and links::

    prog_load(prog_type, name, insns, license="GPL") -> fd   # raw instructions, no object file
    prog_info(fd) -> dict(type, id, tag (hex), name, map_ids)
    prog_test_run(fd, data, repeat=1) -> TestRun(retval, data, duration)
    TestRunner(fd).run(data) -> (retval, duration)   # allocation-free loop for benchmarks
    xdp_attach(ifindex, fd, mode=None|"native"|"generic"|"offload", old_prog_fd=None, no_replace=False)
        -> mode obtained ("native"/"generic"/"offload"); old_prog_fd = atomic replace
    xdp_detach(ifindex, mode=None, old_prog_fd=None); xdp_query(ifindex) -> dict
    tc_attach(ifindex, fd, handle=1, priority=1) (ingress, replaces); tc_detach; tc_query
    obj_get(path) -> fd; obj_pin(fd, path); prog_fd_by_id(id); map_fd_by_id(id); close_fd(fd)
    num_possible_cpus()
"""

import ctypes
import ctypes.util
import errno as _errno
import mmap as _mmap
import os
import threading

__all__ = [
    "BpfError", "BpfObject", "Map", "TestRun", "TestRunner",
    "prog_info", "map_info", "prog_load", "prog_test_run",
    "xdp_attach", "xdp_detach", "xdp_query",
    "tc_attach", "tc_detach", "tc_query",
    "obj_get", "obj_pin", "prog_fd_by_id", "map_fd_by_id", "close_fd",
    "num_possible_cpus",
]

# Kernel UAPI constants used by callers.
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
BPF_MAP_TYPE_HASH_OF_MAPS = 13
BPF_F_NO_PREALLOC = 1 << 0
BPF_F_MMAPABLE = 1 << 10
_PERCPU_TYPES = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4
_XDP_MODE_FLAGS = {
    None: 0,
    "native": XDP_FLAGS_DRV_MODE,
    "generic": XDP_FLAGS_SKB_MODE,
    "offload": XDP_FLAGS_HW_MODE,
}
# enum { XDP_ATTACHED_NONE, _DRV, _SKB, _HW, _MULTI }
_XDP_ATTACHED = {0: None, 1: "native", 2: "generic", 3: "offload", 4: "multi"}

BPF_TC_INGRESS = 1 << 0
BPF_TC_EGRESS = 1 << 1
BPF_TC_F_REPLACE = 1 << 0

_LIBBPF_SONAME = "libbpf.so.1"
_ENOTSUPP = 524  # kernel-internal errno that bpf() leaks for unsupported operations


class BpfError(Exception):
    """A libbpf/bpf() failure: .errno (positive errno value) and .message (libbpf's log)."""

    def __init__(self, what, err=0, message=""):
        self.errno = abs(err) if err else 0
        self.message = message.strip()
        self.what = what
        text = what
        if self.errno:
            text += ": %s (errno %d)" % (os.strerror(self.errno), self.errno)
        if self.message:
            text += "\n" + self.message
        super().__init__(text)


# ---------------------------------------------------------------- C structs
# Layouts copied from libbpf 1.1's bpf.h/libbpf.h; every opts struct starts
# with sz so newer libbpf versions accept them (forward/backward compatible).

class _OpenOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_attach_prog_fd", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_char_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    ]


class _ProgLoadOpts(ctypes.Structure):
    # Up to log_buf: libbpf 1.2 appended log_true_size, which 1.1 would refuse as unknown bytes.
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("attempts", ctypes.c_int),
        ("expected_attach_type", ctypes.c_int),
        ("prog_btf_fd", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_ifindex", ctypes.c_uint32),
        ("kern_version", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_uint32),
        ("attach_btf_obj_fd", ctypes.c_uint32),
        ("fd_array", ctypes.c_void_p),
        ("func_info", ctypes.c_void_p),
        ("func_info_cnt", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_void_p),
        ("line_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_void_p),
    ]


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class _XdpAttachOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_int)]


class _XdpQueryOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_id", ctypes.c_uint32),
        ("drv_prog_id", ctypes.c_uint32),
        ("hw_prog_id", ctypes.c_uint32),
        ("skb_prog_id", ctypes.c_uint32),
        ("attach_mode", ctypes.c_uint8),
    ]


class _TcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
    ]


class _TcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
    ]


class _BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _MapCreateOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("numa_node", ctypes.c_uint32),
        ("map_ifindex", ctypes.c_uint32),
    ]


class _ProgInfo(ctypes.Structure):
    # Prefix of struct bpf_prog_info: the kernel fills at most info_len bytes.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
    ]


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


# ---------------------------------------------------------------- loading
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_LIBBPF_DEBUG = 2
_PRINT_BUF = 4 << 20


class _Lib:
    """libbpf + libc handles, resolved once; the print callback feeds a per-thread log."""

    def __init__(self):
        try:
            self.bpf = ctypes.CDLL(_LIBBPF_SONAME, use_errno=True)
        except OSError as exc:
            raise BpfError(
                "%s is missing (%s); install the libbpf1 package (Debian/Ubuntu: apt-get install libbpf1)"
                % (_LIBBPF_SONAME, exc), _errno.ENOENT)
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        self.libc.vsnprintf.restype = ctypes.c_int
        self.local = threading.local()
        self._declare()
        # Keep a reference: ctypes frees the trampoline when the object dies.
        self._print_cb = _PRINT_FN(self._on_print)
        self.bpf.libbpf_set_print(self._print_cb)

    def _on_print(self, level, fmt, va_list):
        if level == _LIBBPF_DEBUG:
            return 0
        # One vsnprintf only (a va_list cannot be replayed), into a buffer large enough
        # for a whole verifier log, which libbpf prints as a single "%s".
        buf = getattr(self.local, "buf", None)
        if buf is None:
            buf = self.local.buf = ctypes.create_string_buffer(_PRINT_BUF)
        n = self.libc.vsnprintf(buf, len(buf), fmt, va_list)
        log = getattr(self.local, "log", None)
        if log is not None and n > 0:
            log.append(buf.value.decode("utf-8", "replace"))
        return 0

    def take_log(self):
        log = getattr(self.local, "log", None) or []
        self.local.log = []
        text = "".join(log)
        # Verifier logs can be huge; the end is where the reason is.
        return text[-8000:]

    def _declare(self):
        c = ctypes
        P = c.c_void_p
        sigs = {
            "libbpf_set_print": (P, [_PRINT_FN]),
            "libbpf_num_possible_cpus": (c.c_int, []),
            "libbpf_get_error": (c.c_long, [P]),
            "bpf_object__open_file": (P, [c.c_char_p, c.POINTER(_OpenOpts)]),
            "bpf_object__load": (c.c_int, [P]),
            "bpf_object__close": (None, [P]),
            "bpf_object__find_program_by_name": (P, [P, c.c_char_p]),
            "bpf_object__find_map_by_name": (P, [P, c.c_char_p]),
            "bpf_object__next_program": (P, [P, P]),
            "bpf_object__next_map": (P, [P, P]),
            "bpf_program__fd": (c.c_int, [P]),
            "bpf_program__name": (c.c_char_p, [P]),
            "bpf_map__fd": (c.c_int, [P]),
            "bpf_map__name": (c.c_char_p, [P]),
            "bpf_map__set_pin_path": (c.c_int, [P, c.c_char_p]),
            "bpf_map__pin_path": (c.c_char_p, [P]),
            "bpf_map__type": (c.c_int, [P]),
            "bpf_map__key_size": (c.c_uint32, [P]),
            "bpf_map__value_size": (c.c_uint32, [P]),
            "bpf_map__max_entries": (c.c_uint32, [P]),
            "bpf_map__map_flags": (c.c_uint32, [P]),
            "bpf_map_update_elem": (c.c_int, [c.c_int, P, P, c.c_uint64]),
            "bpf_map_lookup_elem": (c.c_int, [c.c_int, P, P]),
            "bpf_map_delete_elem": (c.c_int, [c.c_int, P]),
            "bpf_map_get_next_key": (c.c_int, [c.c_int, P, P]),
            "bpf_map_update_batch": (c.c_int, [c.c_int, P, P, c.POINTER(c.c_uint32), c.POINTER(_BatchOpts)]),
            "bpf_map_lookup_batch": (c.c_int, [c.c_int, P, P, P, P, c.POINTER(c.c_uint32),
                                               c.POINTER(_BatchOpts)]),
            "bpf_map_create": (c.c_int, [c.c_int, c.c_char_p, c.c_uint32, c.c_uint32, c.c_uint32,
                                         c.POINTER(_MapCreateOpts)]),
            "bpf_obj_get": (c.c_int, [c.c_char_p]),
            "bpf_obj_pin": (c.c_int, [c.c_int, c.c_char_p]),
            "bpf_obj_get_info_by_fd": (c.c_int, [c.c_int, P, c.POINTER(c.c_uint32)]),
            "bpf_prog_get_fd_by_id": (c.c_int, [c.c_uint32]),
            "bpf_map_get_fd_by_id": (c.c_int, [c.c_uint32]),
            "bpf_prog_test_run_opts": (c.c_int, [c.c_int, c.POINTER(_TestRunOpts)]),
            "bpf_prog_load": (c.c_int, [c.c_int, c.c_char_p, c.c_char_p, P, c.c_size_t, c.POINTER(_ProgLoadOpts)]),
            "bpf_xdp_attach": (c.c_int, [c.c_int, c.c_int, c.c_uint32, c.POINTER(_XdpAttachOpts)]),
            "bpf_xdp_detach": (c.c_int, [c.c_int, c.c_uint32, c.POINTER(_XdpAttachOpts)]),
            "bpf_xdp_query": (c.c_int, [c.c_int, c.c_int, c.POINTER(_XdpQueryOpts)]),
            "bpf_tc_hook_create": (c.c_int, [c.POINTER(_TcHook)]),
            "bpf_tc_hook_destroy": (c.c_int, [c.POINTER(_TcHook)]),
            "bpf_tc_attach": (c.c_int, [c.POINTER(_TcHook), c.POINTER(_TcOpts)]),
            "bpf_tc_detach": (c.c_int, [c.POINTER(_TcHook), c.POINTER(_TcOpts)]),
            "bpf_tc_query": (c.c_int, [c.POINTER(_TcHook), c.POINTER(_TcOpts)]),
        }
        for name, (restype, argtypes) in sigs.items():
            fn = getattr(self.bpf, name)
            fn.restype = restype
            fn.argtypes = argtypes


_lib = None
_lib_lock = threading.Lock()


def _L():
    global _lib
    if _lib is None:
        with _lib_lock:
            if _lib is None:
                _lib = _Lib()
    return _lib


def _call(what, fn, *args):
    """Run a libbpf call returning int; raise BpfError on a negative result."""
    lib = _L()
    lib.take_log()
    ret = fn(*args)
    if ret < 0:
        err = -ret if ret != -1 else (ctypes.get_errno() or _errno.EINVAL)
        raise BpfError(what, err, lib.take_log())
    return ret


def _enc(s):
    return s.encode() if isinstance(s, str) else s


# ---------------------------------------------------------------- objects
class BpfObject:
    """An opened (and, after load(), loaded) BPF ELF object; close() releases every fd it owns."""

    def __init__(self, path, pin_root_path=None, pin_maps=True):
        lib = _L()
        self.path = path
        self._keep = [_enc(path), _enc(pin_root_path) if pin_root_path else None]
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts), pin_root_path=self._keep[1])
        lib.take_log()
        ctypes.set_errno(0)
        obj = lib.bpf.bpf_object__open_file(self._keep[0], ctypes.byref(opts))
        if not obj:
            raise BpfError("cannot open BPF object %s" % path, ctypes.get_errno() or _errno.EINVAL,
                           lib.take_log())
        self._obj = obj
        self.loaded = False
        if not pin_maps:
            for m in self._iter(lib.bpf.bpf_object__next_map):
                lib.bpf.bpf_map__set_pin_path(m, None)

    def _iter(self, next_fn):
        cur = next_fn(self._obj, None)
        while cur:
            yield cur
            cur = next_fn(self._obj, cur)

    def _need(self, loaded=True):
        if not self._obj:
            raise BpfError("BPF object %s is closed" % self.path, _errno.EBADF)
        if loaded and not self.loaded:
            raise BpfError("BPF object %s is not loaded" % self.path, _errno.EBADF)

    def load(self):
        """Create maps (reusing pinned ones), load and verify programs."""
        self._need(loaded=False)
        _call("cannot load BPF object %s" % self.path, _L().bpf.bpf_object__load, self._obj)
        self.loaded = True
        return self

    def program_names(self):
        self._need(loaded=False)
        return [_L().bpf.bpf_program__name(p).decode() for p in self._iter(_L().bpf.bpf_object__next_program)]

    def map_names(self):
        self._need(loaded=False)
        return [_L().bpf.bpf_map__name(m).decode() for m in self._iter(_L().bpf.bpf_object__next_map)]

    def program_fd(self, name):
        self._need()
        prog = _L().bpf.bpf_object__find_program_by_name(self._obj, _enc(name))
        if not prog:
            raise BpfError("no program %r in %s" % (name, self.path), _errno.ENOENT)
        return _L().bpf.bpf_program__fd(prog)

    def map_fd(self, name):
        self._need()
        m = _L().bpf.bpf_object__find_map_by_name(self._obj, _enc(name))
        if not m:
            raise BpfError("no map %r in %s" % (name, self.path), _errno.ENOENT)
        return _L().bpf.bpf_map__fd(m)

    def map(self, name):
        """Map view on the object's map; valid until the object is closed."""
        return Map(self.map_fd(name), owned=False)

    def map_pin_path(self, name):
        self._need(loaded=False)
        m = _L().bpf.bpf_object__find_map_by_name(self._obj, _enc(name))
        p = _L().bpf.bpf_map__pin_path(m) if m else None
        return p.decode() if p else None

    def map_def(self, name):
        """The object's definition of map `name`, in map_info()'s terms (what pin reuse compares)."""
        self._need(loaded=False)
        m = _L().bpf.bpf_object__find_map_by_name(self._obj, _enc(name))
        if not m:
            raise BpfError("no map %r in %s" % (name, self.path), _errno.ENOENT)
        b = _L().bpf
        return {"type": b.bpf_map__type(m), "key_size": b.bpf_map__key_size(m),
                "value_size": b.bpf_map__value_size(m), "max_entries": b.bpf_map__max_entries(m),
                "map_flags": b.bpf_map__map_flags(m)}

    def close(self):
        if self._obj:
            _L().bpf.bpf_object__close(self._obj)
            self._obj = None
            self.loaded = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ---------------------------------------------------------------- maps
def _info(fd, cls):
    info = cls()
    n = ctypes.c_uint32(ctypes.sizeof(info))
    _call("bpf_obj_get_info_by_fd(%d)" % fd, _L().bpf.bpf_obj_get_info_by_fd, fd,
          ctypes.byref(info), ctypes.byref(n))
    return info


def map_info(fd):
    i = _info(fd, _MapInfo)
    return {"type": i.type, "id": i.id, "key_size": i.key_size, "value_size": i.value_size,
            "max_entries": i.max_entries, "map_flags": i.map_flags, "name": i.name.decode()}


def prog_info(fd):
    """type, id, tag (hex string as bpftool shows it), name and the ids of the maps it uses."""
    i = _info(fd, _ProgInfo)
    ids = (ctypes.c_uint32 * i.nr_map_ids)()
    if i.nr_map_ids:
        # Second call with a buffer: the kernel copies map ids only when asked.
        j = _ProgInfo(nr_map_ids=i.nr_map_ids, map_ids=ctypes.addressof(ids))
        n = ctypes.c_uint32(ctypes.sizeof(j))
        _call("bpf_obj_get_info_by_fd(%d)" % fd, _L().bpf.bpf_obj_get_info_by_fd, fd,
              ctypes.byref(j), ctypes.byref(n))
    return {"type": i.type, "id": i.id, "tag": bytes(i.tag).hex(), "name": i.name.decode(),
            "map_ids": list(ids)}


def _blob(items, size):
    if isinstance(items, (bytes, bytearray, memoryview)):
        return bytes(items)
    items = [bytes(i) for i in items]
    if any(len(i) != size for i in items):
        raise BpfError("update_batch: every entry must be %d bytes" % size, _errno.EINVAL)
    return b"".join(items)


class Map:
    """A map fd with byte-level access. owned=True closes the fd on close()."""

    def __init__(self, fd, owned=False):
        self.fd = fd
        self.owned = owned
        self.info = map_info(fd)
        self.key_size = self.info["key_size"]
        self.value_size = self.info["value_size"]
        self.percpu = self.info["type"] in _PERCPU_TYPES

    @classmethod
    def from_pin(cls, path):
        return cls(obj_get(path), owned=True)

    @classmethod
    def from_id(cls, map_id):
        return cls(map_fd_by_id(map_id), owned=True)

    @classmethod
    def create(cls, map_type, key_size, value_size, max_entries, name=None, map_flags=0, inner_map_fd=None):
        """Create an anonymous map, e.g. a new inner ring map before swapping it in."""
        opts = _MapCreateOpts(sz=ctypes.sizeof(_MapCreateOpts), map_flags=map_flags,
                              inner_map_fd=inner_map_fd or 0)
        fd = _call("bpf_map_create(%s)" % (name or map_type), _L().bpf.bpf_map_create, map_type,
                   _enc(name) if name else None, key_size, value_size, max_entries, ctypes.byref(opts))
        return cls(fd, owned=True)

    def _value_len(self):
        if self.percpu:
            return ((self.value_size + 7) // 8) * 8 * num_possible_cpus()
        return self.value_size

    def _key(self, key):
        key = bytes(key)
        if len(key) != self.key_size:
            raise BpfError("map %s: key is %d bytes, expected %d" % (self.info["name"], len(key), self.key_size),
                           _errno.EINVAL)
        return ctypes.create_string_buffer(key, len(key))

    def update(self, key, value, flags=BPF_ANY):
        value = bytes(value)
        if len(value) != self._value_len():
            raise BpfError("map %s: value is %d bytes, expected %d"
                           % (self.info["name"], len(value), self._value_len()), _errno.EINVAL)
        _call("update %s" % self.info["name"], _L().bpf.bpf_map_update_elem, self.fd, self._key(key),
              ctypes.create_string_buffer(value, len(value)), flags)

    def lookup(self, key):
        """Value bytes, or None when the key is absent (per-CPU maps: all CPUs concatenated)."""
        out = ctypes.create_string_buffer(self._value_len())
        try:
            _call("lookup %s" % self.info["name"], _L().bpf.bpf_map_lookup_elem, self.fd, self._key(key), out)
        except BpfError as exc:
            if exc.errno == _errno.ENOENT:
                return None
            raise
        return out.raw

    def lookup_percpu(self, key):
        """List of one value per possible CPU (per-CPU maps only)."""
        raw = self.lookup(key)
        if raw is None:
            return None
        step = len(raw) // num_possible_cpus()
        return [raw[i:i + self.value_size] for i in range(0, len(raw), step)]

    def delete(self, key):
        try:
            _call("delete %s" % self.info["name"], _L().bpf.bpf_map_delete_elem, self.fd, self._key(key))
        except BpfError as exc:
            if exc.errno == _errno.ENOENT:
                return False
            raise
        return True

    def keys(self):
        cur = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while True:
            try:
                _call("get_next_key %s" % self.info["name"], _L().bpf.bpf_map_get_next_key, self.fd, cur, nxt)
            except BpfError as exc:
                if exc.errno == _errno.ENOENT:
                    return
                raise
            key = nxt.raw
            yield key
            cur = ctypes.create_string_buffer(key, len(key))

    def items(self):
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def update_batch(self, keys, values, flags=BPF_ANY):
        """Update many entries in one syscall; loops where the kernel lacks batch ops.

        keys/values: sequences of bytes, or one bytes-like blob each (entries back to back),
        which avoids building 65537 small objects for a ring.
        """
        vlen = self._value_len()
        kblob = _blob(keys, self.key_size)
        vblob = _blob(values, vlen)
        n = len(kblob) // self.key_size
        if len(kblob) % self.key_size or len(vblob) != n * vlen:
            raise BpfError("update_batch %s: %d key bytes / %d value bytes do not make whole entries of %d/%d"
                           % (self.info["name"], len(kblob), len(vblob), self.key_size, vlen), _errno.EINVAL)
        if not n:
            return
        kbuf = ctypes.create_string_buffer(kblob, len(kblob))
        vbuf = ctypes.create_string_buffer(vblob, len(vblob))
        count = ctypes.c_uint32(n)
        opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts), elem_flags=flags)
        try:
            _call("update_batch %s" % self.info["name"], _L().bpf.bpf_map_update_batch, self.fd, kbuf, vbuf,
                  ctypes.byref(count), ctypes.byref(opts))
        except BpfError as exc:
            # Kernels before 5.6 (or map types without batch ops) say EINVAL or
            # ENOTSUPP (524); per-element updates then report any real error.
            if exc.errno not in (_errno.EINVAL, _errno.EOPNOTSUPP, _ENOTSUPP):
                raise
            for i in range(n):
                self.update(kblob[i * self.key_size:(i + 1) * self.key_size], vblob[i * vlen:(i + 1) * vlen], flags)

    def lookup_batch(self, chunk=8192, raw=False, limit=None):
        """All (key, value) pairs in as few syscalls as possible; falls back to keys()/lookup().

        raw=True returns (keys_blob, values_blob) instead, entries back to back. limit: stop after
        about that many entries (whole chunks; the kernel copies each entry on its own, so an
        array read only as far as it is used is that much faster).
        """
        vlen = self._value_len()
        keys, values = [], []
        in_b = None
        out_b = ctypes.create_string_buffer(max(self.key_size, 4))
        kbuf = ctypes.create_string_buffer(chunk * self.key_size)
        vbuf = ctypes.create_string_buffer(chunk * vlen)
        opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
        while True:
            count = ctypes.c_uint32(chunk)
            ret = _L().bpf.bpf_map_lookup_batch(self.fd, in_b, out_b, kbuf, vbuf, ctypes.byref(count),
                                                ctypes.byref(opts))
            err = -ret if ret < 0 else 0
            if err and err != _errno.ENOENT:
                if not keys and err in (_errno.EINVAL, _errno.EOPNOTSUPP, _ENOTSUPP):
                    pairs = list(self.items())
                    if raw:
                        return b"".join(k for k, _unused in pairs), b"".join(v for _unused, v in pairs)
                    return pairs
                raise BpfError("lookup_batch %s" % self.info["name"], err, _L().take_log())
            keys.append(kbuf.raw[:count.value * self.key_size])
            values.append(vbuf.raw[:count.value * vlen])
            if limit is not None:
                limit -= count.value
            if err == _errno.ENOENT or (limit is not None and limit <= 0):
                break
            in_b = ctypes.create_string_buffer(out_b.raw, len(out_b.raw))
        kblob, vblob = b"".join(keys), b"".join(values)
        if raw:
            return kblob, vblob
        return [(kblob[i * self.key_size:(i + 1) * self.key_size], vblob[i * vlen:(i + 1) * vlen])
                for i in range(len(kblob) // self.key_size)]

    def mmap(self):
        """Shared writable mapping of a BPF_F_MMAPABLE array: slot i at i * round_up(value_size, 8)."""
        size = ((self.value_size + 7) // 8) * 8 * self.info["max_entries"]
        try:
            return _mmap.mmap(self.fd, size, _mmap.MAP_SHARED, _mmap.PROT_READ | _mmap.PROT_WRITE)
        except OSError as exc:
            raise BpfError("mmap %s (needs an array created with BPF_F_MMAPABLE)" % self.info["name"],
                           exc.errno or _errno.EINVAL)

    def close(self):
        if self.owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- fds, pins
def obj_get(path):
    """fd of a pinned map/program/link."""
    return _call("bpf_obj_get(%s)" % path, _L().bpf.bpf_obj_get, _enc(path))


def obj_pin(fd, path):
    _call("bpf_obj_pin(%s)" % path, _L().bpf.bpf_obj_pin, fd, _enc(path))


def prog_fd_by_id(prog_id):
    return _call("bpf_prog_get_fd_by_id(%d)" % prog_id, _L().bpf.bpf_prog_get_fd_by_id, prog_id)


def map_fd_by_id(map_id):
    return _call("bpf_map_get_fd_by_id(%d)" % map_id, _L().bpf.bpf_map_get_fd_by_id, map_id)


def close_fd(fd):
    os.close(fd)


_ncpus = None


def num_possible_cpus():
    global _ncpus
    if _ncpus is None:
        _ncpus = _call("libbpf_num_possible_cpus", _L().bpf.libbpf_num_possible_cpus)
    return _ncpus


# ---------------------------------------------------------------- raw programs
BPF_PROG_TYPE_SOCKET_FILTER = 1


def prog_load(prog_type, name, insns, license="GPL"):
    """fd of a program given as raw instructions (bytes, 8 per instruction); the verifier's log
    (its end) is in the BpfError when the kernel refuses it."""
    insns = bytes(insns)
    code = ctypes.create_string_buffer(insns, len(insns))
    log = ctypes.create_string_buffer(1 << 16)
    opts = _ProgLoadOpts(sz=ctypes.sizeof(_ProgLoadOpts), log_level=0, log_size=len(log),
                         log_buf=ctypes.cast(log, ctypes.c_void_p))
    lib = _L()
    fd = lib.bpf.bpf_prog_load(prog_type, _enc(name), _enc(license), code, len(insns) // 8, ctypes.byref(opts))
    if fd < 0:
        err = -fd if fd != -1 else (ctypes.get_errno() or _errno.EINVAL)
        # Only a failed load is loaded again with a log: logging slows the verifier down.
        opts.log_level = 1
        again = lib.bpf.bpf_prog_load(prog_type, _enc(name), _enc(license), code, len(insns) // 8,
                                      ctypes.byref(opts))
        if again >= 0:
            os.close(again)
        raise BpfError("bpf_prog_load(%s)" % name, err, log.value.decode("utf-8", "replace")[-4000:])
    return fd


# ---------------------------------------------------------------- test run
class TestRun:
    """Result of one BPF_PROG_TEST_RUN: retval (XDP action), data (output packet), duration (ns/run)."""

    __slots__ = ("retval", "data", "duration")
    __test__ = False  # not a pytest class

    def __init__(self, retval, data, duration):
        self.retval, self.data, self.duration = retval, data, duration

    def __repr__(self):
        return "TestRun(retval=%d, len=%d, duration=%d)" % (self.retval, len(self.data), self.duration)


def prog_test_run(prog_fd, data, repeat=1, data_out_size=None, ctx=None):
    """Run prog on data. data_out_size defaults to len(data)+256: room for encapsulation headers.

    repeat>1 re-runs on the already modified packet (kernel behaviour), so only
    use it for programs that do not rewrite the packet. ctx: the context's bytes (a tc
    program's struct __sk_buff, e.g. to give the packet a mark).
    """
    data = bytes(data)
    out_len = data_out_size if data_out_size is not None else len(data) + 256
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(out_len)
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.cast(din, ctypes.c_void_p),
                        data_out=ctypes.cast(dout, ctypes.c_void_p), data_size_in=len(data),
                        data_size_out=out_len, repeat=repeat)
    if ctx is not None:
        cin = ctypes.create_string_buffer(bytes(ctx), len(ctx))
        opts.ctx_in = ctypes.cast(cin, ctypes.c_void_p)
        opts.ctx_size_in = len(ctx)
    _call("bpf_prog_test_run", _L().bpf.bpf_prog_test_run_opts, prog_fd, ctypes.byref(opts))
    return TestRun(opts.retval, dout.raw[:opts.data_size_out], opts.duration)


class TestRunner:
    """Repeated BPF_PROG_TEST_RUN on one program with preallocated buffers (benchmarks).

    run(data) -> (retval, duration ns): one kernel run at repeat=1, nothing allocated per
    call, so the Python side disturbs the CPU caches as little as it can between runs.
    """

    __test__ = False

    def __init__(self, prog_fd, max_len=4096):
        self.prog_fd = prog_fd
        self._din = ctypes.create_string_buffer(max_len)
        self._dout = ctypes.create_string_buffer(max_len + 256)
        self._opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.cast(self._din, ctypes.c_void_p),
                                  data_out=ctypes.cast(self._dout, ctypes.c_void_p), repeat=1)
        self._ref = ctypes.byref(self._opts)
        self._fn = _L().bpf.bpf_prog_test_run_opts
        self._max = max_len

    def run(self, data):
        n = len(data)
        if n > self._max:
            raise BpfError("test run: %d bytes exceed the runner's %d" % (n, self._max), _errno.EINVAL)
        ctypes.memmove(self._din, data, n)
        o = self._opts
        o.data_size_in = n
        o.data_size_out = self._max + 256
        ret = self._fn(self.prog_fd, self._ref)
        if ret < 0:
            raise BpfError("bpf_prog_test_run", -ret, _L().take_log())
        return o.retval, o.duration


# ---------------------------------------------------------------- XDP
def xdp_query(ifindex):
    """{'prog_id', 'mode' (None/native/generic/offload/multi), 'drv_prog_id', 'skb_prog_id', 'hw_prog_id'}."""
    q = _XdpQueryOpts(sz=ctypes.sizeof(_XdpQueryOpts))
    _call("bpf_xdp_query(ifindex %d)" % ifindex, _L().bpf.bpf_xdp_query, ifindex, 0, ctypes.byref(q))
    return {"prog_id": q.prog_id, "mode": _XDP_ATTACHED.get(q.attach_mode, "unknown"),
            "drv_prog_id": q.drv_prog_id, "skb_prog_id": q.skb_prog_id, "hw_prog_id": q.hw_prog_id}


def _mode_flags(mode):
    try:
        return _XDP_MODE_FLAGS[mode]
    except KeyError:
        raise BpfError("unknown XDP mode %r (native, generic, offload or None)" % (mode,), _errno.EINVAL)


def xdp_attach(ifindex, prog_fd, mode=None, old_prog_fd=None, no_replace=False):
    """Attach prog_fd as the XDP program of ifindex and return the mode obtained.

    mode None lets the kernel choose (native when the driver has it, else generic).
    old_prog_fd: atomic replace, fails with EEXIST if another program is attached
    meanwhile. no_replace: fail with EBUSY/EEXIST if any program is attached.
    """
    flags = _mode_flags(mode)
    opts = None
    if old_prog_fd is not None:
        flags |= XDP_FLAGS_REPLACE
        opts = _XdpAttachOpts(sz=ctypes.sizeof(_XdpAttachOpts), old_prog_fd=old_prog_fd)
    elif no_replace:
        flags |= XDP_FLAGS_UPDATE_IF_NOEXIST
    _call("bpf_xdp_attach(ifindex %d)" % ifindex, _L().bpf.bpf_xdp_attach, ifindex, prog_fd, flags,
          ctypes.byref(opts) if opts is not None else None)
    return xdp_query(ifindex)["mode"]


def xdp_detach(ifindex, mode=None, old_prog_fd=None):
    """Detach the XDP program (of the given mode; only if it is old_prog_fd when given)."""
    flags = _mode_flags(mode)
    opts = None
    if old_prog_fd is not None:
        flags |= XDP_FLAGS_REPLACE
        opts = _XdpAttachOpts(sz=ctypes.sizeof(_XdpAttachOpts), old_prog_fd=old_prog_fd)
    _call("bpf_xdp_detach(ifindex %d)" % ifindex, _L().bpf.bpf_xdp_detach, ifindex, flags,
          ctypes.byref(opts) if opts is not None else None)


# ---------------------------------------------------------------- tc (clsact, direct-action)
def _tc_hook(ifindex, egress):
    return _TcHook(sz=ctypes.sizeof(_TcHook), ifindex=ifindex,
                   attach_point=BPF_TC_EGRESS if egress else BPF_TC_INGRESS)


def tc_attach(ifindex, prog_fd, handle=1, priority=1, egress=False):
    """Attach a SCHED_CLS program on the clsact ingress (or egress) hook, creating clsact if needed.

    Replaces whatever filter holds (handle, priority). Returns the attached prog id.
    """
    hook = _tc_hook(ifindex, egress)
    ret = _L().bpf.bpf_tc_hook_create(ctypes.byref(hook))
    if ret < 0 and ret != -_errno.EEXIST:
        raise BpfError("bpf_tc_hook_create(ifindex %d)" % ifindex, -ret, _L().take_log())
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), prog_fd=prog_fd, flags=BPF_TC_F_REPLACE,
                   handle=handle, priority=priority)
    _call("bpf_tc_attach(ifindex %d)" % ifindex, _L().bpf.bpf_tc_attach, ctypes.byref(hook), ctypes.byref(opts))
    return opts.prog_id


def tc_detach(ifindex, handle=1, priority=1, egress=False):
    """Remove the filter (handle, priority); False if it was not there."""
    hook = _tc_hook(ifindex, egress)
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=handle, priority=priority)
    try:
        _call("bpf_tc_detach(ifindex %d)" % ifindex, _L().bpf.bpf_tc_detach, ctypes.byref(hook), ctypes.byref(opts))
    except BpfError as exc:
        if exc.errno in (_errno.ENOENT, _errno.EINVAL):
            return False
        raise
    return True


def tc_query(ifindex, handle=1, priority=1, egress=False):
    """prog id attached at (handle, priority), or None."""
    hook = _tc_hook(ifindex, egress)
    opts = _TcOpts(sz=ctypes.sizeof(_TcOpts), handle=handle, priority=priority)
    try:
        _call("bpf_tc_query(ifindex %d)" % ifindex, _L().bpf.bpf_tc_query, ctypes.byref(hook), ctypes.byref(opts))
    except BpfError as exc:
        if exc.errno in (_errno.ENOENT, _errno.EINVAL):
            return None
        raise
    return opts.prog_id
