"""Plan a VIP request against the state read from the kernel, then write only the difference.

plan() is pure computation on a balancer.State (rings are built there, so check mode reports
the exact ring changes); apply() performs the writes in the order documented in balancer.py.
ensure() is the entry point the modules and the CLI use.
"""
import array
import collections
import operator
import os
import pickle
import struct

from . import maglev, vipspec
from ..bpf import abi, libbpf
from .balancer import Balancer, _sort_key, _u32, bpf_fail
from ..errors import EngineError


# Parallel ring builds pay off once a few rings are new (fork + result transfer ~ 10 ms each).
_PARALLEL_MIN = 8
# Rings installed per batch update: one wait for running programs per batch instead of per ring,
# while at most this many new rings (520 KiB each at the default size) are held open at once.
_RING_BATCH = 64


def _fail(field, value, msg):
    raise EngineError("%s: %s" % (field, msg), field=field, value=value)


# ------------------------------------------------------------------ ring building
def _ring_job(job):
    reals, idxs, size = job
    return maglev.build_ring_u32(reals, idxs, size)


def _fork_map(func, jobs):
    """map(func, jobs) over forked workers, one ring per core at a time (each ring still costs a few ms
    of Python around the kernel fill, and 35-55 ms where the fill runs in Python).

    Plain fork + pipes rather than multiprocessing: no semaphores (/dev/shm) and nothing to set
    up inside AnsiballZ; children exit with os._exit and never return into the caller.
    """
    try:
        ncpu = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        ncpu = os.cpu_count() or 1
    workers = min(ncpu, 8, len(jobs))
    if workers < 2 or len(jobs) < _PARALLEL_MIN:
        return [func(j) for j in jobs]
    chunks = [list(range(w, len(jobs), workers)) for w in range(workers)]
    children = []
    for chunk in chunks[1:]:
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            try:
                payload = ("ok", [func(jobs[i]) for i in chunk])
            except BaseException as exc:
                payload = ("err", "%s: %s" % (type(exc).__name__, exc))
            with os.fdopen(wfd, "wb") as out:
                out.write(pickle.dumps(payload))
            os._exit(0)
        os.close(wfd)
        children.append((pid, rfd, chunk))
    results = [None] * len(jobs)
    error = None
    try:
        for i in chunks[0]:
            results[i] = func(jobs[i])
    finally:
        for pid, rfd, chunk in children:
            with os.fdopen(rfd, "rb") as inp:
                data = inp.read()
            os.waitpid(pid, 0)
            status, value = pickle.loads(data) if data else ("err", "ring worker died")
            if status != "ok":
                error = error or value
                continue
            for i, r in zip(chunk, value):
                results[i] = r
    if error:
        raise EngineError("building Maglev rings failed: %s" % error)
    return results


# ------------------------------------------------------------------ plan
class Plan:
    """What a request changes. .result() is what modules return."""

    def __init__(self):
        self.new_reals = {}        # index -> address (written as live)
        self.reset_real_stats = set()
        self.free_reals = {}       # index -> address (tombstoned at the end)
        self.filter_pre = None     # address set whose bits must be set before adding addresses
        self.filter_post = None    # final address set
        self.addr_writes = {}      # address -> lb_addr_meta flags
        self.addr_deletes = []
        self.upserts = []          # dicts: key, vip_num, new, meta (flags) or None, ring, record, ...
        self.removals = []         # dicts: key, address, port, protocol, vip_num
        self.orphans = []          # vip_nums with a ring or record but no VIP
        self.changes = []          # per-VIP result entries
        self.before, self.after = {}, {}
        self.warnings, self.repairs = [], []
        self.counts = {}
        # Pair ids (balancer.py): owner entries to write {id: (vip_num, real index)}, rows to write
        # before and after the rings {vip_num: array('H')}, ids to free before and after them.
        self.pair_new = {}
        self.rows_pre, self.rows_post = {}, {}
        self.pairs_free_early, self.pairs_free_late = [], []
        self.rows_clear = []       # vip_nums whose rows are zeroed with the early frees

    @property
    def pairs_changed(self):
        return bool(self.pair_new or self.rows_pre or self.rows_post or self.rows_clear or self.pairs_free_early
                    or self.pairs_free_late)

    @property
    def changed(self):
        return bool(self.pairs_changed or self.new_reals or self.free_reals or self.filter_pre is not None
                    or self.filter_post is not None or self.addr_writes or self.addr_deletes
                    or any(u["write"] for u in self.upserts) or self.removals or self.orphans)

    def result(self):
        return {"changed": self.changed, "vips": self.changes, "summary": self.counts,
                "repairs": self.repairs, "warnings": self.warnings,
                "diff": {"before": {"vips": self.before}, "after": {"vips": self.after}}}


