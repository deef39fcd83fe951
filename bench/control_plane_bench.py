# SPDX-License-Identifier: GPL-3.0-or-later
"""Control-plane timings: 512 VIPs x 100 reals from empty, one weight change, a no-change run.

Each run loads balancer.o with fresh pins (no XDP attach is needed: the VIP code only touches the
pinned maps), then times
  engine: vips.ensure() in this process (what the module runs, without Ansible);
  module: the same three steps as tasks of one ansible-playbook run (-c local), the task time
          measured by a callback from task start to result, i.e. including templating on the
          controller, AnsiballZ start-up, argument checking and the transfer of the VIP list;
          once read from a JSON file on the host (src:, what the role's state file gives) and once
          templated from a variable in the compact form (vips: "{{ v }}", reals as
          {address: weight}). A list of {address, weight} dicts per real is several times slower
          to template in ansible-core 2.19 (see docs/control_plane.md).
Reals: each VIP gets its own random 100 of 4000 addresses with weights 1-3 ("distinct": every
ring differs, the worst case) or all VIPs share one pool ("shared": a service tier).
Medians of --repeat runs. Needs root, bpffs and built objects (make -C files/bpf).

Usage: python3 bench/control_plane_bench.py [--repeat 5] [--vips 512] [--reals 100] [--skip-module]
                                           [--maglev kernel,python]
"""
import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, ".build", "collections"))
from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import (  # noqa: E402
    balancer, maglev, maglev_kernel, vips, vipspec)
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import libbpf  # noqa: E402

from bench_report import machine, report  # noqa: E402

from bench_report import machine, report  # noqa: E402

OBJECT = os.path.join(REPO, "files", "bpf", "balancer.o")

_CALLBACK = '''
import json, time
from ansible.plugins.callback import CallbackBase
class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "bench_timing"
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.out, self.start = [], {}
    def v2_playbook_on_task_start(self, task, is_conditional):
        self.start[task._uuid] = time.monotonic()
    def _done(self, result, status):
        r = result._result
        self.out.append({"task": result._task.get_name(), "status": status,
                         "seconds": time.monotonic() - self.start[result._task._uuid],
                         "summary": r.get("summary"), "msg": r.get("msg")})
    def v2_runner_on_ok(self, result):
        self._done(result, "ok")
    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, "failed")
    def v2_playbook_on_stats(self, stats):
        print("BENCH " + json.dumps(self.out))
'''


