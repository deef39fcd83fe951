"""The Maglev population loop run by the kernel (engine/balancer/maglev_kernel.py) builds exactly the ring
of the Python loop (maglev._populate): every balancer of a fleet must hold byte-identical rings,
whichever of the two built them."""
import os
import pickle
import random

import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import maglev, maglev_kernel
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import libbpf

POOL = ["10.%d.%d.%d" % (100 + i // 62500, i // 250 % 250, i % 250 + 1) for i in range(5000)]
POOL6 = ["2001:db8::%x" % (i + 1) for i in range(500)]


def _both(reals, size):
    """(kernel ring, Python ring) of build_ring, each built afresh (no cache)."""
    out = []
    for use_kernel in (True, False):
        maglev._canonical_ring.cache_clear()
        maglev.USE_KERNEL = use_kernel
        try:
            out.append(maglev.build_ring(reals, size))
        finally:
            maglev.USE_KERNEL = True
    maglev._canonical_ring.cache_clear()
    return out


def _case(rnd):
    size = rnd.choice([7, 13, 101, 251, 1009, 4099])
    n = rnd.choice([2, 3, 5, 17, 100, 257, 300])
    weights = rnd.choice([lambda: 1, lambda: rnd.randint(1, 3), lambda: rnd.randint(0, 5),
                          lambda: rnd.randint(1, 10 ** 6)])
    reals = [(a, weights()) for a in rnd.sample(POOL + POOL6, n)]
    if not any(w for _unused, w in reals):
        reals[0] = (reals[0][0], 1)
    return reals, size


def test_the_kernel_loop_runs_here():
    # On this kernel (and Debian 12's 6.1, checked in the kernel tier) the fast path must be taken:
    # a silent fallback would make every large apply ten times slower.
    assert maglev_kernel.unavailable_reason(maglev.DEFAULT_RING_SIZE) is None


@pytest.mark.parametrize("seed", range(300))
def test_same_ring_as_python(seed):
    reals, size = _case(random.Random(seed))
    kernel, python = _both(reals, size)
    assert kernel == python, (seed, size, len(reals))


@pytest.mark.parametrize("seed", range(6))
def test_same_ring_as_python_full_size(seed):
    rnd = random.Random(1000 + seed)
    reals = [(a, rnd.randint(1, 3)) for a in rnd.sample(POOL, rnd.choice([10, 100, 1000]))]
    kernel, python = _both(reals, maglev.DEFAULT_RING_SIZE)
    assert kernel == python


@pytest.mark.parametrize("budget", [1, 2, 7])
def test_any_probe_budget_gives_the_same_ring(budget, monkeypatch):
    # Small budgets stop and resume inside almost every turn: (t, p) carried between runs.
    monkeypatch.setattr(maglev_kernel, "BUDGET", budget)
    monkeypatch.setattr(maglev_kernel, "_fillers", {})
    rnd = random.Random(budget)
    reals = [(a, rnd.randint(1, 3)) for a in rnd.sample(POOL, 40)]
    kernel, python = _both(reals, 4099)
    assert kernel == python


def test_ring_as_u32_values_is_the_same(monkeypatch):
    rnd = random.Random(7)
    for n in (3, 100, 300):
        reals = [(a, rnd.randint(1, 3)) for a in rnd.sample(POOL, n)]
        values = [rnd.randint(1, 4095) for _unused in reals]
        out = []
        for use_kernel in (True, False):
            maglev._canonical_ring.cache_clear()
            monkeypatch.setattr(maglev, "USE_KERNEL", use_kernel)
            out.append(maglev.build_ring_u32(reals, values, 4099))
        assert out[0] == out[1], n
    maglev._canonical_ring.cache_clear()


def test_more_reals_than_the_entry_holds_use_python(monkeypatch):
    monkeypatch.setattr(maglev_kernel, "MAX_REALS", 8)
    rnd = random.Random(3)
    reals = [(a, 1) for a in rnd.sample(POOL, 9)]
    assert maglev._kernel_filler(101, len(reals)) is None
    kernel, python = _both(reals, 101)
    assert kernel == python


def test_a_forked_child_gets_its_own_entry():
    # vips._fork_map builds rings in forked children at the same time as the parent: sharing the
    # parent's entry would mix two rings.
    parent = maglev_kernel.filler(101)
    assert parent is not None
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        child = maglev_kernel.filler(101)
        maglev._canonical_ring.cache_clear()
        ring = maglev.build_ring([("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3)], 101)
        with os.fdopen(wfd, "wb") as out:
            out.write(pickle.dumps((child is not None and child is not parent, ring)))
        os._exit(0)
    os.close(wfd)
    maglev._canonical_ring.cache_clear()
    mine = maglev.build_ring([("10.0.0.4", 1), ("10.0.0.5", 1)], 101)
    with os.fdopen(rfd, "rb") as inp:
        own_entry, theirs = pickle.loads(inp.read())
    os.waitpid(pid, 0)
    assert own_entry
    assert theirs == _both([("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3)], 101)[1]
    assert mine == _both([("10.0.0.4", 1), ("10.0.0.5", 1)], 101)[1]
    assert maglev_kernel.filler(101) is parent


def test_a_refused_program_falls_back_to_python(monkeypatch):
    # What an old kernel or a host without CAP_BPF does (cannot happen on this machine): the ring
    # is still built, by the Python loop, and the reason is kept for diagnostics.
    def refuse(*_args, **_kwargs):
        raise libbpf.BpfError("bpf_prog_load(maglev_fill)", 1, "refused")

    monkeypatch.setattr(libbpf, "prog_load", refuse)
    monkeypatch.setattr(maglev_kernel, "_fillers", {})
    assert maglev_kernel.filler(101) is None
    assert "refused" in maglev_kernel.unavailable_reason(101)
    maglev._canonical_ring.cache_clear()
    ring = maglev.build_ring([("10.0.0.1", 1), ("10.0.0.2", 3)], 101)
    monkeypatch.setattr(maglev, "USE_KERNEL", False)
    assert ring == _both([("10.0.0.1", 1), ("10.0.0.2", 3)], 101)[1]
    maglev._canonical_ring.cache_clear()