def _diff_view(spec):
    if spec is None:
        return None
    return {"flags": spec["flags"], "icmp_echo": spec["icmp_echo"],
            "reals": {r["address"]: r["weight"] for r in spec["reals"]}}


def _real_changes(before, after):
    """Reals added, removed and reweighted; both lists come sorted by address (vipspec, State.spec)."""
    b = {r["address"]: r["weight"] for r in (before or {}).get("reals", [])}
    a = {r["address"]: r["weight"] for r in (after or {}).get("reals", [])}
    return {
        "reals_added": [x for x in a if x not in b],
        "reals_removed": [x for x in b if x not in a],
        "weights_changed": [{"address": x, "before": b[x], "after": a[x]} for x in a if x in b and b[x] != a[x]],
    }


def _ring_size(bal, state, requested):
    size = None
    for ring_id in state.ring_ids.values():
        try:
            with libbpf.Map.from_id(ring_id) as inner:
                size = inner.info["max_entries"]
            break
        except libbpf.BpfError:
            continue
    if requested is not None:
        requested = vipspec.ring_size(requested)
        if size is not None and requested != size:
            _fail("ring_size", requested, "%d does not match the %d slots of the rings already loaded "
                  "(the size is built into balancer.o: LB_RING_SIZE)" % (requested, size))
        return requested
    return size or abi.RING_SIZE


class _Allocator:
    """Real indices for addresses, following the preferences documented in balancer.py."""

    def __init__(self, bal, state, plan, keep):
        self.bal, self.state, self.plan = bal, state, plan
        self.never = list(state.never)
        self.in_use = set(keep)
        self._conn_refs = None

    def _reusable_tombstone(self, needed):
        if self._conn_refs is None:
            self._conn_refs = set()
            for name in abi.CONN_MAPS:
                self._conn_refs |= abi.conn_real_refs(self.bal.maps[name])
        spare = sorted(i for a, i in self.state.tomb.items() if a not in needed and i not in self.in_use)
        for idx in spare:
            if idx not in self._conn_refs:
                return idx
        if spare:
            self.plan.warnings.append(
                "lb_reals is full: reusing index %d although connection-table entries still point at it; "
                "those connections move to the new real" % spare[0])
            return spare[0]
        return None

    def index(self, addr, needed):
        st = self.state
        if addr in st.live:
            idx = st.live[addr]
        elif addr in st.tomb:
            idx = st.tomb[addr]
            self.plan.new_reals[idx] = addr
        else:
            idx = self.never.pop(0) if self.never else self._reusable_tombstone(needed)
            if idx is None:
                _fail("vips", addr, "no free real index for %s: all %d slots of lb_reals are in use "
                      "(LB_MAX_REALS - 1)" % (addr, self.bal.max_reals - 1))
            self.plan.new_reals[idx] = addr
            self.plan.reset_real_stats.add(idx)
        self.in_use.add(idx)
        return idx


