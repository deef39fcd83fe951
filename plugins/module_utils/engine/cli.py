"""The engine's command line, for operators and for boot-time restore without Ansible.

    python3 -m xdplb_engine [--pin-root DIR] status [--interface IF] [--health-state FILE] [--state-file FILE] [--json]
    python3 -m xdplb_engine [--pin-root DIR] stats [--json]
    python3 -m xdplb_engine restore STATE_FILE [--check]
    python3 -m xdplb_engine backend-restore STATE_FILE [--check]
    python3 -m xdplb_engine agent STATE_FILE [--health-state FILE] [--announce-table N [--drain-file F]]
                                  [--metrics-listen ADDR:PORT [--bird-socket PATH]]
                                             [--daemon --pidfile F --log-file F]
    python3 -m xdplb_engine backend-exporter STATE_FILE --listen ADDR:PORT [--daemon --pidfile F --log-file F]
    python3 -m xdplb_engine [--pin-root DIR] save STATE_FILE [--object O] [--interface IF] [--mode M]

The package runs under any name (copied to /usr/local/lib/xdplb/xdplb_engine, or inside the
collection), so everything here uses relative imports and stdlib only.

Exit codes: 0 done; 1 the kernel or the host refused (message says which object and why);
2 bad usage or an invalid state file (message names the field); 3 (status) nothing loaded or
no program attached.
"""
import argparse
import json
import os
import signal
import sys
import time

from . import daemon, document, netlink
from .backend import backend_restore, metrics as backend_metrics
from .balancer import balancer, healthstate, statefile, vips
from .health import agent, announce
from .bpf import libbpf, program
from .errors import EngineError, StateFileError
from .balancer.statefile import STATE_VERSION, parse_state

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_DOWN = 0, 1, 2, 3


class UsageError(StateFileError):
    """Bad usage or an invalid state file: exit 2, nothing changed."""


