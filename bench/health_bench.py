# SPDX-License-Identifier: GPL-3.0-or-later
"""Health checks per second per core: N distinct tcp checks run by the agent's Monitor.

    sudo .venv/bin/python bench/health_bench.py [--checks 2000] [--interval 0.2] [--seconds 10]
        [--repeat 3] [--json FILE]
    sudo .venv/bin/python bench/health_bench.py --fall-vips 512 [--fall-reals 2,10,100]
        [--ring-size 65537] [--repeat 3] [--json FILE]

Runs in a network namespace of its own (re-executes itself under ``unshare -n``): the checks
connect to distinct (address, port) pairs on 127.0.0.0/8 of that namespace's lo, where a
separate process accepts and closes. "Per core" divides the checks completed by the CPU seconds
of the checking process alone (user + system), so the listener's work and other load on the
machine do not count. Every check is a full handshake and an RST (SO_LINGER 0), as in the agent.

--fall-vips V: the time from a real's fall to the last ring swap when that real serves V VIPs.
balancer.o is loaded with its maps pinned under a private pin root (/sys/fs/bpf/xdplb-hbench-PID,
no XDP attach: the VIP code only touches the pinned maps); V VIPs get the same N reals (weight 1,
the default tcp check; for each N of --fall-reals) from a balancer state file. The agent's own
apply (health.agent.Agent.apply: under the pin-root lock, its health document built from the
Monitor's states, the VIPs through overlay.apply, the health file written with fsync, then
vips.ensure's plan and writes) is timed after the Monitor's state of one real's check turns down
(the fall), then up again (the recovery). Nothing is checked over the network and no tc program is
attached: only the path from a state change to the rings is measured. The Maglev ring cache is
cleared before every timed run: a fall the agent has not seen before (the worst case) builds its
ring. Split: read (the maps' state under the lock), overlay, health file, plan (ring builds and
diffs), new ring maps (create + fill), ring swaps (batch updates of lb_rings), other writes.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_report import machine, report  # noqa: E402

PORTS = 50


def _listen(ports):
    """A child process accepting on 0.0.0.0:7000.. so the kernel's accept queues never fill."""
    pid = os.fork()
    if pid:
        return pid
    import selectors
    sel = selectors.DefaultSelector()
    for port in ports:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(4096)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    while True:
        for key, _mask in sel.select():
            try:
                while True:
                    c, _a = key.fileobj.accept()
                    c.close()
            except BlockingIOError:
                pass


