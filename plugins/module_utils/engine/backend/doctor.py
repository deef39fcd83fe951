"""The backend doctor: why would a balanced SYN never get a SYN-ACK from this host?

Read-only. Each check returns findings ``{check, severity, vip, device, message, fix}``:
severity ``critical`` means traffic through the VIP cannot work, ``warning`` that it breaks in
some situations (large packets, ARP on a shared segment), ``ok``/``info`` that all is well.
``fix`` is the exact command (or role variable) that removes the cause.

The path of a balanced packet on a backend: it arrives on the NIC wrapped in IPIP/IP6IP6, is
unwrapped by a kernel tunnel device (an ``external`` ipip/ip6tnl device, else the fallback
tunl0/ip6tnl0) or by our BPF decap on the NIC, and re-enters the stack on that device. There
reverse-path filtering judges the client's source address: the kernel uses
max(conf.all.rp_filter, conf.<dev>.rp_filter); strict (1) drops because the route back to the
client is not the tunnel; loose (2) drops on a device without an address. Then the VIP must be
a local address, and the reply leaves by the normal route, straight to the client.
"""
import errno
import ipaddress
import os

from . import backend_restore, netconf
from .. import netlink, validate
from ..errors import EngineError

PROC_NET = "/proc/sys/net"
CRITICAL, WARNING, INFO, OK = "critical", "warning", "info", "ok"
_TUNNEL_FOR = {4: ("ipip", "tunl0"), 6: ("ip6tnl", "ip6tnl0")}
ENCAP_HEADER = {4: 20, 6: 40}
# Every check that can report a problem (critical or warning); the exporter publishes one gauge per
# check and severity, so an alert on a check exists before the check first fails.
CHECKS = ("deployed", "decap", "rp_filter", "vip_bound", "arp_ignore", "arp_announce", "headroom")


def _finding(check, severity, message, fix="", vip=None, device=None):
    return {"check": check, "severity": severity, "vip": vip, "device": device, "message": message, "fix": fix}


def _conf(family, target, key, proc_root=PROC_NET):
    try:
        with open(netconf.conf_path(proc_root, family, target, key)) as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def effective(family, device, key, proc_root=PROC_NET):
    """The value the kernel uses on ``device``, combined with conf.all by the key's rule."""
    all_value, dev_value = _conf(family, "all", key, proc_root), _conf(family, device, key, proc_root)
    if all_value is None or dev_value is None:
        return dev_value if all_value is None else all_value
    return netconf.combine(netconf.KEYS[family][key][0], all_value, dev_value)


def _rx_counters(device):
    """(rx_packets, rx_dropped, rx_errors) from /proc/net/dev, which is per network namespace."""
    try:
        with open("/proc/net/dev") as handle:
            for line in handle.read().splitlines()[2:]:
                name, _sep, rest = line.partition(":")
                if name.strip() == device:
                    fields = rest.split()
                    return int(fields[1]), int(fields[3]), int(fields[2])
    except OSError:
        pass
    return None


def inspect(ipr):
    """Links and addresses of this namespace as plain data."""
    links = netlink.links(ipr)
    addrs = {link["index"]: netlink.addrs(ipr, link["index"]) for link in links}
    return links, addrs


def arrival_device(links, outer_family):
    """Where the kernel hands an unwrapped packet: an external device if up, else the fallback."""
    kind, fallback = _TUNNEL_FOR[outer_family]
    external = [l for l in links if l["kind"] == kind and l["up"] and l["data"].get("collect_metadata")]
    if external:
        return external[0]
    for link in links:
        if link["name"] == fallback and link["up"]:
            return link
    return None


def check_backend(vips, links, addrs, bpf_decap_devices=(), outer_families=(4,), advmss=None, proc_root=PROC_NET):
    """Findings for every VIP. ``bpf_decap_devices``: devices with our decap program attached."""
    findings = []
    by_index = {link["index"]: link for link in links}
    local = {}
    for index, entries in addrs.items():
        for entry in entries:
            local.setdefault(str(ipaddress.ip_address(entry["address"])), by_index[index]["name"])
    arrivals = []
    if bpf_decap_devices:
        arrivals += [(dev, "bpf") for dev in bpf_decap_devices]
    for family in outer_families:
        link = arrival_device(links, family)
        if link:
            arrivals.append((link["name"], "kernel"))
        elif not bpf_decap_devices:
            kind, fallback = _TUNNEL_FOR[family]
            findings.append(_finding(
                "decap", CRITICAL,
                f"nothing unwraps IPv{family}-encapsulated packets: no {kind} device in external mode and "
                f"{fallback} is absent or down",
                f"ip link add name {kind}0 type {kind} external && ip link set {kind}0 up "
                f"(or backend_decap_mode: bpf where the {kind} module is missing)"))
    for device, how in arrivals:
        findings += _check_rp_filter(device, how, links, addrs, proc_root)
        counters = _rx_counters(device)
        if counters and how == "kernel":
            findings.append(_finding("tunnel_counters", INFO,
                                     f"{device}: {counters[0]} packets received, {counters[1]} dropped, "
                                     f"{counters[2]} errors", device=device))
    for vip in vips:
        address = str(ipaddress.ip_address(vip))
        if address in local:
            findings.append(_finding("vip_bound", OK, f"{address} is a local address (on {local[address]})",
                                     vip=address, device=local[address]))
        else:
            prefix = 32 if ipaddress.ip_address(address).version == 4 else 128
            extra = " nodad" if prefix == 128 else ""
            findings.append(_finding("vip_bound", CRITICAL,
                                     f"{address} is not a local address: the unwrapped SYN is not for this host",
                                     f"ip addr add {address}/{prefix} dev lo{extra}", vip=address))
    findings += _check_arp(links, proc_root)
    findings += _check_headroom(links, outer_families, advmss or {})
    return findings


