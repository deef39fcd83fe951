# SPDX-License-Identifier: GPL-3.0-or-later
"""Maglev's population loop run by the kernel: a small BPF program, driven by BPF_PROG_TEST_RUN.

Why: filling a 65537-slot ring walks about 800,000 preference-list entries, 35-55 ms of pure
Python per ring on this project's test machine; the same walk runs in about 4 ms as BPF. Everything
else (hashes, turn order, validation) stays in maglev.py, whose ``_populate`` remains the reference:
a host that cannot load this program (no libbpf, kernel older than 5.5, no CAP_BPF) uses it and
builds the same ring, and tests compare both on hundreds of rings.

The program is assembled here from raw instructions rather than shipped as an object file, so the
engine needs no file on the host beyond itself. It runs as a socket filter (the most widely
available type that BPF_PROG_TEST_RUN runs) and never sees a packet: its whole state is one
BPF_F_MMAPABLE array entry, which Python fills and reads through mmap.

One run makes at most BUDGET probes, then stores where it is (turn, position) and returns: the
verifier must see every loop end, and a smaller budget verifies faster (about 13 ms at 32). One
test run with ``repeat`` makes many runs; Python repeats test runs until every turn is done.

No Ansible imports: this file runs inside modules and as part of the host-side CLI.
"""

import array
import errno
import os
import struct

from ..bpf import libbpf

BUDGET = 32           # probes per run (see above)
MAX_REALS = 4096      # reals per ring the entry has room for; more use the Python loop
FREE = 0xFFFF         # a free ring slot; real positions are < MAX_REALS
_BPF_F_MMAPABLE = 0x400

# Entry layout (native endianness, as Python writes it and the program reads it):
_T, _P, _MID = 0, 4, 8              # u32 next turn; u32 next probe position; u32 1 = turn t is mid-walk
_POS = 16                           # u32 pos[MAX_REALS]: next entry of each real's preference list
_SKIP = _POS + 4 * MAX_REALS        # u32 skip[MAX_REALS]
_ORDER = _SKIP + 4 * MAX_REALS      # u16 order[size]: the real taking each turn
# u16 ring[size] follows order: the real (its position in prefs) owning each slot, or FREE

# Instruction classes, sizes, modes and operations (linux/bpf.h, linux/bpf_common.h).
_LD, _LDX, _ST, _STX, _JMP, _ALU64 = 0x00, 0x01, 0x02, 0x03, 0x05, 0x07
_W, _H, _DW = 0x00, 0x08, 0x18
_IMM, _MEM = 0x00, 0x60
_K, _X = 0x00, 0x08
_ADD, _SUB, _AND, _LSH, _MOV = 0x00, 0x10, 0x50, 0x60, 0xB0
_JA, _JEQ, _JGE, _JNE, _JLT, _CALL, _EXIT = 0x00, 0x10, 0x30, 0x50, 0xA0, 0x80, 0x90
_PSEUDO_MAP_FD = 1
_FN_MAP_LOOKUP_ELEM = 1
_DONE, _MORE, _ERROR = 0, 1, 2      # the program's return values


class Unavailable(Exception):
    """The kernel loop cannot run here (or refused a ring): use maglev._populate."""


def _insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


