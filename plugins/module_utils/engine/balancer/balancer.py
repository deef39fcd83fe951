"""The balancer's control-plane state, read from and written to the pinned maps.

The maps are the source of truth: every call reads them afresh, computes the difference with the
request and writes only that. Nothing is cached between runs.

Bookkeeping the data plane does not need lives in one extra map the engine creates and pins
next to the balancer's: ``ctl_vip_reals`` (ARRAY[max VIPs], key vip_num, value u32[max reals]).
Entry 0 of a VIP's record is the id of the inner ring map the engine installed last, entry i
(i >= 1) is weight+1 when real i belongs to the VIP (0: not a member). It is what makes weights
(a ring only shows slot counts), drained reals (weight 0, kept in lb_reals so established
connections finish) and reference counts readable from the kernel. A record is written with one
map update after its ring, so a record whose ring id differs from the live slot means "the ring
is not known to match: rebuild it".

Per-(VIP, real) counters (lb_abi.h: lb_vip_pairs, lb_pair_stats): every real of a VIP's record
(weight 0 included) has a pair id; ``ctl_pair_owner`` (ARRAY[max pairs], value two u32:
vip_num + 1 and the real index, zero = free) says whose each id is, so allocation takes the
lowest free id and a reader maps ids back to (VIP, real) with one batch read. A new VIP gets new
ids (its number may have been another VIP's): counters never continue someone else's.

Real indices (lb_reals):
  * index 0 is never used: a zeroed ring slot must mean "no backend";
  * a freed index keeps its address and gets family 0 (a tombstone): the data plane ignores
    connection-table entries that point at it, and the engine can tell it from a never-used
    (all-zero) index;
  * allocation prefers the same address's own index (live or tombstone, so its connections stay
    valid), then never-used indices, and only when those run out a tombstone that no
    connection-table entry points at (any tombstone as a last resort, with a warning), because
    a reused index would send the old real's established flows to the new real.

Write order (each step leaves a state the next run repairs; apply() calls on_step(name) between
steps, which is how the tests interrupt it):
  removed VIPs: table entry first, then ring, then record (a VIP never points to a missing
  ring; their slots and numbers are free for what follows) -> reals -> address filter bits
  (before new addresses) -> lb_vip_addrs -> for each added/changed VIP: new ring, then its
  record, then its lb_vip_table entry -> orphan rings/records -> unused addresses, final
  filter -> tombstones for reals nobody references.
  Pair ids: those of removed VIPs (and of VIP numbers without a VIP) are cleared from their rows
  and freed right after the removals (no ring sends them traffic any more); new ones get their
  owner entry, then zeroed counters, then their place in the VIP's row, before the rings
  (rows keep the ids of leaving reals meanwhile: the old ring may still send them packets);
  after the rings, rows get their final content and the leaving ids are freed. A row that does
  not match the owners (its map re-created by an upgrade, an interrupted run) is rewritten.
"""
import array
import collections
import fcntl
import ipaddress
import itertools
import os
import socket
import struct

from . import vipspec
from ..bpf import abi, libbpf
from ..errors import EngineError, show

DEFAULT_PIN_ROOT = "/sys/fs/bpf/xdplb"
CTL_VIP_REALS = "ctl_vip_reals"
CTL_PAIR_OWNER = "ctl_pair_owner"
# The control plane's own pins: removed with the program's maps (xdp_program remove_pins, a rolled-back first restore).
CTL_MAPS = (CTL_VIP_REALS, CTL_PAIR_OWNER)
# Optional: maps pinned by an older balancer.o lack them (no per-(VIP, real) counters until the
# new object is loaded; everything else works).
PAIR_MAPS = (abi.MAP_VIP_PAIRS, abi.MAP_PAIR_STATS)
# BPF_F_MMAPABLE: readers take ctl_pair_owner (512 KiB) as one memcpy; a batch lookup copies
# entry by entry (~15 ms for 65536 here).
OWNER_FLAGS = abi.RING_INNER_FLAGS
BALANCER_MAPS = (abi.MAP_ADDR_FILTER, abi.MAP_VIP_ADDRS, abi.MAP_VIP_TABLE, abi.MAP_REALS, abi.MAP_RINGS,
                 abi.MAP_CONNS4, abi.MAP_CONNS, abi.MAP_CONFIG, abi.MAP_VIP_STATS, abi.MAP_REAL_STATS, abi.MAP_GLOBAL)