def _check_rp_filter(device, how, links, addrs, proc_root):
    value = effective("ipv4", device, "rp_filter", proc_root)
    all_value = _conf("ipv4", "all", "rp_filter", proc_root)
    link = next((l for l in links if l["name"] == device), None)
    has_v4 = bool(link and any(a["family"] == 4 for a in addrs.get(link["index"], [])))
    fix = (f"sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.{device}.rp_filter=0 "
           f"(keeping other devices' own values; xdplb.katran.net_conf does this safely)")
    where = f"{device} ({'kernel tunnel' if how == 'kernel' else 'BPF decap'})"
    if value is None:
        return [_finding("rp_filter", WARNING, f"cannot read rp_filter for {device}", device=device)]
    if how == "bpf":
        # The unwrapped packet re-enters on the NIC, where the route back to the client usually is.
        severity = OK if value != 1 else INFO
        return [_finding("rp_filter", severity,
                         f"effective rp_filter on {where} is {value}"
                         + (" (strict: fine while the route to clients leaves through this device)" if value == 1 else ""),
                         device=device)]
    if value == 1:
        cause = "net.ipv4.conf.all.rp_filter=1" if all_value == 1 else f"net.ipv4.conf.{device}.rp_filter=1"
        return [_finding("rp_filter", CRITICAL,
                         f"effective rp_filter on {where} is 1 (strict, from {cause}): the unwrapped SYN's source "
                         f"is routed back through another device, so the kernel drops it and no SYN-ACK leaves",
                         fix, device=device)]
    if value == 2 and not has_v4:
        return [_finding("rp_filter", CRITICAL,
                         f"effective rp_filter on {where} is 2 (loose) and {device} has no IPv4 address: loose "
                         f"mode drops every packet arriving on a device without an address",
                         fix + f", or give {device} an address", device=device)]
    return [_finding("rp_filter", OK, f"effective rp_filter on {where} is {value}", device=device)]


def _physical(links):
    return [l for l in links if l["name"] != "lo" and l["kind"] not in ("ipip", "ip6tnl", "sit", "gre", "ip6gre")]


def _check_arp(links, proc_root):
    findings = []
    for link in _physical(links):
        name = link["name"]
        ignore = effective("ipv4", name, "arp_ignore", proc_root)
        announce = effective("ipv4", name, "arp_announce", proc_root)
        if ignore is not None and ignore < 1:
            findings.append(_finding("arp_ignore", WARNING,
                                     f"effective arp_ignore on {name} is {ignore}: this host answers ARP for the "
                                     f"VIPs on lo and can steal the VIP from the balancers on a shared segment",
                                     f"sysctl -w net.ipv4.conf.{name}.arp_ignore=1", device=name))
        if announce is not None and announce < 2:
            findings.append(_finding("arp_announce", WARNING,
                                     f"effective arp_announce on {name} is {announce}: ARP requests may carry a VIP "
                                     f"as sender address and poison neighbours' caches",
                                     f"sysctl -w net.ipv4.conf.{name}.arp_announce=2", device=name))
    if not findings:
        findings.append(_finding("arp", OK, "arp_ignore >= 1 and arp_announce >= 2 on every interface"))
    return findings


def _check_headroom(links, outer_families, advmss):
    findings = []
    header = max(ENCAP_HEADER[f] for f in outer_families)
    clamped = [mss for mss in advmss.values() if mss]
    if clamped and max(clamped) <= 1460 - header:
        return [_finding("headroom", OK, f"default routes advertise MSS {max(clamped)}: room for {header} bytes of tunnel header")]
    for link in _physical(links):
        if not link["up"] or link["mtu"] is None:
            continue
        if link["mtu"] < 1500 + header:
            findings.append(_finding(
                "headroom", WARNING,
                f"{link['name']} has MTU {link['mtu']}: a full-size client segment plus {header} bytes of tunnel "
                f"header does not fit unless the path is larger or clients are told a smaller MSS",
                f"raise the MTU of the balancer-to-backend path to {1500 + header}, or "
                f"ip route change default ... advmss {1460 - header} (backend_advmss)", device=link["name"]))
    return findings


