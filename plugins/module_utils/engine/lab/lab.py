"""A load-balancer lab on one host: network namespaces joined to a router by veth pairs.

    client ──┐                ┌── lb1 … lbN   (VIP prefixes routed here, ECMP when N > 1)
             └──── router ────┤
                              └── be1 … beM

Every host namespace has one interface, eth0, whose peer lives in the router. Balancer and
backend links get a larger MTU than the client link so the 20/40 bytes of IPIP/IP6IP6 fit.
Addresses, MACs and names are derived from the indices, so re-running yields the same lab.

Changes go through the ``ip``/``ethtool``/``sysctl`` tools with argv lists: the lab is
test and demo infrastructure on the controller, where iproute2 is always present.
"""

import ipaddress
import json
import os
import re
import shutil
import subprocess

from ..errors import EngineError
from . import labmonitor, labrouting, procs

FABRIC_MTU = 1600
CLIENT_MTU = 1500
VIP_PREFIX4 = "10.99.0.0/24"
VIP_PREFIX6 = "fd00:99::/64"
_KIND_CODE = {"client": 0x10, "lb": 0x20, "be": 0x30}


def _link_plan(prefix, kind, index, mtu):
    """One host namespace and the router port that faces it."""
    code = _KIND_CODE[kind]
    name = prefix + (kind if kind == "client" else f"{kind}{index}")
    net4 = ipaddress.ip_network(f"10.{code // 16 * 10}.{index}.0/24")
    net6 = ipaddress.ip_network(f"fd00:{code // 16 * 10}:{index}::/64")
    return {
        "kind": kind,
        "index": index,
        "netns": name,
        "interface": "eth0",
        "router_port": "to-" + (kind if kind == "client" else f"{kind}{index}"),
        "mtu": mtu,
        "mac": f"02:58:4b:{code:02x}:{index:02x}:02",
        "router_mac": f"02:58:4b:{code:02x}:{index:02x}:01",
        "ipv4": f"{net4[2]}/24",
        "ipv6": f"{net6[2]}/64",
        "gateway_ipv4": str(net4[1]),
        "gateway_ipv6": str(net6[1]),
    }


def plan(prefix="xkt-", balancers=1, backends=2, fabric_mtu=FABRIC_MTU, client_mtu=CLIENT_MTU,
         vip_prefix4=VIP_PREFIX4, vip_prefix6=VIP_PREFIX6):
    """The desired lab as plain data (also what the inventory is written from)."""
    if not re.match(r"^[a-z][a-z0-9-]{0,7}$", prefix or ""):
        raise EngineError(f"prefix: '{prefix}' must be 1-8 characters of a-z, 0-9 and '-', starting with a letter",
                          field="prefix", value=prefix)
    limits = (("balancers", balancers, 1, 8), ("backends", backends, 1, 16),
              ("fabric_mtu", fabric_mtu, 1320, 9000), ("client_mtu", client_mtu, 1280, 9000))
    for field, value, low, high in limits:
        if not isinstance(value, int) or not low <= value <= high:
            raise EngineError(f"{field}: {value!r} must be an integer from {low} to {high}", field=field, value=value)
    if fabric_mtu < client_mtu + 40:
        raise EngineError(f"fabric_mtu: {fabric_mtu} leaves no room for a 40-byte IP6IP6 header over client_mtu {client_mtu}",
                          field="fabric_mtu", value=fabric_mtu)
    for field, value, version in (("vip_prefix4", vip_prefix4, 4), ("vip_prefix6", vip_prefix6, 6)):
        try:
            if ipaddress.ip_network(value).version != version:
                raise ValueError("wrong family")
        except ValueError as exc:
            raise EngineError(f"{field}: '{value}' is not an IPv{version} prefix ({exc})", field=field, value=value)
    hosts = [_link_plan(prefix, "client", 1, client_mtu)]
    hosts += [_link_plan(prefix, "lb", i, fabric_mtu) for i in range(1, balancers + 1)]
    hosts += [_link_plan(prefix, "be", i, fabric_mtu) for i in range(1, backends + 1)]
    return {
        "prefix": prefix,
        "router": prefix + "router",
        "hosts": hosts,
        "vip_prefix4": vip_prefix4,
        "vip_prefix6": vip_prefix6,
    }


