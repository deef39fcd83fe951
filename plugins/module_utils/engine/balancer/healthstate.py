"""The health state file: what the agent last found about each real of each VIP.

Owned by the agent (default /var/lib/xdplb/health.json, mode 0600, written atomically); lb_vip
reads it under the pin-root lock to apply configured weights through health, lb_info and the CLI
``status`` show it. Schema (version 1)::

    {"version": 1, "updated": 1765000000.0, "pid": 1234,
     "vips": {"10.99.0.1:80/tcp": {"fail_open": false, "reason": ""}},
     "reals": {"10.99.0.1:80/tcp": {"10.30.1.2": {"state": "up", "since": 1765000000.0,
                "check": "tcp:10.30.1.2:80@10.99.0.1", "reason": "connected in 0.4 ms",
                "last": {"ok": true, "at": 1765000001.0, "reason": "connected in 0.4 ms"}}}}}

VIP keys are vipspec.key_text(); real addresses canonical (vipspec's form). A real the file does
not list (or no file at all) counts as up, and is shown as "unknown".
"""
import json
import os

from . import healthspec, vipspec
from .. import document
from ..errors import EngineError, StateFileError, show

VERSION = 1
STATES = ("up", "down")
DEFAULT_PATH = "/var/lib/xdplb/health.json"
# 512 VIPs x 100 reals of about 250 bytes each: some 13 MiB. Far more is not a health file.
MAX_BYTES = 64 << 20


def empty():
    """The document of a missing file: nothing known, every real counts as up."""
    return {"version": VERSION, "updated": None, "pid": None, "vips": {}, "reals": {}}


def _corrupt(where, problem, value=None):
    raise StateFileError("%s: %s (a health state file, written by the agent)" % (where, problem),
                         field="health_state_file", value=value)


def check(doc, where="health state file"):
    """`doc` as read from a health state file, its shape checked; StateFileError naming the file."""
    if not isinstance(doc, dict):
        _corrupt(where, "must be a JSON object with version, vips and reals, not %s" % show(doc))
    version = doc.get("version")
    if type(version) is not int or version != VERSION:  # pylint: disable=unidiomatic-typecheck  # true == 1
        _corrupt(where, "version %s is not supported (this engine reads version %d)" % (show(version), VERSION))
    vips, reals = doc.get("vips", {}), doc.get("reals", {})
    if not isinstance(vips, dict) or not all(isinstance(v, dict) for v in vips.values()):
        _corrupt(where, "vips must map VIP keys to objects")
    if not isinstance(reals, dict):
        _corrupt(where, "reals must map VIP keys to their reals")
    for key, per in reals.items():
        if not isinstance(per, dict):
            _corrupt(where, "reals[%s] must map real addresses to objects" % show(key))
        for addr, entry in per.items():
            if not isinstance(entry, dict) or entry.get("state") not in STATES:
                _corrupt(where, "reals[%s][%s].state must be one of %s" % (show(key), show(addr), ", ".join(STATES)))
    out = dict(doc)
    out.setdefault("vips", {})
    out.setdefault("reals", {})
    return out


def read(path):
    """The health state document at `path`: empty() when there is no file; a StateFileError (an
    EngineError) naming the file when it is not one."""
    where = path if isinstance(path, str) and len(path) <= 200 else show(path)
    if isinstance(path, str) and not os.path.lexists(path):
        return empty()
    _raw, data = document.read(path, MAX_BYTES, where, field="health_state_file")
    return check(data, where)


def write(path, doc):
    """Keep `doc` at `path`: atomic (temporary file and rename, fsync'ed), mode 0600; the parent
    directory is created with mode 0700 when missing."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700)
        os.chmod(parent, 0o700)  # makedirs' mode is cut by the umask
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"
    try:
        document.atomic_write(path, data.encode("utf-8"), 0o600, sync=True)
    except OSError as exc:
        raise EngineError("health state file %s: cannot write it: %s" % (path, exc.strerror or exc),
                          field="health_state_file", value=path) from exc


# ------------------------------------------------------------------ views (lb_info, CLI status)
def real_view(doc, key, addr):
    """{state: up|down|unknown, since, reason, last} of one real of one VIP."""
    entry = ((doc or {}).get("reals") or {}).get(key, {}).get(addr)
    if not entry:
        return {"state": "unknown", "since": None, "reason": "", "last": {}}
    return {"state": entry["state"], "since": entry.get("since"), "reason": entry.get("reason", ""),
            "last": entry.get("last") or {}}


def configured_weights(path):
    """{VIP key: {real address: weight}} of a balancer state file's VIPs (its configured weights).

    Read for display only: the VIPs are checked as vipspec does, the rest of the document is not
    (the restore and lb_vip check all of it)."""
    where = path if isinstance(path, str) and len(path) <= 200 else show(path)
    _raw, data = document.read(path, 64 << 20, where, field="state_file")
    if not isinstance(data, dict) or not isinstance(data.get("vips"), list):
        raise StateFileError("%s: must be a balancer state document with vips" % where, field="state_file")
    try:
        vips = vipspec.parse_vips(data["vips"], path="vips",
                                  health=healthspec.parse_defaults(data.get("health"), "health"))
    except EngineError as exc:
        raise StateFileError("%s: %s" % (where, exc.msg), field="state_file", value=exc.value) from exc
    return {v["key"]: {r["address"]: r["weight"] for r in v["reals"]} for v in vips}


def annotate(info, doc, configured=None):
    """Add health to balancer.info()'s VIPs, in place: each real gets ``health`` (real_view) and
    ``configured_weight`` (from `configured`, configured_weights(); None when not known), each VIP
    ``fail_open``: every real the kernel gives a weight > 0 is down (the agent kept the last ring),
    or the agent says so."""
    agent_vips = (doc or {}).get("vips") or {}
    for vip in info["vips"]:
        key = vip["key"]
        conf = (configured or {}).get(key, {})
        serving = []
        for real in vip["reals"]:
            real["health"] = real_view(doc, key, real["address"])
            real["configured_weight"] = conf.get(real["address"])
            if real["weight"]:
                serving.append(real["health"]["state"] == "down")
        vip["fail_open"] = bool(serving and all(serving)) or bool(agent_vips.get(key, {}).get("fail_open"))
    return info


def annotate_from(info, health_path=None, state_path=None):
    """annotate() with the document at `health_path` and the configured weights of the balancer
    state file at `state_path`, when either is given (lb_info, the CLI status); `info` unchanged
    otherwise. A missing health file is empty(); a missing or bad state file is a StateFileError."""
    if health_path or state_path:
        annotate(info, read(health_path) if health_path else empty(),
                 configured_weights(state_path) if state_path else None)
    return info
