"""The backend role in the lab (BPF decap: this kernel has no ipip module), its doctor and probe.

Encapsulated SYNs are sent from the lab client straight to each backend, as a balancer would
send them; a SYN-ACK back at the client proves decap, VIP binding and rp_filter together.
"""
import json
import os
import subprocess

import pytest

from lab_playbook import changed_total, playbook, REPO, task_results

PREFIX = "xkb-"
STATE_ROOT = "/run/xdplb-betest"
PIN_ROOT = "/sys/fs/bpf/xdplb-betest"
INVENTORY = STATE_ROOT + "/inventory.yml"
VIPS = ["10.99.0.10", "fd00:99::10"]
COMMON = ["-e", f"lab_prefix={PREFIX}", "-e", f"lab_state_root={STATE_ROOT}", "-e", f"lab_pin_root={PIN_ROOT}",
          "-e", "lab_routing=static", "-e", json.dumps({"test_vips": VIPS})]
SETUP = os.path.join(REPO, "tests", "integration", "playbooks", "backend_lab.yml")
DIAGNOSE = os.path.join(REPO, "tests", "integration", "playbooks", "backend_diagnose.yml")
BE1 = PREFIX + "be1"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces, BPF)")


def diagnose():
    _rc, data = playbook(DIAGNOSE, "-i", INVENTORY, *COMMON, check=False)
    checks = task_results(data, "Check")
    probes = task_results(data, "Probe")[PREFIX + "client"]["results"]
    answered = {(p["item"][0], p["backend"], p["vip"]): p["syn_ack"] for p in probes}
    return checks, answered


def ip(netns, *args):
    return subprocess.run(["ip", "-n", netns] + list(args), capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def lab():
    playbook(SETUP, *COMMON)
    yield
    playbook(os.path.join(REPO, "playbooks", "lab.yml"), *COMMON[:6], "-e", "lab_state=absent")


@pytest.fixture
def repaired(lab):
    yield
    playbook(SETUP, "-i", INVENTORY, *COMMON)


def test_every_backend_answers_ipip_ip6ip6_and_4in6(lab):
    checks, answered = diagnose()
    assert len(answered) == 2 * 3  # per backend: v4 in v4, v4 in v6, v6 in v6
    assert all(answered.values()), answered
    for host, result in checks.items():
        assert result["status"] == "ok", (host, result["findings"])


def test_second_run_changes_nothing_and_check_mode_agrees(lab):
    _rc, data = playbook(SETUP, "-i", INVENTORY, *COMMON)
    assert changed_total(data) == 0
    _rc, data = playbook(SETUP, "-i", INVENTORY, *COMMON, "--check")
    assert changed_total(data) == 0


def test_doctor_names_a_missing_vip_with_the_fix(repaired):
    ip(BE1, "addr", "del", "10.99.0.10/32", "dev", "lo")
    checks, answered = diagnose()
    assert not any(ok for (host, _backend, vip), ok in answered.items() if host == BE1 and vip == "10.99.0.10")
    findings = [f for f in checks[BE1]["findings"] if f["severity"] == "critical"]
    assert [(f["check"], f["vip"], f["fix"]) for f in findings] == [
        ("vip_bound", "10.99.0.10", "ip addr add 10.99.0.10/32 dev lo")]


def test_doctor_names_missing_decapsulation(repaired):
    ip(BE1, "link", "set", "dev", "eth0", "xdp", "off")
    checks, answered = diagnose()
    assert not any(ok for (host, _backend, _vip), ok in answered.items() if host == BE1)
    assert all(ok for (host, _backend, _vip), ok in answered.items() if host != BE1)
    critical = {f["check"] for f in checks[BE1]["findings"] if f["severity"] == "critical"}
    assert critical == {"decap"}


def test_bad_vip_fails_naming_it_and_changes_nothing(lab):
    before = ip(BE1, "addr", "show")
    bad = ["-e", json.dumps({"test_vips": ["10.99.0.10", "10.99.0.300"]})]
    code, data = playbook(SETUP, "-i", INVENTORY, *COMMON, *bad, "--limit", BE1, check=False)
    assert code != 0
    failed = [t for t in data["tasks"] if t["status"] == "failed"]
    assert "10.99.0.300" in json.dumps(failed[0]["result"])
    assert ip(BE1, "addr", "show") == before
