# SPDX-License-Identifier: GPL-3.0-or-later
"""Maglev ring quality and build time: balance, disruption, weight accuracy (docs/maglev.md).

Build times are given for both population loops, interleaved: the kernel's (engine/balancer/maglev_kernel.py,
needs root) and the Python one; they build the same rings.

Usage: python3 bench/maglev_quality.py [--size 65537] [--reals 100] [--repeat 5]
"""

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter

# The engine is a self-contained package (relative imports only), importable without Ansible.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "plugins", "module_utils"))
from engine.balancer import maglev, maglev_kernel  # noqa: E402
from engine.balancer.maglev import build_ring  # noqa: E402


def keys(n):
    return ["10.%d.%d.%d" % (i // 65536, i // 256 % 256, i % 256 + 1) for i in range(n)]


def owners(reals, ring):
    return [reals[i][0] for i in ring]


def load_average():
    try:
        return "%.2f" % os.getloadavg()[0]
    except OSError:
        return "n/a"


def loops(size):
    """The population loops this host can run: the kernel's (maglev_kernel) where it loads."""
    return ("kernel", "python") if maglev_kernel.filler(size) is not None else ("python",)


def build_time(reals, size, repeat):
    """{loop: (median wall, median CPU, min CPU)}, the loops interleaved build by build."""
    # CPU time next to wall time: on a shared machine the wall clock also counts other tenants.
    # The kernel loop's time is system CPU of this process, so it is counted too.
    runs = {name: ([], []) for name in loops(size)}
    try:
        for _unused in range(repeat):
            for name, (wall, cpu) in runs.items():
                maglev.USE_KERNEL = name == "kernel"
                # A cold build each time: repeated input would otherwise be served by the ring cache.
                maglev._canonical_ring.cache_clear()
                start, start_cpu = time.perf_counter(), time.process_time()
                build_ring(reals, size)
                cpu.append(time.process_time() - start_cpu)
                wall.append(time.perf_counter() - start)
    finally:
        maglev.USE_KERNEL = True
    return {name: (statistics.median(wall), statistics.median(cpu), min(cpu)) for name, (wall, cpu) in runs.items()}


def balance(size):
    print("balance, equal weights (slots per real; ideal floor/ceil of M/N)")
    for n in (2, 3, 7, 100, 1000):
        counts = Counter(build_ring([(k, 1) for k in keys(n)], size)).values()
        ok = set(counts) <= {size // n, -(-size // n)} and len(counts) == n
        print("  N=%-5d min %6d  max %6d  ideal %d..%d  %s"
              % (n, min(counts), max(counts), size // n, -(-size // n), "ok" if ok else "FAIL"))


def disruption(size, n):
    base = [(k, 1) for k in keys(n)]
    old = owners(base, build_ring(base, size))
    moved_fracs = []
    for gone, _unused in base:
        rest = [r for r in base if r[0] != gone]
        new = owners(rest, build_ring(rest, size))
        others = [s for s in range(size) if old[s] != gone]
        moved_fracs.append(sum(1 for s in others if old[s] != new[s]) / len(others))
    added = base + [("10.255.255.254", 1)]
    new = owners(added, build_ring(added, size))
    taken = sum(1 for s in range(size) if new[s] == "10.255.255.254")
    moved = sum(1 for s in range(size) if new[s] != old[s])
    print("disruption, %d equal reals (share of the OTHER reals' slots that change owner)" % n)
    print("  remove 1 (each of the %d in turn): mean %.3f%%  max %.3f%%  (bar: <= 2%%)"
          % (n, 100 * statistics.mean(moved_fracs), 100 * max(moved_fracs)))
    print("  add 1: %d slots change owner, %d of them to the new real (ideal %d)"
          % (moved, taken, size // (n + 1)))


def weights(size, n):
    print("weights (max |slots - M*w/W| / (M*w/W) over the reals; bar: <= 1% where every real"
          " expects >= 100 slots, below that one slot is already more than 1%)")
    cases = [("1,2,3,4", list(zip(keys(4), [1, 2, 3, 4])))]
    rnd = random.Random(4)
    cases.append(("%d reals, weights 1..10" % n, [(k, rnd.randint(1, 10)) for k in keys(n)]))
    rnd = random.Random(5)
    cases.append(("%d reals, weights 1..100" % n, [(k, rnd.randint(1, 100)) for k in keys(n)]))
    for label, reals in cases:
        counts = Counter(build_ring(reals, size))
        total = sum(w for _unused, w in reals)
        errors = []
        for i, (_unused, w) in enumerate(reals):
            expected = size * w / total
            off = abs(counts[i] - expected)
            errors.append((off / expected, off, expected))
        worst = max(errors)
        print("  %-26s max error %.3f%% (%.1f slots of %.1f expected), max slot error %.1f"
              % (label, 100 * worst[0], worst[1], worst[2], max(e[1] for e in errors)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=65537)
    parser.add_argument("--reals", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    size, n = args.size, args.reals

    print("Python %s on %s, M=%d, load average %s"
          % (platform.python_version(), platform.machine(), size, load_average()))
    rnd = random.Random(4)
    for label, reals in (
        ("equal weights", [(k, 1) for k in keys(n)]),
        ("weights 1..10", [(k, rnd.randint(1, 10)) for k in keys(n)]),
    ):
        for loop, (wall, cpu, best) in build_time(reals, size, args.repeat).items():
            print("build time, %d reals, %s, %s loop: median %.1f ms wall, %.1f ms CPU; min %.1f ms CPU"
                  " (%d runs)" % (n, label, loop, 1000 * wall, 1000 * cpu, 1000 * best, args.repeat))
    reals = [(k, 1) for k in keys(n)]
    build_ring(reals, size)
    start = time.perf_counter()
    build_ring(reals[::-1], size)
    print("same pool again (cache hit, listed in another order): %.1f ms wall"
          % (1000 * (time.perf_counter() - start)))
    balance(size)
    disruption(size, n)
    weights(size, n)


if __name__ == "__main__":
    main()
