"""Every counter of the balancer in one read, fast enough to serve each Prometheus scrape.

    with counters.Reader(pin_root) as reader:
        snap = reader.read()

Reader opens the pinned maps once; read() does one batch lookup per map (lb_vip_stats,
lb_real_stats, lb_pair_stats, lb_global, ctl_pair_owner, lb_vip_table, lb_reals, lb_rings) and
returns
    {"vips": [{"key", "address", "port", "protocol", "vip_num", "packets", "bytes", "ring_id",
               "reals": [{"address", "index", "packets", "bytes"}]}],   # per (VIP, real)
     "reals": [{"address", "index", "packets", "bytes"}],               # per real, all its VIPs
     "unattributed": {"packets", "bytes"},                              # pair id 0 (lb_abi.h)
     "global": {LbGlobalStats fields}, "conn_table": {"ipv4": flows, "ipv6": flows}}
VIPs in lb_vip_table order of address, port, protocol; reals by address.

It never takes the pin-root lock (a scrape must not wait for a VIP run, nor delay one), so one
read may straddle a run: a pair whose owner was just written shows with its new VIP, counters
read a little before or after. The decoding of the configuration maps (VIP keys, real addresses,
pair owners) is redone only when their bytes change; per-CPU values are summed over whole arrays
(array slices), not per element.
"""
import array
import itertools

from . import balancer
from ..bpf import abi, libbpf
from ..errors import EngineError

_STATS = (abi.MAP_VIP_STATS, abi.MAP_REAL_STATS, abi.MAP_GLOBAL)
_CONFIG = (abi.MAP_VIP_TABLE, abi.MAP_REALS, abi.MAP_RINGS)


sum_percpu = abi.sum_percpu


