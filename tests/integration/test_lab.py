"""The lab role and the netns connection, run as a user runs them: ansible-playbook and ansible."""
import os
import subprocess
import time

import pytest
import yaml

from lab_playbook import adhoc, ansible_env, BIN, changed_total, playbook, REPO, task_results

PREFIX = "xkl-"
STATE_ROOT = "/run/xdplb-labtest"
PIN_ROOT = "/sys/fs/bpf/xdplb-labtest"
INVENTORY = STATE_ROOT + "/inventory.yml"
LAB_ARGS = ["-e", f"lab_prefix={PREFIX}", "-e", f"lab_state_root={STATE_ROOT}", "-e", f"lab_pin_root={PIN_ROOT}",
            "-e", "lab_demo_port=18080"]
LAB = os.path.join(REPO, "tests", "integration", "playbooks", "lab_only.yml")
DEMO = os.path.join(REPO, "playbooks", "lab.yml")
PLAYBOOKS = os.path.join(REPO, "playbooks")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)")


def running(pid):
    """Alive and not a zombie (the reaper of orphans may be slow to collect it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def lab_namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.startswith(PREFIX))


@pytest.fixture(scope="module")
def lab():
    playbook(LAB, *LAB_ARGS, "-e", "lab_backends=3")
    yield
    playbook(LAB, *LAB_ARGS, "-e", "lab_state=absent")


def test_lab_builds_every_host(lab):
    assert lab_namespaces() == [PREFIX + n for n in ("be1", "be2", "be3", "client", "lb1", "router")]


def test_demo_shows_tcp_and_udp_through_the_vips_to_every_backend(lab):
    _rc, data = playbook(DEMO, *LAB_ARGS, "-e", "lab_backends=3")
    results = task_results(data, "Open flows from the client to every VIP (TCP and UDP)")[PREFIX + "client"]["results"]
    assert [r["item"] for r in results] == [["10.99.0.10", "tcp"], ["10.99.0.10", "udp"],
                                            ["fd00:99::10", "tcp"], ["fd00:99::10", "udp"]]
    for result in results:
        assert sorted(result["servers"]) == [f"{PREFIX}be{i}" for i in (1, 2, 3)], result["item"]
        assert sum(result["servers"].values()) == 20
    summary = task_results(data, "Summary")[PREFIX + "client"]["msg"]
    assert summary[1].startswith("10.99.0.10 tcp  ->  {")


def _router_routes(vip="10.99.0.10"):
    return subprocess.run(["ip", "-n", PREFIX + "router", "route", "show", vip], capture_output=True, text=True,
                          check=True).stdout.strip()


def _wait_router(bgp, timeout=5.0):
    """The router's route to the VIP once it is (bgp) or is not there any more: BGP takes a moment."""
    deadline = time.monotonic() + timeout
    while ("proto bgp" in _router_routes()) != bgp and time.monotonic() < deadline:
        time.sleep(0.1)
    return _router_routes()


def _bgp_findings():
    # Few short flows: while the only balancer is drained, every one of them times out.
    _rc, data = playbook(os.path.join(PLAYBOOKS, "doctor.yml"), "-i", INVENTORY,
                         "-e", "xdplb_check_flows=2", "-e", "xdplb_check_timeout=1")
    facts = task_results(data, "Findings of the balancer")[PREFIX + "lb1"]["ansible_facts"]["doctor_findings"]
    return [(f["check"], f["message"]) for f in facts if f["check"].startswith("bgp")]


def test_the_demo_balancer_announces_over_bgp_and_drains(lab):
    """The demo runs on BGP: the router's route to the VIP comes from FRR. doctor.yml finds nothing
    of BGP; balancer_drain.yml refuses to drain the only balancer, drains it with force (the router
    loses the route, doctor says drained) and balancer_undrain.yml brings the route back."""
    assert "proto bgp" in _wait_router(True)
    assert _bgp_findings() == []
    drain = [os.path.join(PLAYBOOKS, "balancer_drain.yml"), "-i", INVENTORY, "-e", f"balancer_drain_host={PREFIX}lb1"]
    rc, data = playbook(*drain, check=False)
    refused = [t["result"].get("msg", "") for t in data["tasks"] if t["status"] == "failed"]
    assert rc != 0 and refused and "would leave 10.99.0.10, fd00:99::10 announced by no balancer" in refused[0], refused
    playbook(*drain, "-e", "balancer_drain_force=true", "-e", "balancer_drain_poll=1")
    assert _wait_router(False) == ""
    assert [c for c, _m in _bgp_findings()] == ["bgp_drained"]
    playbook(os.path.join(PLAYBOOKS, "balancer_undrain.yml"), "-i", INVENTORY, "-e", f"balancer_drain_host={PREFIX}lb1")
    assert "proto bgp" in _wait_router(True)


def test_lab_hosts_never_use_the_controllers_systemd_and_units_run_ansibles_python(lab):
    """The lab's hosts are namespaces of the controller: their units go to per-host directories and
    are never enabled in the controller's own systemd (nor is it reloaded for them)."""
    with open(INVENTORY) as handle:
        inventory = yaml.safe_load(handle)["all"]
    for group in ("balancers", "backends", "lab_clients"):
        for host, hostvars in inventory["children"][group]["hosts"].items():
            assert hostvars["balancer_systemd_enable"] is False and hostvars["backend_systemd_enable"] is False, host
    python = inventory["vars"]["ansible_python_interpreter"]
    units = (("lb1/systemd/xdplb-balancer.service", "restore"), ("be1/systemd/xdplb-backend.service", "backend-restore"))
    for unit, command in units:
        with open(f"{STATE_ROOT}/{PREFIX}{unit}") as handle:
            assert f"\nExecStart={python} -m xdplb_engine {command} " in handle.read(), unit


