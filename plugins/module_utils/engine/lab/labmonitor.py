"""The lab's Prometheus: a server in the router namespace that scrapes every balancer and backend.

It runs as a process of the router namespace only (never in the controller's own), from a private
directory ``<lab_state_root>/<router>/prometheus``: configuration, rule files (copies of the
collection's, so a changed rule is a changed file here), the TSDB and the log. It listens on the
router's address facing the client, so both the router and the client namespaces reach it. Scrapes
and rule evaluations are every second: the lab's checks wait for one of each, not for minutes.
A changed configuration restarts it (as the router's FRR): its TSDB survives the restart.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from ..errors import EngineError
from . import procs

PORT = 9090
BALANCER_PORT = 9437
BACKEND_PORT = 9438
SCRAPE_INTERVAL = "1s"
# Below the interval: Prometheus refuses a timeout longer than the interval.
SCRAPE_TIMEOUT = "900ms"
EVALUATION_INTERVAL = "1s"
READY_TIMEOUT = 30.0
_JOBS = (("xdplb_balancer", "lb", BALANCER_PORT), ("xdplb_backend", "be", BACKEND_PORT))


def directory(state_root, router):
    return os.path.join(state_root, router, "prometheus")


def listen_address(lab, port=PORT):
    """host:port Prometheus listens on: the router's address on the client's link."""
    client = next(h for h in lab["hosts"] if h["kind"] == "client")
    return f"{client['gateway_ipv4']}:{port}"


def url(lab, port=PORT):
    return f"http://{listen_address(lab, port)}"


def _q(text):
    # A JSON string is a YAML double-quoted scalar: no quoting rules of our own.
    return json.dumps(str(text))


def render(lab, rule_paths=()):
    """prometheus.yml for this lab; ``rule_paths`` are the rule files it loads (already in place)."""
    lines = ["# Written by xdplb.katran lab_topology (lab_prometheus); changes are overwritten.",
             "global:",
             f"  scrape_interval: {SCRAPE_INTERVAL}",
             f"  scrape_timeout: {SCRAPE_TIMEOUT}",
             f"  evaluation_interval: {EVALUATION_INTERVAL}"]
    if rule_paths:
        lines.append("rule_files:")
        lines += [f"  - {_q(path)}" for path in rule_paths]
    lines.append("scrape_configs:")
    for job, kind, port in _JOBS:
        lines += [f"  - job_name: {job}", "    static_configs:"]
        for host in (h for h in lab["hosts"] if h["kind"] == kind):
            # instance = the lab host name, as the inventory and the alerts name it.
            lines += [f"      - targets: [{_q(host['ipv4'].split('/')[0] + ':' + str(port))}]",
                      f"        labels: {{instance: {_q(host['netns'])}}}"]
    return "\n".join(lines) + "\n"


def _files(lab, path, rule_files):
    """{path in the directory: text} of everything present() writes."""
    wanted = {}
    rule_paths = []
    for source in rule_files:
        try:
            with open(source) as handle:
                text = handle.read()
        except OSError as exc:
            raise EngineError(f"prometheus_rule_files: '{source}' cannot be read ({exc.strerror})",
                              field="prometheus_rule_files", value=source)
        target = os.path.join(path, "rules", os.path.basename(source))
        if target in wanted:
            raise EngineError(f"prometheus_rule_files: two files named '{os.path.basename(source)}'",
                              field="prometheus_rule_files", value=source)
        wanted[target] = text
        rule_paths.append(target)
    wanted[os.path.join(path, "prometheus.yml")] = render(lab, rule_paths)
    return wanted


def argv(router, path, address):
    # nsenter execs prometheus itself (no fork for a network namespace): the pid is the server's.
    return ["nsenter", f"--net=/run/netns/{router}", "prometheus",
            "--config.file=" + os.path.join(path, "prometheus.yml"),
            "--storage.tsdb.path=" + os.path.join(path, "data"),
            # The lab's state root is usually a tmpfs: a day of 1 s scrapes is plenty.
            "--storage.tsdb.retention.time=1d",
            "--web.listen-address=" + address]


def pid(path, router):
    """The server's pid when it runs from this directory in the router namespace, else None."""
    try:
        with open(os.path.join(path, "prometheus.pid")) as handle:
            number = int(handle.read().split()[0])
        with open(f"/proc/{number}/cmdline", "rb") as handle:
            cmdline = handle.read().split(b"\0")
        if not procs.alive(number) or os.stat(f"/proc/{number}/ns/net").st_ino != os.stat(f"/run/netns/{router}").st_ino:
            return None
    except (OSError, ValueError, IndexError):
        return None
    conf = ("--config.file=" + os.path.join(path, "prometheus.yml")).encode()
    if os.path.basename(cmdline[0]) != b"prometheus" or conf not in cmdline:
        return None
    return number


