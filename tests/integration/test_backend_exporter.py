"""The backend role with its exporter (process mode) on a backend in a network namespace, scraped over HTTP.

    xkt-test-<pid>-0 (balancer side)           xkt-test-<pid>-1 (the backend: the role runs here)
    va 10.9.0.1/24   <------- veth -------->   eth0 10.9.0.2/24, BPF decap (this kernel has no ipip
                                               module), VIP 10.99.0.10 on lo, exporter on 127.0.0.1:9438

From a packet socket on va we send what a balancer sends (IPIP to 10.9.0.2) and tunnel packets for
an address the backend does not own; the decap counters must grow by exactly those packets (and
bytes: frames as received). A sysctl set wrong (arp_ignore) and the VIP taken off lo must show as
their xdplb_backend_check gauges, and go back to 0 once repaired. The daemon runs under setpriv with
the unit's capabilities, so this also proves they are enough. No lab: no lab lock needed.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from backend_netns import NetNS, run_in_ns
from netns_playbook import playbook, result

pytest.importorskip("scapy.all")
from scapy.all import IP, TCP, Ether  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and BPF need root")

VIP = "10.99.0.10"
URL = "http://127.0.0.1:9438/metrics"
PROMTOOL = shutil.which("promtool")
START = "Run the exporter (a daemon with the unit's capabilities only, on hosts without a systemd of their own)"
STOP = "Stop the exporter daemon (process mode, backend_metrics_enabled false)"
CAP_SYS_ADMIN = 1 << 21


def gone(pid):
    """The process has exited (a zombie counts: the daemon's parent is this machine's init, which may
    be slow or never to reap it)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


def _send(frames):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        sock.bind(("va", 0))
        for frame in frames:
            sock.send(frame)
    finally:
        sock.close()