def plan(bal, state, desired, remove=(), purge=False, ring_size=None, want_diff=False, check_mode=False,
         needed=None):
    """The Plan taking `state` to `desired` (normalised VIPs); `remove`: VIP keys to delete;
    `needed`: vipspec.real_addresses(desired), when the caller has it already."""
    p = Plan()
    size = _ring_size(bal, state, ring_size)
    cur = state.vips
    want = {v["key"]: v for v in desired}
    removed = [k for k in cur if k not in want and (purge or k in remove)]
    kept = [k for k in cur if k not in want and k not in removed]
    if len(kept) + len(want) > bal.max_vips:
        _fail("vips", len(kept) + len(want), "%d VIPs (%d kept from earlier runs) exceed the %d the balancer "
              "holds (LB_MAX_VIPS)" % (len(kept) + len(want), len(kept), bal.max_vips))

    # Reals: kept VIPs keep their indices, requested ones get theirs.
    keep_refs = set()
    for k in kept:
        keep_refs |= state.referenced(cur[k]["vip_num"])
    needed = vipspec.real_addresses(desired) if needed is None else needed
    alloc = _Allocator(bal, state, p, keep_refs)
    # Known addresses first (no choice to make), then new ones in address order, so the same
    # request gives the same indices.
    index = {a: alloc.index(a, needed) for a in needed if a in state.live or a in state.tomb}
    index.update((a, alloc.index(a, needed)) for a in sorted(needed - set(index), key=_sort_key))
    final_refs = keep_refs | set(index.values())
    for addr, idx in state.live.items():
        if idx not in final_refs:
            p.free_reals[idx] = addr

    # VIP numbers: lowest free first (removals are written first, so theirs are free too).
    gone = {cur[k]["vip_num"] for k in removed}
    used = {cur[k]["vip_num"] for k in kept} | {cur[k]["vip_num"] for k in want if k in cur}
    free = sorted(set(range(bal.max_vips)) - used)
    nums = {k: (cur[k]["vip_num"] if k in cur else free.pop(0)) for k in want}
    _check_table(state, removed, desired)

    # Addresses: flags of requested VIPs win, kept VIPs keep theirs.
    final_addrs = {}
    for k in kept:
        a = cur[k]["address"]
        final_addrs[a] = state.addrs.get(a, 0)
    for v in desired:
        final_addrs[v["address"]] = 0 if v["icmp_echo"] else abi.ADDR_F_NO_ECHO
    for a, flags in final_addrs.items():
        if state.addrs.get(a) != flags:
            p.addr_writes[a] = flags
    p.addr_deletes = [a for a in state.addrs if a not in final_addrs]
    bits = len(state.filter_words) * 64
    if set(final_addrs) - set(state.addrs):
        pre = set(state.addrs) | set(final_addrs)
        if abi.addr_filter_words(pre, bits) != state.filter_words:
            p.filter_pre = pre
    post_from = abi.addr_filter_words(p.filter_pre, bits) if p.filter_pre is not None else state.filter_words
    if abi.addr_filter_words(final_addrs, bits) != post_from:
        p.filter_post = set(final_addrs)

    _plan_upserts(p, bal, state, desired, index, nums, size, want_diff, check_mode)
    for k in removed:
        v = cur[k]
        p.removals.append(dict(v))
        before = state.spec(k)
        entry = {"key": k, "address": v["address"], "port": v["port"], "protocol": v["protocol"],
                 "action": "removed", "vip_num": v["vip_num"], "ring_written": False,
                 "ring_slots_changed": size if v["vip_num"] in state.ring_ids else 0}
        entry.update(_real_changes(before, None))
        p.changes.append(entry)
        p.before[k], p.after[k] = _diff_view(before), None
    final_nums = set(nums.values()) | {cur[k]["vip_num"] for k in kept}
    p.orphans = sorted((set(state.ring_ids) | set(state.records)) - final_nums - gone)
    if bal.pairs:
        members = {cur[k]["vip_num"]: state.referenced(cur[k]["vip_num"]) for k in kept}
        members.update((u["vip_num"], u["members"]) for u in p.upserts)
        _plan_pairs(p, bal, state, members, {u["vip_num"] for u in p.upserts if u["new"]})
    _repairs(p, bal, state, removed)
    _count(p, size)
    return p