def request(n_vips, n_reals, shared):
    pool = ["10.%d.%d.%d" % (100 + i // 62500, i // 250 % 250, i % 250 + 1) for i in range(4000)]
    out = []
    for i in range(n_vips):
        rnd = random.Random(i)
        reals = pool[:n_reals] if shared else rnd.sample(pool, n_reals)
        out.append({"address": "10.99.%d.%d" % (i // 250, i % 250 + 1), "port": 80,
                    "reals": [{"address": a, "weight": 1 if shared else 1 + (j + i) % 3} for j, a in enumerate(reals)]})
    return out


def load(pin_root):
    os.makedirs(pin_root, mode=0o700)
    with libbpf.BpfObject(OBJECT, pin_root_path=pin_root) as obj:
        obj.load()


def unpin(pin_root):
    if os.path.isdir(pin_root):
        for name in os.listdir(pin_root):
            os.unlink(os.path.join(pin_root, name))
        os.rmdir(pin_root)


def one_weight_changed(req):
    changed = json.loads(json.dumps(req))
    changed[7]["reals"][3]["weight"] += 5
    return changed


def cpu_seconds():
    """CPU time of this process and its reaped children (the forked ring builders)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def engine_run(req, pin_root):
    load(pin_root)
    try:
        changed = one_weight_changed(req)
        out = {}
        for name, raw in (("from_empty", req), ("weight_change", changed), ("no_change", changed)):
            t, c = time.perf_counter(), cpu_seconds()  # validation included: the module does it too
            res = vips.ensure(pin_root, vipspec.parse_vips(raw), purge=True)
            out[name] = time.perf_counter() - t
            out[name + "_cpu"] = cpu_seconds() - c
            out[name + "_rings_written"] = res["summary"]["rings_written"]
            out[name + "_slots"] = res["summary"]["ring_slots_changed"]
        out["ring_memlock"] = ring_memlock(pin_root)
        return out
    finally:
        unpin(pin_root)


def ring_memlock(pin_root):
    with balancer.Balancer(pin_root) as bal:
        ids = bal.read().ring_ids
    total = 0
    for ring_id in ids.values():
        with libbpf.Map.from_id(ring_id) as m:
            with open("/proc/self/fdinfo/%d" % m.fd) as handle:
                for line in handle:
                    if line.startswith("memlock:"):
                        total += int(line.split()[1])
    return total


def compact(req):
    return [dict(v, reals={r["address"]: r["weight"] for r in v["reals"]}) for v in req]


def module_run(req, pin_root, tmp, use_src):
    load(pin_root)
    try:
        tasks, variables = [], {}
        for name, r in (("from_empty", req), ("weight_change", one_weight_changed(req)),
                        ("no_change", one_weight_changed(req))):
            if use_src:
                path = os.path.join(tmp, "%s.json" % name)
                with open(path, "w") as handle:
                    json.dump({"vips": r}, handle)
                args = {"src": path}
            else:
                variables["vips_" + name] = compact(r)
                args = {"vips": "{{ vips_%s }}" % name}
            args.update(purge=True, pin_root=pin_root)
            tasks.append({"name": name, "xdplb.katran.lb_vip": args})
        varfile = os.path.join(tmp, "vars.json")
        with open(varfile, "w") as handle:
            json.dump(variables, handle)
        play = os.path.join(tmp, "play.json")
        with open(play, "w") as handle:
            json.dump([{"hosts": "localhost", "gather_facts": False, "vars_files": [varfile], "tasks": tasks}],
                      handle)
        cbdir = os.path.join(tmp, "cb")
        os.makedirs(cbdir, exist_ok=True)
        with open(os.path.join(cbdir, "bench_timing.py"), "w") as handle:
            handle.write(_CALLBACK)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
                   ANSIBLE_CALLBACK_PLUGINS=cbdir, ANSIBLE_STDOUT_CALLBACK="bench_timing",
                   ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_PIPELINING="1", LANG="C.UTF-8", LC_ALL="C.UTF-8")
        bindir = os.path.dirname(sys.executable)
        done = subprocess.run([os.path.join(bindir, "ansible-playbook"), "-i", "localhost,", "-c", "local",
                               "-e", "ansible_python_interpreter=%s" % sys.executable, play],
                              capture_output=True, text=True, env=env, timeout=900, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")]
        if not lines:
            raise SystemExit("ansible-playbook failed:\n%s\n%s" % (done.stdout[-3000:], done.stderr[-3000:]))
        results = json.loads(lines[-1][6:])
        bad = [r for r in results if r["status"] != "ok"]
        if bad:
            raise SystemExit("task failed: %s" % bad)
        out = {r["task"]: r["seconds"] for r in results}
        for r in results:
            out[r["task"] + "_rings_written"] = r["summary"]["rings_written"]
        return out
    finally:
        unpin(pin_root)


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--vips", type=int, default=512)
    ap.add_argument("--reals", type=int, default=100)
    ap.add_argument("--skip-module", action="store_true")
    ap.add_argument("--maglev", type=lambda text: text.split(","), default=["kernel"],
                    help="Maglev fill loops to time the engine with, alternating: kernel (the default: "
                         "the engine's choice, the kernel's where it loads) and/or python")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if not args.maglev or set(args.maglev) - {"kernel", "python"}:
        ap.error("--maglev: kernel and/or python, comma-separated (got %s)" % ",".join(args.maglev))
    if os.geteuid() != 0:
        raise SystemExit("needs root (BPF maps)")
    pin_root = "/sys/fs/bpf/xdplb-bench-%d" % os.getpid()
    tmp = tempfile.mkdtemp(prefix="xdplb-bench-")
    results = {"machine": machine(), "vips": args.vips, "reals": args.reals,
               "maglev_kernel_loop": maglev_kernel.unavailable_reason(maglev.DEFAULT_RING_SIZE) or "available"}
    try:
        for shared in (False, True):
            label = "shared" if shared else "distinct"
            req = request(args.vips, args.reals, shared)
            # The Maglev loops alternate run by run, so both see the same phase of the machine.
            runs = {loop: [] for loop in args.maglev}
            for _run in range(args.repeat):
                for loop in args.maglev:
                    maglev.USE_KERNEL = loop == "kernel"
                    maglev._canonical_ring.cache_clear()
                    runs[loop].append(engine_run(req, pin_root))
            maglev.USE_KERNEL = True
            for loop, loop_runs in runs.items():
                name = "engine_" + label + ("" if loop == "kernel" else "_python_maglev")
                results[name] = {k: median(loop_runs, k) for k in loop_runs[0]}
                results[name + "_runs"] = {k: [round(r[k], 3) for r in loop_runs]
                                           for k in ("from_empty", "weight_change", "no_change")}
            if args.skip_module or shared:
                continue
            for use_src in (False, True):
                mruns = [module_run(req, pin_root, tmp, use_src) for _run in range(args.repeat)]
                results["module_%s_%s" % (label, "src" if use_src else "compact")] = \
                    {k: median(mruns, k) for k in mruns[0]}
    finally:
        unpin(pin_root)
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args.json)


if __name__ == "__main__":
    main()