def value(text, name, **labels):
    """The sample `name{labels}` of an exposition text (labels in any order), or None."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'([a-z_]+)="([^"]*)"', match.group(2) or ""))
        if found == {k: str(v) for k, v in labels.items()}:
            return float(match.group(3))
    return None


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exporter")
    balancer, be = NetNS(), NetNS()
    pin_root = "/sys/fs/bpf/xdplb-test-exporter-%d" % os.getpid()
    try:
        be.ip("link", "add", "eth0", "type", "veth", "peer", "name", "va", "netns", balancer.name)
        be.ip("addr", "add", "10.9.0.2/24", "dev", "eth0")
        # Room for the tunnel header (else the doctor's headroom warning): a healthy backend to start with.
        be.ip("link", "set", "eth0", "mtu", "1520", "up")
        balancer.ip("addr", "add", "10.9.0.1/24", "dev", "va")
        balancer.ip("link", "set", "va", "mtu", "1520", "up")
        be.ip("route", "add", "default", "via", "10.9.0.1")
        # The test's Python (its virtualenv has pyroute2 and prometheus_client) runs the modules and the exporter.
        host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "backend_vips": [VIP], "backend_packages": [], "backend_metrics_packages": [],
                "backend_pin_root": pin_root, "backend_state_dir": str(tmp / "etc"), "backend_lib_dir": str(tmp / "lib"),
                "backend_sysctl_file": str(tmp / "sysctl.conf"), "backend_systemd_dir": str(tmp / "systemd"),
                "backend_systemd_enable": False, "backend_metrics_enabled": True, "backend_metrics_mode": "process"}
        inventory = tmp / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"all": {"children": {"backends": {"hosts": {"be": host}}}}}))
        play = tmp / "backend.yml"
        play.write_text(yaml.safe_dump([{"hosts": "backends", "gather_facts": False,
                                         "roles": [{"role": "xdplb.katran.backend"}]}]))
        mac = be.ip("-o", "link", "show", "eth0").stdout.split("link/ether ")[1].split()[0]
        yield {"be": be, "balancer": balancer, "run": lambda *a: playbook(be.name, inventory, play, *a, check=False),
               "tmp": tmp, "mac": mac, "scrape": lambda: run_in_ns(be.name, _get, URL)}
    finally:
        if os.path.exists(tmp / "etc" / "backend-exporter.pid"):
            playbook(be.name, tmp / "inventory.yml", tmp / "backend.yml", "-e", "backend_metrics_enabled=false",
                     check=False)
        be.delete()
        balancer.delete()
        if os.path.isdir(pin_root):
            for name in os.listdir(pin_root):
                os.unlink(os.path.join(pin_root, name))
            os.rmdir(pin_root)


@pytest.fixture(scope="module")
def running(backend):
    rc, data = backend["run"]()
    assert rc == 0, [t for t in data["tasks"] if t["status"] == "failed"]
    started = result(data, START, "be")
    assert started["changed"] and started["stdout"].startswith("started "), started
    backend["pid"] = int(started["stdout"].split()[1])
    return backend


def test_the_exporter_runs_with_cap_sys_admin_only_and_sees_a_healthy_backend(running):
    with open("/proc/%d/status" % running["pid"]) as handle:
        status = dict(line.split(":\t", 1) for line in handle.read().splitlines() if ":\t" in line)
    assert int(status["CapEff"], 16) == CAP_SYS_ADMIN and int(status["CapBnd"], 16) == CAP_SYS_ADMIN, status
    text = running["scrape"]()
    assert value(text, "xdplb_backend_doctor_success") == 1
    failing = [line for line in text.splitlines() if line.startswith("xdplb_backend_check{") and not line.endswith(" 0.0")]
    assert not failing, failing  # with those capabilities the doctor does see the decap program
    assert value(text, "xdplb_backend_check", check="decap", severity="critical") == 0
    assert value(text, "xdplb_backend_build_info", version="0.1.0") == 1
    assert value(text, "xdplb_backend_decap_packets_total", result="decap_v4") is not None


def test_promtool_accepts_the_live_scrape(running):
    assert PROMTOOL, "promtool is needed to check the exporter's text (Debian: apt install prometheus)"
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=running["scrape"](), capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done


def test_decap_counters_grow_by_exactly_the_packets_sent(running):
    va_mac = running["balancer"].ip("-o", "link", "show", "va").stdout.split("link/ether ")[1].split()[0]
    syn = IP(src="198.51.100.7", dst=VIP) / TCP(sport=40000, dport=8080, flags="S")
    ours = bytes(Ether(src=va_mac, dst=running["mac"]) / IP(src="10.9.0.1", dst="10.9.0.2") / syn)
    other = bytes(Ether(src=va_mac, dst=running["mac"]) / IP(src="10.9.0.1", dst="10.9.0.77") / syn)
    before = running["scrape"]()
    run_in_ns(running["balancer"].name, _send, [ours] * 25 + [other] * 7)
    time.sleep(0.2)
    after = running["scrape"]()

    def grew(name, result_name):
        return value(after, name, result=result_name) - value(before, name, result=result_name)

    assert grew("xdplb_backend_decap_packets_total", "decap_v4") == 25
    assert grew("xdplb_backend_decap_bytes_total", "decap_v4") == 25 * len(ours)  # frames as received
    assert grew("xdplb_backend_decap_packets_total", "not_for_us") == 7
    assert grew("xdplb_backend_decap_packets_total", "malformed") == 0


def test_a_wrong_sysctl_and_a_missing_vip_show_as_their_checks_until_repaired(running):
    be = running["be"]
    was = {target: be.proc("ipv4", target, "arp_ignore") for target in ("all", "eth0")}
    for target in ("all", "eth0"):
        be.set_proc("ipv4", target, "arp_ignore", 0)
    text = running["scrape"]()
    assert value(text, "xdplb_backend_check", check="arp_ignore", severity="warning") == 1
    assert value(text, "xdplb_backend_check", check="vip_bound", severity="critical") == 0
    be.ip("addr", "del", VIP + "/32", "dev", "lo")
    text = running["scrape"]()
    assert value(text, "xdplb_backend_check", check="vip_bound", severity="critical") == 1
    be.ip("addr", "add", VIP + "/32", "dev", "lo")
    for target, old in was.items():
        be.set_proc("ipv4", target, "arp_ignore", old)
    text = running["scrape"]()
    assert value(text, "xdplb_backend_check", check="arp_ignore", severity="warning") == 0
    assert value(text, "xdplb_backend_check", check="vip_bound", severity="critical") == 0


def test_a_scrape_costs_a_few_milliseconds_of_cpu(running):
    first = value(running["scrape"](), "process_cpu_seconds_total")
    for _scrape in range(50):
        running["scrape"]()
    per_scrape = (value(running["scrape"](), "process_cpu_seconds_total") - first) / 51
    print("backend exporter: %.1f ms CPU per scrape" % (per_scrape * 1000))
    assert per_scrape < 0.05


def test_a_second_run_leaves_it_running_and_check_mode_agrees(running):
    rc, data = running["run"]()
    assert rc == 0 and data["stats"]["be"]["changed"] == 0, [t["task"] for t in data["tasks"] if t["result"].get("changed")]
    assert result(data, START, "be")["stdout"] == "running %d" % running["pid"]
    rc, data = running["run"]("--check", "-e", "backend_metrics_enabled=false")
    assert rc == 0 and result(data, STOP, "be")["stdout"] == "would stop %d" % running["pid"]
    assert data["stats"]["be"]["changed"] == 1 and not gone(running["pid"])


def test_another_port_restarts_it_and_disabling_stops_it_with_sigterm(running):
    rc, data = running["run"]("-e", "backend_metrics_port=9439")
    assert rc == 0 and result(data, START, "be")["stdout"].startswith("restarted "), result(data, START, "be")
    pid = int(result(data, START, "be")["stdout"].split()[1])
    assert gone(running["pid"]) and pid != running["pid"]
    assert value(run_in_ns(running["be"].name, _get, "http://127.0.0.1:9439/metrics"), "xdplb_backend_doctor_success") == 1
    rc, data = running["run"]("-e", "backend_metrics_enabled=false")
    assert rc == 0 and result(data, STOP, "be")["stdout"] == "stopped %d" % pid
    assert gone(pid)
    log = (running["tmp"] / "etc" / "backend-exporter.log").read_text()
    assert log.count("backend exporter stopped (SIGTERM)") == 2 and "Traceback" not in log, log
    rc, data = running["run"]("-e", "backend_metrics_enabled=false")
    assert rc == 0 and result(data, STOP, "be")["stdout"] == "not running" and data["stats"]["be"]["changed"] == 0