def _repairs(p, bal, state, removed):
    """What an interrupted earlier run left (balancer.py's write order says what each step leaves),
    as sentences in p.repairs, or p.warnings when this request does not touch it."""
    out = p.repairs
    ups = {u["key"]: u for u in p.upserts}
    gone = set(removed)
    for k, v in state.vips.items():
        num = v["vip_num"]
        if num not in state.ring_ids:
            problem = "has no ring"
        elif num not in state.records:
            if bal.ctl is None:
                continue  # no record map yet (first run, or maps of another build): nothing was interrupted
            problem = "has no record"
        elif not state.ring_ok(num):
            problem = "its installed ring does not match its record"
        else:
            continue
        if k in ups:
            u = ups[k]
            fix = "ring rebuilt and record written" if u["ring_written"] else "record rewritten to match the installed ring"
        elif k in gone:
            fix = "removed"
        else:
            p.warnings.append("%s: %s (an interrupted run); it is not in this request, so it is left as it is: "
                              "apply it again to repair it" % (k, problem))
            continue
        out.append("%s: %s (an interrupted run): %s" % (k, problem, fix))
    for u in p.upserts:
        num = u["vip_num"]
        if u["new"] and (num in state.ring_ids or num in state.records):
            out.append("VIP number %d held a ring or record of no VIP (an interrupted run): reused for %s"
                       % (num, u["key"]))
    for num in p.orphans:
        out.append("VIP number %d has a ring or record but no VIP (an interrupted run): removed" % num)
    for a in p.addr_deletes:
        if not any(state.vips[k]["address"] == a for k in removed):
            out.append("address %s had no VIP left (an interrupted run): removed from lb_vip_addrs" % a)
    if p.free_reals:
        # Reals are freed in the last step: a live real no VIP's record (or ring, without a record)
        # refers to was left by a run that stopped before it. Looked up per freed index in the raw
        # records: cheap next to decoding every record of a large balancer.
        by_ring = set()
        for v in state.vips.values():
            if v["vip_num"] not in state.records:
                by_ring |= state.referenced(v["vip_num"])
        nums = {v["vip_num"] for v in state.vips.values()}
        live = [rec for num, rec in state.records.items() if num in nums]
        for idx in sorted(p.free_reals):
            if idx in by_ring or any(struct.unpack_from("=I", rec, 4 * idx)[0] for rec in live):
                continue
            out.append("real %s (index %d) was in lb_reals with no VIP referring to it (an interrupted run): "
                       "freed" % (p.free_reals[idx], idx))


def _plan_pairs(p, bal, state, members, new_nums):
    """Pair ids for `members` ({vip_num: real indices} of every VIP after this run; `new_nums`: VIPs
    that are new, whose numbers' old ids are never kept), in balancer.py's write order."""
    owners = state.pair_owner
    live_nums = {v["vip_num"] for v in state.vips.values()}
    have, early, late = {}, [], []
    for pid in sorted(owners):
        num, idx = owners[pid]
        if num not in live_nums or num in new_nums or num not in members:
            early.append(pid)   # no VIP (any more) at that number: nothing sends it traffic
        elif (num, idx) in have or idx not in members[num]:
            late.append(pid)    # a real leaving its VIP (or a duplicate): freed after the ring
        else:
            have[(num, idx)] = pid
    free = (i for i in range(1, bal.max_pairs) if i not in owners)
    want = [(num, idx) for num in sorted(members) for idx in sorted(members[num]) if (num, idx) not in have]
    for key in want:
        pid = next(free, None)
        if pid is None:
            _fail("vips", len(have) + len(want), "%d (VIP, real) pairs exceed the %d counter ids of the "
                  "balancer (LB_MAX_PAIRS - 1; ids of reals leaving VIPs are free only after this run)"
                  % (len(have) + len(want), bal.max_pairs - 1))
        have[key] = pid
        p.pair_new[pid] = key
    final = {}
    for (num, idx), pid in have.items():
        final.setdefault(num, array.array("H", bytes(2 * bal.max_reals)))[idx] = pid
    leaving = {}
    for pid in late:
        num, idx = owners[pid]
        leaving.setdefault(num, []).append((idx, pid))
    rows = state.pair_rows
    empty = bytes(2 * bal.max_reals)
    refs = {}

    def referenced(num):
        if num not in refs:
            refs[num] = state.referenced(num) if num in live_nums else set()
        return refs[num]

    stale = []
    for num, row in final.items():
        cur = rows.get(num, empty)
        pre = row
        if leaving.get(num):
            # The old ring still sends packets to leaving reals until the new one is in.
            old = array.array("H", cur)
            pre = array.array("H", row)
            for idx, pid in leaving[num]:
                if old[idx] == pid:
                    pre[idx] = pid
        if pre.tobytes() != cur:
            p.rows_pre[num] = pre
        if pre is not row and pre != row:
            p.rows_post[num] = row
        if num not in new_nums:
            old = array.array("H", cur)
            if any(old[i] != have[(num, i)] or have[(num, i)] in p.pair_new
                   for i in referenced(num) if (num, i) in have):
                stale.append(num)
    p.rows_clear = sorted(n for n in rows if n not in final)
    p.pairs_free_early, p.pairs_free_late = early, late
    # What an earlier run (or an upgrade) left: ids missing from the rows of VIPs in place.
    names = {v["vip_num"]: k for k, v in state.vips.items()}
    if stale:
        shown = ", ".join(names[n] for n in stale[:3]) + (", ..." if len(stale) > 3 else "")
        p.repairs.append("%d VIPs (%s) had per-real counter ids missing from lb_vip_pairs or ctl_pair_owner "
                         "(a balancer.o that adds them, maps re-created, or an interrupted run): written; "
                         "their per-real counters start from zero" % (len(stale), shown))
    orphan = [pid for pid in early if owners[pid][0] not in live_nums]
    if orphan:
        p.repairs.append("%d counter ids belonged to VIP numbers without a VIP (an interrupted run): freed"
                         % len(orphan))
    strays = [pid for pid in late if owners[pid][1] not in referenced(owners[pid][0])]
    if strays:
        p.repairs.append("%d counter ids belonged to reals no longer in their VIP (an interrupted run): freed"
                         % len(strays))
    cleared = [n for n in p.rows_clear if n not in live_nums]
    if cleared:
        p.repairs.append("lb_vip_pairs had rows for %d VIP numbers without a VIP (an interrupted run): cleared"
                         % len(cleared))