class Reader:
    def __init__(self, pin_root=balancer.DEFAULT_PIN_ROOT):
        self.pin_root = pin_root
        self.maps = {}
        self._cache = {}
        self.owner = None
        try:
            with balancer.Balancer(pin_root) as bal:
                self.pairs = bal.pairs
            names = _STATS + _CONFIG + abi.CONN_MAPS + (balancer.PAIR_MAPS if self.pairs else ())
            for name in names:
                self.maps[name] = libbpf.Map.from_pin("%s/%s" % (pin_root, name))
        except libbpf.BpfError as exc:
            self.close()
            raise EngineError("pin_root %s: %s" % (pin_root, exc)) from exc
        except BaseException:
            self.close()
            raise
        self.ncpu = libbpf.num_possible_cpus()
        self.conn_table = {"ipv4": self.maps[abi.MAP_CONNS4].info["max_entries"] * abi.CONN_WAYS,
                           "ipv6": self.maps[abi.MAP_CONNS].info["max_entries"] * abi.CONN_WAYS}
        gm = self.maps[abi.MAP_GLOBAL]
        # A lb_global of an older build is shorter: its missing counters read 0.
        self._global_names = [n for n, _unused in abi.LbGlobalStats._fields_][:gm.value_size // 8]

    def close(self):
        for m in list(self.maps.values()) + [self.owner]:
            if m is not None:
                m.close()
        self.maps, self.owner = {}, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _owner(self):
        """ctl_pair_owner, opened once the engine has created it (after the first VIP run)."""
        if self.owner is None and self.pairs:
            try:
                m = libbpf.Map.from_pin("%s/%s" % (self.pin_root, balancer.CTL_PAIR_OWNER))
            except libbpf.BpfError:
                return None
            if (m.value_size, m.info["map_flags"]) != (8, balancer.OWNER_FLAGS):
                m.close()
                return None
            self.owner = m
        return self.owner

    def _stats(self, name, chunk=None, limit=None):
        m = self.maps[name]
        values = m.lookup_batch(chunk=chunk or m.info["max_entries"], raw=True, limit=limit)[1]
        return [a.tolist() for a in sum_percpu(values, (m.value_size + 7) // 8, self.ncpu)]

    def _decoded(self, name, blob, decode):
        hit = self._cache.get(name)
        if hit is None or hit[0] != blob:
            hit = self._cache[name] = (blob, decode(blob))
        return hit[1]

    def read(self):
        try:
            return self._read()
        except libbpf.BpfError as exc:
            raise EngineError("reading the balancer counters under %s: %s" % (self.pin_root, exc)) from exc

    def _read(self):
        m = self.maps
        vt = m[abi.MAP_VIP_TABLE]
        vips = self._decoded("vips", vt.lookup_batch(chunk=vt.info["max_entries"], raw=True)[1], _vip_list)
        rm = m[abi.MAP_REALS]
        reals = self._decoded("reals", rm.lookup_batch(chunk=rm.info["max_entries"], raw=True)[1], _real_list)
        keys, ids = m[abi.MAP_RINGS].lookup_batch(chunk=m[abi.MAP_RINGS].info["max_entries"], raw=True)
        ring_ids = dict(zip(array.array("I", keys), array.array("I", ids)))
        owner = self._owner()
        by_vip, top = {}, 0
        if owner is not None:
            blob = balancer.owner_words(owner)
            hit = self._cache.get("owner")
            if hit is None or hit[0] != blob or hit[1] is not reals:
                hit = self._cache["owner"] = (blob, reals, _pairs_by_vip(blob, reals))
            by_vip, top = hit[2]
        vp, vb = self._stats(abi.MAP_VIP_STATS)
        rp, rb = self._stats(abi.MAP_REAL_STATS, chunk=8192)
        g = self._stats(abi.MAP_GLOBAL)
        if self.pairs:
            # Ids are taken lowest first: the counters above the highest owned one are unused.
            pp, pb = self._stats(abi.MAP_PAIR_STATS, chunk=min(top + 1, 8192), limit=top + 1)
        else:
            pp = pb = [0]
        out_vips = []
        for key, addr, port, proto, num in vips:
            out_vips.append({
                "key": key, "address": addr, "port": port, "protocol": proto, "vip_num": num,
                "packets": vp[num], "bytes": vb[num], "ring_id": ring_ids.get(num),
                "reals": [{"address": a, "index": i, "packets": pp[pid], "bytes": pb[pid]}
                          for pid, a, i in by_vip.get(num, ())]})
        return {
            "vips": out_vips,
            "reals": [{"address": a, "index": i, "packets": rp[i], "bytes": rb[i]} for i, a, _o in reals["live"]],
            "unattributed": {"packets": pp[0], "bytes": pb[0]},
            "global": dict(zip(self._global_names, (int(x[0]) for x in g)),
                           **{n: 0 for n, _u in abi.LbGlobalStats._fields_[len(self._global_names):]}),
            "conn_table": dict(self.conn_table),
        }


def _vip_list(blob):
    vips = balancer.decode_vips(blob)[0].values()
    order = sorted(vips, key=lambda v: (balancer._sort_key(v["address"]), v["port"], v["protocol"]))
    return [(v["key"], v["address"], v["port"], v["protocol"], v["vip_num"]) for v in order]


def _real_list(blob):
    """{"live": [(index, address, order)] of live reals by index, "by_index": {index: (address, order)}}."""
    size = len(bytes(abi.LbReal()))
    words = array.array("I", blob)
    fams = words[4::size // 4]
    live = []
    for idx in range(1, len(fams)):
        fam = fams[idx]
        if fam:
            raw = blob[idx * size:idx * size + 16]
            order = (4, raw[:4]) if fam == abi.FAMILY_V4 else (6, raw)
            live.append((idx, balancer._ip_text(raw, fam), order))
    return {"live": live, "by_index": {i: (a, o) for i, a, o in live}}


def _pairs_by_vip(blob, reals):
    """{vip_num: [(pair id, address, real index)] by address} of ctl_pair_owner's values."""
    words = array.array("I", blob)
    nums, idxs = words[0::2], words[1::2]
    known = reals["by_index"]
    out = {}
    top = 0
    for pid in itertools.compress(range(len(nums)), nums):
        if pid:
            idx = idxs[pid]
            addr, order = known.get(idx, ("index-%d" % idx, (9, b"")))
            out.setdefault(nums[pid] - 1, []).append((order, pid, addr, idx))
            top = pid
    return {num: [(pid, a, i) for _o, pid, a, i in sorted(lst)] for num, lst in out.items()}, top
