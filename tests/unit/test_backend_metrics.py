"""The backend exporter: the collector's text (promtool-checked), the doctor's findings as gauges, the
listener, the CLI's stop on SIGTERM, the role's unit (systemd-analyze verify), its variables' checks.

The doctor here is the real one (doctor.check_backend) on a host given as data: links, addresses and
a /proc/sys/net tree in a temporary directory, so kernel-tunnel mode (no ipip module on the test
machine) is covered too; tests/integration/test_backend_exporter.py runs it on a live namespace.
"""
import ast
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.xdplb.katran.plugins.action import validate_request as vr
from ansible_collections.xdplb.katran.plugins.module_utils import engine
from ansible_collections.xdplb.katran.plugins.module_utils.engine import daemon
from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import backend_state, doctor, metrics
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, StateFileError

from test_role_agent import SYSTEMD_ANALYZE, _trusted  # noqa: E402  # same rendering as the agent's unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMTOOL = shutil.which("promtool")
VIP = "10.99.0.10"

STATE = {"version": 1, "kind": "backend", "vips": [VIP], "vips_exclusive": True, "decap": "kernel",
         "interface": "eth0", "families": [4], "rp_filter": 0, "arp_ignore": 1, "arp_announce": 2,
         "arp_devices": ["eth0"], "tunnels": [{"name": "ipip0", "kind": "ipip", "addresses": []}], "bpf": None,
         "advmss": 0}
LINKS = [{"index": 1, "name": "lo", "kind": None, "mtu": 65536, "up": True, "data": {}},
         {"index": 2, "name": "eth0", "kind": "veth", "mtu": 1520, "up": True, "data": {}},
         {"index": 3, "name": "ipip0", "kind": "ipip", "mtu": 1480, "up": True, "data": {"collect_metadata": True}}]
ADDRS = {1: [{"family": 4, "address": VIP}], 2: [{"family": 4, "address": "10.9.0.2"}], 3: []}
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 9000000   60000    0    0    0     0          0         0   800000    4000    0    0    0     0       0          0
 ipip0:  148000    2000    1    3    0     0          0         0        0       0    0    0    0     0       0          0
"""


class Host:
    """A backend as data: the doctor's inputs, sysctls in a tree shaped like /proc/sys/net."""

    def __init__(self, root):
        self.root = root
        for target in ("all", "default", "lo", "eth0", "ipip0"):
            for key, value in (("rp_filter", 0), ("arp_ignore", 1), ("arp_announce", 2)):
                self.sysctl(target, key, value)
        self.addrs = {index: [dict(a) for a in entries] for index, entries in ADDRS.items()}
        self.net_dev = os.path.join(root, "net_dev")
        with open(self.net_dev, "w") as handle:
            handle.write(NET_DEV)

    def sysctl(self, target, key, value):
        path = os.path.join(self.root, "ipv4", "conf", target)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, key), "w") as handle:
            handle.write("%d\n" % value)

    def check(self, state_file):
        """doctor.check's result for this host, the state as the file would give it."""
        assert state_file == "/etc/xdplb/backend.json"
        findings = doctor.check_backend([VIP], LINKS, self.addrs, (), (4,), {}, proc_root=self.root)
        return {"status": doctor.summarize(findings), "findings": findings, "state": backend_state.parse(STATE),
                "deployed": True}


@pytest.fixture
def host(tmp_path):
    return Host(str(tmp_path))


def scrape(collector_kwargs, process=False):
    reg = metrics.registry("/etc/xdplb/backend.json", process=process, **collector_kwargs)
    return metrics.text(reg)