_PROTO_NAMES = {num: name for name, num in abi.PROTOS.items()}


def _u32(i):
    return struct.pack("=I", i)


def _ip_text(raw16, family):
    if family == abi.FAMILY_V4:
        # Same text as str(ipaddress.IPv4Address(...)), several times faster: thousands of reals.
        return socket.inet_ntoa(bytes(raw16[:4]))
    return ipaddress.IPv6Address(bytes(raw16[:16])).compressed


def _fam_of(raw):
    """Family of a tombstone from its address bytes (family itself is 0 there)."""
    return abi.FAMILY_V4 if raw[4:16] == bytes(12) else abi.FAMILY_V6


def bpf_fail(what, exc):
    raise EngineError("%s: %s" % (what, exc)) from exc


class Balancer:
    """The pinned maps under pin_root. Use as a context manager; lock() serialises writers."""

    def __init__(self, pin_root=DEFAULT_PIN_ROOT):
        self.pin_root = pin_root
        missing = [n for n in BALANCER_MAPS if not os.path.exists(os.path.join(pin_root, n))]
        if missing:
            raise EngineError(
                "pin_root: %s has no pinned balancer maps (%s missing); load and attach the balancer "
                "first (xdplb.katran.xdp_program with the same pin_root)" % (show(pin_root), ", ".join(missing)),
                field="pin_root", value=pin_root)
        self.maps = {}
        self._lock_fd = None
        try:
            for name in BALANCER_MAPS:
                self.maps[name] = libbpf.Map.from_pin(os.path.join(pin_root, name))
            ctl = os.path.join(pin_root, CTL_VIP_REALS)
            self.ctl = libbpf.Map.from_pin(ctl) if os.path.exists(ctl) else None
            self.owner = None
            self.pairs = all(os.path.exists(os.path.join(pin_root, n)) for n in PAIR_MAPS)
            if self.pairs:
                for name in PAIR_MAPS:
                    self.maps[name] = libbpf.Map.from_pin(os.path.join(pin_root, name))
                owner = os.path.join(pin_root, CTL_PAIR_OWNER)
                self.owner = libbpf.Map.from_pin(owner) if os.path.exists(owner) else None
        except libbpf.BpfError as exc:
            self.close()
            bpf_fail("pin_root %s" % show(pin_root), exc)
        # vip_num indexes lb_rings (and lb_vip_stats): its size is the VIP limit.
        self.max_vips = self.maps[abi.MAP_RINGS].info["max_entries"]
        self.max_reals = self.maps[abi.MAP_REALS].info["max_entries"]
        if self.ctl is not None and (self.ctl.info["max_entries"], self.ctl.value_size) != \
                (self.max_vips, 4 * self.max_reals):
            # Left from maps of another build: its records cannot be read; the next write
            # replaces it and every ring is rebuilt once.
            self.ctl.close()
            self.ctl = None
        self.max_pairs = self.maps[abi.MAP_PAIR_STATS].info["max_entries"] if self.pairs else 0
        if self.owner is not None and (self.owner.info["max_entries"], self.owner.value_size,
                                       self.owner.info["map_flags"]) != (self.max_pairs, 8, OWNER_FLAGS):
            self.owner.close()  # of another build, as ctl above: every VIP gets new ids once
            self.owner = None

    def close(self):
        for m in list(self.maps.values()) + [getattr(self, "ctl", None), getattr(self, "owner", None)]:
            if m is not None:
                m.close()
        self.maps = {}
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def lock(self):
        """Exclusive lock on the pin root for this process: two writers would corrupt refcounts."""
        if self._lock_fd is None:
            self._lock_fd = os.open(self.pin_root, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)

    def _pin_new(self, name, value_size, entries, flags=0):
        """A new control-plane ARRAY pinned as `name`, replacing a pin of another build."""
        path = os.path.join(self.pin_root, name)
        m = libbpf.Map.create(libbpf.BPF_MAP_TYPE_ARRAY, 4, value_size, entries, name=name, map_flags=flags)
        if os.path.exists(path):
            os.unlink(path)
        libbpf.obj_pin(m.fd, path)
        return m

    def ensure_ctl(self):
        if self.ctl is None:
            self.ctl = self._pin_new(CTL_VIP_REALS, 4 * self.max_reals, self.max_vips)
        return self.ctl

    def ensure_owner(self):
        if self.owner is None:
            self.owner = self._pin_new(CTL_PAIR_OWNER, 8, self.max_pairs, OWNER_FLAGS)
        return self.owner

    # ------------------------------------------------------------------ reading
    def read(self):
        try:
            return State(self)
        except libbpf.BpfError as exc:
            bpf_fail("reading the balancer maps under %s" % self.pin_root, exc)

    def read_config(self):
        raw = self.maps[abi.MAP_CONFIG].lookup(_u32(0))
        return config_dict(abi.LbConfig.from_bytes(raw))

    def write_config(self, cfg):
        value = abi.config(cfg["if_mac"], cfg["gateway_mac"], src_v4=cfg.get("source_v4"),
                           src_v6=cfg.get("source_v6"), per_flow_src=cfg["source_mode"] == "per_flow",
                           max_pkt_size=cfg.get("max_packet_size") or 0)
        self.maps[abi.MAP_CONFIG].update(_u32(0), bytes(value))

    def reset_stats(self, map_name, index):
        m = self.maps[map_name]
        m.update(_u32(index), bytes(m._value_len()))


