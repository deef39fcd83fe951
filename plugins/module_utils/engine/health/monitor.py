"""Runs checks on their intervals and turns results into up/down states (rise / fall).

One selector, no threads: a probe is a nonblocking socket (checks.py), due runs and deadlines
are two heaps, so the cost of a check does not grow with the number of checks. A check never
runs twice at once; a run that is still open when the next is due delays the next.

States: "up" after `rise` consecutive successes, "down" after `fall` consecutive failures; a
check starts in the state it is given (restored by the agent from its state file) or "up", so a
restarted agent neither flaps nor waits `rise` intervals before the rings may keep a real.
"""

import heapq
import selectors
import time
import zlib

from .checks import Probe


class Monitor:
    def __init__(self, specs, states=None, on_change=None, clock=time.monotonic, wall=time.time):
        self.clock, self.wall = clock, wall
        self.on_change = on_change or (lambda *args: None)
        self.sel = selectors.DefaultSelector()
        self.specs, self.states = {}, {}
        self.running = {}
        self._due, self._deadlines = [], []
        self.completed = 0
        self.update(specs, states)

    # ------------------------------------------------------------------ configuration
    def update(self, specs, states=None):
        """Take a new set of check specs {id: spec}; ids still present keep their state."""
        states = states or {}
        now = self.clock()
        for cid in [c for c in self.specs if c not in specs]:
            self._cancel(cid)
            del self.specs[cid]
            del self.states[cid]
        for cid, spec in specs.items():
            if spec.get("kind", "tcp") == "none":
                continue
            fresh = cid not in self.specs
            self.specs[cid] = spec
            if fresh:
                old = states.get(cid) or {}
                self.states[cid] = {"state": old.get("state", "up"), "since": old.get("since", self.wall()),
                                    "reason": old.get("reason", "not checked yet"), "ok_run": 0, "fail_run": 0,
                                    "last": old.get("last")}
                # Spread the first runs over one interval, the same way on every start.
                offset = (zlib.crc32(cid.encode()) % 1000) / 1000.0 * spec["interval"]
                heapq.heappush(self._due, (now + offset, cid))

    def _cancel(self, cid):
        probe = self.running.pop(cid, None)
        if probe is not None and probe.sock is not None:
            self.sel.unregister(probe.sock)
            probe.close()

    # ------------------------------------------------------------------ running
    def step(self, max_wait=0.5):
        """Start due checks, wait for socket events up to max_wait, finish what ended."""
        now = self.clock()
        while self._due and self._due[0][0] <= now:
            _t, cid = heapq.heappop(self._due)
            if cid in self.specs and cid not in self.running:
                self._start(cid, now)
        wait = max_wait
        if self._due:
            wait = min(wait, max(0.0, self._due[0][0] - now))
        if self._deadlines:
            wait = min(wait, max(0.0, self._deadlines[0][0] - now))
        if self.running:
            events = self.sel.select(wait)
        else:
            events = []
            if wait > 0:
                time.sleep(wait)
        now = self.clock()
        for key, _mask in events:
            cid = key.data
            probe = self.running.get(cid)
            if probe is None:
                continue
            probe.ready(now)
            self._settle(cid, probe, now)
        while self._deadlines and self._deadlines[0][0] <= now:
            _t, cid, probe = heapq.heappop(self._deadlines)
            if self.running.get(cid) is probe:
                probe.expire(now)
                self._settle(cid, probe, now)

    def run_for(self, seconds):
        end = self.clock() + seconds
        while self.clock() < end:
            self.step(min(0.5, max(0.0, end - self.clock())))

    def _start(self, cid, now):
        probe = Probe(self.specs[cid], now)
        self.running[cid] = probe
        if probe.done is None:
            self.sel.register(probe.sock, selectors.EVENT_WRITE, cid)
            heapq.heappush(self._deadlines, (probe.deadline, cid, probe))
        self._settle(cid, probe, now, registered=probe.done is None)

    def _settle(self, cid, probe, now, registered=True):
        if probe.done is None:
            want = selectors.EVENT_READ if probe.events() == "r" else selectors.EVENT_WRITE
            if self.sel.get_key(probe.sock).events != want:
                self.sel.modify(probe.sock, want, cid)
            return
        if registered:
            self.sel.unregister(probe.sock)
        probe.close()
        del self.running[cid]
        self.completed += 1
        spec = self.specs[cid]
        heapq.heappush(self._due, (max(probe.started + spec["interval"], now), cid))
        self._record(cid, probe.done)

    def _record(self, cid, result):
        st, spec = self.states[cid], self.specs[cid]
        at = self.wall()
        st["last"] = {"ok": result.ok, "at": at, "reason": result.reason}
        if result.ok:
            st["ok_run"], st["fail_run"] = st["ok_run"] + 1, 0
        else:
            st["ok_run"], st["fail_run"] = 0, st["fail_run"] + 1
        old = st["state"]
        if old == "down" and st["ok_run"] >= spec["rise"]:
            new = "up"
        elif old == "up" and st["fail_run"] >= spec["fall"]:
            new = "down"
        else:
            new = old
        if new != old:
            st["state"], st["since"], st["reason"] = new, at, result.reason
            self.on_change(cid, old, new, result, dict(st))
        elif result.ok == (new == "up"):
            st["reason"] = result.reason  # the newest result that agrees with the state

    def snapshot(self):
        """{id: {state, since, reason, last}} of every check."""
        return {cid: {k: st[k] for k in ("state", "since", "reason", "last")} for cid, st in self.states.items()}

    def close(self):
        for cid in list(self.running):
            self._cancel(cid)
        self.sel.close()
