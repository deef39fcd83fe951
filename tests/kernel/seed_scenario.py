#!/usr/bin/env python
"""The seed scenario (DESIGN.md, first section): rp_filter on the tunnel device drops the
decapsulated SYN, so no SYN-ACK ever leaves the backend.

Runs as root on a kernel that has the ipip module -- in CI that is the kernel tier's guest:

    tests/kernel/run_in_vm.sh python3 tests/kernel/seed_scenario.py [--json FILE]

Lab (three network namespaces, addresses that exist only inside them):

    client  c0 10.201.1.2/24 ---- l0 10.201.1.1/24  lb  l1 10.201.2.1/24 ---- b0 10.201.2.2/24  backend
                                                                                  VIP 10.201.100.1/32 on lo
                                                                                  decap: tunl0 or ipip0 (external)
                                                                                  TCP listener on VIP:80

`lb` is a plain router plus an encapsulator fixture (no BPF): it sends, from a raw socket, an
IPIP packet built with scapy -- outer 10.201.2.1 -> 10.201.2.2, inner SYN client:port ->
VIP:80, as a Katran balancer would. The backend decapsulates on its tunnel device, and the
kernel either answers with a SYN-ACK from the VIP straight back to the client (routed via lb,
which only forwards) or drops the packet in the reverse-path check.

For each decap device (the fallback tunl0, then an `ipip external` device) it runs:
  1. strict    rp_filter=1 on all and the device          expected: SYN decapsulated, dropped
  1b/1c        rp_filter=1 on only one of all / the device  expected: dropped (effective value
                                                           is max(all, device))
  2. fixed     rp_filter=0 on all and the device, arp_ignore=1, arp_announce=2
                                                           expected: SYN-ACK VIP -> client
  3a. loose    rp_filter=2, device without an address     expected: dropped (loose mode drops
                                                           on a device without an address)
  3b. loose    rp_filter=2, device with an address        expected: SYN-ACK VIP -> client
and records what the kernel did: the device's rx counter, the IPReversePathFilter counter,
whether a SYN-ACK left the backend (captured on b0) and whether it reached the client
(captured on c0), with its source address. Prints a table; --json writes the rows.
Exit status: 0 when every row matched its expectation, 1 when one did not, 2 when the lab
could not be built (no ipip module, not root).
"""
import argparse
import ctypes
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

PREFIX = "kseed-"
NS_CLIENT, NS_LB, NS_BACKEND = PREFIX + "client", PREFIX + "lb", PREFIX + "backend"
CLIENT = "10.201.1.2"
LB_CLIENT_SIDE = "10.201.1.1"
LB_BACKEND_SIDE = "10.201.2.1"
BACKEND = "10.201.2.2"
VIP = "10.201.100.1"
TUNNEL_ADDR = "10.201.3.2"
VIP_PORT = 80

_libc = ctypes.CDLL(None, use_errno=True)
_HOME_NS_FD = None


class Fatal(Exception):
    """The lab could not be built."""


def log(msg):
    print(msg, flush=True)