def _check_table(state, removed, desired):
    """Fail before any write when a new VIP would find its probe window in lb_vip_table full."""
    used = {slot for slot, name in state.table_used.items() if name not in removed}
    size = state.table_size
    for v in desired:
        if v["key"] in state.vips:
            continue
        first = abi.vip_slot(abi.vip_key(v["address"], v["port"], v["protocol"]), size)
        window = [(first + i) % size for i in range(abi.VIP_PROBES)]
        free = [s for s in window if s not in used]
        if not free:
            _fail("vips", v["key"], "%s: its %d slots in lb_vip_table are taken by other VIPs (%s); rebuild "
                  "balancer.o with a larger LB_VIP_TABLE_SHIFT" % (v["key"], abi.VIP_PROBES,
                                                                   ", ".join(state.table_used[s] for s in window)))
        used.add(free[0])


def _record(bal, weights):
    rec = array.array("I", bytes(4 * bal.max_reals))
    for idx, w in weights.items():
        rec[idx] = w + 1
    return rec


def _plan_upserts(p, bal, state, desired, index, nums, size, want_diff, check_mode):
    jobs = []
    for v in desired:
        k = v["key"]
        c = state.vips.get(k)
        num = nums[k]
        flags = vipspec.flags_value(v["flags"])
        rec = _record(bal, {index[r["address"]]: r["weight"] for r in v["reals"]})
        old = state.records.get(num) if c else None
        if old is not None:
            rec[0] = struct.unpack_from("=I", old)[0]  # compare the weights only (entry 0 is the ring id)
        same_weights = old is not None and rec.tobytes() == old
        need_ring = c is None or not (same_weights and state.ring_ok(num))
        meta = flags if c is None or c["flags"] != flags else None
        addr_changed = v["address"] in p.addr_writes
        u = {"key": k, "vip": v, "vip_num": num, "new": c is None, "meta": meta, "record": rec,
             "members": {index[r["address"]] for r in v["reals"]},
             "ring": None, "ring_written": False, "need_ring": need_ring, "write": need_ring or meta is not None}
        p.upserts.append(u)
        if need_ring and c is None and check_mode:
            # A new VIP's ring changes every slot whatever it holds: check mode need not build it.
            u.update(slots=size, ring_written=True)
        elif need_ring:
            reals = [(r["address"], r["weight"]) for r in v["reals"]]
            jobs.append((u, (reals, [index[r["address"]] for r in v["reals"]], size)))
        before = state.spec(k) if c is not None and (u["write"] or addr_changed or want_diff) else None
        u["before"] = before
        if c is not None and not u["write"] and not addr_changed:
            u["action"] = "unchanged"
        else:
            u["action"] = "added" if c is None else "changed"
    # VIPs with the same reals, indices and size get the same ring (a pool of reals shared by many
    # VIPs, and every one of them changes when a shared real falls): each distinct ring is built
    # once, and compared once with each distinct installed ring. Every VIP still gets an inner map
    # of its own, swapped in as before; the arrays are shared read-only between upserts.
    distinct, which = {}, []
    for _u, (reals, idxs, sz) in jobs:
        which.append(distinct.setdefault((tuple(reals), tuple(idxs), sz), len(distinct)))
    rings = [array.array("I", ring) for ring in (_fork_map(_ring_job, list(distinct)) if jobs else [])]
    # Installed rings are compared as the bytes of their maps (one memcmp) with the new ring laid
    # out the same way, and with the installed rings already counted; a ring's layout and counts
    # are dropped after its last VIP, so distinct rings never pile up.
    left = collections.Counter(which)
    layouts, counted = {}, {}
    for (u, _job), d in zip(jobs, which):
        new = rings[d]
        num = u["vip_num"]
        old = None
        if not u["new"] and num in state.ring_ids:
            old = abi.ring_read_slots(bal.maps[abi.MAP_RINGS], num)
        if old is not None and len(old) == abi.RING_SLOT_BYTES * len(new):
            layout = layouts.get(d)
            if layout is None:
                layout = layouts[d] = abi.ring_slots(new)
            u["slots"] = 0 if old == layout else _slots_changed(counted.setdefault(d, []), old, new)
        else:
            u["slots"] = len(new)
        left[d] -= 1
        if not left[d]:
            layouts.pop(d, None)
            counted.pop(d, None)
        if old is not None and u["slots"] == 0:
            # Same ring (e.g. weights scaled together, or a record lost to an interruption):
            # only the record is rewritten, pointing at the live ring.
            u["ring_id"] = state.ring_ids[num]
        else:
            u["ring"] = new
            u["ring_written"] = True
    for u in p.upserts:
        v, k = u["vip"], u["key"]
        entry = {"key": k, "address": v["address"], "port": v["port"], "protocol": v["protocol"],
                 "action": u["action"], "vip_num": u["vip_num"], "ring_written": u["ring_written"],
                 "ring_slots_changed": u.get("slots", 0) if u["ring_written"] else 0,
                 "flags_changed": u["meta"] is not None and not u["new"]}
        entry.update(_real_changes(u["before"], v) if u["action"] != "unchanged"
                     else {"reals_added": [], "reals_removed": [], "weights_changed": []})
        p.changes.append(entry)
        if u["action"] != "unchanged":
            p.before[k], p.after[k] = _diff_view(u["before"]), _diff_view(v)


