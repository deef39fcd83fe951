# SPDX-License-Identifier: GPL-3.0-or-later
"""Health checks per second per core: N distinct tcp checks run by the agent's Monitor.

    sudo .venv/bin/python bench/health_bench.py [--checks 2000] [--interval 0.2] [--seconds 10]
        [--repeat 3] [--json FILE]

Runs in a network namespace of its own (re-executes itself under ``unshare -n``): the checks
connect to distinct (address, port) pairs on 127.0.0.0/8 of that namespace's lo, where a
separate process accepts and closes. "Per core" divides the checks completed by the CPU seconds
of the checking process alone (user + system), so the listener's work and other load on the
machine do not count. Every check is a full handshake and an RST (SO_LINGER 0), as in the agent.
"""
import argparse
import os
import socket
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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checks", type=int, default=2000)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json")
    p.add_argument("--collections", default=os.path.join(REPO, ".build", "collections"))
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        return inner(args)
    argv = [sys.executable, os.path.abspath(__file__), "--inner"] + sys.argv[1:]
    return subprocess.run(["unshare", "-n"] + argv, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
