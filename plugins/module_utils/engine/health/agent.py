"""The balancer agent: checks every real through the data path and makes the rings follow health.

    python3 -m xdplb_engine agent /etc/xdplb/balancer.json --health-state /var/lib/xdplb/health.json

It reads the state file the boot restore reads (the intent: VIPs, configured weights, health
settings), runs the checks plan.build() derives from it (Monitor, one selector), and keeps its
own findings in the health state file (healthstate). The kernel's rings get the configured
weights through health (overlay.effective: down -> 0, a drain stays 0, all down -> fail open).

Ansible and the agent never fight: both write rings with vips.ensure under the pin-root lock,
and under that lock the agent re-reads the state file (lb_vip keeps it before releasing the lock)
and writes its health file (lb_vip reads it there). So whichever runs second plans with what the
other just wrote.

Restart without flapping: the states are restored from the health file, checks start in them,
and the first apply finds nothing to change. Stop (SIGTERM, SIGINT): the file is written, the tc
filter removed, exit 0; the rings keep the weights they have. SIGHUP or a changed state file:
reload, keeping the states of the checks that remain; a bad new file is logged and the running
configuration kept. A bad configuration at start: ConfigError (exit 2 in the CLI).

With --announce-table (BGP, announce.py): the routes BIRD announces are the VIP addresses this
balancer can serve now: its XDP program attached to the interface and using the pinned maps, the
VIP in those maps, not every real of it down (a failing-open VIP is withdrawn: the other balancers
may still reach its reals), and no drain file. An address is kept while any of its VIPs can be served.
"""
import os
import signal
import time

from . import metrics, plan as checkplan
from .announce import Announcer, DEFAULT_DEVICE
from .monitor import Monitor
from ..balancer import balancer, healthstate, overlay, statefile, vips as vipsmod
from ..bpf import abi, hc, hc_abi, libbpf, program
from .. import daemon, hostnet
from ..errors import EngineError, StateFileError, show

WATCH_EVERY = 1.0      # state file changed? tc filter still ours? balancer loaded yet?
PERSIST_EVERY = 2.0    # the health file's "last" results, between state changes
RETRY_EVERY = 1.0      # an apply that failed (balancer not loaded, maps busy) is retried


class ConfigError(StateFileError):
    """The configuration cannot run: the CLI exits 2 with this message."""