def lab_namespace_pattern(prefix):
    return re.compile("^" + re.escape(prefix) + r"(router|client|lb\d+|be\d+)$")


class _Runner:
    """Runs tools with argv lists; records what it changed; in check mode only records."""

    def __init__(self, check_mode):
        self.check_mode = check_mode
        self.changes = []

    def read(self, argv):
        result = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, LANG="C", LC_ALL="C"), check=False)
        return result.returncode, result.stdout, result.stderr

    def read_json(self, argv):
        rc, out, _err = self.read(argv)
        return json.loads(out) if rc == 0 and out.strip() else []

    def change(self, description, argv):
        self.changes.append(description)
        if self.check_mode:
            return
        rc, _out, err = self.read(argv)
        if rc != 0:
            raise EngineError(f"{description} failed: {' '.join(argv)}: {err.strip()}")


def _namespaces(run):
    return {entry["name"] for entry in run.read_json(["ip", "-j", "netns", "list"])}


def _sysctl(run, netns, key, value):
    rc, out, _err = run.read(["ip", "netns", "exec", netns, "sysctl", "-n", key])
    if rc != 0 or out.strip() != str(value):
        run.change(f"{netns}: sysctl {key}={value}", ["ip", "netns", "exec", netns, "sysctl", "-qw", f"{key}={value}"])


def _link(run, netns, ifname, mtu, mac, xdp_object=None):
    links = run.read_json(["ip", "-j", "-d", "-n", netns, "link", "show", "dev", ifname])
    link = links[0] if links else {}
    if link.get("mtu") != mtu:
        run.change(f"{netns}: {ifname} mtu {mtu}", ["ip", "-n", netns, "link", "set", "dev", ifname, "mtu", str(mtu)])
    if link.get("address") != mac:
        run.change(f"{netns}: {ifname} address {mac}", ["ip", "-n", netns, "link", "set", "dev", ifname, "address", mac])
    if "UP" not in link.get("flags", []):
        run.change(f"{netns}: {ifname} up", ["ip", "-n", netns, "link", "set", "dev", ifname, "up"])
    if xdp_object and "xdp" not in link:
        # The peer of a veth that does XDP_TX must run an XDP program, or the frame is dropped.
        run.change(f"{netns}: {ifname} xdp pass",
                   ["ip", "-n", netns, "link", "set", "dev", ifname, "xdpdrv", "obj", xdp_object, "sec", "xdp"])
    rc, out, _err = run.read(["ip", "netns", "exec", netns, "ethtool", "-k", ifname])
    if rc != 0 or "tx-checksumming: off" not in out:
        # veth hands partial checksums across; XDP encapsulation would forward them unfinished.
        run.change(f"{netns}: {ifname} tx checksum offload off", ["ip", "netns", "exec", netns, "ethtool", "-K", ifname, "tx", "off"])


def _addresses(run, netns, ifname, wanted):
    links = run.read_json(["ip", "-j", "-n", netns, "addr", "show", "dev", ifname])
    present = set()
    for link in links:
        for info in link.get("addr_info", []):
            if info.get("scope") == "global":
                present.add(f"{info['local']}/{info['prefixlen']}")
    for addr in wanted:
        if addr not in present:
            extra = ["nodad"] if ":" in addr else []
            run.change(f"{netns}: address {addr} on {ifname}", ["ip", "-n", netns, "addr", "add", addr, "dev", ifname] + extra)
    for addr in sorted(present - set(wanted)):
        run.change(f"{netns}: remove stray address {addr} from {ifname}", ["ip", "-n", netns, "addr", "del", addr, "dev", ifname])


