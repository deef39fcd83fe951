"""Decap programs on a live veth, with the kernel: an encapsulated TCP SYN gets a SYN-ACK.

Two network namespaces joined by a veth pair:

    xkt-decap-<pid>-a (balancer side)            xkt-decap-<pid>-b (backend)
    va 10.77.0.1/24 fd77::1/64  <---- veth ---->  vb 10.77.0.2/24 fd77::2/64, decap on vb
                                                  lo 192.0.2.80/32 2001:db8:80::80/128 (VIPs)
                                                  listeners on VIP:8080, default routes via va

From a packet socket on va we send what a balancer sends: a client's SYN (198.51.100.7 or
2001:db8:c::7 -> VIP:8080) wrapped in IPIP / IP6IP6 / 4in6 addressed to vb's address, which is in
decap_locals. The backend kernel has no ipip/ip6_tunnel module: only the decap program can turn
that into a SYN its listener sees. We wait for the listener's SYN-ACK (sent straight back via the
default route, DSR style) on va.

Lab facts applied (DESIGN.md): tx checksum offload off on the sending veth, rp_filter=0 (all,
default and vb) in the backend, VIPs on lo. IPv6 DAD is off so addresses are usable at once.
"""

import contextlib
import ctypes
import os
import random
import select
import shutil
import socket
import subprocess
import time

import pytest

pytest.importorskip("scapy.all")
from scapy.all import IP, TCP, Dot1Q, Ether, IPv6  # noqa: E402

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import decap_abi as A  # noqa: E402
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import libbpf  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BPF_DIR = os.path.join(REPO, "files", "bpf")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and BPF attach need root"),
    pytest.mark.skipif(not shutil.which("ip"), reason="iproute2 not installed"),
]

PREFIX = "xkt-decap-"
A_ADDR4, B_ADDR4 = "10.77.0.1", "10.77.0.2"
A_ADDR6, B_ADDR6 = "fd77::1", "fd77::2"
VIP4, VIP6 = "192.0.2.80", "2001:db8:80::80"
CLIENT4, CLIENT6 = "198.51.100.7", "2001:db8:c::7"
PORT = 8080
CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003

_libc = ctypes.CDLL(None, use_errno=True)