def summarize(findings):
    worst = OK
    for finding in findings:
        if finding["severity"] == CRITICAL:
            return CRITICAL
        if finding["severity"] == WARNING:
            worst = WARNING
    return worst


def validate_vips(vips):
    """Bare addresses; a prefix length (10.99.0.10/32) is accepted and dropped."""
    return [str(validate.ip_address(str(vip).split("/", maxsplit=1)[0], f"vips[{index}]"))
            for index, vip in enumerate(vips)]


def bpf_decap_devices(links):
    """Devices whose XDP or tc-ingress program is our decap; [] when libbpf is not there."""
    from ..bpf import libbpf  # optional: a backend on the kernel tunnel needs no libbpf
    found = []
    for link in _physical(links):
        try:
            ids = [libbpf.xdp_query(link["index"]).get("prog_id"), libbpf.tc_query(link["index"])]
        except (libbpf.BpfError, OSError):
            continue
        for prog_id in ids:
            if not prog_id:
                continue
            try:
                fd = libbpf.prog_fd_by_id(prog_id)
            except libbpf.BpfError as exc:
                if exc.errno in (errno.EPERM, errno.EACCES):
                    # Without this, a process with too few capabilities would report "nothing
                    # unwraps" on a backend whose decap works (the exporter's unit bounds them).
                    raise EngineError("cannot tell whether the program on %s is the decap: %s (reading a "
                                      "program by id needs CAP_SYS_ADMIN)" % (link["name"], exc),
                                      field="capabilities") from exc
                raise
            try:
                if libbpf.prog_info(fd)["name"] in ("decap_xdp", "decap_tc"):
                    found.append(link["name"])
                    break
            finally:
                libbpf.close_fd(fd)
    return found


def default_route_advmss(ipr):
    """{4: advmss or None, 6: ...} of the main table's default routes."""
    result = {}
    for family, af in ((4, 2), (6, 10)):
        result[family] = None
        for route in ipr.get_routes(family=af, table=254):
            if route["dst_len"] != 0:
                continue
            metrics = route.get_attr("RTA_METRICS")
            if metrics is not None and metrics.get_attr("RTAX_ADVMSS"):
                result[family] = metrics.get_attr("RTAX_ADVMSS")
    return result


_TUNNEL_MODULES = {"ipip": ("ipip", "kernel/net/ipv4/ipip.ko"), "ip6tnl": ("ip6_tunnel", "kernel/net/ipv6/ip6_tunnel.ko")}


def kernel_tunnel_support(modules_root="/lib/modules", sys_module="/sys/module"):
    """{'ipip': bool, 'ip6tnl': bool}: loaded, built in, or loadable for the running kernel."""
    release = os.uname().release
    listed = ""
    for name in ("modules.dep", "modules.builtin"):
        try:
            with open(os.path.join(modules_root, release, name)) as handle:
                listed += handle.read()
        except OSError:
            pass
    support = {}
    for kind, (module, path) in _TUNNEL_MODULES.items():
        support[kind] = os.path.isdir(os.path.join(sys_module, module)) or path in listed
    return support


def check(vips=None, state_file=None, outer_families=None, inspect_host=True):
    """backend_check's whole run: the VIPs (given, else the state file's) checked against the host.

    Returns {status, findings, state, kernel_tunnels, deployed}: ``state`` the validated state
    document (None without one), ``deployed`` False when neither VIPs nor a state file exist (the
    role never ran: reported, not judged). Outer families: given, else the state's, else the VIPs'."""
    state = None
    if state_file is not None and os.path.lexists(state_file):
        state = backend_restore.load_state(state_file)
    report = {"status": "ok", "findings": [], "state": state, "deployed": True}
    if vips is None and state is None:
        report.update(status="critical", deployed=False, findings=[{
            "check": "deployed", "severity": "critical", "vip": None, "device": None,
            "message": "no state file at %s and no vips given: the backend role never ran here" % state_file,
            "fix": "run xdplb.katran.site (or the backend role) for this host"}])
    elif inspect_host:
        vips = validate_vips(vips if vips is not None else state["vips"])
        families = outer_families or (state["families"] if state else None) or sorted({6 if ":" in vip else 4 for vip in vips})
        ipr = netlink.open_iproute()
        try:
            links, addrs = inspect(ipr)
            advmss = default_route_advmss(ipr)
        finally:
            ipr.close()
        try:
            bpf_devices = bpf_decap_devices(links)
        except EngineError:
            raise
        except Exception:  # no libbpf on this host: then no BPF decap can be attached either
            bpf_devices = []
        report["findings"] = check_backend(vips, links, addrs, bpf_devices, families, advmss)
        report["status"] = summarize(report["findings"])
    else:
        validate_vips(vips if vips is not None else state["vips"])
    report["kernel_tunnels"] = kernel_tunnel_support()
    return report
