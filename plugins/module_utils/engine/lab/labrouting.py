"""The lab router as a BGP speaker: FRR (zebra, bgpd, bfdd) inside the router namespace.

Every balancer gets two eBGP sessions (IPv4 and IPv6, one family each) with BFD; the router keeps
ECMP routes over every balancer that announces a VIP and announces nothing back. The daemons run
as a private FRR instance: configuration, pid files, vty and zebra sockets and the log all live in
one directory (``<lab_state_root>/<router>/frr``), so the host's own /etc/frr and /var/run/frr are
never read or written. A changed configuration restarts the three daemons: in the lab that costs a
few seconds of convergence, and it is simpler to get right than a live reload.
"""

import os
import signal
import subprocess

from ..errors import EngineError
from . import procs

ROUTER_AS = 65000
BALANCER_AS = 65010
FRR_DIR = "/usr/lib/frr"
DAEMONS = ("zebra", "bfdd", "bgpd")
BFD_PROFILE = "lab"
_BFD_INTERVAL_MS = 100
_BFD_MULTIPLIER = 3


def frr_dir(state_root, router):
    return os.path.join(state_root, router, "frr")


def vtysh_argv(directory):
    """The argv prefix of a vtysh that talks to this lab's FRR and no other."""
    return ["vtysh", "--vty_socket", directory]


def render(lab, directory, router_as=ROUTER_AS, balancer_as=BALANCER_AS):
    """One configuration file per daemon ({file name: text}), from the lab plan."""
    balancers = [h for h in lab["hosts"] if h["kind"] == "lb"]
    log = os.path.join(directory, "frr.log")
    head = [f"hostname {lab['router']}", f"log file {log} informational", "log timestamp precision 3", "!"]
    zebra = head + ["end"]
    peers4 = [(h["ipv4"].split("/")[0], h["gateway_ipv4"], h["netns"]) for h in balancers]
    peers6 = [(h["ipv6"].split("/")[0], h["gateway_ipv6"], h["netns"]) for h in balancers]
    bfdd = head + ["bfd", f" profile {BFD_PROFILE}", f"  detect-multiplier {_BFD_MULTIPLIER}",
                   f"  receive-interval {_BFD_INTERVAL_MS}", f"  transmit-interval {_BFD_INTERVAL_MS}", " exit", "exit", "!", "end"]
    bgp = head + [
        f"ip prefix-list lab-vips4 seq 10 permit {lab['vip_prefix4']} le 32",
        f"ipv6 prefix-list lab-vips6 seq 10 permit {lab['vip_prefix6']} le 128",
        # The router is the end of the lab's routing: the balancers learn nothing from it.
        "route-map lab-announce-nothing deny 10",
        "exit",
        "!",
        f"router bgp {router_as}",
        f" bgp router-id {balancers[0]['gateway_ipv4']}",
        " bgp log-neighbor-changes",
        " no bgp ebgp-requires-policy",
        " no bgp default ipv4-unicast",
        # Short timers: BFD detects a dead balancer; these only bound a session that BFD cannot see.
        " timers bgp 3 9",
    ]
    for address, local, name in peers4 + peers6:
        bgp += [f" neighbor {address} remote-as {balancer_as}",
                f" neighbor {address} description {name}",
                f" neighbor {address} timers connect 2",
                f" neighbor {address} bfd profile {BFD_PROFILE}",
                # After bfd: the BFD session gets its source address now, not when BGP comes up.
                f" neighbor {address} update-source {local}"]
    for family, peers, plist in (("ipv4", peers4, "lab-vips4"), ("ipv6", peers6, "lab-vips6")):
        bgp += [" !", f" address-family {family} unicast", "  maximum-paths 8"]
        for address, _local, _name in peers:
            bgp += [f"  neighbor {address} activate",
                    f"  neighbor {address} prefix-list {plist} in",
                    f"  neighbor {address} route-map lab-announce-nothing out"]
        bgp += [" exit-address-family"]
    bgp += ["exit", "!", "end"]
    return {"zebra.conf": "\n".join(zebra) + "\n", "bfdd.conf": "\n".join(bfdd) + "\n", "bgpd.conf": "\n".join(bgp) + "\n"}


