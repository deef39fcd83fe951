"""ipip / ip6tnl devices that decapsulate what the balancers send.

External (collect_metadata) devices accept tunnelled packets from any peer, which is what a backend
behind several balancers needs. The kernel keeps at most one per kind and namespace (a second one
is EEXIST), so "present" looks for it under any name first.

Fallback devices: when the ipip (ip6_tunnel) module loads, the kernel creates tunl0 (ip6tnl0) in
every namespace (unless net.core.fb_tunnels_only_for_init_net says otherwise). They are wildcard
tunnels that cannot be deleted. Incoming packets go to a matching point-to-point tunnel first,
then to the external device if it is up, then to the fallback device if *it* is up
(ip_tunnel_lookup / ip6_tnl_lookup). So with an external device up, a down tunl0 is harmless; a
setup that decapsulates on tunl0 itself manages it here under its own name (up, MTU, addresses).
"""
import errno
import ipaddress
import os

from . import addresses as addrs_engine
from .. import netlink, validate
from ..errors import EngineError

KINDS = ("ipip", "ip6tnl")
OUTER_FAMILY = {"ipip": 4, "ip6tnl": 6}
FALLBACK = {"ipip": "tunl0", "ip6tnl": "ip6tnl0"}
KERNEL_MODULE = {"ipip": "ipip", "ip6tnl": "ip6_tunnel"}
# IFLA_IPTUN_PROTO: which inner protocol the device accepts (0 = any, as iproute2 creates them)
PROTOS = {"ipip": {"any": 0, "ipip": 4}, "ip6tnl": {"any": 0, "ip6ip6": 41, "ipip6": 4}}
IP6_TNL_F_IGN_ENCAP_LIMIT = 0x1

NO_KERNEL_SUPPORT = (
    "the kernel cannot create %s devices (%s): the %s kernel module is not available here "
    "(not built, or modules cannot be loaded in this environment). Decapsulate with BPF instead: "
    "the backend role's decap mode 'bpf' needs no tunnel module.")


def _mode_name(kind, proto):
    for name, value in PROTOS[kind].items():
        if value == (proto or 0):
            return name
    return str(proto)


def _endpoint(value):
    if value in (None, "0.0.0.0", "::"):
        return None
    return ipaddress.ip_address(value).compressed


def describe(link, addr_list):
    """What an operator needs to see of a tunnel device, as plain data for before/after."""
    if link is None:
        return {}
    data = link.get("data") or {}
    kind = link["kind"]
    return {
        "name": link["name"],
        "kind": kind,
        "external": bool(data.get("collect_metadata")),
        "local": _endpoint(data.get("local")),
        "remote": _endpoint(data.get("remote")),
        "mode": _mode_name(kind, data.get("proto")) if kind in PROTOS else None,
        "mtu": link.get("mtu"),
        "up": link.get("up"),
        "addresses": addrs_engine.visible(addr_list),
    }


def normalize(name, kind="ipip", state="present", external=True, local=None, remote=None,
              mode=None, mtu=None, addresses=None, up=True, adopt=False):
    name = validate.device_name(name, "name")
    validate.choice(kind, "kind", KINDS)
    validate.choice(state, "state", ("present", "absent"))
    external = validate.boolean(external, "external")
    fallback = name == FALLBACK[kind]
    family = OUTER_FAMILY[kind]
    if local is not None:
        local = validate.ip_address(local, "local", family).compressed
    if remote is not None:
        remote = validate.ip_address(remote, "remote", family).compressed
    if fallback and (local or remote):
        validate.fail("local" if local else "remote", local or remote,
                      "%s is the fallback device of the %s module, a wildcard tunnel: it has no "
                      "endpoints" % (name, KERNEL_MODULE[kind]))
    if not fallback and external and (local or remote):
        validate.fail("local" if local else "remote", local or remote,
                      "an external (collect_metadata) tunnel has no fixed endpoints; "
                      "set external: false for a point-to-point tunnel")
    if not fallback and not external and not (local or remote):
        validate.fail("remote", remote, "a point-to-point tunnel (external: false) needs remote "
                      "and/or local")
    if mode is not None:
        validate.choice(mode, "mode", tuple(PROTOS[kind]))
    if mtu is not None:
        low = 1280 if mode == "ip6ip6" else 68
        mtu = validate.integer(mtu, "mtu", low, 65535)
    if fallback and state == "absent":
        validate.fail("state", state, "%s is created by the kernel when the %s module loads and "
                      "cannot be removed; use up: false to keep it from receiving packets"
                      % (name, KERNEL_MODULE[kind]))
    wanted_addrs = addrs_engine.parse_list(addresses, "addresses") if addresses is not None \
        else None
    request = {"name": name, "kind": kind, "state": state, "external": external and not fallback,
               "local": local, "remote": remote, "mode": mode, "mtu": mtu,
               "addresses": wanted_addrs, "up": validate.boolean(up, "up"),
               "adopt": validate.boolean(adopt, "adopt"), "fallback": fallback}
    _check_carried(request, addrs_engine.carried_families(
        {"kind": kind, "data": {"proto": PROTOS[kind][mode or "any"]}}))
    return request