def samples(text):
    """{(name, frozenset(labels)): value} of an exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def check_series(text):
    return {(dict(labels)["check"], dict(labels)["severity"]): value
            for (name, labels), value in samples(text).items() if name == "xdplb_backend_check"}


def test_strict_rp_filter_on_the_tunnel_is_a_critical_rp_filter_gauge_until_it_is_fixed(host):
    ok = check_series(scrape({"check": host.check, "net_dev": host.net_dev}))
    assert set(ok) == {(c, s) for c in doctor.CHECKS for s in ("critical", "warning")}
    assert not any(ok.values()), ok
    host.sysctl("all", "rp_filter", 1)  # max(all, ipip0): strict on the tunnel
    bad = check_series(scrape({"check": host.check, "net_dev": host.net_dev}))
    assert {k for k, v in bad.items() if v} == {("rp_filter", "critical")}
    host.sysctl("all", "rp_filter", 0)
    host.sysctl("all", "arp_ignore", 0)  # effective max(all, eth0) = 0: answers ARP for the VIP
    host.sysctl("eth0", "arp_ignore", 0)
    later = check_series(scrape({"check": host.check, "net_dev": host.net_dev}))
    assert {k for k, v in later.items() if v} == {("arp_ignore", "warning")}
    del host.addrs[1][0]  # the VIP left lo
    gone = check_series(scrape({"check": host.check, "net_dev": host.net_dev}))
    assert {k for k, v in gone.items() if v} == {("arp_ignore", "warning"), ("vip_bound", "critical")}


def test_kernel_mode_exports_the_tunnel_devices_receive_counters_and_no_decap_counters(host):
    found = samples(scrape({"check": host.check, "net_dev": host.net_dev}))
    tunnel = {(name, dict(labels)["device"]): v for (name, labels), v in found.items()
              if name.startswith("xdplb_backend_tunnel_rx_")}
    # ipip0 from the state; tunl0 (its fallback) is not in this namespace's /proc/net/dev, eth0 is no tunnel.
    assert tunnel == {("xdplb_backend_tunnel_rx_packets_total", "ipip0"): 2000,
                      ("xdplb_backend_tunnel_rx_bytes_total", "ipip0"): 148000,
                      ("xdplb_backend_tunnel_rx_errors_total", "ipip0"): 1,
                      ("xdplb_backend_tunnel_rx_dropped_total", "ipip0"): 3}
    assert not [k for k in found if k[0].startswith("xdplb_backend_decap_")]
    assert found[("xdplb_backend_build_info", frozenset({("version", engine.VERSION)}))] == 1
    assert found[("xdplb_backend_doctor_success", frozenset())] == 1


def test_a_doctor_that_cannot_run_is_said_once_and_leaves_no_check_gauges(host):
    lines = []

    def broken(state_file):
        raise StateFileError("state file %s: kind: is required" % state_file, field="kind")

    collector = {"check": broken, "net_dev": host.net_dev, "log": lines.append}
    reg = metrics.registry("/etc/xdplb/backend.json", process=False, **collector)
    first, second = metrics.text(reg), metrics.text(reg)
    for text in (first, second):
        found = samples(text)
        assert found[("xdplb_backend_doctor_success", frozenset())] == 0
        assert not check_series(text), "0 would claim a healthy backend nobody looked at"
    assert lines == ["the doctor failed: state file /etc/xdplb/backend.json: kind: is required"]


def test_a_missing_state_file_is_the_deployed_check():
    text = metrics.text(metrics.registry("/nonexistent/backend.json", process=False))
    series = check_series(text)
    assert {k for k, v in series.items() if v} == {("deployed", "critical")}


def test_promtool_accepts_a_real_scrape(host):
    # Not skipped when missing: a check that runs nowhere proves nothing (Debian: apt install prometheus).
    assert PROMTOOL, "promtool is needed to check the exporter's text (Debian: apt install prometheus)"
    host.sysctl("all", "rp_filter", 1)
    text = scrape({"check": host.check, "net_dev": host.net_dev}, process=True)
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False,
                          timeout=60)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done
    # And it does complain about a text that breaks the conventions (the check is not a no-op).
    bad = text.replace("xdplb_backend_tunnel_rx_bytes_total", "xdplb_backend_tunnel_rx_bytes")
    refused = subprocess.run([PROMTOOL, "check", "metrics"], input=bad, capture_output=True, text=True, check=False,
                             timeout=60)
    assert refused.returncode != 0 and "xdplb_backend_tunnel_rx_bytes" in refused.stdout + refused.stderr


def test_checks_lists_every_problem_the_doctor_can_report():
    """doctor.CHECKS against the doctor's source: each _finding(...) with CRITICAL or WARNING, and check()'s
    "deployed" (a literal dict), so a new check cannot be missing from the exporter's gauges."""
    source = open(doctor.__file__).read()
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_finding" and len(node.args) >= 2:
            severity = node.args[1]
            if isinstance(severity, ast.Name) and severity.id in ("CRITICAL", "WARNING") \
                    or isinstance(severity, ast.IfExp):
                found.add(node.args[0].value)
    assert '"check": "deployed", "severity": "critical"' in source
    assert found | {"deployed"} == set(doctor.CHECKS)


