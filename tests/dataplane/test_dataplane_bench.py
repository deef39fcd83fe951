"""bench/dataplane_bench.py runs end to end with both per-call loops.

A benchmark that no longer runs, or whose C loop disagrees with the Python loop on what a
path does, is noticed only when someone needs the numbers; this runs it small. It asserts
verdicts and shapes, never timings (docs/performance.md has those).
"""
import json
import os
import subprocess
import sys

from lbtest import BPF_DIR

BENCH = os.path.join(os.path.dirname(os.path.dirname(BPF_DIR)), "bench", "dataplane_bench.py")
PATHS = {"syn_new", "syn_repeat", "ring_bypass", "conn_hit", "udp", "ipv6", "ipv6_syn_new", "non_vip",
         "ref_lru_new", "ref_lru_repeat"}


def test_both_loops_measure_every_path(bpf_objects):
    # Run as under `make test-newest` (a make calling make): the inherited MAKEFLAGS=w makes every
    # make the bench calls print "Entering directory" lines. stdout must still be the JSON alone,
    # parsed whole, as `bench/dataplane_bench.py --json | jq` would.
    env = dict(os.environ, MAKELEVEL="1", MAKEFLAGS="w")
    out = subprocess.run([sys.executable, BENCH, "--runs", "1", "--calls", "1000", "--loop", "c,python",
                          "--json"], check=True, capture_output=True, text=True, timeout=300, env=env).stdout
    loops = json.loads(out)["loops"]
    assert set(loops) == {"c", "python"}
    for label, result in loops.items():
        assert set(result) == PATHS | {"floor"}, label
        # The floor is an absolute duration: a loop that timed nothing would report 0.
        assert result["floor"]["median"] > 0, label
        assert all(len(r["runs"]) == 1 for r in result.values()), label


# Run in a child: the bench imports the engine as a top-level package, and a second copy of the
# libbpf binding in this process would take over libbpf's log callback from the first.
WRONG_VERDICT = """
import os, sys, tempfile
sys.path.insert(0, sys.argv[1])
import dataplane_bench as bench
from engine.bpf import libbpf
loop = bench.CLoop(tempfile.mkdtemp())
with libbpf.BpfObject(os.path.join(bench.BPF_DIR, "pass.o"), pin_maps=False) as pobj:
    pobj.load()
    frame = bench.tcp4(bench.VIP4, 40000, "A")
    floor = bench.Floor(pobj.program_fd("xdp_pass"), frame)
    good = bench.Path(floor.fd, [frame], libbpf.XDP_PASS, loop)
    good.block(floor, 10)
    assert len(good.samples) == len(good.floor) == 10 and min(good.floor) > 0
    bench.Path(floor.fd, [frame], libbpf.XDP_TX, loop).block(floor, 10)
"""


def test_a_wrong_verdict_stops_the_c_loop(bpf_objects):
    """The C loop checks each call's verdict as the Python loop does: a path that stops
    forwarding must fail the bench, not be timed as if it still did."""
    proc = subprocess.run([sys.executable, "-c", WRONG_VERDICT, os.path.dirname(BENCH)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "unexpected verdict" in proc.stderr, proc.stderr
