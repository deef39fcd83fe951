"""Boot-time restore of a backend from the state file the backend role writes.

Runs without Ansible (``python3 -m xdplb_engine backend-restore /etc/xdplb/backend.json``): tunnel
devices or BPF decap, VIPs on lo, rp_filter of the arrival devices, arp_ignore / arp_announce and
the advertised MSS: everything the role set, so nothing depends on systemd-sysctl having read the
role's sysctl.d file (tunnel devices are created after it ran anyway).

All or nothing up front: the document is validated whole (backend_state, StateFileError: exit 2),
then every step is planned in check mode against the host (pyroute2 and libbpf importable, the
interface and object there, a default route for advmss), and only then does anything change.
Every step is idempotent, so a restore on a running backend changes nothing and says so.
"""
import os

from . import addresses, backend_state, decap, netconf, routes, tunnel
from .. import document
from ..errors import StateFileError, show

FALLBACK = {"ipip": "tunl0", "ip6tnl": "ip6tnl0"}


def load_state(path):
    """The validated document of the state file at `path`; StateFileError for anything else."""
    where = "state file %s" % show(path, 300)
    _raw, doc = document.read(path, backend_state.MAX_BYTES, where)
    try:
        return backend_state.parse(doc)
    except StateFileError as exc:
        raise StateFileError("%s: %s" % (where, exc.msg), field=exc.field, value=exc.value)


def restore(state, check_mode=False):
    """Apply the state; returns what changed (would change, in check mode), removals included."""
    state = backend_state.parse(state)
    # Every step planned against the host first: a host problem (no pyroute2, no interface, no
    # default route for advmss) stops the restore before the first change, not half way.
    planned = _apply(state, check_mode=True)
    return planned if check_mode else _apply(state, check_mode=False)


def _sysctl_changes(result):
    return ["%s %d -> %d" % (w["sysctl"], w["before"], w["after"]) for w in result["writes"]]


def _apply(state, check_mode):
    changed = []
    arrival = []
    pending = []  # tunnel devices a check run would create: no sysctls to read yet
    if state["decap"] == "kernel":
        for spec in state["tunnels"]:
            result = tunnel.ensure(spec["name"], kind=spec["kind"], mode=spec.get("mode"),
                                   addresses=spec["addresses"], adopt=True, check_mode=check_mode)
            if result["changed"]:
                verb = "create" if result["created"] else "recreate" if result["recreated"] else "update"
                changed.append("%s tunnel %s" % (verb, result["name"]))
            for name in (result["name"], FALLBACK[spec["kind"]]):
                exists = os.path.isdir(os.path.join(netconf.PROC_NET, "ipv4", "conf", name))
                (arrival if exists or not check_mode else pending).append(name)
    else:
        bpf = state["bpf"]
        request = decap.normalize(state["interface"], bpf["object"], bpf["hook"], bpf["xdp_mode"], bpf["addresses"])
        changed += ["decap: %s" % c for c in decap.ensure(request, bpf["pin_root"], check_mode)["changes"]]
        arrival.append(state["interface"])
    if state["vips"] or state["vips_exclusive"]:
        result = addresses.ensure("lo", state["vips"], exclusive=state["vips_exclusive"], check_mode=check_mode)
        changed += ["add address %s to lo" % a for a in result["added"]]
        changed += ["remove address %s from lo" % a for a in result["removed"]]
    if arrival:
        result = netconf.ensure(ipv4={"rp_filter": state["rp_filter"]}, devices=arrival, persist=False,
                                check_mode=check_mode)
        changed += _sysctl_changes(result)
    if pending:
        changed.append("rp_filter %d on %s once created" % (state["rp_filter"], ", ".join(pending)))
    if state.get("arp_devices"):  # absent in a document of a role before version 1
        result = netconf.ensure(ipv4={"arp_ignore": state["arp_ignore"], "arp_announce": state["arp_announce"]},
                                devices=state["arp_devices"], include_default=True, persist=False,
                                check_mode=check_mode)
        changed += _sysctl_changes(result)
    if state["advmss"]:
        result = routes.ensure(state["advmss"], check_mode)
        changed += ["advmss %d on the default route via %s (was %s)" % (r["after"], r["gateway"], r["before"])
                    for r in result["routes"] if r["before"] != r["after"]]
    return changed
