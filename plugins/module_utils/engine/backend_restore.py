"""Boot-time restore of a backend from the state file the backend role writes.

Runs without Ansible (``python3 -m xdplb_engine backend-restore /etc/xdplb/backend.json``):
tunnel devices, BPF decap, VIPs on lo, the rp_filter of the arrival devices and the advertised
MSS. Sysctls are also in the role's sysctl.d file; they are applied again here because the tunnel
devices are created after systemd-sysctl ran. Every step is idempotent, so a restore on a running
backend changes nothing.
"""
import json

from . import addresses, decap, netconf, routes, tunnel
from .errors import EngineError


def load_state(path):
    try:
        with open(path) as handle:
            state = json.load(handle)
    except (OSError, ValueError) as exc:
        raise EngineError(f"state file {path}: {exc}")
    if state.get("kind") != "backend":
        raise EngineError(f"state file {path} is not a backend state file (kind: {state.get('kind')!r})")
    return state


def restore(state, check_mode=False):
    """Apply the state; returns a list of what changed."""
    changed = []
    arrival = []
    if state["decap"] == "kernel":
        for spec in state.get("tunnels", []):
            result = tunnel.ensure(spec["name"], kind=spec["kind"], mode=spec.get("mode"),
                                   addresses=spec.get("addresses") or None, adopt=True, check_mode=check_mode)
            if result["changed"]:
                changed.append(f"tunnel {result['name']}")
            arrival += [result["name"], "tunl0" if spec["kind"] == "ipip" else "ip6tnl0"]
    elif state.get("bpf"):
        bpf = state["bpf"]
        request = decap.normalize(state["interface"], bpf["object"], bpf["hook"], bpf["xdp_mode"], bpf["addresses"])
        result = decap.ensure(request, bpf["pin_root"], check_mode)
        changed += result["changes"]
        arrival.append(state["interface"])
    result = addresses.ensure("lo", state["vips"], exclusive=state.get("vips_exclusive", True), check_mode=check_mode)
    changed += [f"address {a}" for a in result["added"]]
    if arrival:
        result = netconf.ensure(ipv4={"rp_filter": state.get("rp_filter", 0)}, devices=arrival, persist=False,
                                check_mode=check_mode)
        changed += [w["sysctl"] for w in result["writes"]]
    if state.get("advmss"):
        if routes.ensure(int(state["advmss"]), check_mode)["changed"]:
            changed.append(f"advmss {state['advmss']}")
    return changed