def test_second_run_changes_nothing_and_check_mode_agrees(lab):
    _rc, data = playbook(LAB, *LAB_ARGS, "-e", "lab_backends=3")
    assert changed_total(data) == 0
    _rc, data = playbook(LAB, *LAB_ARGS, "-e", "lab_backends=3", "--check")
    assert changed_total(data) == 0


def test_a_broken_link_is_repaired(lab):
    subprocess.run(["ip", "-n", PREFIX + "router", "link", "del", "to-be2"], check=True)
    subprocess.run(["ip", "-n", PREFIX + "be1", "addr", "flush", "dev", "eth0"], check=True)
    _rc, data = playbook(LAB, *LAB_ARGS, "-e", "lab_backends=3")
    assert changed_total(data) > 0
    _rc, data = playbook(LAB, *LAB_ARGS, "-e", "lab_backends=3")
    assert changed_total(data) == 0


def test_connection_reports_the_namespace_facts_and_keeps_host_bpffs(lab):
    facts = adhoc(INVENTORY, "all", "ansible.builtin.setup", {"gather_subset": "network"})
    assert sorted(facts) == lab_namespaces()
    for host, result in facts.items():
        interfaces = sorted(result["ansible_facts"]["ansible_interfaces"])
        if host.endswith("router"):
            assert interfaces == sorted(["lo", "to-be1", "to-be2", "to-be3", "to-client", "to-lb1"])
        elif host.endswith("lb1"):
            # The agent's TUN device, whose routes BIRD announces (lab_routing bgp, the demo's default).
            assert interfaces == ["eth0", "lo", "xdplb-vips"]
        else:
            assert interfaces == ["eth0", "lo"]
    marker = f"{PIN_ROOT}/{PREFIX}lb1"
    listing = adhoc(INVENTORY, PREFIX + "lb1", "ansible.builtin.command", {"argv": ["ls", "-d", marker]})
    assert listing[PREFIX + "lb1"]["stdout"] == marker


def test_a_connection_reset_reaches_the_namespace_again_without_a_warning(lab, tmp_path):
    """meta: reset_connection and wait_for_connection (the balancer role's) call reset()."""
    play = tmp_path / "reset.yml"
    play.write_text(yaml.safe_dump([{"hosts": PREFIX + "be1", "gather_facts": False, "tasks": [
        {"name": "Reset", "ansible.builtin.meta": "reset_connection"},
        {"name": "Reach", "ansible.builtin.wait_for_connection": {"timeout": 30}},
        {"name": "Run", "ansible.builtin.command": {"argv": ["ip", "-o", "link", "show", "eth0"]}}]}]))
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), str(play), "-i", INVENTORY], capture_output=True,
                          text=True, env=ansible_env(), cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Reset is not implemented" not in proc.stdout + proc.stderr


def _xdp_prog_id(host):
    info = adhoc(INVENTORY, PREFIX + host, "xdplb.katran.lb_info",
                 f"pin_root={PIN_ROOT}/{PREFIX}{host}/balancer interface=eth0")
    return info[PREFIX + host]["program"]["prog_id"]


def test_an_object_that_does_not_load_changes_nothing_and_the_old_one_keeps_running(lab, tmp_path):
    role = os.path.join(REPO, "tests", "integration", "playbooks", "balancer_role.yml")
    playbook(role, "-i", INVENTORY)
    before = _xdp_prog_id("lb1")
    junk = tmp_path / "balancer.o"
    junk.write_bytes(b"\x7fELF not really an object")
    rc, data = playbook(role, "-i", INVENTORY, "-e", f"balancer_object={junk}", check=False)
    assert rc != 0
    failed = task_results(data, "xdplb.katran.balancer : Report the rollback")[PREFIX + "lb1"]
    assert "nothing was changed" in failed["msg"] and "object: cannot open" in failed["msg"], failed["msg"]
    # The candidate never loaded, so nothing was attached: the rescue rolls nothing back.
    for task in ("Roll back to the last object that worked", "Detach the new program (there was none before)"):
        assert {t["status"] for t in data["tasks"] if t["task"] == "xdplb.katran.balancer : " + task} == {"skipped"}
    assert _xdp_prog_id("lb1") == before, "the program that worked is still attached"
    rc, data = playbook(role, "-i", INVENTORY)
    assert _xdp_prog_id("lb1") == before
    assert changed_total(data) == 1, "only the candidate file changes back to the good object"


def test_missing_namespace_is_unreachable_with_its_name(tmp_path):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    xkl-nowhere:\n      ansible_connection: xdplb.katran.netns\n")
    result = adhoc(str(inventory), "all", "ansible.builtin.ping")["xkl-nowhere"]
    assert result["unreachable"] is True
    assert "network namespace 'xkl-nowhere' does not exist" in result["msg"]


def test_absent_removes_every_namespace_pin_and_file():
    playbook(LAB, *LAB_ARGS, "-e", "lab_balancers=2", "-e", "lab_backends=1")
    assert os.path.isdir(f"{PIN_ROOT}/{PREFIX}lb2")
    adhoc(INVENTORY, PREFIX + "be1", "xdplb.katran.lab_responder",
          {"pidfile": f"{STATE_ROOT}/{PREFIX}be1/responder.pid", "port": 18081, "lifetime": 600})
    with open(f"{STATE_ROOT}/{PREFIX}be1/responder.pid") as handle:
        responder = int(handle.read())
    playbook(LAB, *LAB_ARGS, "-e", "lab_state=absent")
    assert lab_namespaces() == []
    assert not os.path.exists(PIN_ROOT)
    assert not os.path.exists(STATE_ROOT)
    # A process left in a deleted namespace would keep it (and its links) alive.
    assert not running(responder)