class _Asm:
    """Just enough of an assembler for the program below: instructions and forward/back labels."""

    def __init__(self):
        self.out, self.labels, self.jumps = [], {}, []

    def label(self, name):
        self.labels[name] = len(self.out)

    def alu(self, op, dst, imm=None, src=None):
        self.out.append(_insn(_ALU64 | op | _K, dst, imm=imm) if src is None else _insn(_ALU64 | op | _X, dst, src))

    def load(self, size, dst, src, off=0):
        self.out.append(_insn(_LDX | _MEM | size, dst, src, off))

    def store(self, size, dst, off, src=None, imm=None):
        self.out.append(_insn(_STX | _MEM | size, dst, src, off) if imm is None
                        else _insn(_ST | _MEM | size, dst, 0, off, imm))

    def jump(self, op, label, dst=0, imm=0):
        self.jumps.append((len(self.out), op, dst, imm, label))
        self.out.append(None)

    def element(self, dst, index, shift, base=0):
        """dst = r6 + (index << shift) + base: the address of element ``index`` of the array at
        ``base`` in the entry (r6). A base above 32767 cannot be a load's 16-bit offset, so it is
        added here; base 0 leaves it to the load or store."""
        self.alu(_MOV, dst, src=index)
        self.alu(_LSH, dst, shift)
        self.alu(_ADD, dst, src=6)
        if base:
            self.alu(_ADD, dst, base)

    def ld_map_fd(self, dst, fd):
        self.out += [_insn(_LD | _DW | _IMM, dst, _PSEUDO_MAP_FD, 0, fd), _insn(0)]

    def call(self, fn):
        self.out.append(_insn(_JMP | _CALL, imm=fn))

    def exit(self, value):
        self.alu(_MOV, 0, value)
        self.out.append(_insn(_JMP | _EXIT))

    def code(self):
        for at, op, dst, imm, label in self.jumps:
            self.out[at] = _insn(_JMP | op | _K, dst, 0, self.labels[label] - at - 1, imm)
        return b"".join(self.out)


def _program(map_fd, size):
    """The head loop of maglev._populate over the entry of ``map_fd``, for a ring of ``size`` slots.

    Registers: r6 the entry, r7 the turn t, r8 the probe position p, r9 the probes left in this
    run, r1 the real i = order[t], r2 its skip s. Every index read from memory is checked against
    its array's bound before use: that is what lets the verifier accept the variable offsets.
    """
    ring = _ORDER + 2 * size
    a = _Asm()

    def real_of_turn():
        a.jump(_JGE, "done", 7, size)                 # every turn taken: the ring is full
        a.element(1, 7, 1, _ORDER)                    # i = order[t]
        a.load(_H, 1, 1)
        a.jump(_JGE, "error", 1, MAX_REALS)

    a.store(_W, 10, -4, imm=0)                        # key 0
    a.ld_map_fd(1, map_fd)
    a.alu(_MOV, 2, src=10)
    a.alu(_ADD, 2, -4)
    a.call(_FN_MAP_LOOKUP_ELEM)
    a.jump(_JEQ, "error", 0, 0)
    a.alu(_MOV, 6, src=0)
    a.load(_W, 7, 6, _T)
    a.alu(_MOV, 9, BUDGET)
    a.load(_W, 3, 6, _MID)
    a.jump(_JEQ, "turn", 3, 0)
    a.load(_W, 8, 6, _P)                              # resume turn t at the saved position
    real_of_turn()
    a.element(3, 1, 2, _SKIP)                         # s = skip[i]
    a.load(_W, 2, 3)
    a.jump(_JGE, "error", 2, size)
    a.jump(_JGE, "error", 8, size)
    a.jump(_JA, "probe")
    a.label("turn")                                   # a new turn starts at pos[i]
    real_of_turn()
    a.element(3, 1, 2, _POS)
    a.load(_W, 8, 3)
    a.load(_W, 2, 3, _SKIP - _POS)
    a.jump(_JGE, "error", 8, size)
    a.jump(_JGE, "error", 2, size)
    a.label("probe")
    a.jump(_JEQ, "save", 9, 0)
    a.alu(_SUB, 9, 1)
    a.element(3, 8, 1, ring)                          # ring[p]
    a.load(_H, 4, 3)
    a.jump(_JNE, "taken", 4, FREE)
    a.store(_H, 3, 0, src=1)                          # claim: ring[p] = i, pos[i] = p + s (mod size)
    a.alu(_ADD, 8, src=2)
    a.jump(_JLT, "claimed", 8, size)
    a.alu(_SUB, 8, size)
    a.label("claimed")
    a.element(3, 1, 2)
    a.store(_W, 3, _POS, src=8)
    a.alu(_ADD, 7, 1)
    # Forget t's lower bound: otherwise it rises every turn and no two verifier states are alike,
    # which makes verification exponential in BUDGET.
    a.alu(_AND, 7, 0x7FFFFFFF)
    a.jump(_JA, "turn")
    a.label("taken")                                  # p = p + s (mod size)
    a.alu(_ADD, 8, src=2)
    a.jump(_JLT, "probe", 8, size)
    a.alu(_SUB, 8, size)
    a.jump(_JA, "probe")
    a.label("save")                                   # budget spent: keep (t, p) for the next run
    a.store(_W, 6, _T, src=7)
    a.store(_W, 6, _P, src=8)
    a.store(_W, 6, _MID, imm=1)
    a.exit(_MORE)
    a.label("done")
    a.store(_W, 6, _T, src=7)
    a.store(_W, 6, _MID, imm=0)
    a.exit(_DONE)
    a.label("error")
    a.exit(_ERROR)
    return a.code()