def _check_carried(request, carried):
    for addr in request["addresses"] or ():
        if addr["family"] not in carried:
            validate.fail("addresses", addr["cidr"], "an %s tunnel%s carries only IPv%s, so an "
                          "IPv%d address cannot be used on it"
                          % (request["kind"], " in mode %s" % request["mode"] if request["mode"]
                             else "", "/IPv".join(str(f) for f in sorted(carried)),
                             addr["family"]))


def _same_identity(request, have):
    """Whether the existing device is the tunnel asked for (else it must be recreated)."""
    if request["fallback"]:
        return True
    if have["external"] != request["external"]:
        return False
    endpoints = (request["local"], request["remote"])
    if not request["external"] and (have["local"], have["remote"]) != endpoints:
        return False
    return request["mode"] is None or have["mode"] == request["mode"]


def _find_conflict(all_links, request):
    """Another device of the kind that the kernel would refuse to duplicate."""
    for link in all_links:
        if link["kind"] != request["kind"] or link["name"] == request["name"]:
            continue
        have = describe(link, [])
        if request["external"] and have["external"]:
            return link
        if not request["external"] and not have["external"] and \
                (have["local"], have["remote"]) == (request["local"], request["remote"]):
            return link
    return None


def kernel_support(kind, release=None, sys_module="/sys/module", lib_modules="/lib/modules"):
    """True (loaded or loadable), False (this kernel has no such module) or None (cannot tell).

    Only for check mode: a real run lets the kernel answer. Without /lib/modules (containers) the
    host may still load the module on demand, so that is "cannot tell", not "no".
    """
    module = KERNEL_MODULE[kind]
    if os.path.isdir(os.path.join(sys_module, module)):
        return True
    base = os.path.join(lib_modules, release or os.uname().release)
    found_index = False
    for index in ("modules.builtin", "modules.dep"):
        try:
            with open(os.path.join(base, index)) as handle:
                found_index = True
                for line in handle:
                    path = line.split(":", 1)[0]
                    name = os.path.basename(path).split(".ko", 1)[0]
                    if name.replace("-", "_") == module:
                        return True
        except OSError:
            continue
    return False if found_index else None


def _create(ipr, request):
    kind = request["kind"]
    kwargs = {"ifname": request["name"], "kind": kind}
    proto = PROTOS[kind][request["mode"] or "any"]
    kwargs["%s_proto" % kind] = proto
    if request["external"]:
        kwargs["%s_collect_metadata" % kind] = True
    else:
        if request["local"]:
            kwargs["%s_local" % kind] = request["local"]
        if request["remote"]:
            kwargs["%s_remote" % kind] = request["remote"]
        if kind == "ip6tnl":
            # like `ip link add ... encaplimit none`: no 8-byte destination option on top of
            # the 40-byte outer header
            kwargs["ip6tnl_flags"] = IP6_TNL_F_IGN_ENCAP_LIMIT
            kwargs["ip6tnl_ttl"] = 64
    try:
        ipr.link("add", **kwargs)
    except netlink.NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:
            raise EngineError(NO_KERNEL_SUPPORT % (kind, netlink.errno_name(exc),
                                                   KERNEL_MODULE[kind]),
                              field="kind", value=kind)
        if exc.code == errno.EEXIST:
            raise EngineError("the kernel refused to create %s (%s): an %s tunnel with the same "
                              "parameters already exists in this namespace"
                              % (request["name"], netlink.errno_name(exc), kind),
                              field="name", value=request["name"])
        raise EngineError("creating %s device %s failed: %s"
                          % (kind, request["name"], netlink.errno_name(exc)),
                          field="name", value=request["name"])


def _delete(ipr, link):
    try:
        ipr.link("del", index=link["index"])
    except netlink.NetlinkError as exc:
        if exc.code != errno.ENODEV:  # gone already is what we wanted
            raise EngineError("deleting %s failed: %s" % (link["name"], netlink.errno_name(exc)),
                              field="name", value=link["name"])


def _set(ipr, index, request, what, **kwargs):
    try:
        ipr.link("set", index=index, **kwargs)
    except netlink.NetlinkError as exc:
        raise EngineError("setting %s on %s failed: %s"
                          % (what, request["name"], netlink.errno_name(exc)),
                          field=what, value=kwargs.get(what, kwargs.get("state")))


def _fallback_state(ipr, kind):
    link = netlink.link(ipr, FALLBACK[kind])
    return {"name": FALLBACK[kind], "present": link is not None,
            "up": bool(link and link["up"])}


