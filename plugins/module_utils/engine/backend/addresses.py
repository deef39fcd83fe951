"""Addresses on a device: the VIPs on lo (/32, /128) or addresses on a tunnel device.

IPv6 addresses are added with IFA_F_NODAD: a VIP must answer at once, and duplicate address
detection would hold it "tentative" (unusable as a source) for a second or more.

Exclusive mode removes addresses of a *managed set* that are not listed. The managed set is
deliberately narrow so a forgotten list entry cannot cut the host off its network:
permanent (not DHCP/SLAAC, which have lifetimes), scope global, host prefix length (/32 or /128,
what VIPs are), and - when managed_networks is given - inside one of those networks. Loopback's
127.0.0.1/8 and ::1 (scope host) and link-local addresses are never in it.
"""
import errno
import ipaddress
import os

from .. import netlink, validate
from ..errors import EngineError


def _key(addr):
    # The kernel identifies an IPv6 address by the address alone, IPv4 by address and prefix.
    if addr["family"] == 6:
        return (6, addr["address"])
    return (4, addr["address"], addr["prefixlen"])


def entry(iface):
    """An address dict (as netlink.addr_dict() returns) for an ipaddress interface."""
    return {"family": iface.version, "address": iface.ip.compressed,
            "prefixlen": iface.network.prefixlen, "scope": netlink.SCOPE_UNIVERSE,
            "flags": netlink.IFA_F_PERMANENT,
            "cidr": "%s/%d" % (iface.ip.compressed, iface.network.prefixlen)}


def parse_list(addresses, field="addresses"):
    """Validated address dicts for a list of 'ADDR' / 'ADDR/PLEN' strings."""
    if addresses is None:
        return []
    if isinstance(addresses, str) or not isinstance(addresses, (list, tuple)):
        validate.fail(field, addresses, "expected a list of addresses")
    wanted = []
    for value in addresses:
        item = entry(validate.ip_interface(value, field))
        if any(_key(w) == _key(item) for w in wanted):
            validate.fail(field, value, "listed twice (for IPv6 the address alone "
                          "identifies it, whatever the prefix length)")
        wanted.append(item)
    return wanted


def normalize(device, addresses, state="present", exclusive=False, managed_networks=None,
              nodad=True):
    device = validate.device_name(device, "device")
    validate.choice(state, "state", ("present", "absent"))
    wanted = parse_list(addresses, "addresses")
    networks = [validate.ip_network(n, "managed_networks") for n in (managed_networks or [])]
    if validate.boolean(exclusive, "exclusive") and state != "present":
        validate.fail("exclusive", exclusive, "exclusive only applies with state=present")
    if not wanted and not exclusive:
        validate.fail("addresses", addresses, "list at least one address")
    return {"device": device, "addresses": wanted, "state": state, "exclusive": exclusive,
            "managed_networks": networks, "nodad": validate.boolean(nodad, "nodad")}


def is_managed(addr, networks=()):
    """Whether exclusive mode may remove `addr` (see the module docstring)."""
    host = 32 if addr["family"] == 4 else 128
    if addr["scope"] != netlink.SCOPE_UNIVERSE or addr["prefixlen"] != host:
        return False
    if not addr["flags"] & netlink.IFA_F_PERMANENT:
        return False
    if networks:
        ip = ipaddress.ip_address(addr["address"])
        return any(ip.version == n.version and ip in n for n in networks)
    return True


def plan(current, request, managed=None):
    """{'add': [...], 'remove': [...]} turning `current` into what `request` asks for.

    `managed(addr)` decides what exclusive mode may remove; the default is is_managed().
    """
    if managed is None:
        def managed(addr):
            return is_managed(addr, request["managed_networks"])
    by_key = {_key(a): a for a in current}
    add, remove = [], []
    wanted_keys = set()
    for want in request["addresses"]:
        key = _key(want)
        wanted_keys.add(key)
        have = by_key.get(key)
        if request["state"] == "absent":
            if have is not None:
                remove.append(have)
            continue
        if have is None:
            add.append(want)
        elif have["prefixlen"] != want["prefixlen"] or (
                want["family"] == 6 and request["nodad"]
                and have["flags"] & netlink.IFA_F_DADFAILED):
            # same IPv6 address, other prefix or failed DAD: the kernel cannot change it in place
            remove.append(have)
            add.append(want)
    if request["exclusive"]:
        for have in current:
            if _key(have) not in wanted_keys and managed(have):
                remove.append(have)
    return {"add": add, "remove": remove}


