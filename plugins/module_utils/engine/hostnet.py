"""What the balancer config needs from the host's network stack: MACs, addresses, the gateway.

Everything acts on the network namespace the process is in: ioctl for a MAC, /proc/net for
routes and IPv4 neighbours (per namespace), `ip -j neigh` for IPv6 neighbours (argv, LANG=C),
netlink (pyroute2, through netlink.py) for addresses. /sys/class/net is avoided on purpose: under
nsenter it shows the host's devices.
"""
import fcntl
import ipaddress
import json
import os
import socket
import struct
import subprocess
import time

from . import netlink
from .errors import EngineError, show

SIOCGIFHWADDR = 0x8927
_ATF_COM = 0x2
_RTF_GATEWAY = 0x2
_USABLE_STATES = {"REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP"}
_IFA_F_DEPRECATED = 0x20


def mac_text(raw):
    return ":".join("%02x" % b for b in bytes(raw))


def parse_mac(value, field):
    if isinstance(value, str):
        text = value.strip().lower().replace("-", ":")
        parts = text.split(":")
        if len(parts) == 6 and all(len(p) in (1, 2) for p in parts):
            try:
                raw = bytes(int(p, 16) for p in parts)
            except ValueError:
                raw = None
            if raw is not None:
                if raw == bytes(6) or raw[0] & 1:
                    raise EngineError("%s: %s must be a unicast, non-zero MAC address" % (field, show(value)),
                                      field=field, value=value)
                return mac_text(raw)
    raise EngineError("%s: %s is not a MAC address (expected aa:bb:cc:dd:ee:ff)" % (field, show(value)),
                      field=field, value=value)


def interface_mac(name):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16s16x", name.encode()[:15])
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, req)
        except OSError as exc:
            raise EngineError("interface: cannot read the MAC address of %r: %s" % (name, exc.strerror),
                              field="interface", value=name)
    return mac_text(res[18:24])


def interface_addresses(name):
    """{4: [first global IPv4...], 6: [...]}: usable source addresses of the device, in kernel order."""
    out = {4: [], 6: []}
    bad = netlink.IFA_F_TENTATIVE | netlink.IFA_F_DADFAILED | _IFA_F_DEPRECATED
    ipr = netlink.open_iproute()
    try:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            raise EngineError("interface: %r does not exist in this network namespace" % name,
                              field="interface", value=name)
        for a in netlink.addrs(ipr, idx[0]):
            if a["scope"] == netlink.SCOPE_UNIVERSE and not a["flags"] & bad:
                out[a["family"]].append(a["address"])
    finally:
        ipr.close()
    return out


def _default_routes_v4():
    """[(metric, interface, gateway or None)] of the IPv4 default routes (/proc/net/route)."""
    out = []
    try:
        with open("/proc/net/route") as handle:
            next(handle, None)
            for line in handle:
                f = line.split()
                if len(f) < 8 or f[1] != "00000000" or f[7] != "00000000":
                    continue
                gw = socket.inet_ntoa(struct.pack("<I", int(f[2], 16))) if int(f[3], 16) & _RTF_GATEWAY else None
                out.append((int(f[6]), f[0], gw))
    except OSError:
        pass
    return out


def default_interface():
    """Interface of the IPv4 default route with the lowest metric, or None."""
    routes = sorted(_default_routes_v4(), key=lambda r: r[0])
    return routes[0][1] if routes else None


def default_gateway(interface):
    """(gateway address, family) of the default route through `interface` (IPv4 first), or None."""
    best = None
    for metric, dev, gw in _default_routes_v4():
        if dev == interface and gw is not None and (best is None or metric < best[0]):
            best = (metric, gw)
    if best:
        return best[1], 4
    try:
        with open("/proc/net/ipv6_route") as handle:
            for line in handle:
                f = line.split()
                if len(f) < 10 or f[9] != interface or f[0] != "0" * 32 or f[1] != "00" or f[4] == "0" * 32:
                    continue
                metric = int(f[5], 16)
                gw = ipaddress.IPv6Address(bytes.fromhex(f[4])).compressed
                if best is None or metric < best[0]:
                    best = (metric, gw)
    except OSError:
        pass
    return (best[1], 6) if best else None


def _neigh_v4_proc(ip, interface):
    try:
        with open("/proc/net/arp") as handle:
            next(handle, None)
            for line in handle:
                f = line.split()
                if len(f) >= 6 and f[0] == ip and f[5] == interface and int(f[2], 16) & _ATF_COM:
                    return f[3]
    except OSError:
        pass
    return None


def _neigh_ip(ip, interface):
    """(mac or None, state) from `ip -j neigh`."""
    env = dict(os.environ, LANG="C", LC_ALL="C")
    try:
        done = subprocess.run(["ip", "-j", "neigh", "show", "to", ip, "dev", interface],
                              capture_output=True, text=True, env=env, timeout=5, check=False)
        entries = json.loads(done.stdout or "[]")
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None, "unknown"
    for e in entries:
        states = set(e.get("state") or [])
        if e.get("lladdr") and states & _USABLE_STATES:
            return e["lladdr"], ",".join(sorted(states))
        return None, ",".join(sorted(states)) or "unknown"
    return None, "absent"


def neighbour_mac(ip, interface):
    """(mac or None, state text) of a neighbour entry on `interface`."""
    if ipaddress.ip_address(ip).version == 4:
        mac = _neigh_v4_proc(ip, interface)
        if mac and mac != "00:00:00:00:00:00":
            return mac, "complete"
    return _neigh_ip(ip, interface)


def _poke(ip, interface):
    """Send one datagram to the discard port: the kernel resolves the neighbour to send it."""
    ipobj = ipaddress.ip_address(ip)
    fam = socket.AF_INET if ipobj.version == 4 else socket.AF_INET6
    try:
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            dest = (ip, 9) if fam == socket.AF_INET else (ip, 9, 0, socket.if_nametoindex(interface))
            s.sendto(b"", dest)
    except OSError:
        pass  # unreachable or refused: the neighbour state says why


def resolve_mac(ip, interface, timeout=3.0, field="gateway"):
    mac, state = neighbour_mac(ip, interface)
    deadline = time.monotonic() + timeout
    next_poke = 0.0
    while mac is None and time.monotonic() < deadline:
        if time.monotonic() >= next_poke:
            _poke(ip, interface)
            next_poke = time.monotonic() + 1.0
        time.sleep(0.1)
        mac, state = neighbour_mac(ip, interface)
    if mac is None:
        raise EngineError(
            "%s: cannot resolve the MAC address of %s on %s (neighbour state %s after %.0f s); check the "
            "link and the gateway, or give gateway_mac" % (field, ip, interface, state, timeout),
            field=field, value=ip)
    return parse_mac(mac, field)
