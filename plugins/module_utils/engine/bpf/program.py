"""Load a BPF object with its maps pinned by name, and attach its XDP program to an interface.

* Pinning: libbpf reuses maps already pinned under the pin root (LIBBPF_PIN_BY_NAME), so a
  reload or an upgrade keeps VIPs, reals, rings and connections; the pin root is created 0700.
  A map whose layout the new object changed cannot be reused: the connection tables (flow state
  the data plane writes for itself) and the counters are then replaced by empty ones, with a
  warning; any other map refuses the load, since it holds configuration only the control plane
  can rebuild (lb_vip_pairs, new in an upgrade, is rewritten by the next VIP run).
* Idempotence: the kernel's program tag is a hash of the instructions with map references left
  out, so "same tag, and the attached program uses the maps pinned under the pin root" means the
  running program is the one asked for: nothing to do. force=True reloads anyway.
* Replace: XDP_FLAGS_REPLACE swaps the program in one netlink call, so the interface is never
  without XDP. A change of mode (native <-> generic) cannot be atomic (the kernel refuses two
  modes at once): that case detaches first and says so in a warning.
* Rollback: the program being replaced is pinned as <pin_root>/xdp_previous (a replaced program
  is freed otherwise), so rollback() can swap it back in, atomically too, when the new one broke
  something (the balancer role checks its connection after attaching).
"""
import errno
import os
import socket

from . import abi, libbpf
from .. import validate
from ..errors import EngineError, show

DEFAULT_PIN_ROOT = "/sys/fs/bpf/xdplb"
PREVIOUS_PIN = "xdp_previous"
BPFFS = "/sys/fs/bpf"
MODES = ("auto", "native", "generic")
_ELF = b"\x7fELF"
# Established flows lose their entries with the table, and follow the ring instead: the same
# real as long as the VIP's ring has not changed since the flow started.
REBUILDABLE_MAPS = abi.CONN_MAPS
# Counters restart from zero (lb_global grew conn_evict, for one): Prometheus takes a counter that
# goes down for a reset, and nothing else reads them.
STATS_MAPS = (abi.MAP_GLOBAL, abi.MAP_VIP_STATS, abi.MAP_REAL_STATS, abi.MAP_PAIR_STATS)
REBUILDABLE_MAPS = REBUILDABLE_MAPS + STATS_MAPS


def _bpf(field, what, exc):
    if isinstance(exc, libbpf.BpfError) and "libbpf.so" in str(exc):
        raise EngineError("libbpf: %s" % exc, field="libbpf") from exc
    raise EngineError("%s: %s: %s" % (field, what, exc), field=field) from exc


