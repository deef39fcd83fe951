# SPDX-License-Identifier: GPL-3.0-or-later
"""CPU of one scrape of the agent's /metrics at V VIPs x R reals (default 512 x 100: 51,200 pairs).

    sudo .venv/bin/python bench/metrics_bench.py [--vips 512] [--reals 100] [--scrapes 20] [--json FILE]

balancer.o is loaded with its maps pinned under a private pin root (/sys/fs/bpf/xdplb-mbench-PID,
no XDP attach: counters are read from the pinned maps whatever their values), V VIPs get the same
R reals (weight 1, the default tcp check) through vips.ensure, and an Agent is set up as start()
leaves it (its configuration, checks and Monitor; nothing is checked over the network). Then the
agent's Exporter renders /metrics --scrapes times; each scrape is timed in CPU seconds of this
process (time.process_time: user + system of every thread, so the kernel's side of the map reads
counts), split into the counters read (counters.Reader.read: batch lookups of the per-CPU maps and
their sums), the small families (prometheus_client's generate_latest) and the per-(VIP, real)
lines. The first scrape is reported apart: it builds the label prefixes and the health text,
which later scrapes reuse until the maps' layout or the health view changes. Also reported: the
body's size, and what gzip would cost (the exporter does not compress; Prometheus accepts both).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_report import machine, report  # noqa: E402


def _vips(n_vips, n_reals):
    reals = [{"address": "10.30.%d.%d" % (1 + i // 250, 1 + i % 250), "weight": 1} for i in range(n_reals)]
    return [{"address": "10.99.%d.%d" % (i // 250, 1 + i % 250), "port": 80, "protocol": "tcp", "reals": reals}
            for i in range(n_vips)]


def _timed(func):
    t = time.process_time()
    out = func()
    return out, time.process_time() - t


def inner(args):
    sys.path.insert(0, args.collections)
    import importlib
    import json
    base = "ansible_collections.xdplb.katran.plugins.module_utils.engine."
    eng = {name: importlib.import_module(base + mod) for name, mod in (
        ("vips", "balancer.vips"), ("vipspec", "balancer.vipspec"), ("counters", "balancer.counters"),
        ("libbpf", "bpf.libbpf"), ("agent", "health.agent"), ("plan", "health.plan"),
        ("monitor", "health.monitor"), ("metrics", "health.metrics"))}
    obj = os.path.join(REPO, "files", "bpf", "balancer.o")
    hc_object = os.path.join(REPO, "files", "bpf", "hc_encap.o")
    pin_root = "/sys/fs/bpf/xdplb-mbench-%d" % os.getpid()
    tmp = tempfile.mkdtemp(prefix="xdplb-mbench-")
    os.makedirs(pin_root, mode=0o700)
    try:
        state_file = os.path.join(tmp, "balancer.json")
        with open(state_file, "w") as handle:
            json.dump({"version": 1, "object": obj, "interface": "lo", "pin_root": pin_root,
                       "vips": _vips(args.vips, args.reals)}, handle)
        with eng["libbpf"].BpfObject(obj, pin_root_path=pin_root) as bpfobj:
            bpfobj.load()
        agent = eng["agent"].Agent(state_file, health_path=os.path.join(tmp, "health.json"), hc_object=hc_object,
                                   log=lambda _line: None)
        agent.cfg = eng["agent"].load(state_file, hc_object)
        agent.checks = eng["plan"].build(agent.cfg["state"]["vips"])
        agent.intent = (agent.cfg["stat"], agent.cfg["state"]["vips"])
        agent.monitor = eng["monitor"].Monitor({cid: c["spec"] for cid, c in agent.checks.items()})
        eng["vips"].ensure(pin_root, agent.intent[1])
        agent.publish_metrics()
        exporter = eng["metrics"].Exporter(agent, ("127.0.0.1", 0))
        parts = {"read": [], "small": [], "pairs": [], "total": []}
        orig = {"read": exporter._counters, "small": exporter._small, "pairs": exporter._pairs}

        def wrap(name):
            def timed(*a):
                out, spent = _timed(lambda: orig[name](*a))
                parts[name].append(spent)
                return out
            return timed
        exporter._counters, exporter._small, exporter._pairs = wrap("read"), wrap("small"), wrap("pairs")
        first, first_s = _timed(exporter.render)
        for v in parts.values():
            v.clear()
        for _scrape in range(args.scrapes):
            body, spent = _timed(exporter.render)
            parts["total"].append(spent)
        _gz1, gzip1_s = _timed(lambda: zlib.compress(body, 1))
        gz6, gzip6_s = _timed(lambda: zlib.compress(body, 6))
        agent.monitor.close()
        exporter.close()
        pairs = sum(len(v["reals"]) for v in agent.intent[1])
        if body.count(b"\nxdplb_vip_real_packets_total{") != pairs:
            raise SystemExit("the scrape does not hold one xdplb_vip_real_packets_total line per pair")
    finally:
        for name in os.listdir(pin_root):
            os.unlink(os.path.join(pin_root, name))
        os.rmdir(pin_root)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k + "_cpu_ms": round(1000 * statistics.median(v), 2) for k, v in parts.items()}
    report({"bench": "metrics_scrape", "machine": machine(), "vips": args.vips, "reals_per_vip": args.reals,
            "pairs": pairs, "scrapes": args.scrapes, "first_scrape_cpu_ms": round(1000 * first_s, 2),
            "first_scrape_bytes": len(first), "median": med, "body_bytes": len(body),
            "gzip1_cpu_ms": round(1000 * gzip1_s, 2), "gzip6_cpu_ms": round(1000 * gzip6_s, 2),
            "gzip6_bytes": len(gz6),
            "runs_total_cpu_ms": [round(1000 * x, 2) for x in parts["total"]]}, args.json)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vips", type=int, default=512)
    p.add_argument("--reals", type=int, default=100)
    p.add_argument("--scrapes", type=int, default=20)
    p.add_argument("--json")
    p.add_argument("--collections", default=os.path.join(REPO, ".build", "collections"))
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        return inner(args)
    # A namespace of its own, as the other benches: nothing here touches the host's network.
    argv = [sys.executable, os.path.abspath(__file__), "--inner"] + sys.argv[1:]
    return subprocess.run(["unshare", "-n"] + argv, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