def _prog():
    return os.path.basename(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ state file
def load_state(path):
    """Read and validate a whole state file; raises UsageError (exit 2) naming the field."""
    _raw, data = statefile.read_document(path)
    try:
        return parse_state(data)
    except StateFileError as exc:
        raise UsageError("%s: %s" % (path, exc.msg), field=exc.field, value=exc.value)


def write_state(path, state):
    """Atomic write, mode 0600: the file names every backend of the service."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    data = json.dumps(state, indent=2, sort_keys=True) + "\n"
    document.atomic_write(os.path.abspath(path), data.encode("utf-8"), 0o600, sync=True)


def state_vip(spec):
    return {"address": spec["address"], "port": spec["port"], "protocol": spec["protocol"],
            "flags": spec["flags"], "icmp_echo": spec["icmp_echo"],
            "reals": [{"address": r["address"], "weight": 1 if r["weight"] is None else r["weight"]}
                      for r in spec["reals"]]}


# ------------------------------------------------------------------ commands
class RolledBack(EngineError):
    """A step after the attach failed and the interface was put back as it was: exit 1."""


def _needs_netlink(cfg):
    # Without both outer sources, the config step reads the interface's addresses over netlink.
    return cfg is not None and not (cfg["source_v4"] and cfg["source_v6"])


def preflight(state, timeout=3.0):
    """Everything the restore's steps need, checked before the first change (a boot unit must not
    stop half way, with a program and no VIPs on the NIC): the object, the interface, libbpf,
    pyroute2 when the config step needs it, the pin root; then the config is resolved (gateway
    MAC, source addresses). Returns the resolved (config, info), or None without a config."""
    program.check_object(state["object"])
    program.ifindex(state["interface"])
    try:
        libbpf._L()  # loads libbpf.so.1 (or says what to install)
    except libbpf.BpfError as exc:
        raise EngineError("libbpf: %s" % exc, field="libbpf") from exc
    program.check_pin_root(state["pin_root"], check_mode=True)
    cfg = state["config"]
    if cfg is None:
        return None
    if _needs_netlink(cfg) and not netlink.HAS_PYROUTE2:
        raise EngineError(
            "config: this Python (%s) cannot import pyroute2, which the config step needs to read the addresses "
            "of %s (the state file gives neither source_v4 nor source_v6); install it for this interpreter "
            "(Debian: apt install python3-pyroute2) or run the restore with a Python that has it (the roles' "
            "balancer_engine_python variable sets the boot unit's interpreter)"
            % (sys.executable, cfg["interface"]), field="config", value=sys.executable)
    return balancer.resolve_config(cfg, timeout)


def _undo(state, prog, cfg_res):
    """Put the interface, the config and the pins back as they were before this restore; returns
    (what was done, whether the maps this run pinned were removed)."""
    done = []
    created = [n for n, m in prog.get("maps", {}).items() if not m["reused"]]
    fresh = prog["action"] == "attached" and created
    if cfg_res is not None and cfg_res["changed"] and not fresh:
        with balancer.Balancer(state["pin_root"]) as bal:
            bal.write_config(cfg_res["previous"])
        done.append("config put back")
    if prog["action"] == "attached":
        program.detach(state["interface"], pin_root=state["pin_root"])
        done.append("program detached (there was none before)")
    elif prog["action"] == "replaced":
        program.rollback(state["interface"], pin_root=state["pin_root"])
        done.append("previous program %s (id %s) attached again" % (prog["previous"]["name"], prog["previous"]["prog_id"]))
    if fresh:
        # Pinned by this run, held by nothing else now: the pin root is left as it was found.
        for name in created + list(balancer.CTL_MAPS):
            path = os.path.join(state["pin_root"], name)
            if os.path.exists(path):
                os.unlink(path)
        if any(a.startswith("created ") for a in prog["actions"]) and not os.listdir(state["pin_root"]):
            os.rmdir(state["pin_root"])
        done.append("maps pinned by this run removed")
    return done, bool(fresh)


def restore(state, check_mode=False, out=sys.stdout, timeout=3.0):
    """Load + attach, config, VIPs: what the boot unit runs. Returns the three results.

    All or nothing: preflight() checks what the steps need before the attach; a failure after it
    puts back the previous program (or detaches), the previous config and the maps this run pinned,
    and raises RolledBack."""
    try:
        resolved = preflight(state, timeout)
    except EngineError as exc:
        raise EngineError("%s (checked before any change: nothing was changed)" % exc.msg,
                          field=exc.field, value=exc.value) from exc
    prog = program.ensure(state["object"], state["interface"], mode=state["mode"], pin_root=state["pin_root"],
                          program=state["program"], check_mode=check_mode)
    out.write("program: %s %s on %s (%s XDP, tag %s)\n" % (prog["program"], prog["action"], state["interface"],
                                                           prog.get("mode") or "auto", prog["tag"]))
    cfg_res = vip_res = None
    if not balancer.is_loaded(state["pin_root"]):
        # Check mode before the first load: there are no maps to compare with yet.
        out.write("config and vips: all would be written (nothing is loaded yet)\n")
    else:
        try:
            if state["config"] is not None:
                cfg_res = balancer.ensure_config(state["pin_root"], state["config"], check_mode=check_mode,
                                                 timeout=timeout, resolved=resolved)
                out.write("config: %s (gateway MAC %s)\n" % ("changed" if cfg_res["changed"] else "unchanged",
                                                             cfg_res["config"]["gateway_mac"]))
            vip_res = vips.ensure(state["pin_root"], state["vips"], purge=state["purge"],
                                  ring_size=state["ring_size"], check_mode=check_mode)
        except (EngineError, libbpf.BpfError, OSError) as exc:
            if check_mode:
                raise
            msg = getattr(exc, "msg", None) or str(exc)
            try:
                undone, removed = _undo(state, prog, cfg_res)
            except (EngineError, libbpf.BpfError, OSError) as undo_exc:
                raise EngineError("%s; rolling back failed too: %s" % (msg, getattr(undo_exc, "msg", None) or undo_exc))
            if getattr(exc, "partial", False) and not removed:
                undone.append("the VIP maps are partly written (run the restore again: it repairs them)")
            raise RolledBack("%s; rolled back: %s" % (msg, ", ".join(undone) or "nothing had changed"),
                             field=getattr(exc, "field", None))
        s = vip_res["summary"]
        out.write("vips: %d added, %d changed, %d removed, %d unchanged; %d rings written\n"
                  % (s["added"], s["changed"], s["removed"], s["unchanged"], s["rings_written"]))
        for r in vip_res["repairs"]:
            out.write("repaired: %s\n" % r)
    for w in prog["warnings"] + (cfg_res or {}).get("warnings", []) + (vip_res or {}).get("warnings", []):
        out.write("warning: %s\n" % w)
    return prog, cfg_res, vip_res


def _when(stamp):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp)) if isinstance(stamp, (int, float)) else "?"


def real_line(real):
    """One real of an annotated VIP (healthstate.annotate): ``10.30.1.2 w0 (configured 1) down since
    2026-12-07 12:00:01 UTC: <the check's reason>``."""
    text = "%s w%s" % (real["address"], real["weight"])
    if real.get("configured_weight") is not None:
        text += " (configured %s)" % real["configured_weight"]
    health = real.get("health") or {}
    state = health.get("state", "unknown")
    if state == "down":
        return "%s down since %s: %s" % (text, _when(health.get("since")), health.get("reason") or "no reason given")
    last = health.get("last") or {}
    if state == "up" and last.get("ok") is False:
        return "%s up (last check failed: %s)" % (text, last.get("reason") or "no reason given")
    return "%s %s" % (text, state)


