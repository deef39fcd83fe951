"""Which checks the agent runs for a set of VIPs (pure: no sockets, no maps).

A check of real R for VIP V connects to V (the inner destination) with R's mark, so the
balancer's hc_encap program wraps it towards R the way balancer.c wraps a client's packet. VIPs
that list the same real with the same check (kind, port, interval, timeout, rise, fall and the
kind's fields) and the same address family share one check, run against the lowest of their VIP
addresses: the Maglev paper's deduplication by address. Its result counts for each of them.

Check ids are stable text, ``"{kind}:{real}:{port}@{vip}"`` (``#2``... when two differ only in
their timing), so a reloaded configuration keeps the states of the checks it still has and the
health state file can name the check behind each real.
"""
import ipaddress

PARAMS = ("kind", "port", "interval", "timeout", "rise", "fall", "path", "host", "status", "payload", "expect")


def _params(spec):
    return tuple(tuple(spec[k]) if k == "status" else spec.get(k) for k in PARAMS)


def _vip_order(addr):
    ip = ipaddress.ip_address(addr)
    return (ip.version, int(ip))


def _bracket(addr):
    return "[%s]" % addr if ":" in addr else addr


def build(vips):
    """{check id: {"spec": resolved health spec plus address (the inner destination), "real",
    "family" (4 or 6, of the VIP), "members": [(VIP key, real address)]}} of normalised VIPs
    (vipspec, each with its resolved ``health``). VIPs of kind none get no check."""
    groups = {}
    for vip in vips:
        spec = vip.get("health") or {"kind": "none"}
        if spec["kind"] == "none":
            continue
        family = ipaddress.ip_address(vip["address"]).version
        params = _params(spec)
        for real in vip["reals"]:
            group = groups.setdefault((real["address"], family, params), {"spec": spec, "vips": set(), "members": []})
            group["vips"].add(vip["address"])
            group["members"].append((vip["key"], real["address"]))
    out = {}
    for (real, family, _params_), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2]))):
        inner = min(group["vips"], key=_vip_order)
        spec = dict(group["spec"], address=inner)
        base = "%s:%s:%d@%s" % (spec["kind"], _bracket(real), spec["port"], _bracket(inner))
        cid, n = base, 1
        while cid in out:
            n += 1
            cid = "%s#%d" % (base, n)
        out[cid] = {"spec": spec, "real": real, "family": family, "members": sorted(group["members"])}
    return out


def marks(reals, previous, base, limit):
    """{real address: mark}: reals keep the marks they had (`previous`), new ones take the lowest
    free ``base + n`` (1 <= n <= limit); a ValueError when more reals than `limit`."""
    reals = set(reals)
    if len(reals) > limit:
        raise ValueError("%d reals to check exceed the %d the health-check program holds (HC_MAX_REALS)"
                         % (len(reals), limit))
    out = {r: m for r, m in previous.items() if r in reals}
    used = set(out.values())
    n = 1
    for real in sorted(reals - set(out), key=_vip_order):
        while base + n in used:
            n += 1
        out[real] = base + n
        used.add(base + n)
    return out
