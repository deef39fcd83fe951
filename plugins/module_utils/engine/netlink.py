"""The little pyroute2 surface the engine uses, flattened into plain dicts.

Backends run Debian's pyroute2 0.7.2, controllers and CI get 0.9.x from PyPI. Only calls that behave
the same in both are used here (IPRoute() on the current namespace, link/addr get/add/set/del,
link_lookup); everything above this file sees dicts and never a pyroute2 message object.
"""
import errno
import socket

from .errors import EngineError

IFF_UP = 0x1

IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80

SCOPE_UNIVERSE = 0
SCOPE_LINK = 253
SCOPE_HOST = 254

# pyroute2 is imported on first use, not with this file: the import costs 0.25-0.4 s, and most
# modules that reach this file through hostnet or install (engine_install, lb_vip, ...) never open a
# netlink socket. IPRoute, NetlinkError and HAS_PYROUTE2 are still attributes of this module
# (__getattr__ below), so callers' `except netlink.NetlinkError` clauses work unchanged: such a clause
# is only evaluated once something raised, and then imports pyroute2 if no socket has yet.
_PYROUTE2 = {}


class _NoNetlinkError(Exception):
    """NetlinkError without pyroute2: nothing raises it, so an except clause naming it matches nothing."""
    code = 0


def _pyroute2():
    """{IPRoute, NetlinkError, HAS_PYROUTE2}, importing pyroute2 on the first call."""
    if not _PYROUTE2:
        try:
            from pyroute2 import IPRoute
            from pyroute2.netlink.exceptions import NetlinkError
        except ImportError:  # reported by open_iproute() so the message can say what to install
            IPRoute, NetlinkError = None, _NoNetlinkError
        _PYROUTE2.update(IPRoute=IPRoute, NetlinkError=NetlinkError, HAS_PYROUTE2=IPRoute is not None)
    return _PYROUTE2


def __getattr__(name):
    # PEP 562: only called for names this module does not define, so the constants above cost nothing.
    if name in ("IPRoute", "NetlinkError", "HAS_PYROUTE2"):
        return _pyroute2()[name]
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def open_iproute():
    """An IPRoute bound to the network namespace this process is in (0.7.2 has no netns=)."""
    iproute = _pyroute2()["IPRoute"]
    if iproute is None:
        raise EngineError("pyroute2 is required on the managed host "
                          "(Debian: apt install python3-pyroute2; elsewhere: pip install pyroute2)")
    return iproute()


def errno_name(exc):
    code = getattr(exc, "code", 0) or 0
    return errno.errorcode.get(code, str(code))


def _info_data(linkinfo):
    """IFLA_INFO_DATA as {'local': ..., 'collect_metadata': True, ...} for any kind."""
    data = linkinfo.get_attr("IFLA_INFO_DATA") if linkinfo is not None else None
    try:
        attrs = data["attrs"]
    except (TypeError, KeyError, IndexError):  # no data, or a kind pyroute2 cannot decode
        return {}
    out = {}
    for item in attrs:
        name, value = item[0], item[1]
        # IFLA_IPIP_LOCAL -> local, IFLA_IP6TNL_COLLECT_METADATA -> collect_metadata
        parts = name.split("_", 2)
        out[parts[2].lower() if len(parts) == 3 else name.lower()] = value
    return out


def link_dict(msg):
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    return {
        "index": msg["index"],
        "name": msg.get_attr("IFLA_IFNAME"),
        "kind": linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None,
        "mtu": msg.get_attr("IFLA_MTU"),
        "up": bool(msg["flags"] & IFF_UP),
        "data": _info_data(linkinfo),
    }


def links(ipr):
    return [link_dict(msg) for msg in ipr.get_links()]


def link(ipr, name):
    """The device called `name` in this namespace, or None."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        return None
    try:
        msgs = ipr.get_links(found[0])
    except _pyroute2()["NetlinkError"] as exc:
        if exc.code == errno.ENODEV:  # removed between lookup and get
            return None
        raise
    return link_dict(msgs[0]) if msgs else None


def addr_dict(msg):
    family = 4 if msg["family"] == socket.AF_INET else 6
    # On IPv4 IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on p2p links.
    address = msg.get_attr("IFA_LOCAL") if family == 4 else None
    address = address or msg.get_attr("IFA_ADDRESS")
    flags = msg.get_attr("IFA_FLAGS")
    if flags is None:
        flags = msg["flags"]
    return {
        "index": msg["index"],
        "family": family,
        "address": address,
        "prefixlen": msg["prefixlen"],
        "scope": msg["scope"],
        "flags": flags,
        "cidr": "%s/%d" % (address, msg["prefixlen"]),
    }


def addrs(ipr, index):
    return [addr_dict(msg) for msg in ipr.get_addr(index=index)
            if msg["family"] in (socket.AF_INET, socket.AF_INET6)]