def test_the_version_is_the_collections():
    with open(os.path.join(REPO, "galaxy.yml")) as handle:
        assert yaml.safe_load(handle)["version"] == engine.VERSION


# ------------------------------------------------------------------ the listener
@pytest.mark.parametrize("value,expected", [("127.0.0.1:9438", ("127.0.0.1", 9438)), ("[::1]:9438", ("::1", 9438)),
                                            ("0.0.0.0:1", ("0.0.0.0", 1)), ("[::]:65535", ("::", 65535))])
def test_listen_addresses(value, expected):
    assert daemon.parse_listen(value) == expected


@pytest.mark.parametrize("value,words", [("::1:9438", "in brackets"), ("127.0.0.1", "ADDRESS:PORT"),
                                         ("localhost:9438", "is not an IP address"), ("127.0.0.1:0", "1 to 65535"),
                                         ("127.0.0.1:65536", "1 to 65535"), ("[fe80::1%eth0]:9438", "scoped"),
                                         (":9438", "ADDRESS:PORT"), ("127.0.0.1:x", "1 to 65535")])
def test_bad_listen_addresses_are_named(value, words):
    with pytest.raises(EngineError) as info:
        daemon.parse_listen(value, "--listen")
    assert info.value.msg.startswith("--listen: ") and words in info.value.msg and info.value.field == "--listen"


def test_the_listener_serves_metrics_on_ipv6_and_says_which_address_is_taken():
    reg = metrics.registry("/nonexistent/backend.json")
    server = daemon.http_server(metrics.app(reg), "::1", 0)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen("http://[::1]:%d/metrics" % port, timeout=5) as answer:
            body = answer.read().decode()
        assert 'xdplb_backend_check{check="deployed",severity="critical"} 1.0' in body
        assert "process_cpu_seconds_total" in body
        with pytest.raises(EngineError) as info:
            daemon.http_server(metrics.app(reg), "::1", port)
        assert info.value.msg.startswith("listen: cannot listen on [::1]:%d: " % port)
    finally:
        server.shutdown()
        server.server_close()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _engine_cli(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, ".build", "collections"))
    return [sys.executable, "-m", "ansible_collections.xdplb.katran.plugins.module_utils.engine"] + list(args), env


def test_the_cli_serves_until_sigterm_then_exits_0():
    port = _free_port()
    cmd, env = _engine_cli("backend-exporter", "/nonexistent/backend.json", "--listen", "127.0.0.1:%d" % port)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        body = None
        while body is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as answer:
                    body = answer.read().decode()
            except OSError:
                time.sleep(0.05)
        assert body and "xdplb_backend_build_info" in body
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "backend exporter stopped (SIGTERM)" in err and "Traceback" not in err


def test_the_cli_refuses_a_bad_listen_address_with_exit_2():
    cmd, env = _engine_cli("backend-exporter", "--listen", "localhost:9438")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode == 2 and "--listen: 'localhost' is not an IP address" in done.stderr, done


# ------------------------------------------------------------------ the role
ROLE = os.path.join(REPO, "roles", "backend")


def _load(*parts):
    with open(os.path.join(ROLE, *parts)) as handle:
        return yaml.safe_load(handle)


def render(template, **overrides):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    variables = dict(_load("defaults", "main.yml"), **_load("vars", "main.yml"))
    variables.update(overrides)
    return Templar(loader=DataLoader(), variables=_trusted(variables)).template(_trusted(template))


def unit(**overrides):
    return render(_load("vars", "main.yml")["backend_metrics_unit"]["content"], **overrides)