class Filler:
    """The program and its entry for rings of one size, in one process."""

    def __init__(self, size):
        self.size = size
        self.value_size = (_ORDER + 4 * size + 7) // 8 * 8
        self._map = libbpf.Map.create(libbpf.BPF_MAP_TYPE_ARRAY, 4, self.value_size, 1, name="maglev_fill",
                                      map_flags=_BPF_F_MMAPABLE)
        try:
            self._fd = libbpf.prog_load(libbpf.BPF_PROG_TYPE_SOCKET_FILTER, "maglev_fill",
                                        _program(self._map.fd, size))
            self._mem = self._map.mmap()
        except BaseException:
            self.close()
            raise

    def populate(self, offsets, skips, order):
        """Per slot, the position in ``offsets`` of the real owning it (array('H')); ``order`` is
        the turn order as native u16 bytes, one per slot."""
        size, mem = self.size, self._mem
        n = len(offsets)
        ring = _ORDER + 2 * size
        mem[0:_POS] = bytes(_POS)
        mem[_POS:_POS + 4 * n] = array.array("I", offsets).tobytes()
        mem[_SKIP:_SKIP + 4 * n] = array.array("I", skips).tobytes()
        mem[_ORDER:ring] = order
        mem[ring:ring + 2 * size] = b"\xff" * (2 * size)
        # A turn walks at most ``size`` probes, so each test run below ends at least 16 turns on.
        repeat = max(1, 16 * size // BUDGET)
        done = 0
        while done < size:
            try:
                result = libbpf.prog_test_run(self._fd, bytes(64), repeat=repeat, data_out_size=64)
            except libbpf.BpfError as exc:
                if exc.errno == errno.EINTR:  # a signal arrived: the entry keeps where it stopped
                    continue
                raise Unavailable(str(exc)) from exc
            if result.retval == _ERROR:
                raise Unavailable("the kernel Maglev loop stopped on an out-of-range value")
            turn = struct.unpack_from("=I", mem, _T)[0]
            if turn <= done:
                raise Unavailable("the kernel Maglev loop made no progress")
            done = turn
        return array.array("H", mem[ring:ring + 2 * size])

    def close(self):
        if getattr(self, "_mem", None) is not None:
            self._mem.close()
            self._mem = None
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None
        self._map.close()


_fillers = {}  # (pid, size) -> Filler, or the reason it cannot be made


def filler(size):
    """This process's Filler for rings of ``size`` slots, or None when the kernel cannot run it.

    Keyed by process: forked ring builders must not share one entry, so a child makes its own.
    """
    key = (os.getpid(), size)
    if key not in _fillers:
        for stale in [k for k in _fillers if k[0] != key[0]]:
            del _fillers[stale]  # the parent's: its fds stay with the parent
        try:
            _fillers[key] = Filler(size)
        except (libbpf.BpfError, OSError, ValueError) as exc:
            _fillers[key] = str(exc)
    found = _fillers[key]
    return found if isinstance(found, Filler) else None


def unavailable_reason(size):
    """Why filler(size) is None in this process (for tests and diagnostics), else None."""
    filler(size)
    found = _fillers[(os.getpid(), size)]
    return None if isinstance(found, Filler) else found