def _route(run, netns, family, dest, gateways, ifnames):
    """One route; several gateways make an ECMP route."""
    flag = "-4" if family == 4 else "-6"
    routes = run.read_json(["ip", "-j", flag, "-n", netns, "route", "show", dest])
    if family == 6:
        # IPv6 ECMP routes are listed as one entry per nexthop on some iproute2 versions.
        found = sorted(r.get("gateway") for r in routes if r.get("gateway"))
        for route in routes:
            found += [hop.get("gateway") for hop in route.get("nexthops", [])]
        found = sorted(g for g in found if g)
    else:
        found = sorted([r["gateway"] for r in routes if r.get("gateway")] +
                       [hop["gateway"] for r in routes for hop in r.get("nexthops", [])])
    if found == sorted(gateways):
        return
    if len(gateways) == 1:
        argv = ["ip", flag, "-n", netns, "route", "replace", dest, "via", gateways[0], "dev", ifnames[0]]
    else:
        argv = ["ip", flag, "-n", netns, "route", "replace", dest]
        for gateway, ifname in zip(gateways, ifnames):
            argv += ["nexthop", "via", gateway, "dev", ifname]
    run.change(f"{netns}: route {dest} via {', '.join(gateways)}", argv)


def _ensure_bpffs():
    if subprocess.run(["mountpoint", "-q", "/sys/fs/bpf"], check=False).returncode != 0:
        os.makedirs("/sys/fs/bpf", exist_ok=True)
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)


ROUTINGS = ("static", "bgp")


def _no_route(run, netns, family, dest):
    """No route to dest other than the routing daemon's (switching from static to bgp)."""
    flag = "-4" if family == 4 else "-6"
    routes = run.read_json(["ip", "-j", flag, "-n", netns, "route", "show", "exact", dest])
    if any(r.get("protocol") not in ("bgp", "186") for r in routes):
        run.change(f"{netns}: remove static route {dest}", ["ip", flag, "-n", netns, "route", "flush", "exact", dest])


