"""The MSS a backend advertises, set as the advmss metric of its default routes.

A balanced packet gains 20 (IPIP) or 40 (IP6IP6) bytes on the balancer-to-backend path. Where that
path cannot carry bigger frames, the backend tells clients to send smaller segments: the SYN-ACK
carries the route's advmss. Only the metric changes; gateway, device and the rest stay as they are.
"""
import socket

from .. import netlink
from ..errors import EngineError, show

MAIN_TABLE = 254


def _default_routes(ipr):
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in ipr.get_routes(family=family, table=MAIN_TABLE):
            if route["dst_len"] == 0 and route.get_attr("RTA_GATEWAY") is not None:
                yield route


def _advmss(route):
    metrics = route.get_attr("RTA_METRICS")
    return metrics.get_attr("RTAX_ADVMSS") if metrics is not None else None


def ensure(advmss, check_mode=False):
    """Set advmss on every default route; returns {'changed', 'routes': [{family, gateway, before, after}]}."""
    if not isinstance(advmss, int) or not 536 <= advmss <= 65495:
        raise EngineError(f"advmss: must be an integer from 536 to 65495 (got {show(advmss)})", field="advmss", value=advmss)
    ipr = netlink.open_iproute()
    report = []
    try:
        for route in list(_default_routes(ipr)):
            family = 4 if route["family"] == socket.AF_INET else 6
            current = _advmss(route)
            entry = {"family": family, "gateway": route.get_attr("RTA_GATEWAY"), "before": current, "after": advmss}
            report.append(entry)
            if current == advmss or check_mode:
                continue
            spec = {"dst": "0.0.0.0/0" if family == 4 else "::/0", "family": route["family"], "table": MAIN_TABLE,
                    "gateway": route.get_attr("RTA_GATEWAY"), "oif": route.get_attr("RTA_OIF"),
                    "proto": route["proto"], "scope": route["scope"], "type": route["type"],
                    # The documented name form: pyroute2 0.9 silently drops the {"attrs": [...]} form
                    # (the route is replaced without the metric and "changed" is reported forever).
                    "metrics": {"advmss": advmss}}
            priority = route.get_attr("RTA_PRIORITY")
            if priority is not None:
                spec["priority"] = priority
            ipr.route("replace", **spec)
        if not check_mode:
            # A netlink library that drops the metric would otherwise report a change on every run.
            missed = [str(r.get_attr("RTA_GATEWAY")) for r in _default_routes(ipr) if _advmss(r) != advmss]
            if missed:
                raise EngineError("advmss: %d was not applied to the default route via %s (the route was "
                                  "replaced without it)" % (advmss, ", ".join(missed)), field="advmss", value=advmss)
    finally:
        ipr.close()
    if not report:
        raise EngineError("advmss: this host has no default route with a gateway to set it on", field="advmss", value=advmss)
    return {"changed": any(r["before"] != r["after"] for r in report), "routes": report}
