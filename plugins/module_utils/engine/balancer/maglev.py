# SPDX-License-Identifier: GPL-3.0-or-later
"""Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as Katran does.

Every balancer in a fleet must build the byte-identical ring for the same VIP configuration, or a
flow that ECMP moves from one balancer to another lands on a different real. Hence:

* the per-real hash is BLAKE2b (hashlib, in every CPython since 3.6) over the key's UTF-8 bytes,
  never ``hash()``, which is salted per process;
* reals take their turns in the order of their keys' UTF-8 bytes, never in the order the caller
  happened to list them;
* only integer arithmetic after the hash, so the result is the same on every Python version and
  architecture.

Stdlib only (plus maglev_kernel, which runs the population loop as BPF where the host allows and
otherwise leaves it to ``_populate`` here), no Ansible imports: this file runs inside modules and as
part of the host-side CLI.
"""

import array
import functools
import hashlib
import math
import sys

from . import maglev_kernel

DEFAULT_RING_SIZE = 65537

# The population loop runs in the kernel where it can (maglev_kernel); False: always in Python.
USE_KERNEL = True

# Part of the hash input, so that a deliberate change of hash (a new version string) is visible
# in one place and the pinned ring digest in the tests catches an accidental one.
_HASH_PERSON = b"xdplb.maglev.v1"