def _one_run(args, Monitor):
    ports = list(range(7000, 7000 + PORTS))
    specs = {}
    for i in range(args.checks):
        addr = "127.%d.%d.%d" % (1 + i // 65536 % 250, i // 256 % 256, 1 + i % 250)
        specs["c%d" % i] = {"kind": "tcp", "address": addr, "port": ports[i % PORTS], "interval": args.interval,
                            "timeout": 1.0, "rise": 2, "fall": 3, "mark": 0x58480001}
    mon = Monitor(specs)
    mon.run_for(args.interval * 2)  # warm-up: every check ran once
    done0, cpu0, wall0 = mon.completed, time.process_time(), time.monotonic()
    mon.run_for(args.seconds)
    done, cpu, wall = mon.completed - done0, time.process_time() - cpu0, time.monotonic() - wall0
    failed = sum(1 for st in mon.snapshot().values() if st["last"] and not st["last"]["ok"])
    mon.close()
    return {"checks": done, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "checks_per_s": round(done / wall), "checks_per_cpu_s": round(done / cpu) if cpu else None,
            "failed_last": failed}


def inner(args):
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    sys.path.insert(0, args.collections)
    from ansible_collections.xdplb.katran.plugins.module_utils.engine.health.monitor import Monitor
    child = _listen(list(range(7000, 7000 + PORTS)))
    try:
        time.sleep(0.2)
        runs = [_one_run(args, Monitor) for _run in range(args.repeat)]
    finally:
        os.kill(child, 9)
    med = sorted(r["checks_per_cpu_s"] for r in runs)[len(runs) // 2]
    report({"bench": "health", "machine": machine(), "distinct_checks": args.checks, "interval_s": args.interval,
            "runs": runs, "median_checks_per_cpu_s": med,
            "median_checks_per_s": sorted(r["checks_per_s"] for r in runs)[len(runs) // 2]}, args.json)


# ------------------------------------------------------------------ fall to last ring swap
class _Clock:
    """Wall time spent in wrapped functions, by label, and the end of the last ring swap."""

    def __init__(self):
        self.spent, self.last_swap_end = {}, None

    def wrap(self, owner, name, label):
        func = getattr(owner, name)

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return func(*a, **k)
            finally:
                end = time.perf_counter()
                self.spent[label] = self.spent.get(label, 0.0) + end - t
                if label == "swap":
                    self.last_swap_end = end
        setattr(owner, name, timed)
        return lambda: setattr(owner, name, func)


def _fall_vips(n_vips, n_reals):
    reals = [{"address": "10.30.%d.%d" % (1 + i // 250, 1 + i % 250), "weight": 1} for i in range(n_reals)]
    return [{"address": "10.99.%d.%d" % (i // 250, 1 + i % 250), "port": 80, "protocol": "tcp", "reals": reals}
            for i in range(n_vips)]


def _timed_apply(eng, agent):
    """One Agent.apply(); returns its timings (seconds) and the result's summary."""
    clock = _Clock()
    undo = [clock.wrap(eng["balancer"].Balancer, "read", "read"), clock.wrap(eng["vips"], "plan", "plan"),
            clock.wrap(eng["overlay"], "apply", "overlay"), clock.wrap(eng["healthstate"], "write", "health_file"),
            clock.wrap(eng["abi"], "ring_new", "ring_maps"), clock.wrap(eng["abi"], "rings_install", "swap"),
            clock.wrap(eng["vips"], "apply", "apply")]
    eng["maglev"]._canonical_ring.cache_clear()  # pylint: disable=protected-access
    try:
        t0 = time.perf_counter()
        res = agent.apply()
        total = time.perf_counter() - t0
    finally:
        for u in undo:
            u()
    if res is None:
        raise SystemExit("the agent's apply failed: %s" % agent.log_lines[-3:])
    sp = clock.spent
    out = {"to_last_swap_s": (clock.last_swap_end - t0) if clock.last_swap_end else None, "total_s": total}
    for k in ("read", "overlay", "health_file", "plan", "ring_maps", "swap"):
        out[k + "_s"] = sp.get(k, 0.0)
    out["other_writes_s"] = sp.get("apply", 0.0) - out["ring_maps_s"] - out["swap_s"]
    out.update(rings_written=res["summary"]["rings_written"], ring_slots_changed=res["summary"]["ring_slots_changed"],
               changed=res["changed"])
    return out


def _median_runs(runs):
    keys = [k for k in runs[0] if k.endswith("_s") and runs[0][k] is not None]
    med = {k: round(statistics.median(r[k] for r in runs), 4) for k in keys}
    for k in ("rings_written", "ring_slots_changed"):
        med[k] = runs[0][k]
    return med


def _agent(eng, state_file, health_path, hc_object):
    """An Agent as start() leaves it, without the tc program (nothing is sent) and without checks
    running: its Monitor holds the states the bench sets."""
    lines = []
    agent = eng["agent"].Agent(state_file, health_path=health_path, hc_object=hc_object, log=lines.append)
    agent.log_lines = lines
    agent.cfg = eng["agent"].load(state_file, hc_object)
    agent.checks = eng["plan"].build(agent.cfg["state"]["vips"])
    agent.intent = (agent.cfg["stat"], agent.cfg["state"]["vips"])
    agent.monitor = eng["monitor"].Monitor({cid: c["spec"] for cid, c in agent.checks.items()})
    return agent


def fall_inner(args):
    sys.path.insert(0, args.collections)
    base = "ansible_collections.xdplb.katran.plugins.module_utils.engine."
    import importlib
    import tempfile
    eng = {name: importlib.import_module(base + mod) for name, mod in (
        ("balancer", "balancer.balancer"), ("vips", "balancer.vips"), ("vipspec", "balancer.vipspec"),
        ("overlay", "balancer.overlay"), ("maglev", "balancer.maglev"), ("healthstate", "balancer.healthstate"),
        ("abi", "bpf.abi"), ("libbpf", "bpf.libbpf"), ("maglev_kernel", "balancer.maglev_kernel"),
        ("agent", "health.agent"), ("plan", "health.plan"), ("monitor", "health.monitor"))}
    obj = os.path.join(REPO, "files", "bpf", "balancer.o")
    hc_object = os.path.join(REPO, "files", "bpf", "hc_encap.o")
    pin_root = "/sys/fs/bpf/xdplb-hbench-%d" % os.getpid()
    tmp = tempfile.mkdtemp(prefix="xdplb-hbench-")
    results = {"bench": "health_fall", "machine": machine(), "vips": args.fall_vips, "ring_size": args.ring_size,
               "repeat": args.repeat, "maglev_kernel_loop":
               eng["maglev_kernel"].unavailable_reason(args.ring_size) or "available", "by_reals": {}}
    try:
        for n in args.fall_reals:
            state_file = os.path.join(tmp, "balancer-%d.json" % n)
            with open(state_file, "w") as handle:
                json.dump({"version": 1, "object": obj, "interface": "lo", "pin_root": pin_root,
                           "ring_size": args.ring_size, "vips": _fall_vips(args.fall_vips, n)}, handle)
            os.makedirs(pin_root, mode=0o700)
            try:
                with eng["libbpf"].BpfObject(obj, pin_root_path=pin_root) as bpfobj:
                    bpfobj.load()
                agent = _agent(eng, state_file, os.path.join(tmp, "health-%d.json" % n), hc_object)
                eng["vips"].ensure(pin_root, agent.intent[1], ring_size=args.ring_size)  # all up: not timed
                victim = agent.intent[1][0]["reals"][0]["address"]
                cids = [cid for cid, c in agent.checks.items() if c["real"] == victim]
                falls, rises = [], []
                for _run in range(args.repeat):
                    for state, runs in (("down", falls), ("up", rises)):
                        for cid in cids:
                            agent.monitor.states[cid].update(state=state, since=time.time(), reason="bench")
                        runs.append(_timed_apply(eng, agent))
                agent.monitor.close()
                bad = [r for r in falls + rises if not r["changed"] or r["rings_written"] != args.fall_vips]
                if bad:
                    raise SystemExit("a timed run did not rewrite every ring: %s" % bad)
            finally:
                for name in os.listdir(pin_root):
                    os.unlink(os.path.join(pin_root, name))
                os.rmdir(pin_root)
            results["by_reals"][str(n)] = {
                "checks": len(agent.checks), "health_file_bytes": os.path.getsize(agent.health_path),
                "fall": _median_runs(falls), "rise": _median_runs(rises),
                "fall_runs_to_last_swap_s": [round(r["to_last_swap_s"], 4) for r in falls],
                "rise_runs_to_last_swap_s": [round(r["to_last_swap_s"], 4) for r in rises]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args.json)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checks", type=int, default=2000)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json")
    p.add_argument("--fall-vips", type=int, help="time a real's fall to the last ring swap when it serves this many VIPs")
    p.add_argument("--fall-reals", type=lambda text: [int(x) for x in text.split(",")], default=[2, 10, 100],
                   help="with --fall-vips: the numbers of reals every VIP has, comma-separated")
    p.add_argument("--ring-size", type=int, default=65537, help="with --fall-vips (the role's balancer_ring_size)")
    p.add_argument("--collections", default=os.path.join(REPO, ".build", "collections"))
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        return fall_inner(args) if args.fall_vips else inner(args)
    argv = [sys.executable, os.path.abspath(__file__), "--inner"] + sys.argv[1:]
    return subprocess.run(["unshare", "-n"] + argv, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