def _stat(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def load(state_file, hc_object=None):
    """The agent's configuration from a balancer state file: {state (statefile.parse_state),
    hc_object, stat}; ConfigError naming the file and the field."""
    try:
        _raw, data = statefile.read_document(state_file)
        state = statefile.parse_state(data, restore=True)
    except EngineError as exc:
        raise ConfigError(exc.msg, field=exc.field, value=exc.value) from exc
    obj = hc_object or os.path.join(os.path.dirname(state["object"]), "hc_encap.o")
    if not os.path.isfile(obj):
        raise ConfigError("hc_object: %s is not a file (the balancer role installs hc_encap.o next to balancer.o; "
                          "or give --hc-object)" % obj, field="hc_object", value=obj)
    return {"state": state, "hc_object": obj, "stat": _stat(state_file)}


def sources(interface, cfg_lb=None):
    """({family: inner source}, {family: outer source}) on `interface`: checks leave from the
    interface's first address (the backend answers it directly); the outer header carries the
    balancer's configured source when it has one, as balancer.c's does."""
    addrs = hostnet.interface_addresses(interface)
    inner = {f: a[0] for f, a in addrs.items() if a}
    outer = dict(inner)
    if cfg_lb and cfg_lb.get("source_mode") == "balancer":
        for fam, key in ((4, "source_v4"), (6, "source_v6")):
            if cfg_lb.get(key):
                outer[fam] = cfg_lb[key]
    return inner, outer


def _family(addr):
    return 6 if ":" in addr else 4


class Agent:
    def __init__(self, state_file, health_path=healthstate.DEFAULT_PATH, hc_object=None, log=None,
                 clock=time.monotonic, wall=time.time, announce_table=None, announce_device=DEFAULT_DEVICE,
                 drain_file=None, metrics_listen=None, bird_socket=None):
        self.state_file, self.health_path, self.hc_object_arg = state_file, health_path, hc_object
        self.announcer = Announcer(announce_table, announce_device) if announce_table else None
        self.drain_file = drain_file
        self.in_maps = set()       # VIP keys the maps held at the last apply
        self.withdrawn = None      # why nothing is announced (logged once per reason), or None
        self.log = log or _stderr_log
        self.clock, self.wall = clock, wall
        self.cfg = None
        self.encap = None
        self.monitor = None
        self.checks = {}
        self.marks = {}
        self.fail_open = {}
        self.intent = (None, None)   # (stat, VIPs) of the state file read last
        self.dirty = False
        self.retry_at = None
        self.hup = False
        self.stop = False
        self.applies = 0
        self._persisted = -1
        self._waiting_logged = False
        self.max_reals = hc_abi.HC_MAX_REALS
        # Metrics (metrics.py): the exporter's thread reads metrics_view only, a view this loop
        # rebuilds (at most once a second) when something it shows changed.
        self.metrics_listen, self.bird_socket = metrics_listen, bird_socket
        self.exporter = None
        self.metrics_view = None
        self.metrics_dirty = False
        self.transitions = {}      # (VIP key, real) -> health changes since the agent started
        self.announced = set()     # VIP addresses routed for BIRD now

    # ------------------------------------------------------------------ configuration
    def start(self):
        """Load the configuration, attach the tc program, restore the states, first apply."""
        cfg = load(self.state_file, self.hc_object_arg)
        st = cfg["state"]
        try:
            encap = hc.Encap(cfg["hc_object"], st["interface"])
        except EngineError as exc:
            raise ConfigError(exc.msg, field=exc.field, value=exc.value) from exc
        try:
            doc = healthstate.read(self.health_path)
        except EngineError as exc:
            self.log("health state file unusable, starting with every real up: %s" % exc.msg)
            doc = healthstate.empty()
        self.max_reals = encap.max_entries
        try:
            checks, marks, wanted = self._prepare(cfg, {})
            encap.attach()
            encap.sync(wanted)
            if self.announcer is not None:
                self.announcer.open()
        except EngineError:
            encap.close()
            if self.announcer is not None:
                self.announcer.close()
            raise
        self.encap, self.cfg, self.checks, self.marks = encap, cfg, checks, marks
        self.intent = (cfg["stat"], st["vips"])
        self.monitor = Monitor({cid: c["spec"] for cid, c in checks.items()}, _restored(checks, doc),
                               on_change=self._on_change, clock=self.clock, wall=self.wall)
        self.fail_open = {k: v for k, v in (doc.get("vips") or {}).items() if v.get("fail_open")}
        down = sum(1 for s in self.monitor.snapshot().values() if s["state"] == "down")
        self.log("agent started: %d checks for %d VIPs on %s, %d down from the last run (%s)"
                 % (len(checks), len(st["vips"]), st["interface"], down, self.health_path))
        self.apply()
        if self.metrics_listen is not None:
            self.exporter = metrics.Exporter(self, self.metrics_listen, bird_socket=self.bird_socket)
            self.publish_metrics()
            try:
                self.exporter.start()
            except EngineError as exc:
                self.exporter = None
                raise ConfigError(exc.msg, field=exc.field, value=exc.value) from exc
            self.log("metrics on http://%s/metrics" % metrics.show_listen(self.metrics_listen))

    def _prepare(self, cfg, previous_marks):
        """(checks, marks, {mark: (outer source, real)}) of a configuration; ConfigError when a
        check has no source address."""
        st = cfg["state"]
        checks = checkplan.build(st["vips"])
        lb_cfg = None
        if balancer.is_loaded(st["pin_root"]):
            try:
                lb_cfg = balancer.info(st["pin_root"], stats=False)["config"]
            except EngineError:
                lb_cfg = None
        try:
            inner, outer = sources(st["interface"], lb_cfg)
        except EngineError as exc:
            raise ConfigError(exc.msg, field="interface", value=st["interface"]) from exc
        reals = {c["real"] for c in checks.values()}
        try:
            marks = checkplan.marks(reals, previous_marks, hc.MARK_BASE, self.max_reals)
        except ValueError as exc:
            raise ConfigError(str(exc), field="vips") from exc
        for cid, c in checks.items():
            needs = ((c["family"], inner, "to check it from"), (_family(c["real"]), outer, "for the outer header"))
            for fam, table, what in needs:
                if fam not in table:
                    raise ConfigError("%s: %s has no IPv%d address %s (check %s)" % (
                        "interface", st["interface"], fam, what, cid), field="interface", value=st["interface"])
            c["spec"] = dict(c["spec"], mark=marks[c["real"]], source=inner[c["family"]], device=st["interface"])
        wanted = {marks[r]: (outer[_family(r)], r) for r in reals}
        return checks, marks, wanted

    def reload(self, why):
        try:
            cfg = load(self.state_file, self.hc_object_arg)
            if cfg["state"]["interface"] != self.cfg["state"]["interface"]:
                raise ConfigError("interface: %s -> %s: the agent checks through one interface; restart it "
                                  "(systemctl restart xdplb-agent)" % (self.cfg["state"]["interface"],
                                                                       cfg["state"]["interface"]))
            checks, marks, wanted = self._prepare(cfg, self.marks)
        except EngineError as exc:
            self.log("reload (%s) failed, the running configuration stays: %s" % (why, exc.msg))
            self.cfg["stat"] = _stat(self.state_file)  # said once per change of the file
            return False
        old = set(self.checks)
        self.cfg, self.checks, self.marks = cfg, checks, marks
        self.encap.sync(wanted)
        self.monitor.update({cid: c["spec"] for cid, c in checks.items()},
                            _restored(checks, self._document()))
        self.metrics_dirty = True
        self.log("configuration reloaded (%s): %d checks for %d VIPs, %d new, %d gone"
                 % (why, len(checks), len(cfg["state"]["vips"]), len(set(checks) - old), len(old - set(checks))))
        self.dirty = True
        return True

    # ------------------------------------------------------------------ state changes
    def _on_change(self, cid, old, new, result, st):
        check = self.checks.get(cid)
        if check is None:
            return
        keys = sorted({key for key, _real in check["members"]})
        for member in check["members"]:
            self.transitions[member] = self.transitions.get(member, 0) + 1
        self.metrics_dirty = True
        runs = st["fail_run"] if new == "down" else st["ok_run"]
        self.log("real %s %s for %s: %s %s (%d %s in a row, was %s)" % (
            check["real"], new, _list(keys), cid, result.reason, runs,
            "failures" if new == "down" else "successes", old))
        self.dirty = True

    def _document(self):
        snap = self.monitor.snapshot() if self.monitor else {}
        reals = {}
        for cid, check in self.checks.items():
            st = snap.get(cid)
            if st is None:
                continue
            entry = {"state": st["state"], "since": st["since"], "check": cid, "reason": st["reason"],
                     "last": st["last"] or {}}
            for key, real in check["members"]:
                reals.setdefault(key, {})[real] = entry
        return {"version": healthstate.VERSION, "updated": self.wall(), "pid": os.getpid(),
                "vips": dict(self.fail_open), "reals": reals}

    def _current_intent(self):
        """The VIPs of the state file as it is now (re-read under the lock when it changed); the
        running configuration's when it cannot be read (the reload says why)."""
        stat = _stat(self.state_file)
        if stat == self.intent[0]:
            return self.intent[1]
        try:
            vips = load(self.state_file, self.hc_object_arg)["state"]["vips"]
        except EngineError:
            return self.intent[1]
        self.intent = (stat, vips)
        return vips

    def apply(self):
        """Rings through health, under the pin-root lock; the health file written under it."""
        pin_root = self.cfg["state"]["pin_root"]
        if not balancer.is_loaded(pin_root):
            if not self._waiting_logged:
                self.log("balancer not loaded under %s yet: checks run, rings are left alone until it is" % pin_root)
                self._waiting_logged = True
            self._write(self._document())
            self.retry_at = self.clock() + RETRY_EVERY
            self.in_maps = set()
            self.announce()
            return None
        self._waiting_logged = False
        found = {}  # the document written once the rings are in place

        def through_health(_vips, state):
            doc = self._document()
            wanted = [v for v in self._current_intent() if v["key"] in state.vips]
            found["in_maps"] = {v["key"] for v in wanted}
            eff, news = overlay.apply(wanted, doc, state)
            doc["vips"] = {k: {"fail_open": True, "reason": "every real is down (%s): the VIP keeps its last ring"
                               % ", ".join(s["down"])} for k, s in news.items() if s["fail_open"]}
            found["doc"] = doc
            return eff

        def written(_result):
            # Still under the lock, after the swaps: lb_vip reads the file under it too, and the
            # rings do not wait for a health file of megabytes (512 VIPs x 100 reals: ~0.1 s).
            self._write(found["doc"])
            self._fail_open_news(found["doc"]["vips"])

        try:
            result = vipsmod.ensure(pin_root, [], overlay=through_health, on_done=written)
        except EngineError as exc:
            self.log("applying health to the rings failed, retrying in %g s: %s" % (RETRY_EVERY, exc.msg))
            self.retry_at = self.clock() + RETRY_EVERY
            return None
        self.retry_at = None
        self.in_maps = found.get("in_maps", self.in_maps)
        self.announce()
        self.applies += 1
        changed = [c["key"] for c in result["vips"] if c.get("action", "unchanged") != "unchanged"]
        if result["changed"]:
            self.log("rings: %d VIPs rewritten (%s)" % (len(changed), _list(changed)))
        for line in result["repairs"]:
            self.log("repaired: %s" % line)
        return result

    # ------------------------------------------------------------------ BGP announcements
    def _not_serving(self):
        """Why this balancer can serve no VIP now, or None."""
        st = self.cfg["state"]
        if self.drain_file and os.path.exists(self.drain_file):
            return "drained (%s exists)" % self.drain_file
        if not balancer.is_loaded(st["pin_root"]):
            return "the balancer is not loaded under %s" % st["pin_root"]
        try:
            prog = program.attached(program.ifindex(st["interface"]))
            fd = libbpf.obj_get(os.path.join(st["pin_root"], abi.MAP_VIP_TABLE))
            try:
                pinned = libbpf.map_info(fd)["id"]
            finally:
                libbpf.close_fd(fd)
        except (EngineError, OSError) as exc:
            return "cannot look at the XDP program on %s: %s" % (st["interface"], describe_error(exc))
        if prog is None:
            return "no XDP program on %s" % st["interface"]
        if pinned not in prog["map_ids"]:
            return "the XDP program on %s (id %d, %s) is not the one using the maps pinned under %s" % (
                st["interface"], prog["prog_id"], prog["name"], st["pin_root"])
        return None

    def served(self):
        """(VIP addresses to announce, sorted; {address withdrawn: why}; why nothing is, or None)."""
        addresses = sorted({v["address"] for v in self.intent[1] or ()})
        why = self._not_serving()
        if why:
            return [], {a: why for a in addresses}, why
        keys = {}
        for vip in self.intent[1] or ():
            keys.setdefault(vip["address"], []).append(vip["key"])
        out, withdrawn = [], {}
        for addr in addresses:
            if any(k in self.in_maps and k not in self.fail_open for k in keys[addr]):
                out.append(addr)
            elif any(k in self.in_maps for k in keys[addr]):
                withdrawn[addr] = "every real down (%s failing open)" % _list([k for k in keys[addr] if k in self.fail_open])
            else:
                withdrawn[addr] = "not in the maps yet"
        return out, withdrawn, None if out else "no VIP can be served"

    def announce(self):
        if self.announcer is None:
            return
        addresses, withdrawn, why = self.served()
        try:
            added, removed = self.announcer.sync(addresses)
        except EngineError as exc:
            self.log("announcements: %s" % exc.msg)
            return
        if added or removed:
            self.announced = set(addresses)
            self.metrics_dirty = True
        for addr in removed:
            self.log("withdrawn %s: %s" % (addr, withdrawn.get(addr, "no VIP has this address any more")))
        if added:
            self.log("announced %s (table %d)" % (_list(added), self.announcer.table))
        if why and why != self.withdrawn and not removed:
            self.log("nothing announced: %s" % why)
        self.withdrawn = why

    def _fail_open_news(self, now):
        for key in sorted(set(now) - set(self.fail_open)):
            self.log("VIP %s FAILS OPEN: %s" % (key, now[key]["reason"]))
        for key in sorted(set(self.fail_open) - set(now)):
            self.log("VIP %s no longer fails open: a real is up again" % key)
        if set(now) != set(self.fail_open):
            self.metrics_dirty = True
        self.fail_open = now

    def _write(self, doc):
        try:
            healthstate.write(self.health_path, doc)
            self._persisted = self.monitor.completed if self.monitor else 0
        except EngineError as exc:
            self.log("cannot keep the health state: %s" % exc.msg)

    # ------------------------------------------------------------------ the loop
    def tick(self, max_wait=0.2):
        """One turn: run due checks, apply a state change, watch the file and the filter."""
        self.monitor.step(max_wait)
        now = self.clock()
        if self.dirty or (self.retry_at is not None and now >= self.retry_at):
            self.dirty = False
            self.apply()

    def watch(self):
        if self.hup:
            self.hup = False
            self.reload("SIGHUP")
        elif _stat(self.state_file) != self.cfg["stat"]:
            self.reload("the state file changed")
        if not self.encap.attached():
            self.encap.attach()
            self.log("repaired: the health-check filter on %s was gone, attached it again" % self.encap.interface)
        if self.monitor.completed != self._persisted:
            self._write(self._document())
        self.announce()
        if self.metrics_dirty and self.exporter is not None:
            self.publish_metrics()

    def publish_metrics(self):
        """A new view for the exporter's thread (one reference swapped: it never sees a half-built one)."""
        self.metrics_dirty = False
        self.metrics_view = metrics.health_view(self)

    def run(self):
        next_watch = self.clock() + WATCH_EVERY
        next_persist = self.clock() + PERSIST_EVERY
        while not self.stop:
            self.tick()
            now = self.clock()
            if self.hup or now >= next_watch:
                next_watch = now + WATCH_EVERY
                self.watch()
            if now >= next_persist:
                next_persist = now + PERSIST_EVERY
                if self.monitor.completed != self._persisted:
                    self._write(self._document())

    def close(self):
        """Keep the states, remove the filter (nothing else wraps marked sockets)."""
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None
        if self.monitor is not None:
            self._write(self._document())
            self.monitor.close()
            self.monitor = None
        if self.encap is not None:
            self.encap.detach()
            self.encap.close()
            self.encap = None
        if self.announcer is not None and self.announcer.fd is not None:
            self.announcer.close()
            self.log("withdrawn every VIP: the agent stops")


def _restored(checks, doc):
    """{check id: {state, since, reason, last}} from a health document: the entry that names the
    check, else the entry of any VIP the check serves (a check id changes with the lowest VIP)."""
    reals = (doc or {}).get("reals") or {}
    out = {}
    for cid, check in checks.items():
        found = [reals.get(key, {}).get(real) for key, real in check["members"]]
        found = [e for e in found if e]
        named = [e for e in found if e.get("check") == cid]
        entry = (named or found or [None])[0]
        if entry:
            out[cid] = {"state": entry["state"], "since": entry.get("since"), "reason": entry.get("reason", ""),
                        "last": entry.get("last") or None}
    return out


def _list(items, limit=8):
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items)
    return "%s and %d more" % (", ".join(items[:limit]), len(items) - limit)


_stderr_log = daemon.log_line


# ------------------------------------------------------------------ process
def running(pidfile):
    """The pid of the agent a pidfile names, when it runs; else None."""
    return daemon.running(pidfile, "agent")


daemonize = daemon.daemonize


def cmdline(pid):
    """The argv of process `pid` (bytes), or None when it is gone."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return None


def stop_process(pid, timeout=10.0):
    """SIGTERM `pid` and wait for it to go (it writes its states and withdraws its routes first);
    False when it is still there after `timeout` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cmdline(pid) is None:
            return True
        time.sleep(0.05)
    return False


def serve(agent):
    """Run `agent` until SIGTERM / SIGINT; SIGHUP reloads. Returns the exit status."""
    def stop(_signum, _frame):
        agent.stop = True

    def hup(_signum, _frame):
        agent.hup = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)
    try:
        agent.start()
        agent.run()
    finally:
        agent.close()
    agent.log("agent stopped (SIGTERM): states kept in %s, rings left as they are" % agent.health_path)
    return 0


def describe_error(exc):
    return exc.msg if isinstance(exc, EngineError) else show(exc)