def test_the_unit_runs_the_exporter_with_least_privilege():
    lines = unit().splitlines()
    assert "ExecStart=@PYTHON@ -m xdplb_engine backend-exporter /etc/xdplb/backend.json --listen 127.0.0.1:9438" in lines
    for line in ("CapabilityBoundingSet=CAP_SYS_ADMIN", "AmbientCapabilities=CAP_SYS_ADMIN", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateDevices=yes", "PrivateTmp=yes",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK", "Environment=PYTHONPATH=/usr/local/lib/xdplb",
                 "RestartPreventExitStatus=2", "WantedBy=multi-user.target"):
        assert line in lines, line
    assert not any(line.startswith("ReadWritePaths") for line in lines), "it writes nothing"
    v6 = unit(backend_metrics_listen_address="::", backend_metrics_port="9500", backend_state_dir="/etc/be1")
    assert "ExecStart=@PYTHON@ -m xdplb_engine backend-exporter /etc/be1/backend.json --listen [::]:9500" in v6.splitlines()


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    assert SYSTEMD_ANALYZE, "systemd-analyze is needed to check the exporter's unit (Debian: apt install systemd)"
    path = tmp_path / "xdplb-backend-exporter.service"
    path.write_text(unit(backend_metrics_listen_address="::1").replace("@PYTHON@", sys.executable))
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(path)], capture_output=True, text=True,
                          check=False, env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"), timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    path.write_text(unit().replace("@PYTHON@", sys.executable).replace("NoNewPrivileges=yes", "NoNewPrivileges=maybe"))
    broken = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(path)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert ":17: Failed to parse boolean value, ignoring: maybe" in broken.stderr, broken


def test_process_mode_runs_the_exporter_under_setpriv_with_the_units_capabilities():
    tasks = _load("tasks", "metrics.yml")
    task = next(t for t in tasks if t["name"].startswith("Run the exporter (a daemon"))
    engine_result = {"host": {"python": "/usr/bin/python3"}, "written": [], "removed": []}
    argv = render(task["ansible.builtin.command"]["argv"], backend_engine=engine_result, backend_state_dir="/run/be1/etc")
    assert argv == ["setpriv", "--bounding-set=-all,+sys_admin", "--inh-caps=-all", "/usr/bin/python3", "-m",
                    "xdplb_engine", "backend-exporter", "/run/be1/etc/backend.json", "--listen", "127.0.0.1:9438",
                    "--daemon", "--pidfile", "/run/be1/etc/backend-exporter.pid",
                    "--log-file", "/run/be1/etc/backend-exporter.log"]
    newer = render(task["ansible.builtin.command"]["argv"], backend_engine=dict(engine_result, written=["cli.py"]))
    assert newer[-1] == "--replace", "new engine files restart a running daemon"


@pytest.mark.parametrize("name,value,words", [
    ("backend_metrics_port", 0, "backend_metrics_port: "), ("backend_metrics_port", "http", "backend_metrics_port: "),
    ("backend_metrics_port", 70000, "backend_metrics_port: "),
    ("backend_metrics_listen_address", "localhost", "backend_metrics_listen_address: 'localhost' is not an IP address"),
    ("backend_metrics_listen_address", "127.0.0.1:9438", "backend_metrics_listen_address: '127.0.0.1:9438' is not"),
    ("backend_metrics_mode", "docker", "backend_metrics_mode: "),
    ("backend_metrics_enabled", "maybe", "backend_metrics_enabled: expected true or false"),
    ("backend_metrics_packages", "python3-prometheus-client", "backend_metrics_packages: expected a list")])
def test_bad_metrics_variables_are_named(name, value, words):
    errors = [(e.field, e.msg) for e in vr.check_backend(lambda n: (n == name, value if n == name else None))]
    assert len(errors) == 1 and errors[0][0] == name and errors[0][1].startswith(words), errors


def test_good_metrics_variables_pass():
    values = {"backend_metrics_enabled": "true", "backend_metrics_listen_address": "::", "backend_metrics_port": "9438",
              "backend_metrics_mode": "process", "backend_metrics_packages": []}
    assert vr.check_backend(lambda n: (n in values, values.get(n))) == []
