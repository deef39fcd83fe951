"""The router's view of the VIPs, run inside the lab router's namespace (delegate_to the router).

    bgp_watch.py show VIP...                        FRR's routes (vtysh) and the kernel's next hops, as JSON
    bgp_watch.py wait VIP... --via P1,P2 [--timeout]  until the next hops of every VIP are exactly the ports P1,P2
    bgp_watch.py kill VIP... --netns NS --gone P [--pidfile F] [--signal STOP]
        SIGKILL (or SIGSTOP) every process of the namespace NS (or the one of the pidfile), then the
        time until no VIP has a next hop through port P in the kernel's table (what forwards the packets)

Next hops are named by the router's port towards the balancer (to-lb1): FRR installs IPv6 routes via
the balancer's link-local address, so the port is what names a balancer in both families.

The kernel's table is the one zebra installs FRR's best paths into; times come from polling it every
10 ms. vtysh (the lab's argv, --vtysh as JSON) shows what FRR itself holds.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time


def kernel_hops(vip):
    flag = "-6" if ":" in vip else "-4"
    out = subprocess.run(["ip", "-j", flag, "route", "show", "exact", vip], capture_output=True, text=True, check=True)
    hops = set()
    for route in json.loads(out.stdout or "[]"):
        if route.get("dev"):
            hops.add(route["dev"])
        hops.update(h["dev"] for h in route.get("nexthops", []) if h.get("dev"))
    return sorted(hops)


def frr(vtysh, vip):
    family = "ipv6" if ":" in vip else "ip"
    prefix = "%s/%d" % (vip, 128 if ":" in vip else 32)
    route = json.loads(subprocess.run(vtysh + ["-c", "show %s route %s json" % (family, prefix)],
                                      capture_output=True, text=True, check=True).stdout or "{}")
    bgp = subprocess.run(vtysh + ["-c", "show bgp %s unicast %s json" % ("ipv6" if ":" in vip else "ipv4", prefix)],
                         capture_output=True, text=True, check=True).stdout
    entries = route.get(prefix, [])
    return {"protocols": sorted({e.get("protocol") for e in entries}),
            "nexthops": sorted(h.get("interfaceName", "") for e in entries if e.get("selected")
                               for h in e.get("nexthops", []) if h.get("active")),
            "bgp_paths": len((json.loads(bgp or "{}")).get("paths", []))}


def show(args):
    return {vip: dict(frr(args.vtysh, vip), kernel=kernel_hops(vip)) for vip in args.vips}


def wait(args):
    want = sorted(a for a in args.via.split(",") if a)
    start = time.monotonic()
    while True:
        now = {vip: kernel_hops(vip) for vip in args.vips}
        if all(hops == want for hops in now.values()):
            return {"after": round(time.monotonic() - start, 3), "kernel": now}
        if time.monotonic() - start > args.timeout:
            sys.stderr.write("timeout after %s s: %s (wanted %s)\n" % (args.timeout, json.dumps(now), want))
            sys.exit(1)
        time.sleep(0.05)


def kill(args):
    gone = set(a for a in args.gone.split(",") if a)
    before = {vip: kernel_hops(vip) for vip in args.vips}
    if args.pidfile:
        with open(args.pidfile) as handle:
            pids = [handle.read().split()[0]]
    else:
        pids = subprocess.run(["ip", "netns", "pids", args.netns], capture_output=True, text=True, check=True).stdout.split()
    started, start = time.time(), time.monotonic()
    for pid in pids:
        os.kill(int(pid), getattr(signal, "SIG" + args.signal))
    withdrawn = {}
    while len(withdrawn) < len(args.vips) and time.monotonic() - start < args.timeout:
        for vip in args.vips:
            if vip not in withdrawn and not gone & set(kernel_hops(vip)):
                withdrawn[vip] = round(time.monotonic() - start, 3)
        time.sleep(0.01)
    return {"pids": [int(p) for p in pids], "started": started, "before": before, "withdrawn_after": withdrawn,
            "after": {vip: kernel_hops(vip) for vip in args.vips}}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=["show", "wait", "kill"])
    p.add_argument("vips", nargs="+")
    p.add_argument("--vtysh", type=json.loads, default=["vtysh"])
    p.add_argument("--via", default="")
    p.add_argument("--netns")
    p.add_argument("--pidfile")
    p.add_argument("--gone", default="")
    p.add_argument("--signal", choices=["KILL", "STOP"], default="KILL")
    p.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args()
    print(json.dumps({"show": show, "wait": wait, "kill": kill}[args.action](args)))


main()