def vip_lines(vip):
    """The lines of one VIP of balancer.info(); with health (annotated), one line per real and a
    loud FAIL OPEN when every real in its ring is down."""
    flags = (" [%s]" % ",".join(vip["flags"])) if vip["flags"] else ""
    ring = "" if vip["ring"]["present"] else " NO RING"
    if "fail_open" not in vip:
        return ["  %s%s%s: %s" % (vip["key"], flags, ring, ", ".join("%s w%s" % (r["address"], r["weight"]) for r in vip["reals"]))]
    loud = " FAIL OPEN: every real in its ring is down, the last ring is kept" if vip["fail_open"] else ""
    return ["  %s%s%s:%s" % (vip["key"], flags, ring, loud)] + ["    " + real_line(r) for r in vip["reals"]]


def status(pin_root, interface=None, as_json=False, out=sys.stdout, health_state=None, state_file=None):
    attached = None
    if interface:
        attached = program.attached(program.ifindex(interface))
    if not balancer.is_loaded(pin_root):
        if as_json:
            out.write(json.dumps({"loaded": False, "pin_root": pin_root, "program": attached}) + "\n")
        else:
            out.write("balancer: not loaded (no maps pinned under %s)\n" % pin_root)
        return EXIT_DOWN
    data = healthstate.annotate_from(balancer.info(pin_root, stats=False), health_state, state_file)
    data["program"] = attached
    if as_json:
        out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        cfg = data["config"]
        if interface:
            out.write("program: %s\n" % ("none attached to %s" % interface if attached is None else
                                         "%s id %d tag %s, %s XDP on %s" % (attached["name"], attached["prog_id"],
                                                                            attached["tag"], attached["mode"], interface)))
        out.write("pin root: %s\n" % pin_root)
        out.write("config: if_mac %s, gateway %s, source %s (v4 %s, v6 %s), max packet %s\n"
                  % (cfg["if_mac"], cfg["gateway_mac"], cfg["source_mode"], cfg["source_v4"], cfg["source_v6"],
                     cfg["max_packet_size"] or "unlimited"))
        lim = data["limits"]
        out.write("vips: %d of %d, reals: %d of %d\n" % (lim["vips"], lim["max_vips"], lim["reals"], lim["max_reals"]))
        for v in data["vips"]:
            out.write("".join(line + "\n" for line in vip_lines(v)))
    return EXIT_OK if (not interface or attached is not None) else EXIT_DOWN


def stats(pin_root, as_json=False, out=sys.stdout):
    data = balancer.info(pin_root, stats=True)
    if as_json:
        out.write(json.dumps({k: data[k] for k in ("global", "vips", "reals")}, indent=2, sort_keys=True) + "\n")
        return EXIT_OK
    g = data["global"]
    out.write("global: " + ", ".join("%s %d" % (k, g[k]) for k in g) + "\n")
    for v in data["vips"]:
        out.write("%s: %d packets, %d bytes\n" % (v["key"], v["stats"]["packets"], v["stats"]["bytes"]))
        for r in v["reals"]:
            out.write("  %s (weight %s): %d packets, %d bytes (all VIPs)\n"
                      % (r["address"], r["weight"], r["stats"]["packets"], r["stats"]["bytes"]))
    return EXIT_OK


