"""Shared set-up for the balancer engine, module and CLI tests.

- BalancerNS: a throw-away network namespace with a veth pair (lb0 <-> peer0) and a private pin
  root under /sys/fs/bpf; close() deletes both.
- dump(pin_root): every control-plane map as bytes (rings by content, not by inner map id), so
  "a bad request changed nothing" is one equality. Counters and the connection table are left
  out: IPv6 neighbour discovery on the veth moves the global counters on its own.
- playbook(ns, tasks, tmp_path): the tasks run for real by ansible-playbook (-c local) inside the
  namespace, results as dicts.
"""
import hashlib
import itertools
import json
import os
import subprocess
import sys

from backend_netns import NetNS

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi, libbpf, program

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BPF_DIR = os.path.join(REPO, "files", "bpf")
BALANCER_O = os.path.join(BPF_DIR, "balancer.o")
PASS_O = os.path.join(BPF_DIR, "pass.o")
PINS = balancer.BALANCER_MAPS + balancer.PAIR_MAPS + (balancer.CTL_VIP_REALS, balancer.CTL_PAIR_OWNER)
_count = itertools.count()


def kill_pidfile(pidfile):
    """SIGTERM the process a pid file names, if any (a BIRD a test started)."""
    try:
        with open(pidfile) as handle:
            os.kill(int(handle.read().strip()), 15)
    except (OSError, ValueError):
        pass


def build_objects():
    subprocess.run(["make", "-s", "-C", BPF_DIR], check=True)


class BalancerNS(NetNS):
    def __init__(self):
        super().__init__()
        self.veth("lb0", "peer0")
        self.pin_root = "/sys/fs/bpf/xdplb-test-%d-%d" % (os.getpid(), next(_count))

    def load(self, mode="auto"):
        return self.run(program.ensure, BALANCER_O, "lb0", mode=mode, pin_root=self.pin_root)

    def close(self):
        self.delete()
        if os.path.isdir(self.pin_root):
            for name in os.listdir(self.pin_root):
                os.unlink(os.path.join(self.pin_root, name))
            os.rmdir(self.pin_root)


def _ring_digest(rings, num):
    ring = abi.ring_read(rings, num)
    return None if ring is None else hashlib.sha256(bytes(str(ring), "ascii")).hexdigest()


def dump(pin_root):
    """{map name: sorted [(key hex, value hex)]} of the control-plane maps under pin_root."""
    out = {}
    for name in PINS:
        path = os.path.join(pin_root, name)
        if not os.path.exists(path):
            out[name] = None
            continue
        with libbpf.Map.from_pin(path) as m:
            if name == abi.MAP_RINGS:
                out[name] = [(i, _ring_digest(m, i)) for i in range(m.info["max_entries"])]
            elif name in abi.CONN_MAPS + (abi.MAP_VIP_STATS, abi.MAP_REAL_STATS, abi.MAP_GLOBAL, abi.MAP_PAIR_STATS):
                continue
            elif name == balancer.CTL_VIP_REALS:
                # Entry 0 is the installed ring's map id: compared through the rings instead.
                out[name] = sorted((k.hex(), v[4:].hex()) for k, v in m.lookup_batch(chunk=64))
            else:
                out[name] = sorted((k.hex(), v.hex()) for k, v in m.lookup_batch())
    return out


def logical(pin_root):
    """What the balancer does, independent of index and slot choices: for comparing runs."""
    data = balancer.info(pin_root, stats=False, ring_slots=True)
    with balancer.Balancer(pin_root) as bal:
        st = bal.read()
        rings = {}
        for v in st.vips.values():
            ring = st.ring(v["vip_num"])
            rings[v["key"]] = None if ring is None else list(map(st.real_addr.get, ring))
        words = st.filter_words
    nums = sorted(v["vip_num"] for v in st.vips.values())
    # The ring's map id is a choice of the kernel too: only whether it is there and consistent counts.
    return {"vips": [dict({k: v[k] for k in ("key", "flags", "icmp_echo")},
                          ring={k: v["ring"][k] for k in ("present", "consistent")},
                          reals=[{k: r[k] for k in ("address", "weight", "ring_slots")} for r in v["reals"]])
                     for v in data["vips"]],
            "reals": sorted(r["address"] for r in data["reals"]), "rings": rings,
            "filter": abi.addr_filter_words(sorted({v["address"] for v in data["vips"]}), len(words) * 64) == words,
            "addrs": sorted(st.addrs.items()),
            "no_orphans": sorted(st.records) == sorted(st.ring_ids) == nums}


def playbook(ns_name, tasks, tmp_path, check=False):
    """Run tasks in the namespace with ansible-playbook -c local; returns {task name: result}.

    The controller itself runs under `nsenter --net`, which keeps the host's bpffs (unlike
    `ip netns exec`); the modules read interfaces through netlink and ioctl, never /sys, so the
    host's /sys/class/net that nsenter leaves visible does not matter. (The netns connection
    plugin gives the same view but costs a mount namespace per task: ~1.5 s more per task here.)
    """
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    path = tmp_path / ("play-%d.json" % next(_count))
    path.write_text(json.dumps(play))
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8",
               ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
               ANSIBLE_CALLBACK_PLUGINS=os.path.join(REPO, "tests", "callbacks"),
               ANSIBLE_STDOUT_CALLBACK="xdplb_test_results", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
               ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"))
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    cmd = ["nsenter", "--net=/run/netns/%s" % ns_name, os.path.join(bindir, "ansible-playbook"),
           "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=%s" % sys.executable, str(path)]
    env["ANSIBLE_LOCALHOST_WARNING"] = "0"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError("no results from ansible-playbook (rc %d)\n%s\n%s"
                             % (done.returncode, done.stdout[-3000:], done.stderr[-3000:]))
    results = json.loads(lines[-1])["tasks"]
    if check:
        bad = [r for r in results if r["status"] not in ("ok",) and not r["result"].get("_ansible_ignore_errors")]
        assert not bad, bad
    return {r["task"]: r for r in results}