# Witnesses that make Miller-Rabin exact for every n < 3.3e24, far beyond any ring size.
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def is_prime(n):
    """True when the integer ``n`` is prime (exact for n < 3.3e24)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x == 1 or x == n - 1:
            continue
        for _unused in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def offset_skip(key, size):
    """The (offset, skip) pair that defines ``key``'s preference list in a ring of ``size`` slots.

    The list is offset, offset+skip, offset+2*skip, ... (mod size); with size prime and
    1 <= skip < size it visits every slot exactly once.
    """
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16, person=_HASH_PERSON).digest()
    offset = int.from_bytes(digest[:8], "little") % size
    skip = int.from_bytes(digest[8:], "little") % (size - 1) + 1
    return offset, skip


def _turn_order(weights, size):
    """Which real takes each of the ``size`` turns of the population loop, as Katran's MaglevHashV2.

    Katran runs rounds over the reals in order; a real's counter grows by its weight each round and
    the real takes a turn whenever the counter reaches the largest weight (which it then loses).
    So real i takes its k-th turn in round ceil(k * wmax / w_i), and within a round the reals go in
    order. The sequence is computed directly rather than by simulating rounds, because with
    uneven weights most simulated rounds would give turns to almost nobody.
    """
    period = _turn_period(weights, size)
    if period is not None:
        return period * (size // len(period)) + period[:size % len(period)]
    wmax = max(weights)

    # Not even one period fits (huge weights): the ring fills within the first ``last`` rounds.
    def turns_through(r):
        return sum(r * w // wmax for w in weights)

    # The heaviest real takes a turn every round, so at most ``size`` rounds are needed.
    lo, hi = 1, size
    while lo < hi:
        mid = (lo + hi) // 2
        if turns_through(mid) >= size:
            hi = mid
        else:
            lo = mid + 1
    last = lo
    order = _rounds_in_order(weights, wmax, last - 1)
    # The last round is cut short once the ring is full, in real order.
    for i, w in enumerate(weights):
        if len(order) == size:
            break
        if last * w // wmax > (last - 1) * w // wmax:
            order.append(i)
    return order


def _turn_period(weights, size):
    """The turns of one period of _turn_order, or None when not even one period fits in ``size``.

    Real i has a turn in round r iff r*w // wmax > (r-1)*w // wmax, and adding wmax to r adds
    exactly w to both sides: the turns repeat with a period of wmax rounds (sum(weights) turns).
    One period built in Python and repeated by multiplication (C speed) replaces a per-turn loop:
    for 100 reals with weights 1-3 it is a few hundred appends, not 65537.
    """
    wmax = max(weights)
    if sum(weights) > size:
        return None
    return _rounds_in_order(weights, wmax, wmax)


def _turn_order_u16(weights, size):
    """_turn_order as native u16 bytes (what the kernel loop reads), repeated as bytes."""
    period = _turn_period(weights, size)
    if period is None:
        return array.array("H", _turn_order(weights, size)).tobytes()
    one = array.array("H", period).tobytes()
    return one * (size // len(period)) + one[:2 * (size % len(period))]


def _rounds_in_order(weights, wmax, rounds):
    """The turns of rounds 1 .. ``rounds`` (at most ``wmax``), round by round, reals in order."""
    # One bucket per round keeps the order without sorting (about 4x faster for 100 reals).
    buckets = [[] for _unused in range(rounds)]
    for i, w in enumerate(weights):
        if w:
            # t // w == ceil(k * wmax / w) for t = k * wmax + w - 1, k = 1 .. turns through
            # ``rounds``; bucket r - 1 holds round r.
            for t in range(wmax + w - 1, rounds * w // wmax * wmax + w, wmax):
                buckets[t // w - 1].append(i)
    return [i for bucket in buckets for i in bucket]


def _populate(prefs, weights, size, tail=None):
    """Fill a ring of ``size`` slots; returns, per slot, the index of its real in ``prefs``.

    ``prefs`` holds each real's (offset, skip) and ``weights`` its weight (> 0 for at least one;
    0 means no turns). Reals take turns in ``_turn_order``; on its turn a real claims the first
    still-free slot of its preference list. Kept separate from the hash so that the paper's
    hand-made example (explicit offsets and skips) can be checked exactly. ``tail`` (free slots
    left when the fill switches method) only changes speed; tests force each method with it.
    """
    order = _turn_order(weights, size)
    pos = [offset for offset, _unused in prefs]
    skips = [skip for _unused, skip in prefs]
    # None marks a free slot: an identity test is the cheapest check in the hot loop below
    # (cheaper, on CPython 3.11, than a -1 marker compared with ``>= 0``).
    ring = [None] * size
    # Once fewer than sqrt(M) slots are free, a walk costs more probes (about M/free) than
    # locating every free slot in the real's list (one modular product each): the tail switches.
    # Both give the same ring; measured fastest around sqrt(M) for M=65537 and 100 reals.
    if tail is None:
        tail = math.isqrt(size)
    head = max(size - tail, 0)

    # ``pos[i]`` is the next entry of i's preference list still to try; everything before it is
    # taken (slots are never freed), which is what lets the tail below skip the walk.
    # This loop is most of the cost of a ring. Variants measured no faster on CPython 3.11:
    # ``p += s; if p >= size: p -= size``, a precomputed wrap-around table, and walks in C via
    # filter()/map() over itertools.count (per-probe call overhead exceeds the bytecode's).
    for i in order[:head]:
        p = pos[i]
        s = skips[i]
        while ring[p] is not None:
            p = (p + s) % size
        ring[p] = i
        pos[i] = (p + s) % size

    if head < size:
        # Exactly size - head slots are free; list.index finds each in C, faster than testing
        # every slot in a comprehension.
        free = []
        p = -1
        for _unused in range(size - head):
            p = ring.index(None, p + 1)
            free.append(p)
        inverse = {}
        for i in order[head:]:
            p0 = pos[i]
            s = skips[i]
            inv = inverse.get(i)
            if inv is None:
                inv = inverse[i] = pow(s, size - 2, size)
            # How many steps along i's list each free slot lies from p0; the nearest is the one
            # the plain walk would have reached first.
            steps = min([(f - p0) * inv % size for f in free])
            p = (p0 + steps * s) % size
            free.remove(p)
            ring[p] = i
            pos[i] = (p + s) % size
    return ring


def _validate(reals, size):
    # ``from None`` below: the caller's error is the bad input, not the unpacking that found it.
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError("ring size must be an integer, got %r" % (size,))
    if not is_prime(size):
        raise ValueError("ring size %d is not prime (Maglev needs a prime size, e.g. 65537)" % size)
    try:
        items = list(reals)
    except TypeError:
        raise ValueError(
            "reals must be a sequence of (key, weight) pairs, got %r" % (reals,)
        ) from None
    if not items:
        raise ValueError("no reals given: a ring needs at least one real with weight > 0")
    seen = {}
    for idx, item in enumerate(items):
        try:
            key, weight = item
        except (TypeError, ValueError):
            raise ValueError(
                "reals[%d] must be a (key, weight) pair, got %r" % (idx, item)
            ) from None
        if not isinstance(key, str) or not key:
            raise ValueError("reals[%d]: key must be a non-empty string, got %r" % (idx, key))
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("reals[%d]: key %r is not encodable as UTF-8" % (idx, key)) from None
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise ValueError(
                "reals[%d] (%s): weight must be an integer, got %r" % (idx, key, weight)
            )
        if weight < 0:
            raise ValueError("reals[%d] (%s): weight must be >= 0, got %d" % (idx, key, weight))
        if key in seen:
            raise ValueError("duplicate real %r: reals[%d] and reals[%d]" % (key, seen[key], idx))
        seen[key] = idx
    if not any(weight for _unused, weight in items):
        raise ValueError("all weights are zero: a ring needs at least one real with weight > 0")
    return items


def _positions(reals, size):
    """(back, ring) for build_ring and build_ring_u32: ``back`` the index in ``reals`` of each real
    with a weight, in canonical (key) order, and ``ring`` per slot a position in ``back``."""
    items = _validate(reals, size)
    active = sorted(
        (key.encode("utf-8"), idx, weight) for idx, (key, weight) in enumerate(items) if weight
    )
    back = [idx for _unused, idx, _unused in active]
    if len(active) == 1:
        return back, array.array("H", bytes(2 * size))
    return back, _canonical_ring(tuple((items[idx][0], weight) for _unused, idx, weight in active), size)


def _low_bytes(ring):
    """The positions of ``ring`` (array('H'), every value < 256) as one byte each."""
    raw = ring.tobytes()
    return raw[0::2] if sys.byteorder == "little" else raw[1::2]


def build_ring(reals, size=DEFAULT_RING_SIZE):
    """Maglev ring for ``reals``, a sequence of (key, weight); returns a list of ``size`` ints.

    ``key`` is the real's canonical address string (the caller canonicalises, e.g.
    ``ipaddress.ip_address(a).compressed``: keys are hashed as given). Each slot holds the index
    of a real in ``reals``. A real with weight 0 gets no slots and does not change the others'.
    The result depends only on the set of (key, weight), not on the order of ``reals``.
    Raises ValueError naming the field for a non-prime size, an empty list, all weights zero, a
    negative or non-integer weight, a bad key or a duplicate key.
    """
    back, ring = _positions(reals, size)
    if max(back) < 256:
        # Every index fits in a byte: bytes.translate maps all slots in C, about twice as fast as
        # the comprehension below, which matters most on a cache hit.
        return list(_low_bytes(ring).translate(bytes(back).ljust(256, b"\0")))
    return [back[i] for i in ring]


def build_ring_u32(reals, values, size=DEFAULT_RING_SIZE):
    """The ring of build_ring(reals, size) with each slot's real replaced by ``values[real]``, as
    native-endian u32 bytes (what a ring map holds): the same bytes as
    ``array.array("I", [values[i] for i in build_ring(reals, size)]).tobytes()``.

    For up to 256 reals and values below 65536 (real indices of the balancer), the 65537 slots
    are mapped by two bytes.translate passes written into every fourth byte, in C, instead of one
    Python-level lookup per slot (about 3 ms per ring, 1.5 s of CPU for 512 new rings).
    """
    back, ring = _positions(reals, size)
    if len(values) != len(reals):
        raise ValueError("values must give one value per real (%d reals, %d values)" % (len(reals), len(values)))
    mapped = [values[idx] for idx in back]
    if len(back) > 256 or not all(0 <= v < 65536 for v in mapped):
        return array.array("I", [mapped[i] for i in ring]).tobytes()
    positions = _low_bytes(ring)
    lo = bytes(v & 0xFF for v in mapped).ljust(256, b"\0")
    hi = bytes(v >> 8 for v in mapped).ljust(256, b"\0")
    out = bytearray(4 * size)
    first = 0 if sys.byteorder == "little" else 3
    step = 1 if sys.byteorder == "little" else -1
    out[first::4] = positions.translate(lo)
    out[first + step::4] = positions.translate(hi)
    return bytes(out)


# Many VIPs usually share one pool of reals: a set-form call for hundreds of VIPs then builds each
# distinct ring once (a hit costs ~1 ms instead of ~30 ms). The cache lives only as long as the
# process, so its use of hash() cannot leak into the ring. 16 rings of 65537 slots: ~8 MB at most.
@functools.lru_cache(maxsize=16)
def _canonical_ring(active, size):
    """Ring over ``active``, (key, weight) pairs in canonical order, as positions in ``active``
    (an array of unsigned ints; shared by the cache, so never modified)."""
    prefs = [offset_skip(key, size) for key, _unused in active]
    weights = [weight for _unused, weight in active]
    kernel = _kernel_filler(size, len(active))
    if kernel is not None:
        try:
            return kernel.populate([o for o, _unused in prefs], [s for _unused, s in prefs],
                                   _turn_order_u16(weights, size))
        except maglev_kernel.Unavailable:
            pass
    return array.array("H" if len(active) <= 0xFFFF else "I", _populate(prefs, weights, size))


def _kernel_filler(size, n_reals):
    """maglev_kernel's Filler when it can build this ring (it gives the same ring as _populate,
    about eight times faster), else None. USE_KERNEL = False forces the Python loop (tests)."""
    if not USE_KERNEL or n_reals > maglev_kernel.MAX_REALS:
        return None
    return maglev_kernel.filler(size)


def ring_diff(old, new):
    """Slots whose value differs between two rings of equal size, as a list of (slot, new value).

    Values are compared as given: when the two rings were built from different ``reals`` lists,
    translate indices to a stable real id on both sides first, or a real that merely moved in the
    list shows up as changed.
    """
    if len(old) != len(new):
        raise ValueError(
            "rings differ in size (%d and %d): write the whole new ring" % (len(old), len(new))
        )
    return [(slot, b) for slot, (a, b) in enumerate(zip(old, new)) if a != b]