def run(cmd, check=True, input_text=None):
    proc = subprocess.run(cmd, input=input_text, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()
        raise Fatal("%s failed (exit %d): %s" % (" ".join(cmd), proc.returncode, output))
    return proc


def ip_batch(ns, lines):
    """Run several `ip` commands in one process (process start-up is slow under TCG)."""
    cmd = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
    run(cmd, input_text="\n".join(lines) + "\n")


class netns:
    """Context manager: this thread enters netns NAME (sockets made inside stay there)."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        fd = os.open("/run/netns/" + self.name, os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        _setns(_HOME_NS_FD)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: " + os.strerror(err))


def sysctl_set(ns, key, value):
    path = "/proc/sys/" + key.replace(".", "/")
    with netns(ns):
        with open(path, "w") as f:
            f.write(str(value))
        with open(path) as f:
            got = f.read().strip()
    if got != str(value):
        raise Fatal("sysctl %s in %s: wrote %s, reads %s" % (key, ns, value, got))


def sysctl_get(ns, key):
    with netns(ns):
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()


def netstat_counters(ns):
    """TcpExt/IpExt counters of netns NS (from /proc/net/netstat, read inside it)."""
    out = {}
    with netns(ns):
        with open("/proc/self/net/netstat") as f:
            lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        prefix, names = names.split(":", 1)
        _unused, values = values.split(":", 1)
        for n, v in zip(names.split(), values.split()):
            out[prefix + "." + n] = int(v)
    return out


def link_rx(ns, dev):
    proc = run(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev])
    return int(json.loads(proc.stdout)[0]["stats64"]["rx"]["packets"])


def packet_socket(ns, ifname):
    with netns(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def drain(sock):
    while True:
        try:
            sock.recvfrom(65535)
        except BlockingIOError:
            return


def parse_tcp(frame):
    """(src, dst, sport, dport, flags) for an Ethernet/IPv4/TCP frame, else None."""
    if len(frame) < 14 + 20 + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_TCP:
        return None
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
    flags = ip[ihl + 13]
    return src, dst, sport, dport, flags


def is_synack(flags):
    return flags & 0x12 == 0x12


class Lab:
    def __init__(self):
        self.client_sock = None
        self.backend_sock = None
        self.send_sock = None
        self.listener = None
        self.next_port = 40000

    # -- set-up -------------------------------------------------------------------------
    def build(self):
        for mod in ("ipip",):
            proc = run(["modprobe", mod], check=False)
            if proc.returncode != 0:
                raise Fatal("modprobe %s failed: %s (this kernel has no %s module; run this "
                            "inside the kernel tier: tests/kernel/run_in_vm.sh)"
                            % (mod, proc.stderr.strip(), mod))
        self.destroy()
        for ns in (NS_CLIENT, NS_LB, NS_BACKEND):
            run(["ip", "netns", "add", ns])
        ip_batch(None, [
            "link add c0 netns %s type veth peer name l0 netns %s" % (NS_CLIENT, NS_LB),
            "link add l1 netns %s type veth peer name b0 netns %s" % (NS_LB, NS_BACKEND),
        ])
        ip_batch(NS_CLIENT, [
            "link set lo up", "addr add %s/24 dev c0" % CLIENT, "link set c0 up",
            "route add default via %s" % LB_CLIENT_SIDE,
        ])
        ip_batch(NS_LB, [
            "link set lo up",
            "addr add %s/24 dev l0" % LB_CLIENT_SIDE, "link set l0 up",
            "addr add %s/24 dev l1" % LB_BACKEND_SIDE, "link set l1 up",
            # the client's RST to an unsolicited SYN-ACK reaches the backend this way
            "route add %s/32 via %s" % (VIP, BACKEND),
        ])
        ip_batch(NS_BACKEND, [
            "link set lo up", "addr add %s/32 dev lo" % VIP,
            "addr add %s/24 dev b0" % BACKEND, "link set b0 up",
            "route add default via %s" % LB_BACKEND_SIDE,
            "link set tunl0 up",
        ])
        sysctl_set(NS_LB, "net.ipv4.ip_forward", 1)
        for dev in ("all", "default", "l0", "l1"):
            sysctl_set(NS_LB, "net.ipv4.conf.%s.rp_filter" % dev, 0)
        with netns(NS_BACKEND):
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((VIP, VIP_PORT))
            self.listener.listen(64)
        with netns(NS_LB):
            self.send_sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.client_sock = packet_socket(NS_CLIENT, "c0")
        self.backend_sock = packet_socket(NS_BACKEND, "b0")
        # ARP for the lab's next hops once, so the first case does not pay for it.
        run(["ip", "netns", "exec", NS_CLIENT, "ping", "-c1", "-W3", BACKEND], check=False)

    def destroy(self):
        for ns in (NS_CLIENT, NS_LB, NS_BACKEND):
            run(["ip", "netns", "del", ns], check=False)

    # -- one case -----------------------------------------------------------------------
    def configure(self, dev, all_rpf, dev_rpf, with_addr, arp_fix):
        sysctl_set(NS_BACKEND, "net.ipv4.conf.all.rp_filter", all_rpf)
        sysctl_set(NS_BACKEND, "net.ipv4.conf.%s.rp_filter" % dev, dev_rpf)
        sysctl_set(NS_BACKEND, "net.ipv4.conf.all.arp_ignore", 1 if arp_fix else 0)
        sysctl_set(NS_BACKEND, "net.ipv4.conf.all.arp_announce", 2 if arp_fix else 0)
        cmds = []
        if with_addr:
            cmds.append("addr replace %s/32 dev %s" % (TUNNEL_ADDR, dev))
        else:
            cmds.append("addr flush dev %s" % dev)
        ip_batch(NS_BACKEND, cmds)

    def send_syn(self, sport):
        from scapy.layers.inet import IP, TCP

        pkt = (IP(src=LB_BACKEND_SIDE, dst=BACKEND, proto=4, ttl=64)
               / IP(src=CLIENT, dst=VIP, ttl=63)
               / TCP(sport=sport, dport=VIP_PORT, flags="S", seq=1000,
                     options=[("MSS", 1400)]))
        self.send_sock.sendto(bytes(pkt), (BACKEND, 0))

    def watch(self, sport, timeout):
        """Collect SYN-ACKs to CLIENT:sport on b0 (outgoing) and c0 until both are seen."""
        seen = {"backend": None, "client": None}
        deadline = time.monotonic() + timeout
        socks = {self.backend_sock: "backend", self.client_sock: "client"}
        while time.monotonic() < deadline and None in seen.values():
            ready, _unused, _unused = select.select(list(socks), [], [], max(0.0, deadline - time.monotonic()))
            for s in ready:
                while True:
                    try:
                        frame, addr = s.recvfrom(65535)
                    except BlockingIOError:
                        break
                    where = socks[s]
                    if where == "backend" and addr[2] != PACKET_OUTGOING:
                        continue
                    tcp = parse_tcp(frame)
                    if tcp and tcp[1] == CLIENT and tcp[3] == sport and is_synack(tcp[4]):
                        seen[where] = seen[where] or tcp[0]
        return seen

    def run_case(self, name, dev, all_rpf, dev_rpf, with_addr, arp_fix, expect_synack,
                 positive_timeout, negative_timeout):
        self.configure(dev, all_rpf, dev_rpf, with_addr, arp_fix)
        effective = max(int(sysctl_get(NS_BACKEND, "net.ipv4.conf.all.rp_filter")),
                        int(sysctl_get(NS_BACKEND, "net.ipv4.conf.%s.rp_filter" % dev)))
        self.next_port += 1
        sport = self.next_port
        rx0 = link_rx(NS_BACKEND, dev)
        n0 = netstat_counters(NS_BACKEND)
        drain(self.client_sock)
        drain(self.backend_sock)
        t0 = time.monotonic()
        self.send_syn(sport)
        seen = self.watch(sport, positive_timeout if expect_synack else negative_timeout)
        latency = time.monotonic() - t0
        rx1 = link_rx(NS_BACKEND, dev)
        n1 = netstat_counters(NS_BACKEND)
        got_synack = seen["client"] is not None
        row = {
            "case": name,
            "decap_dev": dev,
            "rp_filter_all": all_rpf,
            "rp_filter_dev": dev_rpf,
            "rp_filter_effective": effective,
            "dev_has_address": with_addr,
            "arp_ignore_announce": "1/2" if arp_fix else "0/0",
            "tunnel_rx_delta": rx1 - rx0,
            "rpfilter_drops_delta": n1.get("TcpExt.IPReversePathFilter", 0)
            - n0.get("TcpExt.IPReversePathFilter", 0),
            "synack_left_backend": seen["backend"] is not None,
            "synack_at_client": got_synack,
            "synack_src": seen["client"] or seen["backend"],
            "expect_synack": expect_synack,
            "seconds": round(latency, 2),
        }
        ok = (got_synack == expect_synack and row["tunnel_rx_delta"] >= 1
              and (not got_synack or row["synack_src"] == VIP)
              and (got_synack or row["rpfilter_drops_delta"] >= 1))
        row["matches_expectation"] = ok
        return row


CASES = [
    # name, all, dev, address on dev, arp fix, expect SYN-ACK
    ("1 strict", 1, 1, False, False, False),
    # the kernel uses max(all, device): either one alone at 1 still drops
    ("1b strict via all", 1, 0, False, False, False),
    ("1c strict via dev", 0, 1, False, False, False),
    ("2 fixed", 0, 0, False, True, True),
    ("3a loose, no addr", 2, 2, False, False, False),
    ("3b loose, addr", 2, 2, True, False, True),
]


def print_table(rows):
    cols = [("case", "case"), ("decap_dev", "decap"), ("rp_filter_all", "rpf all"),
            ("rp_filter_dev", "rpf dev"), ("rp_filter_effective", "eff"),
            ("dev_has_address", "dev addr"), ("tunnel_rx_delta", "tun rx+"),
            ("rpfilter_drops_delta", "rpf drops+"), ("synack_left_backend", "SYN-ACK out b0"),
            ("synack_at_client", "SYN-ACK at client"), ("synack_src", "src"),
            ("expect_synack", "expected"), ("matches_expectation", "ok")]

    def fmt(v):
        if isinstance(v, bool):
            return "yes" if v else "no"
        return "-" if v is None else str(v)

    table = [[h for _unused, h in cols]] + [[fmt(r[k]) for k, _unused in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    for i, line in enumerate(table):
        log("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        if i == 0:
            log("  ".join("-" * w for w in widths))


def main(argv=None):
    global _HOME_NS_FD
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--json", help="write the result rows to this file")
    ap.add_argument("--devices", default="tunl0,ipip0",
                    help="decap devices to test, comma-separated: tunl0 (the fallback "
                         "device) and/or ipip0 (an `ipip external` device); default both")
    ap.add_argument("--keep", action="store_true", help="leave the namespaces in place")
    ap.add_argument("--positive-timeout", type=float, default=10.0,
                    help="seconds to wait for an expected SYN-ACK (TCG is slow)")
    ap.add_argument("--negative-timeout", type=float, default=3.0,
                    help="seconds to watch for a SYN-ACK that should not come")
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        log("seed_scenario: must run as root")
        return 2
    _HOME_NS_FD = os.open("/proc/self/ns/net", os.O_RDONLY)
    t_start = time.monotonic()
    lab = Lab()
    rows = []
    try:
        lab.build()
        t_import = time.monotonic()
        from scapy.layers.inet import IP  # noqa: F401  (pay the import once, timed)
        log("[seed] lab built in %.1fs, scapy imported in %.1fs"
            % (t_import - t_start, time.monotonic() - t_import))
        for dev in [d.strip() for d in args.devices.split(",") if d.strip()]:
            if dev != "tunl0":
                # An external (collect-metadata) device takes the packets tunl0 would get.
                ip_batch(NS_BACKEND, ["link add name %s type ipip external" % dev,
                                      "link set %s up" % dev])
            for name, all_rpf, dev_rpf, addr, arp_fix, expect in CASES:
                row = lab.run_case(name, dev, all_rpf, dev_rpf, addr, arp_fix, expect,
                                   args.positive_timeout, args.negative_timeout)
                log("[seed] %s on %s: tunnel rx +%d, rp_filter drops +%d, SYN-ACK at client: %s"
                    % (name, dev, row["tunnel_rx_delta"], row["rpfilter_drops_delta"],
                       row["synack_src"] if row["synack_at_client"] else "no"))
                rows.append(row)
            if dev != "tunl0":
                ip_batch(NS_BACKEND, ["link del %s" % dev])
    except Fatal as exc:
        log("seed_scenario: cannot build the lab: %s" % exc)
        return 2
    finally:
        if not args.keep:
            lab.destroy()
    log("")
    log("seed scenario on kernel %s (%.1fs):" % (os.uname().release, time.monotonic() - t_start))
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"kernel": os.uname().release, "rows": rows}, f, indent=2)
    bad = [r for r in rows if not r["matches_expectation"]]
    if bad:
        log("seed: FAILED, %d of %d rows not as expected" % (len(bad), len(rows)))
    else:
        log("seed: OK, all %d rows as expected" % len(rows))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
