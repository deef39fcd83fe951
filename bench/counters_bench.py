# SPDX-License-Identifier: GPL-3.0-or-later
"""counters.Reader.read() at 512 VIPs x 100 reals (51,200 (VIP, real) pairs): what each scrape of
the balancer agent's exporter costs. Loads balancer.o with fresh pins under a temporary pin root
(no XDP attach: the reader only reads maps), writes the VIPs through vips.ensure, then times
read() --repeat times and prints the median (and the first read, which decodes everything).
Needs root, bpffs and built objects (make -C files/bpf).
Usage: python3 bench/counters_bench.py [--vips 512] [--reals 100] [--repeat 50]
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, ".build", "collections"))
sys.path.insert(0, HERE)
from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import counters, vips, vipspec  # noqa: E402
from bench_report import machine  # noqa: E402
from control_plane_bench import load, request, unpin  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--vips", type=int, default=512)
    ap.add_argument("--reals", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    pin_root = "/sys/fs/bpf/xdplb-counters-bench-%d" % os.getpid()
    load(pin_root)
    try:
        vips.ensure(pin_root, vipspec.parse_vips(request(args.vips, args.reals, shared=False)), purge=True)
        with counters.Reader(pin_root) as reader:
            t = time.perf_counter()
            snap = reader.read()
            first = time.perf_counter() - t
            pairs = sum(len(v["reals"]) for v in snap["vips"])
            times = []
            for _unused in range(args.repeat):
                t = time.perf_counter()
                reader.read()
                times.append(time.perf_counter() - t)
    finally:
        unpin(pin_root)
    print("counters.Reader.read(): %d VIPs, %d pairs, %d reals: median %.1f ms of %d (min %.1f, first %.1f); %s"
          % (len(snap["vips"]), pairs, len(snap["reals"]), 1000 * statistics.median(times), args.repeat,
             1000 * min(times), 1000 * first, machine()))


if __name__ == "__main__":
    main()