def save(path, pin_root, obj=None, interface=None, mode=None, out=sys.stdout):
    """Write what the kernel holds now as a state file (merging object/interface from an old one)."""
    old = {}
    if os.path.exists(path):
        old = load_state(path)
    data = balancer.info(pin_root, stats=False)
    state = {"version": STATE_VERSION, "object": obj or old.get("object"), "interface": interface or old.get("interface"),
             "mode": mode or old.get("mode") or "auto", "pin_root": pin_root, "purge": True,
             "vips": [state_vip(v) for v in data["vips"]]}
    if old.get("program"):
        state["program"] = old["program"]
    for key in ("object", "interface"):
        if not state[key]:
            raise UsageError("--%s: required (no earlier state file at %s to take it from)" % (key, path), field=key)
    cfg = data["config"]
    state["config"] = {"gateway_mac": cfg["gateway_mac"], "source_mode": cfg["source_mode"],
                       "source_v4": cfg["source_v4"], "source_v6": cfg["source_v6"],
                       "max_packet_size": cfg["max_packet_size"]}
    write_state(path, state)
    out.write("saved %d VIPs to %s\n" % (len(state["vips"]), path))
    return EXIT_OK


def run_agent(args, out=sys.stdout, err=sys.stderr):
    """The agent in the foreground (systemd), or detached with --daemon: then an agent the pidfile
    names already running is asked to reload (SIGHUP) instead, and the output says which."""
    if args.announce_table is not None:
        try:
            announce.Announcer(args.announce_table, args.announce_device)  # its checks, before anything starts
        except EngineError as exc:
            raise UsageError(exc.msg, field=exc.field) from exc
    elif args.drain_file:
        raise UsageError("--drain-file needs --announce-table (it withdraws the announcements)", field="drain_file")
    elif args.bird_socket:
        raise UsageError("--bird-socket needs --announce-table (the sessions are those of the announcements)",
                         field="bird_socket")
    listen = None
    if args.metrics_listen:
        try:
            listen = daemon.parse_listen(args.metrics_listen, "--metrics-listen")
        except EngineError as exc:
            raise UsageError(exc.msg, field="metrics_listen") from exc
    if args.daemon:
        if not args.pidfile or not args.log_file:
            raise UsageError("--daemon needs --pidfile and --log-file", field="pidfile")
        pid = agent.running(args.pidfile)
        restarted = False
        if pid and daemon.arguments(pid, "agent") != daemon.arguments(os.getpid(), "agent"):
            # Started with other arguments (metrics, BGP): a reload would keep them, so it is
            # replaced, as systemd restarts the unit when its ExecStart changed. Its close()
            # writes the health file and withdraws its routes first: more time than an exporter.
            if not daemon.terminate(pid, timeout=10.0):
                raise EngineError("the running agent (pid %d) has other arguments and did not stop on SIGTERM" % pid)
            restarted = True
        elif pid:
            os.kill(pid, signal.SIGHUP)
            out.write("running %d\n" % pid)
            return EXIT_OK
        # Checked here, in the foreground: a bad configuration fails the caller, not only the log.
        agent.load(args.state_file, args.hc_object)
        if listen is not None:
            # Refused here, in the foreground, rather than in the daemon's log only.
            daemon.http_server(None, *listen).server_close()
        out.flush()
        started = agent.daemonize(args.pidfile, args.log_file)
        if started is None:
            raise EngineError("the agent did not start: see %s" % args.log_file)
        if started:
            out.write("%s %s\n" % ("restarted" if restarted else "started", started))
            return EXIT_OK
    try:
        return agent.serve(agent.Agent(args.state_file, args.health_state, args.hc_object,
                                       announce_table=args.announce_table, announce_device=args.announce_device,
                                       drain_file=args.drain_file, metrics_listen=listen,
                                       bird_socket=args.bird_socket))
    except agent.ConfigError as exc:
        err.write("%s agent: error: %s\n" % (_prog(), exc.msg))
        return EXIT_USAGE


class _Stop(BaseException):
    """SIGTERM / SIGINT: unwinds serve_forever() in the main thread, where the handler runs (not an
    Exception: socketserver would take one raised during a request for that request's error)."""


EXPORTER = "backend-exporter"


