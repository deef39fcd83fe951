"""What a refused request must leave exactly as it was: one snapshot before, one after, compared.

snapshot(ns=..., pin_roots=[...], files=[...]) records
- every pinned BPF object under each pin root: the balancer's control-plane maps by content
  (balancer_env.dump: rings by content, counters and the connection table left out), any other
  pinned map by its entries (per-CPU counter maps left out: traffic moves them), a pinned program
  by its id and tag;
- each file (or directory) in `files`: sha256 of its bytes and its mode, or None when missing;
- inside the namespace `ns` (when given): the addresses of every device, the links with their
  kind and attached XDP program, and rp_filter, arp_ignore and arp_announce of every device and of
  "all" and "default".

A test asserts ``snapshot(...) == before``; on a mismatch pytest shows which part moved.
"""
import hashlib
import json
import os
import stat
import subprocess

from backend_netns import sh
from balancer_env import dump

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi

_SYSCTLS = ("rp_filter", "arp_ignore", "arp_announce")
_PERCPU = {"percpu_hash", "percpu_array", "lru_percpu_hash"}
# Traffic moves these (neighbour discovery on a veth is enough): recorded by existence only.
_MOVING = set(abi.CONN_MAPS) | {abi.MAP_VIP_STATS, abi.MAP_REAL_STATS, abi.MAP_GLOBAL, abi.MAP_PAIR_STATS}


def _bpftool(*args):
    done = subprocess.run(["bpftool", "-j"] + list(args), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-200:]}
    return json.loads(done.stdout or "null")


def _pinned(path):
    info = _bpftool("map", "show", "pinned", path)
    if "error" not in info:
        if info.get("type") in _PERCPU:
            return {"map": info.get("name"), "type": info.get("type")}
        entries = _bpftool("map", "dump", "pinned", path)
        if isinstance(entries, list):
            entries = sorted(json.dumps(e, sort_keys=True) for e in entries)
        return {"map": info.get("name"), "type": info.get("type"), "entries": entries}
    prog = _bpftool("prog", "show", "pinned", path)
    return {"prog": prog.get("id"), "tag": prog.get("tag")} if "error" not in prog else prog


def pins(pin_root):
    """{relative path: content} of everything pinned under pin_root (None when it does not exist)."""
    if not os.path.isdir(pin_root):
        return None
    out = {}
    balancer_maps = dump(pin_root)
    for base, _dirs, names in os.walk(pin_root):
        for name in names:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, pin_root)
            if rel in _MOVING:
                out[rel] = "pinned"
            elif balancer_maps.get(rel) is not None:
                out[rel] = balancer_maps[rel]
            else:
                out[rel] = _pinned(path)
    return out


def file_state(path):
    """(sha256 or 'directory', mode) of a path, None when missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return ("directory", oct(st.st_mode & 0o7777), sorted(os.listdir(path)))
    with open(path, "rb") as handle:
        return (hashlib.sha256(handle.read()).hexdigest(), oct(st.st_mode & 0o7777))


def network(ns):
    """Addresses, links (kind, XDP program) and the ARP / rp_filter sysctls of a namespace."""
    addrs = json.loads(sh(["ip", "-j", "addr", "show"], ns=ns).stdout)
    links = json.loads(sh(["ip", "-j", "-d", "link", "show"], ns=ns).stdout)
    out = {"addresses": {a["ifname"]: sorted("%s/%s" % (i["local"], i["prefixlen"]) for i in a.get("addr_info", []))
                         for a in addrs},
           "links": {l["ifname"]: (l.get("linkinfo", {}).get("info_kind"), (l.get("xdp") or {}).get("prog", {}).get("id"))
                     for l in links}}
    names = ["all", "default"] + sorted(out["links"])
    script = "; ".join("cat /proc/sys/net/ipv4/conf/%s/{%s} 2>/dev/null | tr '\\n' ' '; echo" % (n, ",".join(_SYSCTLS))
                       for n in names)
    values = sh(["bash", "-c", script], ns=ns).stdout.splitlines()
    out["sysctls"] = dict(zip(names, values))
    return out


def snapshot(ns=None, pin_roots=(), files=()):
    return {"pins": {root: pins(root) for root in pin_roots},
            "files": {path: file_state(path) for path in files},
            "network": network(ns) if ns else None}