def visible(addrs):
    """Addresses worth showing in before/after: link-local ones come and go with the link."""
    return sorted(a["cidr"] for a in addrs if a["scope"] != netlink.SCOPE_LINK)


def after_plan(current, the_plan):
    removed = {id(a) for a in the_plan["remove"]}
    return [a for a in current if id(a) not in removed] + list(the_plan["add"])


def carried_families(link):
    """The inner address families a tunnel device takes; None when `link` is no tunnel of ours.
    Here rather than in tunnel.py, which builds on this module: a tunnel's addresses go through it."""
    kind = link.get("kind")
    if kind == "ipip":
        return {4}
    if kind == "ip6tnl":
        proto = (link.get("data") or {}).get("proto") or 0
        return {41: {6}, 4: {4}}.get(proto, {4, 6})
    return None


def check_families(link, request, proc_net="/proc/sys/net"):
    """Refuse addresses the device cannot hold or, on a tunnel, cannot carry."""
    if request["state"] != "present":
        return
    carried = carried_families(link)
    for want in request["addresses"]:
        if carried is not None and want["family"] not in carried:
            validate.fail("addresses", want["cidr"], "device %s is an %s tunnel that carries only "
                          "IPv%s; it cannot take an IPv%d address"
                          % (link["name"], link["kind"], "/IPv".join(str(f) for f in sorted(carried)),
                             want["family"]))
        if want["family"] == 6:
            conf = os.path.join(proc_net, "ipv6", "conf", link["name"], "disable_ipv6")
            try:
                with open(conf) as handle:
                    disabled = handle.read().strip() == "1"
            except OSError:
                validate.fail("addresses", want["cidr"], "device %s has no IPv6 (no %s)"
                              % (link["name"], os.path.dirname(conf)))
            if disabled:
                validate.fail("addresses", want["cidr"], "IPv6 is disabled on %s "
                              "(net.ipv6.conf.%s.disable_ipv6 = 1)" % (link["name"], link["name"]))


def apply(ipr, index, the_plan, nodad=True, device="device"):
    for addr in the_plan["remove"]:
        try:
            ipr.addr("del", index=index, address=addr["address"], prefixlen=addr["prefixlen"])
        except netlink.NetlinkError as exc:
            if exc.code != errno.EADDRNOTAVAIL:  # already gone is what we wanted
                raise EngineError("removing %s from %s failed: %s"
                                  % (addr["cidr"], device, netlink.errno_name(exc)),
                                  field="addresses", value=addr["cidr"])
    for addr in the_plan["add"]:
        kwargs = {}
        if addr["family"] == 6 and nodad:
            kwargs["flags"] = netlink.IFA_F_NODAD
        try:
            ipr.addr("add", index=index, address=addr["address"], prefixlen=addr["prefixlen"],
                     **kwargs)
        except netlink.NetlinkError as exc:
            raise EngineError("adding %s to %s failed: %s"
                              % (addr["cidr"], device, netlink.errno_name(exc)),
                              field="addresses", value=addr["cidr"])


def ensure(device, addresses, state="present", exclusive=False, managed_networks=None,
           nodad=True, check_mode=False):
    request = normalize(device, addresses, state, exclusive, managed_networks, nodad)
    with netlink.open_iproute() as ipr:
        link = netlink.link(ipr, request["device"])
        if link is None:
            validate.fail("device", request["device"], "no such device in this network namespace")
        check_families(link, request)
        current = netlink.addrs(ipr, link["index"])
        the_plan = plan(current, request)
        if not check_mode:
            apply(ipr, link["index"], the_plan, request["nodad"], request["device"])
    return {
        "changed": bool(the_plan["add"] or the_plan["remove"]),
        "device": request["device"],
        "before": visible(current),
        "after": visible(after_plan(current, the_plan)),
        "added": [a["cidr"] for a in the_plan["add"]],
        "removed": [a["cidr"] for a in the_plan["remove"]],
    }
