"""Configured weights x health -> the weights the kernel's rings get (pure, no I/O).

The rules (docs: the design of issue 15, "Effective weights"):

* a real that is down gets weight 0; a real the health file does not list counts as up;
* an operator's weight 0 (drain) stays 0: health never raises a configured weight;
* when every real with a configured weight > 0 is down the VIP fails open: it keeps the weights
  the kernel has now (its last ring), drained reals still 0; when that leaves no weight > 0 (a new
  VIP, no ring yet) the configured weights are used. Never an empty ring;
* a VIP whose check kind is none is not checked: its configured weights apply.
"""


def _is_down(reals_health, addr):
    entry = reals_health.get(addr) if reals_health else None
    return isinstance(entry, dict) and entry.get("state") == "down"


def effective(vip, reals_health, kernel_weights):
    """(the VIP with its effective reals, status).

    `vip`: a normalised VIP (vipspec), its reals' weights the configured ones; `reals_health`:
    {real address: {"state": "up"|"down", ...}} of this VIP (healthstate's ``reals[KEY]``) or None;
    `kernel_weights`: {real address: weight} the kernel's record holds for this VIP now (None when
    the VIP is not in the kernel; a weight None when unknown). status: {"down": [addresses, in the
    VIP's order of reals], "fail_open": bool}. `vip` itself is returned when nothing changes, else
    a shallow copy with a new reals list: the input is never modified."""
    if not reals_health or (vip.get("health") or {}).get("kind") == "none":
        return vip, {"down": [], "fail_open": False}
    reals = vip["reals"]
    down = [r["address"] for r in reals if _is_down(reals_health, r["address"])]
    if not down:
        return vip, {"down": [], "fail_open": False}
    gone = set(down)
    if any(r["weight"] > 0 and r["address"] not in gone for r in reals):
        out = [r if r["weight"] == 0 or r["address"] not in gone else {"address": r["address"], "weight": 0}
               for r in reals]
        return dict(vip, reals=out), {"down": down, "fail_open": False}
    # Fail open: the last ring stays, with the operator's drains applied.
    kernel = kernel_weights or {}
    kept = [{"address": r["address"], "weight": (kernel.get(r["address"]) or 0) if r["weight"] > 0 else 0}
            for r in reals]
    if not any(r["weight"] for r in kept):
        return vip, {"down": down, "fail_open": True}
    if all(a["weight"] == b["weight"] for a, b in zip(kept, reals)):
        return vip, {"down": down, "fail_open": True}
    return dict(vip, reals=kept), {"down": down, "fail_open": True}


def apply(desired, health_doc, state):
    """effective() over normalised VIPs: (VIPs to plan with, {VIP key: status} of the VIPs with a
    real down or failing open). `health_doc`: healthstate.read()'s document; `state`: a
    balancer.State read under the lock (the kernel's weights now), or None."""
    reals = (health_doc or {}).get("reals") or {}
    out, news = [], {}
    for vip in desired:
        key = vip["key"]
        rh = reals.get(key)
        if not rh:
            out.append(vip)
            continue
        kernel = None
        if state is not None and key in state.vips:
            kernel = {r["address"]: r["weight"] for r in state.spec(key)["reals"]}
        eff, status = effective(vip, rh, kernel)
        out.append(eff)
        if status["down"] or status["fail_open"]:
            news[key] = status
    return out, news