def stop_backend_exporter(args, out=sys.stdout):
    """--stop: end the daemon the pidfile names ("stopped PID", "not running"); with --check
    only say what would be done ("would stop PID")."""
    if not args.pidfile:
        raise UsageError("--stop needs --pidfile", field="pidfile")
    pid = daemon.running(args.pidfile, EXPORTER)
    if not pid:
        out.write("not running\n")
        return EXIT_OK
    if args.check:
        out.write("would stop %d\n" % pid)
        return EXIT_OK
    if not daemon.terminate(pid):
        raise EngineError("the exporter %d did not stop within 5 s of SIGTERM" % pid)
    if os.path.exists(args.pidfile):
        os.unlink(args.pidfile)
    out.write("stopped %d\n" % pid)
    return EXIT_OK


def run_backend_exporter(args, argv, out=sys.stdout):
    """The backend's /metrics in the foreground (systemd), or detached with --daemon. A daemon the
    pidfile names that runs with the same arguments is left alone (it reads the state file at every
    scrape: nothing to reload) and the output says "running PID"; one with other arguments (a new
    port), or any with --replace (the role's engine files changed), is stopped and replaced:
    "restarted PID"."""
    if args.stop:
        return stop_backend_exporter(args, out)
    if not args.listen:
        raise UsageError("--listen: required (ADDRESS:PORT, such as 127.0.0.1:9438)", field="listen")
    try:
        address, port = daemon.parse_listen(args.listen, "--listen")
    except EngineError as exc:
        raise UsageError(exc.msg, field=exc.field, value=exc.value) from exc
    verb = "started"
    if args.daemon:
        if not args.pidfile or not args.log_file:
            raise UsageError("--daemon needs --pidfile and --log-file", field="pidfile")
        pid = daemon.running(args.pidfile, EXPORTER)
        wanted = [a for a in argv[argv.index(EXPORTER) + 1:] if a != "--replace"]
        if pid and not args.replace and [a for a in daemon.arguments(pid, EXPORTER) or () if a != "--replace"] == wanted:
            out.write("running %d\n" % pid)
            return EXIT_OK
        if pid:
            if not daemon.terminate(pid):
                raise EngineError("the exporter %d (other arguments) did not stop within 5 s of SIGTERM" % pid)
            verb = "restarted"
    # Bound before detaching: a missing prometheus_client or a port in use fails the caller.
    server = daemon.http_server(backend_metrics.app(backend_metrics.registry(args.state_file)), address, port)
    try:
        if args.daemon:
            out.flush()
            started = daemon.daemonize(args.pidfile, args.log_file)
            if started is None:
                raise EngineError("the exporter did not start: see %s" % args.log_file)
            if started:
                out.write("%s %s\n" % (verb, started))
                return EXIT_OK

        def stop(_signum, _frame):
            raise _Stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        where = "[%s]:%d" % (address, port) if ":" in address else "%s:%d" % (address, port)
        daemon.log_line("backend exporter on http://%s/metrics for %s" % (where, args.state_file))
        try:
            server.serve_forever()
        except _Stop:
            daemon.log_line("backend exporter stopped (SIGTERM)")
        return EXIT_OK
    finally:
        server.server_close()