def _find_device(all_links, request, result):
    """The device to manage: by name, or (adopt) the namespace's external device of the kind."""
    kind = request["kind"]
    link = next((item for item in all_links if item["name"] == request["name"]), None)
    if link is not None and link["kind"] != kind:
        validate.fail("name", request["name"], "a %s device with this name already exists; "
                      "refusing to replace it with an %s tunnel" % (link["kind"], kind))
    if link is None and request["state"] == "present" and request["external"]:
        other = _find_conflict(all_links, request)
        if other is not None and not request["adopt"]:
            validate.fail("name", request["name"], "an external %s device already exists in this "
                          "namespace as %s and the kernel allows only one; use name: %s, or "
                          "adopt: true to manage it under its current name"
                          % (kind, other["name"], other["name"]))
        if other is not None:
            result["warnings"].append("adopted the existing external %s device %s instead of "
                                      "creating %s" % (kind, other["name"], request["name"]))
            request["name"] = result["name"] = other["name"]
            result["adopted"] = True
            link = other
    if link is None and request["fallback"]:
        validate.fail("name", request["name"], "%s does not exist: the kernel creates it when the "
                      "%s module loads (create any %s device first), unless "
                      "net.core.fb_tunnels_only_for_init_net keeps it out of this namespace"
                      % (request["name"], KERNEL_MODULE[kind], kind))
    return link


def _check_mode_support(kind, result):
    support = kernel_support(kind)
    if support is False:
        raise EngineError(NO_KERNEL_SUPPORT % (kind, "no such module in /lib/modules",
                                               KERNEL_MODULE[kind]), field="kind", value=kind)
    if support is None:
        result["warnings"].append("cannot tell whether the %s module loads here; a real run "
                                  "may fail" % KERNEL_MODULE[kind])


def _apply(ipr, request, link, recreate, addr_plan):
    if recreate:
        _delete(ipr, link)
    if link is None or recreate:
        _create(ipr, request)
        link = netlink.link(ipr, request["name"])
    index = link["index"]
    if request["mtu"] is not None and link["mtu"] != request["mtu"]:
        _set(ipr, index, request, "mtu", mtu=request["mtu"])
    addrs_engine.apply(ipr, index, addr_plan, nodad=True, device=request["name"])
    if bool(link["up"]) != request["up"]:
        _set(ipr, index, request, "state", state="up" if request["up"] else "down")
    return describe(netlink.link(ipr, request["name"]), netlink.addrs(ipr, index))


def ensure(name, kind="ipip", state="present", external=True, local=None, remote=None,
           mode=None, mtu=None, addresses=None, up=True, adopt=False, check_mode=False):
    """Make the tunnel device what is asked; returns {changed, before, after, ...} as plain data."""
    request = normalize(name, kind, state, external, local, remote, mode, mtu, addresses, up,
                        adopt)
    result = {"changed": False, "name": request["name"], "kind": kind, "created": False,
              "recreated": False, "adopted": False, "warnings": []}
    with netlink.open_iproute() as ipr:
        all_links = netlink.links(ipr)
        link = _find_device(all_links, request, result)
        before_addrs = netlink.addrs(ipr, link["index"]) if link else []
        result["before"] = before = describe(link, before_addrs)

        if request["state"] == "absent":
            result.update(after={}, changed=link is not None)
            if link is not None and not check_mode:
                _delete(ipr, link)
            result["fallback"] = _fallback_state(ipr, kind)
            return result

        if link is not None:
            _check_carried(request, addrs_engine.carried_families(link))
        recreate = link is not None and not _same_identity(request, before)
        fresh = link is None or recreate
        other = _find_conflict(all_links, request) if fresh else None
        if other is not None:
            validate.fail("name", request["name"], "%s already is an %s tunnel with these "
                          "parameters (external: %s, local: %s, remote: %s) and the kernel "
                          "refuses a second one" % (other["name"], kind, request["external"],
                                                    request["local"] or "any",
                                                    request["remote"] or "any"))
        kept_addrs = [] if fresh else before_addrs
        addr_plan = addrs_engine.plan(kept_addrs, _addr_request(request),
                                      managed=_managed_on_tunnel)
        after = _desired_after(request, before, fresh)
        after["addresses"] = addrs_engine.visible(addrs_engine.after_plan(kept_addrs, addr_plan))
        result.update(created=link is None, recreated=recreate)
        if check_mode:
            if link is None:
                _check_mode_support(kind, result)
        else:
            after = _apply(ipr, request, link, recreate, addr_plan)
        result.update(after=after, changed=before != after)
        result["fallback"] = _fallback_state(ipr, kind)
    return result


def _desired_after(request, before, fresh):
    after = dict(before) if not fresh else {
        "name": request["name"], "kind": request["kind"], "external": request["external"],
        "local": request["local"], "remote": request["remote"],
        "mode": request["mode"] or "any", "mtu": None, "up": False, "addresses": []}
    if request["mtu"] is not None:
        after["mtu"] = request["mtu"]
    after["up"] = request["up"]
    return after


def _addr_request(request):
    return {"addresses": request["addresses"] or [], "state": "present",
            "exclusive": request["addresses"] is not None, "managed_networks": [],
            "nodad": True}


def _managed_on_tunnel(addr):
    # The tunnel device is ours: every global address on it is managed, whatever its prefix.
    return addr["scope"] == netlink.SCOPE_UNIVERSE
