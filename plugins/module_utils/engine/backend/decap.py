"""BPF decapsulation on a backend: decap.o on an interface (XDP or tc ingress) and its address list.

Used where the kernel has no ipip/ip6_tunnel module, or where decap before the stack is wanted.
The program strips IPIP/IP6IP6/4in6 only for outer destinations listed in the pinned map
``decap_locals``; the unwrapped packet then enters the stack on the NIC itself.

Maps are pinned by name under ``pin_root`` so that a reload (new object version) keeps the
address list and counters, and so that the status is readable without the loader.
Idempotent by program tag: the same object already attached means no change.
"""
import ipaddress
import os
import socket

from .. import validate
from ..bpf import decap_abi, libbpf, program
from ..errors import EngineError, show

HOOKS = ("xdp", "tc")
XDP_MODES = ("native", "generic", "auto")


def _ifindex(interface):
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise EngineError(f"interface: {show(interface)} does not exist", field="interface", value=interface)


def _attached(ifindex):
    """{'xdp': (prog_id, name, tag, mode) or None, 'tc': ...}."""
    found = {"xdp": None, "tc": None}
    query = libbpf.xdp_query(ifindex)
    for hook, prog_id in (("xdp", query.get("prog_id")), ("tc", libbpf.tc_query(ifindex))):
        if not prog_id:
            continue
        fd = libbpf.prog_fd_by_id(prog_id)
        try:
            info = libbpf.prog_info(fd)
        finally:
            libbpf.close_fd(fd)
        found[hook] = {"id": prog_id, "name": info["name"], "tag": info["tag"],
                       "mode": query.get("mode") if hook == "xdp" else "tc"}
    return found


def _locals_map(pin_root):
    path = os.path.join(pin_root, decap_abi.MAP_LOCALS)
    return libbpf.Map.from_pin(path) if os.path.exists(path) else None


def read_state(interface, pin_root):
    ifindex = _ifindex(interface)
    attached = _attached(ifindex)
    ours = {hook: prog for hook, prog in attached.items()
            if prog and prog["name"] in (decap_abi.PROG_XDP, decap_abi.PROG_TC)}
    addresses, stats = [], None
    local_map = _locals_map(pin_root)
    if local_map is not None:
        try:
            addresses = sorted(decap_abi.parse_local_key(k) for k in local_map.keys())
        finally:
            local_map.close()
        stats_path = os.path.join(pin_root, decap_abi.MAP_STATS)
        if os.path.exists(stats_path):
            stats_map = libbpf.Map.from_pin(stats_path)
            try:
                stats = decap_abi.read_stats(stats_map)
            finally:
                stats_map.close()
    return {"interface": interface, "ifindex": ifindex, "attached": attached, "ours": ours,
            "addresses": addresses, "stats": stats}


def normalize(interface, object_path, hook="xdp", xdp_mode="auto", addresses=None, state="present"):
    if hook not in HOOKS:
        raise EngineError(f"hook: {show(hook)} must be one of {', '.join(HOOKS)}", field="hook", value=hook)
    if xdp_mode not in XDP_MODES:
        raise EngineError(f"xdp_mode: {show(xdp_mode)} must be one of {', '.join(XDP_MODES)}", field="xdp_mode",
                          value=xdp_mode)
    if state == "present" and not os.path.isfile(object_path or ""):
        raise EngineError(f"object: {show(object_path, 300)} does not exist", field="object", value=object_path)
    parsed = [str(validate.ip_address(str(address).split("/", maxsplit=1)[0], f"addresses[{index}]"))
              for index, address in enumerate(addresses or [])]
    return {"interface": interface, "object": object_path, "hook": hook,
            "xdp_mode": None if xdp_mode == "auto" else xdp_mode, "addresses": sorted(set(parsed)), "state": state}


def interface_addresses(interface):
    """Global addresses of the interface: where balancers send tunnels by default."""
    from .. import netlink
    ipr = netlink.open_iproute()
    try:
        link = netlink.link(ipr, interface)
        if link is None:
            raise EngineError(f"interface: {show(interface)} does not exist", field="interface", value=interface)
        return sorted(str(ipaddress.ip_address(a["address"])) for a in netlink.addrs(ipr, link["index"])
                      if a["scope"] == netlink.SCOPE_UNIVERSE)
    finally:
        ipr.close()