def _argv(router, directory, daemon):
    argv = ["nsenter", f"--net=/run/netns/{router}", os.path.join(FRR_DIR, daemon), "-d",
            # Root, as the lab runs; FRR wants its user in the vty group, which -g makes true.
            "-u", "root", "-g", "frrvty",
            "-f", os.path.join(directory, f"{daemon}.conf"),
            "-i", os.path.join(directory, f"{daemon}.pid"),
            "-z", os.path.join(directory, "zserv.api"),
            "--vty_socket", directory, "-P", "0",
            "--log", "file:" + os.path.join(directory, "frr.log")]
    if daemon == "bfdd":
        argv += ["--bfdctl", os.path.join(directory, "bfdd.sock")]
    return argv


def _netns_inode(router):
    try:
        return os.stat(f"/run/netns/{router}").st_ino
    except OSError:
        return None


def _pid(directory, daemon, router):
    """The daemon's pid when it runs, from this directory's configuration, in the router namespace."""
    try:
        with open(os.path.join(directory, f"{daemon}.pid")) as handle:
            pid = int(handle.read().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
        if os.stat(f"/proc/{pid}/ns/net").st_ino != _netns_inode(router):
            return None
    except (OSError, ValueError, IndexError):
        return None
    conf = os.path.join(directory, f"{daemon}.conf").encode()
    if not cmdline or os.path.basename(cmdline[0]) != daemon.encode() or conf not in cmdline:
        return None
    return pid


def _stop(directory, router):
    """SIGTERM every daemon of this instance; zebra removes the routes it installed as it exits."""
    pids = [p for p in (_pid(directory, d, router) for d in reversed(DAEMONS)) if p]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    procs.wait_gone(pids, timeout=10)
    for daemon in DAEMONS:
        for stale in (f"{daemon}.pid", f"{daemon}.vty"):
            try:
                os.unlink(os.path.join(directory, stale))
            except OSError:
                pass
    return pids


def _start(router, directory):
    for daemon in DAEMONS:
        proc = subprocess.run(_argv(router, directory, daemon), capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not _pid(directory, daemon, router):
            log = (procs.read_text(os.path.join(directory, "frr.log")) or "").strip().splitlines()[-5:]
            raise EngineError(f"{router}: FRR {daemon} did not start (rc {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()} {' | '.join(log)}".strip())


def check_as(router_as, balancer_as):
    for field, value in (("router_as", router_as), ("balancer_as", balancer_as)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4294967295:
            raise EngineError(f"{field}: {value!r} must be an AS number from 1 to 4294967295", field=field, value=value)
    if router_as == balancer_as:
        raise EngineError(f"balancer_as: {balancer_as} is the router's AS too; the lab's sessions are eBGP",
                          field="balancer_as", value=balancer_as)


def bgp_present(lab, state_root, check_mode=False, router_as=ROUTER_AS, balancer_as=BALANCER_AS):
    """FRR running in the router namespace with the configuration of this lab. Returns the changes."""
    check_as(router_as, balancer_as)
    router = lab["router"]
    directory = frr_dir(state_root, router)
    missing = [d for d in DAEMONS if not os.access(os.path.join(FRR_DIR, d), os.X_OK)]
    if missing:
        raise EngineError(f"routing: bgp needs FRR on the controller ({', '.join(missing)} missing from {FRR_DIR}; apt-get install frr)",
                          field="routing", value="bgp")
    wanted = render(lab, directory, router_as, balancer_as)
    stale = sorted(name for name, text in wanted.items() if procs.read_text(os.path.join(directory, name)) != text)
    stopped = sorted(d for d in DAEMONS if not _pid(directory, d, router))
    changes = [f"{router}: FRR configuration {name}" for name in stale]
    if len(stopped) == len(DAEMONS):
        changes.append(f"{router}: start FRR {', '.join(DAEMONS)}")
    elif stopped:
        changes.append(f"{router}: restart FRR ({', '.join(stopped)} not running)")
    elif stale:
        changes.append(f"{router}: restart FRR for the new configuration")
    if check_mode or not changes:
        return changes
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name, text in wanted.items():
        path = os.path.join(directory, name)
        with open(path + ".tmp", "w") as handle:
            handle.write(text)
        os.chmod(path + ".tmp", 0o600)
        os.replace(path + ".tmp", path)
    # One daemon missing (killed, crashed) or a new configuration: the instance starts over.
    _stop(directory, router)
    _start(router, directory)
    return changes


def bgp_absent(lab, state_root, check_mode=False):
    """This lab's FRR stopped (static routing). Returns the changes."""
    router = lab["router"]
    directory = frr_dir(state_root, router)
    running = [d for d in DAEMONS if _pid(directory, d, router)]
    if not running:
        return []
    if not check_mode:
        _stop(directory, router)
    return [f"{router}: stop FRR {', '.join(running)}"]