# ------------------------------------------------------------------ main
def _parser():
    p = argparse.ArgumentParser(prog="python3 -m %s" % _prog(),
                                description="xdplb balancer engine: status, counters, boot-time restore.",
                                epilog="exit codes: 0 ok, 1 failed, 2 bad usage or state file, 3 not loaded/attached")
    p.add_argument("--pin-root", default=balancer.DEFAULT_PIN_ROOT, help="bpffs directory of the pinned maps")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("status", help="program, config and VIPs")
    s.add_argument("--interface", help="also show the XDP program attached to this interface")
    s.add_argument("--health-state", metavar="FILE", help="also show each real's health from the agent's file "
                   "(%s by default for the agent)" % healthstate.DEFAULT_PATH)
    s.add_argument("--state-file", metavar="FILE", help="also show each real's configured weight from this balancer "
                   "state file (/etc/xdplb/balancer.json for the role)")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("stats", help="per-VIP, per-real and global counters (summed over CPUs)")
    s.add_argument("--json", action="store_true")
    s = sub.add_parser("restore", help="load, attach and configure from a state file")
    s.add_argument("state_file")
    s.add_argument("--check", action="store_true", help="report what would change, change nothing")
    s.add_argument("--resolve-timeout", type=float, default=3.0, help="seconds to wait for the gateway's MAC")
    s = sub.add_parser("backend-restore", help="restore a backend from its state file (tunnels, BPF decap, VIPs on lo, "
                       "rp_filter, arp_ignore, arp_announce, advmss)")
    s.add_argument("state_file")
    s.add_argument("--check", action="store_true", help="report what would change, change nothing")
    s = sub.add_parser("agent", help="health checks through the data path; the rings follow health (runs until SIGTERM)")
    s.add_argument("state_file", help="the balancer state file the restore reads")
    s.add_argument("--health-state", default=healthstate.DEFAULT_PATH, help="the agent's own state (default %(default)s)")
    s.add_argument("--hc-object", help="hc_encap.o (default: next to the state file's object)")
    s.add_argument("--announce-table", type=int, metavar="N",
                   help="keep a route per VIP address this balancer can serve in kernel table N, for BIRD to announce")
    s.add_argument("--announce-device", default=announce.DEFAULT_DEVICE,
                   help="the agent's TUN device those routes go through (default %(default)s)")
    s.add_argument("--drain-file", metavar="FILE", help="while FILE exists, announce nothing (balancer drain)")
    s.add_argument("--metrics-listen", metavar="ADDR:PORT",
                   help="serve Prometheus metrics on http://ADDR:PORT/metrics ([IPv6]:PORT for IPv6)")
    s.add_argument("--bird-socket", metavar="PATH", help="BIRD's control socket: BGP session states in the metrics")
    s.add_argument("--daemon", action="store_true", help="detach (hosts without systemd); needs --pidfile, --log-file")
    s.add_argument("--pidfile")
    s.add_argument("--log-file")
    s = sub.add_parser("backend-exporter", help="the backend's Prometheus metrics (decap counters, the doctor's "
                       "findings) over HTTP at /metrics (runs until SIGTERM)")
    s.add_argument("state_file", nargs="?", default=backend_metrics.DEFAULT_STATE_FILE,
                   help="the backend state file the boot restore reads (default %(default)s)")
    s.add_argument("--listen", metavar="ADDR:PORT", help="such as 127.0.0.1:9438 or [::1]:9438")
    s.add_argument("--daemon", action="store_true", help="detach (hosts without systemd); needs --pidfile, --log-file")
    s.add_argument("--pidfile")
    s.add_argument("--log-file")
    s.add_argument("--replace", action="store_true", help="with --daemon: restart one that runs (new engine files)")
    s.add_argument("--stop", action="store_true", help="stop the daemon --pidfile names")
    s.add_argument("--check", action="store_true", help="with --stop: only say whether it would stop one")
    s = sub.add_parser("save", help="write the running configuration as a state file (mode 0600)")
    s.add_argument("state_file")
    s.add_argument("--object")
    s.add_argument("--interface")
    s.add_argument("--mode", choices=program.MODES)
    return p


def main(argv=None, out=sys.stdout, err=sys.stderr):
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_usage(err)
        return EXIT_USAGE
    name = _prog()
    try:
        if args.command == "status":
            return status(args.pin_root, args.interface, args.json, out, args.health_state, args.state_file)
        if args.command == "stats":
            return stats(args.pin_root, args.json, out)
        if args.command == "save":
            return save(args.state_file, args.pin_root, args.object, args.interface, args.mode, out)
        if args.command == "agent":
            return run_agent(args, out, err)
        if args.command == "backend-exporter":
            return run_backend_exporter(args, sys.argv[1:] if argv is None else list(argv), out)
        if args.command == "backend-restore":
            changes = backend_restore.restore(backend_restore.load_state(args.state_file), check_mode=args.check)
            out.write("backend: %s\n" % ("; ".join(changes) if changes else "nothing to change"))
            return EXIT_OK
        state = load_state(args.state_file)
        restore(state, check_mode=args.check, out=out, timeout=args.resolve_timeout)
        return EXIT_OK
    except StateFileError as exc:
        err.write("%s: error: %s\n" % (name, exc.msg))
        return EXIT_USAGE
    except EngineError as exc:
        err.write("%s: error: %s\n" % (name, exc.msg))
        return EXIT_FAIL
    except libbpf.BpfError as exc:
        err.write("%s: error: %s\n" % (name, exc))
        return EXIT_FAIL
    except OSError as exc:
        err.write("%s: error: %s\n" % (name, exc))
        return EXIT_FAIL