def ensure(request, pin_root, check_mode=False):
    """Converge; returns {'changed', 'changes', 'before', 'after'}."""
    _ifindex(request["interface"])  # fail before anything else when the interface is missing
    before = read_state(request["interface"], pin_root)
    changes = []
    if request["state"] == "absent":
        for hook, prog in before["ours"].items():
            changes.append(f"detach {prog['name']} ({hook}) from {request['interface']}")
            if not check_mode:
                (libbpf.xdp_detach if hook == "xdp" else libbpf.tc_detach)(before["ifindex"])
        for name in (decap_abi.MAP_LOCALS, decap_abi.MAP_STATS):
            path = os.path.join(pin_root, name)
            if os.path.exists(path):
                changes.append(f"unpin {path}")
                if not check_mode:
                    os.unlink(path)
        return _result(changes, before, request, pin_root, check_mode)

    other = before["attached"][request["hook"]]
    if other and other["name"] not in (decap_abi.PROG_XDP, decap_abi.PROG_TC):
        raise EngineError(f"interface: {request['interface']} already runs another {request['hook']} program "
                          f"'{other['name']}' (id {other['id']}); refusing to replace it", field="interface",
                          value=request["interface"])
    wrong_hook = "tc" if request["hook"] == "xdp" else "xdp"
    if before["ours"].get(wrong_hook):
        changes.append(f"detach decap from {wrong_hook} on {request['interface']}")
        if not check_mode:
            (libbpf.xdp_detach if wrong_hook == "xdp" else libbpf.tc_detach)(before["ifindex"])

    # The balancer's own check: a fresh host (or a backend's own mount namespace) may have no bpffs
    # mounted on /sys/fs/bpf yet, and nothing can be pinned under it until it is.
    changes += program.check_pin_root(pin_root, check_mode)
    pins_exist = os.path.exists(os.path.join(pin_root, decap_abi.MAP_LOCALS))
    if check_mode and not pins_exist:
        changes.append(f"load {request['object']} and attach to {request['interface']} ({request['hook']})")
        changes += [f"add {a}" for a in request["addresses"]]
        return _result(changes, before, request, pin_root, check_mode)

    obj = libbpf.BpfObject(request["object"], pin_root_path=pin_root)
    try:
        obj.load()
        prog_name = decap_abi.PROG_XDP if request["hook"] == "xdp" else decap_abi.PROG_TC
        prog_fd = obj.program_fd(prog_name)
        tag = libbpf.prog_info(prog_fd)["tag"]
        current = before["ours"].get(request["hook"])
        if not current or current["tag"] != tag or (
                request["hook"] == "xdp" and request["xdp_mode"] and current["mode"] != request["xdp_mode"]):
            changes.append(f"attach {prog_name} (tag {tag}) to {request['interface']} ({request['hook']})")
            if not check_mode:
                _attach(before["ifindex"], prog_fd, request, current)
        _sync_addresses(obj.map(decap_abi.MAP_LOCALS), request["addresses"], changes, check_mode)
    finally:
        obj.close()
    return _result(changes, before, request, pin_root, check_mode)


def _attach(ifindex, prog_fd, request, current):
    if request["hook"] == "tc":
        libbpf.tc_attach(ifindex, prog_fd)
        return
    # The balancer's attach: a running decap is replaced atomically, never a moment without decap.
    # The mode-switch warning has nowhere to go: the change list already says what was attached.
    before = {"prog_id": current["id"], "mode": current["mode"]} if current else None
    program.replace_xdp(ifindex, request["interface"], prog_fd, request["xdp_mode"] or "auto", before, [],
                        generic_fallback=True)


def _sync_addresses(local_map, wanted, changes, check_mode):
    have = {decap_abi.parse_local_key(k): k for k in local_map.keys()}
    for address in wanted:
        if address not in have:
            changes.append(f"add {address}")
            if not check_mode:
                local_map.update(decap_abi.local_key(address), decap_abi.local_meta())
    for address, key in have.items():
        if address not in wanted:
            changes.append(f"remove {address}")
            if not check_mode:
                local_map.delete(key)


def _result(changes, before, request, pin_root, check_mode):
    after = before if check_mode or not changes else read_state(request["interface"], pin_root)
    return {"changed": bool(changes), "changes": changes, "before": _summary(before), "after": _summary(after),
            "stats": after["stats"]}


def _summary(state):
    return {"interface": state["interface"],
            "programs": {hook: {"name": p["name"], "id": p["id"], "mode": p["mode"]} for hook, p in state["ours"].items()},
            "addresses": state["addresses"]}