# Installed rings remembered per new ring with their slot counts: VIPs that shared a pool of reals
# before share their old ring too. A few, so that 512 VIPs moving from distinct rings to one pool
# do not hold all 512 old rings at once.
_COUNTED = 4


def _slots_changed(seen, old, new):
    """Slots in which the installed ring `old` (its map's bytes, abi.ring_slots' layout) differs
    from `new` (an array of as many slots), each distinct pair counted once; `seen`: [(old ring,
    count)] of earlier VIPs with the same `new`."""
    for ring, n in seen:
        if ring == old:
            return n
    n = sum(map(operator.ne, array.array("I", old)[0::2], new))
    seen.append((old, n))
    if len(seen) > _COUNTED:
        del seen[0]
    return n


def _count(p, size):
    actions = [c["action"] for c in p.changes]
    p.counts = {
        "added": actions.count("added"), "changed": actions.count("changed"),
        "removed": actions.count("removed"), "unchanged": actions.count("unchanged"),
        "rings_written": sum(1 for u in p.upserts if u["ring_written"]),
        "ring_slots_changed": sum(c["ring_slots_changed"] for c in p.changes),
        "reals_allocated": len(p.new_reals), "reals_freed": len(p.free_reals),
        "pairs_allocated": len(p.pair_new), "pairs_freed": len(p.pairs_free_early) + len(p.pairs_free_late),
        "ring_size": size,
    }