def config_dict(c):
    v4 = bytes(c.src_v4)
    v6 = bytes(c.src_v6)
    return {
        "if_mac": ":".join("%02x" % b for b in bytes(c.if_mac)),
        "gateway_mac": ":".join("%02x" % b for b in bytes(c.gw_mac)),
        "source_mode": "per_flow" if c.flags & abi.CFG_F_PER_FLOW_SRC else "balancer",
        "source_v4": str(ipaddress.IPv4Address(v4)) if any(v4) else None,
        "source_v6": ipaddress.IPv6Address(v6).compressed if any(v6) else None,
        "max_packet_size": c.max_pkt_size,
    }


class State:
    """One consistent read of every map the control plane owns."""

    def __init__(self, bal):
        self.bal = bal
        self._read_reals(bal.maps[abi.MAP_REALS])
        self._read_vips(bal.maps[abi.MAP_VIP_TABLE])
        self.addrs = {}
        for k, v in bal.maps[abi.MAP_VIP_ADDRS].lookup_batch():
            a = abi.LbAddr.from_bytes(k)
            self.addrs[_ip_text(a.addr, a.family)] = abi.LbAddrMeta.from_bytes(v).flags
        fm = bal.maps[abi.MAP_ADDR_FILTER]
        words = fm.lookup_batch(chunk=fm.info["max_entries"], raw=True)[1]
        self.filter_words = list(array.array("Q", words))
        # Reading a map-in-map slot yields the inner map's id; empty slots are skipped.
        keys, ids = bal.maps[abi.MAP_RINGS].lookup_batch(chunk=bal.max_vips, raw=True)
        self.ring_ids = dict(zip(array.array("I", keys), array.array("I", ids)))
        self.records = {}
        self._decoded = {}  # record bytes after the ring id -> (weights, reals in vipspec's order)
        if bal.ctl is not None:
            keys, values = bal.ctl.lookup_batch(chunk=64, raw=True)
            size = bal.ctl.value_size
            empty = bytes(size)
            for i in range(len(keys) // 4):
                rec = values[i * size:(i + 1) * size]
                if rec != empty:
                    self.records[struct.unpack_from("=I", keys, i * 4)[0]] = rec
        self.pair_owner = {}  # pair id -> (vip_num, real index)
        self.pair_rows = {}   # vip_num -> its lb_vip_pairs row (bytes), rows that are not all zero
        if bal.pairs:
            self.pair_owner = read_owners(bal.owner)
            m = bal.maps[abi.MAP_VIP_PAIRS]
            keys, values = m.lookup_batch(chunk=64, raw=True)
            size = m.value_size
            empty = bytes(size)
            for i in range(len(keys) // 4):
                row = values[i * size:(i + 1) * size]
                if row != empty:
                    self.pair_rows[struct.unpack_from("=I", keys, i * 4)[0]] = row

    def _read_reals(self, m):
        keys, values = m.lookup_batch(chunk=min(m.info["max_entries"], 8192), raw=True)
        self.real_addr = {}   # index -> address text, live and tombstones
        self.real_order = {}  # index -> (version, packed): vipspec's order of reals
        self.live = {}        # address -> index
        self.tomb = {}        # address -> index (freed; family 0, address kept)
        self.never = []       # never used, ascending
        size = m.value_size
        zero = bytes(20)
        for i in range(len(keys) // 4):
            idx = struct.unpack_from("=I", keys, i * 4)[0]
            raw = values[i * size:i * size + 20]
            if idx == 0:
                continue
            if raw == zero:
                self.never.append(idx)
                continue
            fam = struct.unpack_from("=I", raw, 16)[0]
            if fam:
                addr = _ip_text(raw, fam)
                self.live[addr] = idx
            elif any(raw[:16]):
                fam = _fam_of(raw)
                addr = _ip_text(raw, fam)
                self.tomb.setdefault(addr, idx)
            else:
                self.never.append(idx)
                continue
            self.real_addr[idx] = addr
            self.real_order[idx] = (4, raw[:4]) if fam == abi.FAMILY_V4 else (6, raw[:16])
        self.never.sort()

    def _read_vips(self, m):
        self.table_size = m.info["max_entries"]
        blob = m.lookup_batch(chunk=min(self.table_size, 8192), raw=True)[1]
        self.vips, self.table_used = decode_vips(blob)

    # ------------------------------------------------------------ decoded views
    def _decode(self, rec):
        """(weights, ((address, weight) in vipspec's order of reals)) of a record's bytes, decoded
        once per distinct record: VIPs sharing a pool of reals have equal records but for the ring
        id (entry 0), and a plan reads each VIP's twice (the health overlay, the diff)."""
        body = rec[4:]
        hit = self._decoded.get(body)
        if hit is None:
            arr = array.array("I", rec)
            weights = {i: arr[i] - 1 for i in itertools.compress(range(len(arr)), arr) if i}
            order = sorted(weights, key=lambda i: self.real_order.get(i, (9, b"")))
            hit = self._decoded[body] = (weights, tuple((self.real_addr.get(i, "index-%d" % i), weights[i])
                                                        for i in order))
        return hit

    def record(self, vip_num):
        """(ring id, {real index: weight}) of a VIP's record; (0, {}) when there is none."""
        rec = self.records.get(vip_num)
        if rec is None:
            return 0, {}
        return struct.unpack_from("=I", rec)[0], dict(self._decode(rec)[0])

    def ring_ok(self, vip_num):
        ring_id = self.ring_ids.get(vip_num)
        rec = self.records.get(vip_num)
        return bool(ring_id) and rec is not None and struct.unpack_from("=I", rec)[0] == ring_id

    def spec(self, name):
        """The VIP as a normalised request (vipspec form), read back from the maps."""
        v = self.vips[name]
        rec = self.records.get(v["vip_num"])
        if rec is not None:
            reals = [{"address": a, "weight": w} for a, w in self._decode(rec)[1]]
        else:
            weights = {}
            if v["vip_num"] in self.ring_ids:
                # No record (maps written by something else): the ring tells membership, not weights.
                weights = {i: None for i in set(self.ring(v["vip_num"]) or ()) if i}
            order = sorted(weights, key=lambda i: self.real_order.get(i, (9, b"")))
            reals = [{"address": self.real_addr.get(i, "index-%d" % i), "weight": weights[i]} for i in order]
        echo = not (self.addrs.get(v["address"], 0) & abi.ADDR_F_NO_ECHO)
        return {"address": v["address"], "port": v["port"], "protocol": v["protocol"],
                "flags": vipspec.flag_names(v["flags"]), "icmp_echo": echo, "reals": reals, "key": name}

    def ring(self, vip_num):
        return abi.ring_read(self.bal.maps[abi.MAP_RINGS], vip_num)

    def referenced(self, vip_num):
        """Real indices a VIP holds: its record, or its ring when it has no record."""
        if vip_num in self.records:
            return set(self.record(vip_num)[1])
        return {i for i in (self.ring(vip_num) or ()) if i} if vip_num in self.ring_ids else set()


def decode_vips(blob):
    """({name: VIP dict}, {slot: name}) of lb_vip_table's values back to back (valid slots only)."""
    vips, used = {}, {}
    size = len(bytes(abi.LbVipEntry()))
    zero = bytes(size)
    for slot in range(len(blob) // size):
        raw = blob[slot * size:(slot + 1) * size]
        if raw == zero:
            continue
        e = abi.LbVipEntry.from_bytes(raw)
        if bytes(abi.vip_entry(e.key, e.meta)) != raw:  # the data plane's validity check
            continue
        key, meta = e.key, e.meta
        addr = _ip_text(key.addr, key.family)
        proto = _PROTO_NAMES.get(key.proto, str(key.proto))
        name = vipspec.key_text(addr, key.port_num, proto)
        used[slot] = name
        vips[name] = {"key": name, "address": addr, "port": key.port_num, "protocol": proto,
                      "vip_num": meta.vip_num, "flags": meta.flags}
    return vips, used


def owner_words(owner_map):
    """ctl_pair_owner's values as bytes (two u32 per pair id), through its mmap."""
    mm = owner_map.mmap()
    try:
        return mm[:8 * owner_map.info["max_entries"]]
    finally:
        mm.close()


def read_owners(owner_map):
    """{pair id: (vip_num, real index)} of ctl_pair_owner (None: no map yet, no owners)."""
    if owner_map is None:
        return {}
    words = array.array("I", owner_words(owner_map))
    nums = words[0::2]
    return {pid: (nums[pid] - 1, words[2 * pid + 1]) for pid in itertools.compress(range(len(nums)), nums)}


def is_loaded(pin_root):
    """Whether balancer maps are pinned under pin_root."""
    return all(os.path.exists(os.path.join(pin_root, n)) for n in BALANCER_MAPS)


def _sort_key(text):
    try:
        ip = ipaddress.ip_address(text)
        return ip.version, ip.packed
    except ValueError:
        return 9, text.encode()


# ------------------------------------------------------------------ balancer-wide config
SOURCE_MODES = ("balancer", "per_flow")


def config_request(interface, gateway_mac=None, gateway=None, source_mode="balancer", source_v4=None,
                   source_v6=None, max_packet_size=0, check_interface=True):
    """Validate a config request (no kernel access beyond the interface's existence)."""
    from .. import hostnet, validate
    from ..bpf import program
    for name, value in (("gateway_mac", gateway_mac), ("gateway", gateway), ("source_v4", source_v4),
                        ("source_v6", source_v6)):
        if value is not None and not isinstance(value, str):
            validate.fail(name, value, "expected a string")
        if isinstance(value, str) and len(value) > 64:
            # MACs and addresses are short: a longer value is a mistake, echoed cut (validate.fail).
            validate.fail(name, value, "too long for a %s" % name.replace("_", " "))
    if check_interface:
        program.ifindex(interface)
    else:
        validate.device_name(interface, "interface")
    validate.choice(source_mode, "source_mode", SOURCE_MODES)
    req = {"interface": interface, "source_mode": source_mode,
           "gateway_mac": hostnet.parse_mac(gateway_mac, "gateway_mac") if gateway_mac else None,
           "gateway": str(validate.ip_address(gateway, "gateway")) if gateway else None,
           "source_v4": str(validate.ip_address(source_v4, "source_v4", 4)) if source_v4 else None,
           "source_v6": validate.ip_address(source_v6, "source_v6", 6).compressed if source_v6 else None,
           "max_packet_size": validate.integer(max_packet_size or 0, "max_packet_size", 0, 65535)}
    if req["gateway_mac"] and req["gateway"]:
        raise EngineError("gateway: give gateway or gateway_mac, not both", field="gateway", value=gateway)
    return req


def resolve_config(req, timeout=3.0):
    """The lb_config values a request means on this host: MACs and addresses looked up."""
    from .. import hostnet
    iface = req["interface"]
    cfg = {"if_mac": hostnet.interface_mac(iface), "source_mode": req["source_mode"],
           "max_packet_size": req["max_packet_size"]}
    info = {"gateway": None, "gateway_mac_from": "given"}
    if req["gateway_mac"]:
        cfg["gateway_mac"] = req["gateway_mac"]
    else:
        gw = req["gateway"]
        if gw is None:
            found = hostnet.default_gateway(iface)
            if found is None:
                raise EngineError("gateway_mac: no default route through %s to take the gateway from; give "
                                  "gateway (its address) or gateway_mac" % iface, field="gateway_mac")
            gw = found[0]
            info["gateway_mac_from"] = "default route"
        else:
            info["gateway_mac_from"] = "neighbour"
        info["gateway"] = gw
        cfg["gateway_mac"] = hostnet.resolve_mac(gw, iface, timeout=timeout)
    cfg["source_v4"], cfg["source_v6"] = req["source_v4"], req["source_v6"]
    info["warnings"] = []
    if not (cfg["source_v4"] and cfg["source_v6"]):
        try:
            have = hostnet.interface_addresses(iface)
        except EngineError as exc:
            # Without pyroute2 an explicitly given source still works (the CLI on a bare host).
            if not (cfg["source_v4"] or cfg["source_v6"]):
                raise
            have = {4: [], 6: []}
            info["warnings"].append("cannot read the addresses of %s (%s)" % (iface, exc.msg))
        cfg["source_v4"] = cfg["source_v4"] or (have[4][0] if have[4] else None)
        cfg["source_v6"] = cfg["source_v6"] or (ipaddress.ip_address(have[6][0]).compressed if have[6] else None)
    if req["source_mode"] == "balancer" and not (cfg["source_v4"] or cfg["source_v6"]):
        raise EngineError("source_v4: %s has no global IPv4 or IPv6 address to use as the outer source; give "
                          "source_v4/source_v6 or use source_mode per_flow" % iface, field="source_v4")
    return cfg, info


def ensure_config(pin_root, req, check_mode=False, timeout=3.0, resolved=None):
    """Make lb_config what `req` (from config_request) means. Returns a result dict.

    `resolved`: resolve_config(req) already done (the restore resolves before it attaches)."""
    from ..bpf import program
    program.ifindex(req["interface"])
    cfg, info = resolved if resolved is not None else resolve_config(req, timeout)
    info = dict(info, warnings=list(info["warnings"]))
    with Balancer(pin_root) as bal:
        try:
            before = bal.read_config()
            changed = before != cfg
            if changed and not check_mode:
                bal.write_config(cfg)
        except libbpf.BpfError as exc:
            bpf_fail("lb_config under %s" % pin_root, exc)
    warnings = info.pop("warnings")
    if req["source_mode"] == "balancer":
        for fam, key in ((4, "source_v4"), (6, "source_v6")):
            if not cfg[key]:
                warnings.append("no IPv%d outer source address (%s): reals reached over IPv%d get packets "
                                "from the unspecified address" % (fam, key, fam))
    return {"changed": changed, "config": cfg, "previous": before, "warnings": warnings, **info}


# ------------------------------------------------------------------ read-only view (lb_info, CLI)
def _sum_stats(m):
    """[(packets, bytes)] by index of a per-CPU lb_stats array, summed over CPUs, in one batch read."""
    values = m.lookup_batch(raw=True)[1]
    return list(zip(*abi.sum_percpu(values, 2, libbpf.num_possible_cpus())))


def _stat(table, i):
    p, b = table[i] if i is not None and 0 <= i < len(table) else (0, 0)
    return {"packets": p, "bytes": b}


def info(pin_root=DEFAULT_PIN_ROOT, stats=True, ring_slots=False):
    """Config, VIPs (with reals, weights, counters), reals and global counters, for reading."""
    with Balancer(pin_root) as bal:
        try:
            return _info(bal, stats, ring_slots)
        except libbpf.BpfError as exc:
            bpf_fail("reading the balancer maps under %s" % pin_root, exc)


def _info(bal, stats, ring_slots):
    st = bal.read()
    vip_stats = _sum_stats(bal.maps[abi.MAP_VIP_STATS]) if stats else []
    real_stats = _sum_stats(bal.maps[abi.MAP_REAL_STATS]) if stats else []
    # Per (VIP, real): the id in the VIP's lb_vip_pairs row is where the data plane counts.
    pair_stats = _sum_stats(bal.maps[abi.MAP_PAIR_STATS]) if stats and bal.pairs else []
    users = {}
    vips = []

    def order(name):
        v = st.vips[name]
        return _sort_key(v["address"]), v["port"], v["protocol"]

    for name in sorted(st.vips, key=order):
        v = st.vips[name]
        spec = st.spec(name)
        num = v["vip_num"]
        record = st.record(num)[1]
        by_addr = {st.real_addr.get(i): i for i in record}
        counts = collections.Counter(st.ring(num) or ()) if ring_slots and num in st.ring_ids else {}
        row = array.array("H", st.pair_rows[num]) if num in st.pair_rows else None
        reals = []
        for r in spec["reals"]:
            idx = by_addr.get(r["address"])
            users.setdefault(idx, []).append(name)
            entry = {"address": r["address"], "weight": r["weight"], "index": idx}
            if ring_slots:
                entry["ring_slots"] = counts.get(idx, 0)
            if stats:
                entry["stats"] = _stat(pair_stats, row[idx] if row is not None and idx is not None else None)
            reals.append(entry)
        item = {"key": name, "address": v["address"], "port": v["port"], "protocol": v["protocol"],
                "flags": spec["flags"], "icmp_echo": spec["icmp_echo"], "vip_num": num,
                "ring": {"present": num in st.ring_ids, "consistent": st.ring_ok(num)}, "reals": reals}
        if ring_slots:
            # A swap installs a new map: a changed id means the ring was rewritten.
            item["ring"]["id"] = st.ring_ids.get(num)
        if stats:
            item["stats"] = _stat(vip_stats, num)
        vips.append(item)
    reals = []
    for addr, idx in sorted(st.live.items(), key=lambda kv: kv[1]):
        entry = {"index": idx, "address": addr, "vips": users.get(idx, [])}
        if stats:
            entry["stats"] = _stat(real_stats, idx)
        reals.append(entry)
    out = {"pin_root": bal.pin_root, "config": bal.read_config(), "vips": vips, "reals": reals,
           "limits": {"max_vips": bal.max_vips, "max_reals": bal.max_reals - 1, "vips": len(vips),
                      "reals": len(reals), "reals_freed": len(st.tomb), "reals_never_used": len(st.never)}}
    if stats:
        out["global"] = abi.global_stats(bal.maps[abi.MAP_GLOBAL])
        # Pair id 0: packets of a (VIP, real) without an id (lb_abi.h), e.g. connection-table hits
        # to a real removed from that VIP.
        out["unattributed"] = _stat(pair_stats, 0)
    return out