def stop(path, router):
    """SIGTERM the server of this directory; returns its pid (None when none ran)."""
    number = pid(path, router)
    if number:
        try:
            os.kill(number, signal.SIGTERM)
        except ProcessLookupError:
            pass
        # It writes the head block's WAL as it stops; it takes well under this.
        procs.wait_gone([number], timeout=15)
    try:
        os.unlink(os.path.join(path, "prometheus.pid"))
    except OSError:
        pass
    return number


_READY_PROBE = ("import http.client, sys\n"
                "host, port = sys.argv[1].rsplit(':', 1)\n"
                "conn = http.client.HTTPConnection(host, int(port), timeout=1)\n"
                "try:\n"
                "    conn.request('GET', '/-/ready')\n"
                "    sys.exit(0 if conn.getresponse().status == 200 else 1)\n"
                "except OSError as exc:\n"
                "    sys.exit(str(exc))\n")


def ready(router, address):
    """Whether /-/ready answers 200, asked from inside the router namespace."""
    probe = subprocess.run(["nsenter", f"--net=/run/netns/{router}", sys.executable, "-c", _READY_PROBE, address],
                           capture_output=True, text=True, check=False)
    return probe.returncode == 0


def _log_tail(path, lines=5):
    return " | ".join((procs.read_text(os.path.join(path, "prometheus.log")) or "").strip().splitlines()[-lines:])


def start(router, path, address, timeout=READY_TIMEOUT):
    with open(os.path.join(path, "prometheus.log"), "ab") as log:
        server = subprocess.Popen(argv(router, path, address), stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    with open(os.path.join(path, "prometheus.pid"), "w") as handle:
        handle.write(f"{server.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise EngineError(f"{router}: prometheus exited with {server.returncode} as it started: {_log_tail(path)}")
        if ready(router, address):
            return server.pid
        time.sleep(0.2)
    stop(path, router)
    raise EngineError(f"{router}: prometheus was not ready at http://{address}/-/ready within {timeout:.0f} s: {_log_tail(path)}")


def check(port, rule_files=()):
    """Refuse what present() cannot do before anything of the lab is changed."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise EngineError(f"prometheus_port: {port!r} is not a port number (1-65535)", field="prometheus_port", value=port)
    if shutil.which("prometheus") is None:
        raise EngineError("prometheus: true needs prometheus on the controller (apt-get install prometheus)",
                          field="prometheus", value=True)
    for source in rule_files:
        if not os.path.isfile(source):
            raise EngineError(f"prometheus_rule_files: '{source}' is not a file", field="prometheus_rule_files", value=source)


def present(lab, state_root, check_mode=False, rule_files=(), port=PORT):
    """Prometheus running in the router namespace with this lab's configuration. Returns the changes."""
    check(port, rule_files)
    router = lab["router"]
    path = directory(state_root, router)
    address = listen_address(lab, port)
    wanted = _files(lab, path, rule_files)
    rules_dir = os.path.join(path, "rules")
    stray = sorted(os.path.join(rules_dir, name) for name in (os.listdir(rules_dir) if os.path.isdir(rules_dir) else [])
                   if os.path.join(rules_dir, name) not in wanted)
    stale = sorted(p for p, text in wanted.items() if procs.read_text(p) != text)
    running = pid(path, router)
    # The address is in its argv, not its configuration: another port is a restart too.
    if running and f"--web.listen-address={address}".encode() not in _cmdline(running):
        stale.append("--web.listen-address")
    changes = [f"{router}: prometheus {os.path.relpath(p, path)}" for p in stale]
    changes += [f"{router}: remove prometheus {os.path.relpath(p, path)}" for p in stray]
    if not running:
        changes.append(f"{router}: start prometheus on {address}")
    elif changes:
        changes.append(f"{router}: restart prometheus for the new configuration")
    if check_mode or not changes:
        return changes
    os.makedirs(rules_dir, mode=0o700, exist_ok=True)
    for stray_path in stray:
        os.unlink(stray_path)
    for target, text in wanted.items():
        with open(target + ".tmp", "w") as handle:
            handle.write(text)
        os.chmod(target + ".tmp", 0o600)
        os.replace(target + ".tmp", target)
    stop(path, router)
    start(router, path, address)
    return changes


def _cmdline(number):
    try:
        with open(f"/proc/{number}/cmdline", "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return []


def absent(lab, state_root, check_mode=False):
    """This lab's Prometheus stopped and its directory removed. Returns the changes."""
    router = lab["router"]
    path = directory(state_root, router)
    changes = []
    if pid(path, router):
        changes.append(f"{router}: stop prometheus")
    if os.path.isdir(path):
        changes.append(f"{router}: remove {path}")
    if check_mode or not changes:
        return changes
    stop(path, router)
    shutil.rmtree(path)
    return changes