# ------------------------------------------------------------------ apply
def apply(bal, p, on_step=None):
    """Write the plan. on_step(name) runs after each step (tests raise there to interrupt)."""
    step = on_step or (lambda name: None)
    m = bal.maps
    try:
        ctl = bal.ensure_ctl()
        for v in p.removals:
            abi.vip_delete(m[abi.MAP_VIP_TABLE], abi.vip_key(v["address"], v["port"], v["protocol"]))
            step("unlist %s" % v["key"])
            abi.ring_remove(m[abi.MAP_RINGS], v["vip_num"])
            ctl.update(_u32(v["vip_num"]), bytes(ctl.value_size))
            step("drop ring %s" % v["key"])
        if p.pairs_changed:
            _write_pairs_early(bal, p)
            step("pairs")
        for idx in sorted(p.new_reals):
            m[abi.MAP_REALS].update(_u32(idx), bytes(abi.real(p.new_reals[idx])))
            if idx in p.reset_real_stats:
                bal.reset_stats(abi.MAP_REAL_STATS, idx)
        step("reals")
        if p.filter_pre is not None:
            abi.addr_filter_sync(m[abi.MAP_ADDR_FILTER], p.filter_pre)
            step("filter")
        for addr, flags in p.addr_writes.items():
            m[abi.MAP_VIP_ADDRS].update(bytes(abi.addr_key(addr)), bytes(abi.LbAddrMeta(flags=flags)))
        step("addresses")
        writes = [u for u in p.upserts if u["write"]]
        for start in range(0, len(writes), _RING_BATCH):
            chunk = writes[start:start + _RING_BATCH]
            _install_rings(bal, [u for u in chunk if u["need_ring"] and u["ring"] is not None])
            for u in chunk:
                _write_vip(bal, ctl, u)
                step("vip %s" % u["key"])
        for num in p.orphans:
            abi.ring_remove(m[abi.MAP_RINGS], num)
            ctl.update(_u32(num), bytes(ctl.value_size))
        if p.rows_post or p.pairs_free_late:
            _write_rows(bal, p.rows_post)
            _free_pairs(bal, p.pairs_free_late)
            step("pairs freed")
        for addr in p.addr_deletes:
            m[abi.MAP_VIP_ADDRS].delete(bytes(abi.addr_key(addr)))
        if p.filter_post is not None:
            abi.addr_filter_sync(m[abi.MAP_ADDR_FILTER], p.filter_post)
        step("addresses removed")
        for idx in sorted(p.free_reals):
            raw = abi.ip_bytes(p.free_reals[idx])[0]
            m[abi.MAP_REALS].update(_u32(idx), raw + bytes(4))  # family 0, address kept
        step("reals freed")
    except libbpf.BpfError as exc:
        bpf_fail("writing the balancer maps under %s" % bal.pin_root, exc)


def _write_rows(bal, rows):
    if rows:
        nums = sorted(rows)
        bal.maps[abi.MAP_VIP_PAIRS].update_batch(array.array("I", nums).tobytes(),
                                                 b"".join(rows[n].tobytes() for n in nums))


def _free_pairs(bal, pids):
    if pids:
        bal.owner.update_batch(array.array("I", sorted(pids)).tobytes(), bytes(8 * len(pids)))