def present(lab, xdp_pass_object, check_mode=False, routing="static", state_root=None,
            router_as=labrouting.ROUTER_AS, balancer_as=labrouting.BALANCER_AS,
            prometheus=False, prometheus_port=labmonitor.PORT, prometheus_rule_files=()):
    """Create or repair the lab. Returns the list of changes (descriptions).

    routing static: the router has ECMP routes of the VIP prefixes over every balancer. routing
    bgp: it has none of its own; FRR learns the VIPs from the balancers (labrouting), its files
    under state_root/<router>/frr. prometheus: the router runs a Prometheus that scrapes every
    balancer and backend (labmonitor), its files under state_root/<router>/prometheus."""
    if routing not in ROUTINGS:
        raise EngineError(f"routing: '{routing}' must be one of {', '.join(ROUTINGS)}", field="routing", value=routing)
    if routing == "bgp" and not state_root:
        raise EngineError("state_root: routing bgp needs a directory for the router's FRR files", field="state_root")
    if routing == "bgp":
        labrouting.check_as(router_as, balancer_as)
    if prometheus and not state_root:
        raise EngineError("state_root: prometheus needs a directory for the router's Prometheus files", field="state_root")
    if prometheus:
        labmonitor.check(prometheus_port, prometheus_rule_files)
    if not os.path.isfile(xdp_pass_object):
        raise EngineError(f"xdp_pass_object: '{xdp_pass_object}' does not exist (build it with make -C files/bpf)",
                          field="xdp_pass_object", value=xdp_pass_object)
    for tool in ("ip", "ethtool", "sysctl"):
        if shutil.which(tool) is None:
            raise EngineError(f"the lab needs '{tool}' on the controller")
    run = _Runner(check_mode)
    if not check_mode:
        _ensure_bpffs()
    router = lab["router"]
    existing = _namespaces(run)
    for netns in [router] + [h["netns"] for h in lab["hosts"]]:
        if netns not in existing:
            run.change(f"create namespace {netns}", ["ip", "netns", "add", netns])
    if check_mode and run.changes:
        return run.changes + ["(contents of new namespaces not inspected in check mode)"]

    for netns in [router] + [h["netns"] for h in lab["hosts"]]:
        _sysctl(run, netns, "net.ipv6.conf.all.accept_dad", 0)
        _sysctl(run, netns, "net.ipv6.conf.default.accept_dad", 0)
        if not any(l.get("ifname") == "lo" and "UP" in l.get("flags", [])
                   for l in run.read_json(["ip", "-j", "-n", netns, "link", "show", "dev", "lo"])):
            run.change(f"{netns}: lo up", ["ip", "-n", netns, "link", "set", "dev", "lo", "up"])
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                "net.ipv4.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_policy"):
        _sysctl(run, router, key, 1)

    for host in lab["hosts"]:
        port, netns = host["router_port"], host["netns"]
        have_router_side = bool(run.read_json(["ip", "-j", "-n", router, "link", "show", "dev", port]))
        have_host_side = bool(run.read_json(["ip", "-j", "-n", netns, "link", "show", "dev", "eth0"]))
        if not (have_router_side and have_host_side):
            # A half-made pair (interrupted run) is removed and made again.
            if have_router_side:
                run.change(f"{router}: remove half-made {port}", ["ip", "-n", router, "link", "del", "dev", port])
            if have_host_side:
                run.change(f"{netns}: remove half-made eth0", ["ip", "-n", netns, "link", "del", "dev", "eth0"])
            run.change(f"veth {router}:{port} <-> {netns}:eth0",
                       ["ip", "-n", router, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns])
        xdp = xdp_pass_object if host["kind"] == "lb" else None
        _link(run, router, port, host["mtu"], host["router_mac"], xdp)
        _link(run, netns, "eth0", host["mtu"], host["mac"])
        gw4, gw6 = host["gateway_ipv4"], host["gateway_ipv6"]
        _addresses(run, router, port, [f"{gw4}/24", f"{gw6}/64"])
        _addresses(run, netns, "eth0", [host["ipv4"], host["ipv6"]])
        _route(run, netns, 4, "default", [gw4], ["eth0"])
        _route(run, netns, 6, "default", [gw6], ["eth0"])

    if prometheus:
        run.changes += labmonitor.present(lab, state_root, check_mode, prometheus_rule_files, prometheus_port)
    elif state_root:
        run.changes += labmonitor.absent(lab, state_root, check_mode)
    if routing == "bgp":
        _no_route(run, router, 4, lab["vip_prefix4"])
        _no_route(run, router, 6, lab["vip_prefix6"])
        run.changes += labrouting.bgp_present(lab, state_root, check_mode, router_as, balancer_as)
        return run.changes
    if state_root:
        run.changes += labrouting.bgp_absent(lab, state_root, check_mode)
    balancers = [h for h in lab["hosts"] if h["kind"] == "lb"]
    _route(run, router, 4, lab["vip_prefix4"], [h["ipv4"].split("/")[0] for h in balancers],
           [h["router_port"] for h in balancers])
    _route(run, router, 6, lab["vip_prefix6"], [h["ipv6"].split("/")[0] for h in balancers],
           [h["router_port"] for h in balancers])
    return run.changes


def absent(prefix, extra_dirs=(), check_mode=False):
    """Remove every namespace of the lab (whatever its size was) and the lab's directories."""
    run = _Runner(check_mode)
    pattern = lab_namespace_pattern(prefix)
    for netns in sorted(_namespaces(run)):
        if pattern.match(netns):
            # A process left inside (a responder, a daemon) would keep the namespace, its
            # links and their XDP programs alive after the name is gone.
            _rc, out, _err = run.read(["ip", "netns", "pids", netns])
            pids = out.split()
            for pid in pids:
                run.change(f"{netns}: stop process {pid}", ["kill", "-TERM", pid])
            if not check_mode:
                procs.wait_gone(pids)
            run.change(f"delete namespace {netns}", ["ip", "netns", "del", netns])
    for base in extra_dirs:
        if not os.path.isdir(base):
            continue
        for name in sorted(os.listdir(base)):
            if pattern.match(name):
                path = os.path.join(base, name)
                run.changes.append(f"remove {path}")
                if not check_mode:
                    shutil.rmtree(path)
        if not check_mode and not os.listdir(base):
            os.rmdir(base)
    return run.changes