def _run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _netns_list():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_namespaces():
    """Namespaces left by a run that was killed before its finalizers (ours only: by prefix+pid)."""
    for name in _netns_list():
        if not name.startswith(PREFIX):
            continue
        try:
            pid = int(name[len(PREFIX):].split("-")[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@contextlib.contextmanager
def netns(name):
    """Run the enclosed code with this thread in namespace `name`; sockets and netlink requests
    made inside stay bound to it after the block."""
    with open("/proc/thread-self/ns/net") as home, open("/run/netns/%s" % name) as target:
        if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns(%s): %s" % (name, os.strerror(err)))
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, "setns back to the test's namespace: %s" % os.strerror(err))


class Lab:
    def __init__(self):
        self.ns_a = "%s%d-a" % (PREFIX, os.getpid())
        self.ns_b = "%s%d-b" % (PREFIX, os.getpid())
        self.socks = []

    def build(self):
        for ns in (self.ns_a, self.ns_b):
            _run("ip", "netns", "add", ns)
            # DAD off before any device exists there, so fd77:: is usable at once.
            _run("ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                 "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", self.ns_a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", self.ns_b)
        _run("ip", "-n", self.ns_a, "addr", "add", A_ADDR4 + "/24", "dev", "va")
        _run("ip", "-n", self.ns_a, "addr", "add", A_ADDR6 + "/64", "dev", "va", "nodad")
        _run("ip", "-n", self.ns_b, "addr", "add", B_ADDR4 + "/24", "dev", "vb")
        _run("ip", "-n", self.ns_b, "addr", "add", B_ADDR6 + "/64", "dev", "vb", "nodad")
        _run("ip", "-n", self.ns_b, "addr", "add", VIP4 + "/32", "dev", "lo")
        _run("ip", "-n", self.ns_b, "addr", "add", VIP6 + "/128", "dev", "lo")
        # The decapsulated SYN's source is a client the backend does not own or route
        # specially: rp_filter (max of all and the device) must not drop it.
        _run("ip", "netns", "exec", self.ns_b, "sysctl", "-q", "-w",
             "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        for ns, dev in ((self.ns_a, "va"), (self.ns_b, "vb")):
            _run("ip", "-n", ns, "link", "set", dev, "up")
            # veth hands partial checksums to its peer; keep every frame fully checksummed.
            if shutil.which("ethtool"):
                _run("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off")
        _run("ip", "netns", "exec", self.ns_b, "sysctl", "-q", "-w", "net.ipv4.conf.vb.rp_filter=0")
        _run("ip", "-n", self.ns_b, "route", "add", "default", "via", A_ADDR4, "dev", "vb")
        _run("ip", "-n", self.ns_b, "-6", "route", "add", "default", "via", A_ADDR6, "dev", "vb")

        with netns(self.ns_b):
            self.vb_ifindex = socket.if_nametoindex("vb")
            self.listen4 = self._listener(socket.AF_INET, VIP4)
            self.listen6 = self._listener(socket.AF_INET6, VIP6)
        with netns(self.ns_a):
            self.raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.raw.bind(("va", 0))
            self.socks.append(self.raw)
            self.va_mac = self.raw.getsockname()[4].hex(":")
        # /sys in this mount namespace shows the host's devices, so ask iproute2 for vb's MAC.
        out = subprocess.run(["ip", "-n", self.ns_b, "-o", "link", "show", "vb"],
                             check=True, capture_output=True, text=True).stdout
        self.vb_mac = out.split("link/ether")[1].split()[0]
        return self

    def _listener(self, family, vip):
        s = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((vip, PORT))
        s.listen(16)
        self.socks.append(s)
        return s

    def destroy(self):
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()
        for ns in (self.ns_a, self.ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    # -------------------------------------------------------------- traffic
    def encapsulated_syn(self, kind, sport):
        l2 = Ether(src=self.va_mac, dst=self.vb_mac)
        if kind.startswith("vlan0_"):
            # Priority-tagged (VID 0): the only tag a host without the 8021q module accepts.
            # XDP sees it in the frame and must fix the ethertype inside it; tc sees it in skb
            # metadata, where the kernel put it before tc ingress.
            l2 = l2 / Dot1Q(vlan=0, prio=3)
            kind = kind[len("vlan0_"):]
        syn4 = IP(src=CLIENT4, dst=VIP4) / TCP(sport=sport, dport=PORT, flags="S", seq=1000)
        syn6 = IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=sport, dport=PORT, flags="S", seq=1000)
        if kind == "ipip":
            return l2 / IP(src=A_ADDR4, dst=B_ADDR4, proto=4) / syn4
        if kind == "ip6ip6":
            return l2 / IPv6(src=A_ADDR6, dst=B_ADDR6, nh=41) / syn6
        if kind == "4in6":
            return l2 / IPv6(src=A_ADDR6, dst=B_ADDR6, nh=4) / syn4
        raise ValueError(kind)

    def syn_gets_synack(self, kind, timeout):
        """Send one encapsulated SYN from va; True when the listener's SYN-ACK shows up on va."""
        sport = random.randint(20000, 60000)
        base = kind.split("_")[-1]
        vip = VIP6 if base == "ip6ip6" else VIP4
        self.raw.send(bytes(self.encapsulated_syn(kind, sport)))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _unused, _unused = select.select([self.raw], [], [], left)
            if not ready:
                continue
            frame, addr = self.raw.recvfrom(65535)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            pkt = Ether(frame)
            ip = pkt.getlayer(IPv6) if base == "ip6ip6" else pkt.getlayer(IP)
            tcp = pkt.getlayer(TCP)
            if ip is None or tcp is None:
                continue
            if (ip.src == vip and tcp.sport == PORT and tcp.dport == sport
                    and tcp.flags == "SA" and tcp.ack == 1001):
                return True


@pytest.fixture(scope="module")
def lab():
    _remove_stale_namespaces()
    lab = Lab()
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()


def _build_compat(out_dir):
    out = os.path.join(out_dir, "decap_compat.o")
    subprocess.run(
        ["clang", "-target", "bpf", "-O2", "-g", "-Wall", "-Werror",
         "-I/usr/include/%s-linux-gnu" % os.uname().machine, "-DDECAP_TC_NO_DECAP_FLAG",
         "-c", os.path.join(BPF_DIR, "decap.c"), "-o", out],
        check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    """name -> loaded BpfObject: the shipped decap.o and the 6.1-path build of it."""
    subprocess.run(["make", "-s", "-C", BPF_DIR, "decap.o"], check=True, capture_output=True)
    paths = {"decap": os.path.join(BPF_DIR, "decap.o"),
             "compat": _build_compat(str(tmp_path_factory.mktemp("decap-live")))}
    objs = {}
    try:
        for name, path in paths.items():
            obj = libbpf.BpfObject(path, pin_maps=False)
            obj.load()
            locals_map = obj.map(A.MAP_LOCALS)
            for addr in (B_ADDR4, B_ADDR6):
                locals_map.update(A.local_key(addr), A.local_meta())
            objs[name] = obj
        yield objs
    finally:
        for obj in objs.values():
            obj.close()


@contextlib.contextmanager
def attached(lab, obj, hook):
    fd = obj.program_fd(A.PROG_XDP if hook == "xdp" else A.PROG_TC)
    with netns(lab.ns_b):
        if hook == "xdp":
            mode = libbpf.xdp_attach(lab.vb_ifindex, fd, mode="native")
            assert mode == "native"
        else:
            libbpf.tc_attach(lab.vb_ifindex, fd)
    try:
        yield
    finally:
        with netns(lab.ns_b):
            if hook == "xdp":
                libbpf.xdp_detach(lab.vb_ifindex)
            else:
                libbpf.tc_detach(lab.vb_ifindex)


def _decap_count(obj):
    st = A.read_stats(obj.map(A.MAP_STATS))
    return st["decap_v4"]["packets"] + st["decap_v6"]["packets"]


HOOKS = [("xdp", "decap"), ("tc", "decap"), ("tc", "compat")]


@pytest.mark.parametrize("kind", ["ipip", "ip6ip6", "4in6", "vlan0_ipip", "vlan0_4in6"])
@pytest.mark.parametrize("hook,build", HOOKS, ids=["xdp", "tc", "tc_compat"])
def test_encapsulated_syn_is_answered(lab, objects, hook, build, kind):
    obj = objects[build]
    before = _decap_count(obj)
    with attached(lab, obj, hook):
        assert lab.syn_gets_synack(kind, timeout=3.0), "no SYN-ACK for %s via %s" % (kind, hook)
    assert _decap_count(obj) > before


def test_without_decap_nothing_answers(lab, objects):
    """The control: with no program, or with the backend's address missing from decap_locals,
    the same SYN goes unanswered (no ipip module here). So the SYN-ACKs above are the program's."""
    if subprocess.run(["ip", "-n", lab.ns_b, "link", "show", "tunl0"], capture_output=True, check=False).returncode == 0:
        pytest.skip("the ipip module is loaded here: the kernel itself would decapsulate")
    assert not lab.syn_gets_synack("ipip", timeout=1.0)
    obj = objects["decap"]
    key = A.local_key(B_ADDR4)
    locals_map = obj.map(A.MAP_LOCALS)
    assert locals_map.delete(key)
    try:
        with attached(lab, obj, "xdp"):
            assert not lab.syn_gets_synack("ipip", timeout=1.0)
    finally:
        locals_map.update(key, A.local_meta())
