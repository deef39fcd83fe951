# SPDX-License-Identifier: GPL-3.0-or-later
"""Task time of the balancer role for 512 VIPs x 100 reals: from empty, one weight change, no change.

What an operator waits for: the xdplb.katran.balancer role, run by ansible-playbook against a
balancer of the network-namespace lab (xdplb.katran.netns connection), with the VIPs in
``balancer_vips`` in the compact reals form ({address: weight}). "From empty" is a fresh balancer
(lab rebuilt: no program, no pins, no state file); the two later runs follow it on the same host.
Task time is summed by a callback from each task's start to its result (templating, transfer,
module), for the whole role and for its VIP task alone; wall time is the ansible-playbook process.
Shapes as bench/control_plane_bench.py: "distinct" (every VIP its own 100 of 4000 reals, weights
1-3) and "shared" (one pool). Medians of --repeat runs.

Usage: sudo .venv/bin/python bench/balancer_role_bench.py [--repeat 3] [--shape distinct|shared|both]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_report import machine, report  # noqa: E402
from control_plane_bench import _CALLBACK, compact, one_weight_changed, request  # noqa: E402

PREFIX = "xkr-"
STATE_ROOT = "/run/xdplb-bench-role"
PIN_ROOT = "/sys/fs/bpf/xdplb-bench-role"
INVENTORY = STATE_ROOT + "/inventory.yml"
VIP_TASK = "xdplb.katran.balancer : Put the VIPs in service and keep them as the state file the boot unit restores"


def ansible(tmp, play, *args):
    cbdir = os.path.join(tmp, "cb")
    os.makedirs(cbdir, exist_ok=True)
    with open(os.path.join(cbdir, "bench_timing.py"), "w") as handle:
        handle.write(_CALLBACK)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
               ANSIBLE_CALLBACK_PLUGINS=cbdir, ANSIBLE_STDOUT_CALLBACK="bench_timing",
               LANG="C.UTF-8", LC_ALL="C.UTF-8")
    start = time.monotonic()
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), play] + list(args),
                          capture_output=True, text=True, env=env, timeout=1800, check=False)
    wall = time.monotonic() - start
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")]
    results = json.loads(lines[-1][6:]) if lines else []
    bad = [r for r in results if r["status"] != "ok"]
    if done.returncode != 0 or not lines or bad:
        raise SystemExit("ansible-playbook %s failed (%d): %s\n%s\n%s"
                         % (play, done.returncode, bad, done.stdout[-3000:], done.stderr[-3000:]))
    return wall, results


def lab(tmp, state):
    play = os.path.join(tmp, "lab.json")
    with open(play, "w") as handle:
        json.dump([{"hosts": "localhost", "gather_facts": False, "roles": [{
            "role": "xdplb.katran.lab", "lab_state": state, "lab_prefix": PREFIX, "lab_balancers": 1,
            "lab_backends": 1, "lab_state_root": STATE_ROOT, "lab_pin_root": PIN_ROOT,
            "lab_routing": "static"}]}], handle)
    ansible(tmp, play, "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=" + sys.executable)


def role_run(tmp, vips, name):
    varfile = os.path.join(tmp, name + ".json")
    with open(varfile, "w") as handle:
        json.dump({"bench_vips": compact(vips)}, handle)
    play = os.path.join(tmp, "role.json")
    with open(play, "w") as handle:
        json.dump([{"hosts": "balancers", "gather_facts": False, "roles": [{
            "role": "xdplb.katran.balancer", "balancer_vips": "{{ bench_vips }}"}]}], handle)
    wall, results = ansible(tmp, play, "-i", INVENTORY, "-e", "@" + varfile)
    role_tasks = [r for r in results if r["task"].startswith("xdplb.katran.balancer : ")]
    slowest = sorted(role_tasks, key=lambda r: -r["seconds"])[:12]
    return {"wall": wall, "task_time": sum(r["seconds"] for r in role_tasks),
            "vip_task": sum(r["seconds"] for r in role_tasks if r["task"] == VIP_TASK),
            "rings_written": [r["summary"]["rings_written"] for r in role_tasks if r["task"] == VIP_TASK][0],
            "slowest": ["%s %.2f s" % (r["task"].split(" : ", 1)[1], r["seconds"]) for r in slowest]}


def one_repeat(tmp, req):
    lab(tmp, "present")
    try:
        out = {}
        for name, vips in (("from_empty", req), ("weight_change", one_weight_changed(req)),
                           ("no_change", one_weight_changed(req))):
            out[name] = role_run(tmp, vips, name)
        return out
    finally:
        lab(tmp, "absent")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--vips", type=int, default=512)
    ap.add_argument("--reals", type=int, default=100)
    ap.add_argument("--shape", choices=["distinct", "shared", "both"], default="both")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, BPF)")
    results = {"machine": machine(), "vips": args.vips, "reals": args.reals}
    tmp = tempfile.mkdtemp(prefix="xdplb-role-bench-")
    try:
        for shape in (("distinct", "shared") if args.shape == "both" else (args.shape,)):
            req = request(args.vips, args.reals, shape == "shared")
            runs = [one_repeat(tmp, req) for _run in range(args.repeat)]
            results[shape] = {step: {key: statistics.median(r[step][key] for r in runs)
                                     for key in ("wall", "task_time", "vip_task", "rings_written")}
                              for step in runs[0]}
            for step in runs[0]:
                results[shape][step]["task_time_runs"] = [round(r[step]["task_time"], 1) for r in runs]
            for step in runs[0]:
                results[shape][step]["slowest_of_first_run"] = runs[0][step]["slowest"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args.json)


if __name__ == "__main__":
    main()