def _write_pairs_early(bal, p):
    """Pair ids before the rings (balancer.py's order): rows of VIPs gone cleared and their ids
    freed; new ids owned, their counters zeroed, then placed in their rows."""
    owner = bal.ensure_owner()
    _write_rows(bal, {n: array.array("H", bytes(2 * bal.max_reals)) for n in p.rows_clear})
    _free_pairs(bal, p.pairs_free_early)
    if p.pair_new:
        pids = sorted(p.pair_new)
        keys = array.array("I", pids).tobytes()
        words = [w for pid in pids for w in (p.pair_new[pid][0] + 1, p.pair_new[pid][1])]
        owner.update_batch(keys, array.array("I", words).tobytes())
        stats = bal.maps[abi.MAP_PAIR_STATS]
        stats.update_batch(keys, bytes(stats._value_len() * len(pids)))
    _write_rows(bal, p.rows_pre)


def _install_rings(bal, upserts):
    """New rings for these upserts, swapped in with one batch update (see abi.rings_install)."""
    inner, layouts = {}, {}
    try:
        for u in upserts:
            # VIPs sharing a ring share its array (plan): its map layout is made once per batch.
            ring = u["ring"]
            slots = layouts.get(id(ring))
            if slots is None:
                slots = layouts[id(ring)] = abi.ring_slots(ring)
            inner[u["vip_num"]] = abi.ring_new(ring, slots=slots)
        abi.rings_install(bal.maps[abi.MAP_RINGS], inner)
    finally:
        for m in inner.values():
            m.close()


def _write_vip(bal, ctl, u):
    """Record and table entry of an upsert, once its ring (if it needed a new one) is in place."""
    m = bal.maps
    num = u["vip_num"]
    rec = u["record"]
    if u["need_ring"]:
        if u["ring"] is not None:
            rec[0] = struct.unpack("=I", m[abi.MAP_RINGS].lookup(_u32(num)))[0]
        else:
            rec[0] = u["ring_id"]
        ctl.update(_u32(num), rec.tobytes())
    v = u["vip"]
    if u["new"]:
        bal.reset_stats(abi.MAP_VIP_STATS, num)
    if u["meta"] is not None:
        abi.vip_set(m[abi.MAP_VIP_TABLE], abi.vip_key(v["address"], v["port"], v["protocol"]),
                    abi.vip_meta(num, u["meta"]))


# ------------------------------------------------------------------ entry point
def ensure(pin_root, vips=(), remove=(), purge=False, ring_size=None, check_mode=False,
           want_diff=False, on_step=None, overlay=None, on_done=None):
    """Make the balancer's VIPs match. `vips`: normalised VIPs (vipspec.parse_vips/parse_vip).

    purge=True removes every VIP not listed; `remove` lists VIP keys to delete. Returns
    Plan.result() (plus 'ring_size'), with 'changed' telling whether anything was (or, in check
    mode, would be) written.

    Two hooks run while the pin-root lock is held (check mode takes no lock: they run all the
    same, unlocked, and must write nothing then):
    overlay(vips, state) -> the VIPs to plan with (the health overlay: other weights; the agent's
    re-read of the state file), given the State just read (state.spec(key) has the kernel's
    weights now);
    on_done(result) after the writes (or the plan, when nothing changed or in check mode), e.g.
    to keep the state file before another writer can change the maps.
    """
    vips = list(vips)
    with vipspec.gc_paused(), Balancer(pin_root) as bal:
        needed = vipspec.real_addresses(vips)
        vipspec.check_limits(vips, "vips", bal.max_vips, bal.max_reals, reals=needed)
        if not check_mode:
            bal.lock()
        state = bal.read()
        if overlay is not None:
            # The overlay may plan with what it read under the lock (the agent re-reads the state
            # file there): the reals it returns are the ones to allocate.
            vips = list(overlay(vips, state))
            needed = vipspec.real_addresses(vips)
            vipspec.check_limits(vips, "vips", bal.max_vips, bal.max_reals, reals=needed)
        try:
            p = plan(bal, state, vips, remove=remove, purge=purge, ring_size=ring_size,
                     want_diff=want_diff, check_mode=check_mode, needed=needed)
        except libbpf.BpfError as exc:
            bpf_fail("planning against the maps under %s" % pin_root, exc)
        if p.changed and not check_mode:
            try:
                apply(bal, p, on_step)
            except EngineError as exc:
                exc.partial = True  # some maps written: the next run repairs them (see balancer.py)
                raise
        result = p.result()
        if on_done is not None:
            on_done(result)
        return result