def check_object(path, field="object"):
    if not isinstance(path, str) or not path:
        raise EngineError("%s: a path to a BPF object (.o) is required" % field, field=field, value=path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise EngineError("%s: cannot read %s: %s (build it with `make -C files/bpf`)"
                          % (field, show(path), exc.strerror), field=field, value=path)
    if magic != _ELF:
        raise EngineError("%s: %s is not a BPF object (no ELF header)" % (field, show(path)), field=field, value=path)
    return path


def ifindex(name, field="interface"):
    validate.device_name(name, field)
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise EngineError("%s: %s does not exist in this network namespace" % (field, show(name)),
                          field=field, value=name)


def _mount_of(path):
    """(mount point, fs type) holding `path`, from /proc/self/mountinfo."""
    path = os.path.realpath(path)
    best = ("/", "")
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            mnt = fields[4].replace("\\040", " ")
            fstype = fields[fields.index("-") + 1]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                best = (mnt, fstype)
    return best


def _mount_bpffs():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    os.makedirs(BPFFS, exist_ok=True)
    if libc.mount(b"bpf", BPFFS.encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise EngineError("pin_root: cannot mount bpffs on %s: %s" % (BPFFS, os.strerror(err)), field="pin_root")


def check_pin_root(pin_root, check_mode):
    """Make sure pin_root can hold pins (bpffs, mode 0700). Returns a list of what was done."""
    if not isinstance(pin_root, str) or not os.path.isabs(pin_root):
        raise EngineError("pin_root: %s must be an absolute path inside a BPF filesystem" % show(pin_root),
                          field="pin_root", value=pin_root)
    done = []
    mnt, fstype = _mount_of(pin_root)
    if fstype != "bpf":
        if (pin_root + "/").startswith(BPFFS + "/") and mnt != BPFFS:
            done.append("mounted bpffs on %s" % BPFFS)
            if not check_mode:
                _mount_bpffs()
        else:
            raise EngineError("pin_root: %s is on %s (%s), not on a BPF filesystem; use a directory under %s"
                              % (show(pin_root), mnt, fstype or "unknown", BPFFS), field="pin_root", value=pin_root)
    if not os.path.isdir(pin_root):
        done.append("created %s (mode 0700)" % pin_root)
        if not check_mode:
            os.makedirs(pin_root, mode=0o700)
            os.chmod(pin_root, 0o700)
    elif os.stat(pin_root).st_mode & 0o077:
        done.append("restricted %s to mode 0700 (pins are root-only)" % pin_root)
        if not check_mode:
            os.chmod(pin_root, 0o700)
    return done


def attached(index):
    """The XDP program on ifindex as {prog_id, tag, name, mode, map_ids}, or None."""
    q = libbpf.xdp_query(index)
    if not q["prog_id"]:
        return None
    fd = libbpf.prog_fd_by_id(q["prog_id"])
    try:
        info = libbpf.prog_info(fd)
    finally:
        libbpf.close_fd(fd)
    return {"prog_id": q["prog_id"], "tag": info["tag"], "name": info["name"], "mode": q["mode"],
            "map_ids": info["map_ids"]}


def _pick_program(obj, program):
    names = obj.program_names()
    if program:
        if program not in names:
            raise EngineError("program: %s is not in %s (it has: %s)" % (show(program), obj.path, ", ".join(names)),
                              field="program", value=program)
        return program
    if "xdp_balancer" in names:
        return "xdp_balancer"
    if len(names) == 1:
        return names[0]
    raise EngineError("program: %s holds several programs (%s); name the one to attach"
                      % (obj.path, ", ".join(names)), field="program")


def _pinned_info(path):
    """map_info() of the map pinned at `path`."""
    fd = libbpf.obj_get(path)
    try:
        return libbpf.map_info(fd)
    finally:
        libbpf.close_fd(fd)


def _pinned_ids(pins, names):
    """{map name: id of the map pinned for it} for `names` whose pin exists; missing pins absent."""
    return {n: _pinned_info(pins[n])["id"] for n in names if os.path.exists(pins[n])}


def _pin_paths(obj):
    return {n: obj.map_pin_path(n) for n in obj.map_names() if obj.map_pin_path(n)}


def _outdated_pins(obj, pins):
    """Pinned maps whose pin exists but no longer matches the object's definition of them."""
    out = []
    for name, path in pins.items():
        if os.path.exists(path):
            info = _pinned_info(path)
            if any(info[k] != v for k, v in obj.map_def(name).items()):
                out.append(name)
    return out


def _load(object_path, pin_root, program, check_mode):
    """(loaded object, program name, {map: pin path}, {map: id pinned before}, [maps re-created]).

    Caller closes the object."""
    try:
        probe = libbpf.BpfObject(object_path, pin_root_path=pin_root)
    except libbpf.BpfError as exc:
        _bpf("object", "cannot open %s" % object_path, exc)
    try:
        pins = _pin_paths(probe)
        outdated = _outdated_pins(probe, pins)
        kept = [n for n in outdated if n not in REBUILDABLE_MAPS]
        if kept:
            # Refused before anything is touched, connection tables included.
            raise EngineError(
                "pin_root: the maps %s pinned under %s do not match %s (built with other sizes?). "
                "Remove them (xdp_program state=absent remove_pins=true) to start with empty maps."
                % (", ".join(kept), pin_root, object_path), field="pin_root", value=pin_root)
        before = _pinned_ids(pins, [n for n in pins if n not in outdated])
        name = _pick_program(probe, program)
    except BaseException:
        probe.close()
        raise
    if check_mode:
        probe.close()
    else:
        for n in outdated:
            os.unlink(pins[n])  # the running program keeps its table until it is replaced
    obj = libbpf.BpfObject(object_path, pin_maps=False) if check_mode else probe
    try:
        obj.load()
    except libbpf.BpfError as exc:
        obj.close()
        if "pinned map" in exc.message or "reuse" in exc.message:
            raise EngineError(
                "pin_root: the maps pinned under %s do not match %s (built with other sizes?): %s\n"
                "Remove them (xdp_program state=absent remove_pins=true) to start with empty maps."
                % (pin_root, object_path, exc), field="pin_root", value=pin_root) from exc
        _bpf("object", "cannot load %s" % object_path, exc)
    return obj, name, pins, before, outdated


def ensure(object_path, interface, mode="auto", pin_root=DEFAULT_PIN_ROOT, program=None,
           force=False, check_mode=False):
    """Attach `program` of `object_path` to `interface`; returns a result dict (see xdp_program)."""
    validate.choice(mode, "mode", MODES)
    check_object(object_path)
    index = ifindex(interface)
    res = {"changed": False, "interface": interface, "ifindex": index, "pin_root": pin_root,
           "warnings": [], "actions": check_pin_root(pin_root, check_mode)}
    res["changed"] = bool(res["actions"])
    try:
        before = attached(index)
    except libbpf.BpfError as exc:
        _bpf("interface", "cannot query XDP on %s" % interface, exc)
    res["previous"] = _public(before)
    obj, name, pins, pinned_before, outdated = _load(object_path, pin_root, program, check_mode)
    if outdated:
        res["changed"] = True
        res["actions"].append("re-created with the new layout: %s" % ", ".join(outdated))
        verb = "would be replaced" if check_mode else "replaced"
        conns = [n for n in outdated if n in abi.CONN_MAPS]
        counters = [n for n in outdated if n in STATS_MAPS]
        if conns:
            res["warnings"].append(
                "%s: layout changed in %s, %s by an empty table; established flows follow their VIP's "
                "ring (the same real unless the ring changed since they started)"
                % (", ".join(conns), object_path, verb))
        if counters:
            res["warnings"].append(
                "%s: layout changed in %s, %s by empty counters: they restart from zero (a counter "
                "reset to Prometheus)" % (", ".join(counters), object_path, verb))
    try:
        fd = obj.program_fd(name)
        info = libbpf.prog_info(fd)
        if check_mode:
            map_ids = pinned_before
        else:
            map_ids = {n: obj.map(n).info["id"] for n in pins}
        res["maps"] = {n: {"pin": pins[n], "id": map_ids.get(n), "reused": n in pinned_before}
                       for n in sorted(pins)}
        created = sorted(n for n in pins if n not in pinned_before and n not in outdated)
        if created:
            res["actions"].append("pinned new maps: %s" % ", ".join(created))
        same = (before is not None and before["tag"] == info["tag"] and not created
                and set(map_ids.values()) <= set(before["map_ids"])
                and (mode == "auto" or before["mode"] == mode))
        res.update(program=name, tag=info["tag"])
        if same and not force:
            res.update(action="unchanged", prog_id=before["prog_id"], mode=before["mode"])
            return res
        res["changed"] = True
        if check_mode:
            res.update(action="replaced" if before else "attached", prog_id=None,
                       mode=before["mode"] if before and mode == "auto" else (mode if mode != "auto" else None))
            return res
        _keep_previous(pin_root, before)
        res.update(_attach(index, interface, fd, mode, before, res["warnings"]))
        res["prog_id"] = info["id"]
        return res
    finally:
        obj.close()


def _keep_previous(pin_root, before):
    path = os.path.join(pin_root, PREVIOUS_PIN)
    try:
        if os.path.exists(path):
            os.unlink(path)
        if before is not None:
            fd = libbpf.prog_fd_by_id(before["prog_id"])
            try:
                libbpf.obj_pin(fd, path)
            finally:
                libbpf.close_fd(fd)
    except (OSError, libbpf.BpfError) as exc:
        _bpf("pin_root", "cannot keep the replaced program at %s" % path, exc)


def rollback(interface, pin_root=DEFAULT_PIN_ROOT, check_mode=False):
    """Put back the program pinned as <pin_root>/xdp_previous; the current one becomes previous."""
    index = ifindex(interface)
    path = os.path.join(pin_root, PREVIOUS_PIN)
    if not os.path.exists(path):
        raise EngineError("rollback: no previous program is pinned at %s (nothing was replaced; to undo a "
                          "first attach, detach with state=absent)" % path, field="rollback", value=path)
    try:
        before = attached(index)
        fd = libbpf.obj_get(path)
    except libbpf.BpfError as exc:
        _bpf("rollback", "cannot read %s" % path, exc)
    try:
        info = libbpf.prog_info(fd)
        res = {"changed": False, "interface": interface, "ifindex": index, "pin_root": pin_root,
               "previous": _public(before), "program": info["name"], "tag": info["tag"], "prog_id": info["id"],
               "mode": before["mode"] if before else None, "action": "unchanged", "warnings": [],
               "actions": [], "maps": {}}
        if before is not None and before["prog_id"] == info["id"]:
            return res
        res.update(changed=True, action="rolled back")
        if check_mode:
            return res
        os.unlink(path)  # fd keeps it alive; the current program takes its place
        _keep_previous(pin_root, before)
        res.update(_attach(index, interface, fd, before["mode"] if before else "auto", before, res["warnings"]))
        res["action"] = "rolled back"
        return res
    finally:
        libbpf.close_fd(fd)


def _public(prog):
    if prog is None:
        return None
    return {k: prog[k] for k in ("prog_id", "tag", "name", "mode")}


def replace_xdp(index, interface, fd, mode, before, warnings, generic_fallback=False):
    """Make `fd` the XDP program of ifindex `index`, in `mode` (auto, native, generic).

    `before` ({prog_id, mode} of the program attached now, or None): replaced in one netlink call
    (XDP_FLAGS_REPLACE), so the interface is never without XDP, unless `mode` asks for another mode
    than it runs in: the kernel holds one mode at a time, so that case detaches first and says so
    in `warnings`. Nothing attached: attach only if that is still so (XDP_FLAGS_UPDATE_IF_NOEXIST).
    generic_fallback: an auto attach the kernel refuses is retried in generic mode (BPF decap must
    run on a NIC whose driver has no native XDP). Returns (action, mode obtained); libbpf's errors
    are raised as they are (BpfError), the caller words them."""
    want = None if mode == "auto" else mode
    if before is None:
        try:
            return "attached", libbpf.xdp_attach(index, fd, mode=want, no_replace=True)
        except libbpf.BpfError:
            if want is not None or not generic_fallback:
                raise
            return "attached", libbpf.xdp_attach(index, fd, mode="generic", no_replace=True)
    if want is None or want == before["mode"]:
        old = libbpf.prog_fd_by_id(before["prog_id"])
        try:
            return "replaced", libbpf.xdp_attach(index, fd, mode=before["mode"], old_prog_fd=old)
        finally:
            libbpf.close_fd(old)
    warnings.append("switching %s from %s to %s XDP cannot be atomic: the interface had no XDP "
                    "program for a moment" % (interface, before["mode"], want))
    libbpf.xdp_detach(index, mode=before["mode"])
    return "replaced", libbpf.xdp_attach(index, fd, mode=want, no_replace=True)


def _attach(index, interface, fd, mode, before, warnings):
    want = None if mode == "auto" else mode
    try:
        action, got = replace_xdp(index, interface, fd, mode, before, warnings)
    except libbpf.BpfError as exc:
        if want == "native" and exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, 524):
            raise EngineError("mode: native XDP is not supported by the driver of %s (%s); use mode generic "
                              "or auto" % (interface, exc), field="mode", value=mode) from exc
        if exc.errno == errno.EEXIST and before is not None:
            raise EngineError("interface: the XDP program on %s changed while this ran; run again (%s)"
                              % (interface, exc), field="interface", value=interface) from exc
        _bpf("interface", "cannot attach XDP to %s" % interface, exc)
    if want is not None and got != want:
        raise EngineError("mode: asked for %s XDP on %s, the kernel attached it in %s mode" % (want, interface, got),
                          field="mode", value=mode)
    return {"action": action, "mode": got}


def detach(interface, pin_root=DEFAULT_PIN_ROOT, remove_pins=False, pin_names=(), check_mode=False):
    """Remove the XDP program from `interface`; optionally unlink pins (and pin_root if empty)."""
    index = ifindex(interface)
    try:
        before = attached(index)
    except libbpf.BpfError as exc:
        _bpf("interface", "cannot query XDP on %s" % interface, exc)
    res = {"changed": False, "interface": interface, "ifindex": index, "pin_root": pin_root,
           "previous": _public(before), "action": "absent", "prog_id": None, "mode": None,
           "warnings": [], "actions": []}
    if before is not None:
        res.update(changed=True, action="detached")
        if not check_mode:
            old = libbpf.prog_fd_by_id(before["prog_id"])
            try:
                libbpf.xdp_detach(index, mode=before["mode"], old_prog_fd=old)
            except libbpf.BpfError as exc:
                _bpf("interface", "cannot detach XDP from %s" % interface, exc)
            finally:
                libbpf.close_fd(old)
    if remove_pins and os.path.isdir(pin_root):
        for name in pin_names:
            path = os.path.join(pin_root, name)
            if os.path.exists(path):
                res["changed"] = True
                res["actions"].append("unpinned %s" % path)
                if not check_mode:
                    os.unlink(path)
        if not check_mode and not os.listdir(pin_root):
            os.rmdir(pin_root)
            res["actions"].append("removed %s" % pin_root)
    return res
