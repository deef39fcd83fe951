"""The VIP routes BIRD announces, kept by the agent in a kernel table only it fills.

For every VIP address this balancer can serve, a route ``ADDR/32`` (``/128``) through a TUN device
the agent holds open, in a routing table no ``ip rule`` consults (so it never steers a packet):

    10.99.0.20 dev xdplb-vips table 4242 proto 200

BIRD's kernel protocols learn that table and export only its routes to BGP. The device is not
persistent: when the agent's process ends, however it ends (SIGKILL included), the kernel closes
its descriptor, removes the device and every route through it, and BIRD withdraws them. So a VIP
is announced only while an agent runs and says it can be served: no route outlives its author.
"""
import fcntl
import ipaddress
import os
import struct

from .. import netlink, validate
from ..errors import EngineError

DEFAULT_DEVICE = "xdplb-vips"
# RTPROT value of the agent's routes: not BIRD's own (12) nor the kernel's (2), which BIRD's
# `learn` leaves alone, and not a daemon's number in /etc/iproute2/rt_protos.
PROTO = 200
RESERVED_TABLES = (0, 253, 254, 255)
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000


def _prefix(address):
    ip = ipaddress.ip_address(address)
    return ip.compressed, 32 if ip.version == 4 else 128, ip.version


class Announcer:
    """Routes of `table` through the TUN device `device`; sync() makes them the given addresses."""

    def __init__(self, table, device=DEFAULT_DEVICE):
        if not isinstance(table, int) or table in RESERVED_TABLES or not 0 < table < 2 ** 32:
            raise EngineError("announce table: %r must be a routing table number from 1 to 4294967295 other than "
                              "253, 254 and 255 (default, main, local)" % (table,), field="announce_table", value=table)
        self.table, self.device = table, validate.device_name(device, "announce_device")
        self.fd = None
        self.index = None
        self.routes = set()

    def open(self):
        """Create the device (fails when another agent holds it) and clear the table of
        routes a previous agent left (none can be: they went with its device)."""
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise EngineError("announce: cannot open /dev/net/tun (%s): the agent needs it for the routes BIRD "
                              "announces (the unit's DeviceAllow=/dev/net/tun rw)" % exc.strerror) from exc
        try:
            fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", self.device.encode(), _IFF_TUN | _IFF_NO_PI))
        except OSError as exc:
            os.close(fd)
            raise EngineError("announce: cannot create the device %s (%s): is another agent running?"
                              % (self.device, exc.strerror), field="announce_device", value=self.device) from exc
        self.fd = fd
        try:
            with netlink.open_iproute() as ipr:
                self.index = ipr.link_lookup(ifname=self.device)[0]
                ipr.link("set", index=self.index, state="up")
                for route in self._table_routes(ipr):
                    ipr.route("del", **route)
        except (netlink.NetlinkError, IndexError) as exc:
            self.close()
            raise EngineError("announce: cannot set up %s: %s" % (self.device, exc)) from exc

    def _table_routes(self, ipr):
        out = []
        for family in (2, 10):  # AF_INET, AF_INET6
            for msg in ipr.get_routes(family=family, table=self.table):
                if msg.get_attr("RTA_TABLE") != self.table:
                    continue
                dst = msg.get_attr("RTA_DST")
                if dst is None:
                    continue
                out.append({"dst": "%s/%d" % (dst, msg["dst_len"]), "table": self.table, "family": family})
        return out

    def sync(self, addresses):
        """Routes for exactly `addresses`; returns (added, removed) address lists."""
        want = {_prefix(a)[0] for a in addresses}
        added, removed = sorted(want - self.routes), sorted(self.routes - want)
        if not added and not removed:
            return [], []
        with netlink.open_iproute() as ipr:
            for addr in removed:
                self._route(ipr, "del", addr)
                self.routes.discard(addr)
            for addr in added:
                self._route(ipr, "replace", addr)
                self.routes.add(addr)
        return added, removed

    def _route(self, ipr, command, address):
        addr, length, version = _prefix(address)
        try:
            ipr.route(command, dst="%s/%d" % (addr, length), oif=self.index, table=self.table, proto=PROTO,
                      family=2 if version == 4 else 10)
        except netlink.NetlinkError as exc:
            if command == "del" and exc.code == 3:  # ESRCH: already gone
                return
            raise EngineError("announce: %s route %s/%d in table %d: %s" % (command, addr, length, self.table, exc)) from exc

    def close(self):
        """Withdraw everything: closing the descriptor removes the device and its routes."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.routes = set()
