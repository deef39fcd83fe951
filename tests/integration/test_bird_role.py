"""The balancer role with balancer_bgp_enabled, for real on one balancer (a namespace with a veth,
the role run under `nsenter --net`, process mode as on the lab's hosts, without the agent): BIRD's
file written and validated, BIRD started once (a rerun changes nothing: the live BIRD owning the pid
file is left alone), the agent's unit given --announce-table, --drain-file and /dev/net/tun. With BGP
off nothing of it is touched and the unit keeps PrivateDevices=yes. Under `flock /tmp/xdplb-lab.lock`.
"""
import os
import shutil
import subprocess

import pytest
import yaml

from balancer_env import BalancerNS, build_objects, kill_pidfile
from lab_playbook import BIN, changed_total
from netns_playbook import playbook, result

CONFIGURE = "Configure BIRD (validated with bird -p first; a running BIRD reloads without dropping sessions)"
START = "Run BIRD (a daemon of the role's, on hosts without a systemd of their own)"

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: run as root"),
              pytest.mark.skipif(not shutil.which("bird"), reason="needs BIRD 2 (bird2)")]


@pytest.fixture()
def env(tmp_path):
    build_objects()
    ns = BalancerNS()
    ns.ip("addr", "add", "10.9.0.1/24", "dev", "lb0")
    bird_dir = tmp_path / "bird"
    host = {"ansible_connection": "local", "ansible_python_interpreter": os.path.join(BIN, "python"),
            "balancer_interface": "lb0", "balancer_pin_root": ns.pin_root,
            "balancer_vips": [{"address": "10.99.0.10", "port": 80, "reals": ["10.1.0.1"]}],
            "balancer_gateway_mac": "02:00:00:00:00:fe", "balancer_source_v4": "10.9.0.1",
            "balancer_state_dir": str(tmp_path / "etc"), "balancer_lib_dir": str(tmp_path / "lib"),
            "balancer_systemd_dir": str(tmp_path / "systemd"), "balancer_systemd_enable": False,
            "balancer_health_state_file": str(tmp_path / "health" / "health.json"),
            "balancer_packages": [], "balancer_verify_connection": False,
            # The agent's unit is written but never started (no systemd of its own here): BGP needs the
            # agent enabled, and this test looks at BIRD alone. No router answers: no wait for sessions.
            "balancer_agent": True, "balancer_agent_mode": "systemd", "balancer_bgp_wait": 0,
            "balancer_bgp_mode": "process",
            "balancer_bgp_local_as": 65010, "balancer_bgp_router_id": "10.9.0.1",
            "balancer_bgp_peers": [{"address": "10.9.0.2", "as": 65000}],
            "balancer_bgp_communities": ["65010:7"],
            "balancer_bgp_config_file": str(bird_dir / "bird.conf"), "balancer_bgp_socket": str(bird_dir / "bird.ctl"),
            "balancer_bgp_packages": []}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"balancers": {"hosts": {"lb": host}}}}}))
    play = tmp_path / "balancer.yml"
    play.write_text(yaml.safe_dump([{"hosts": "balancers", "gather_facts": False,
                                     "roles": [{"role": "xdplb.katran.balancer"}]}]))
    try:
        yield {"ns": ns, "inventory": str(inventory), "play": str(play), "tmp": tmp_path,
               "conf": bird_dir / "bird.conf", "socket": str(bird_dir / "bird.ctl"),
               "pid": str(tmp_path / "etc" / "bird.pid"), "unit": tmp_path / "systemd" / "xdplb-agent.service"}
    finally:
        kill_pidfile(str(tmp_path / "etc" / "bird.pid"))
        ns.close()


def _run(env, *args):
    rc, data = playbook(env["ns"].name, env["inventory"], env["play"], *args)
    assert rc == 0, [t for t in data["tasks"] if t["status"] == "failed"]
    return data


def test_bgp_off_touches_nothing_of_bird(env):
    data = _run(env)
    assert not env["conf"].exists() and not os.path.exists(env["pid"])
    for task in (CONFIGURE, START):
        assert result(data, task, "lb").get("skip_reason"), task
    unit = env["unit"].read_text()
    assert "PrivateDevices=yes" in unit and "--announce-table" not in unit and "DeviceAllow" not in unit


def test_bgp_on_writes_starts_once_and_gives_the_agent_its_arguments(env):
    data = _run(env, "-e", "balancer_bgp_enabled=true")
    assert result(data, CONFIGURE, "lb")["changed"]
    assert result(data, START, "lb")["changed"]
    text = env["conf"].read_text()
    assert "neighbor 10.9.0.2 as 65000;" in text and "bgp_community.add((65010, 7));" in text
    status = subprocess.run(["birdc", "-s", env["socket"], "show", "status"], capture_output=True, text=True, check=False)
    assert "Router ID is 10.9.0.1" in status.stdout and "Daemon is up and running" in status.stdout, status
    unit = env["unit"].read_text()
    assert ("--announce-table 4242 --drain-file %s/bgp-drained\n" % (env["tmp"] / "etc")) in unit, unit
    assert "DevicePolicy=closed\nDeviceAllow=/dev/net/tun rw\n" in unit and "PrivateDevices" not in unit
    with open(env["pid"]) as handle:
        pid = handle.read().strip()

    again = _run(env, "-e", "balancer_bgp_enabled=true")
    assert changed_total(again) == 0, [t["task"] for t in again["tasks"] if t["result"].get("changed")]
    assert result(again, START, "lb")["stdout"] == "running " + pid

    # A community changed: the running BIRD reloaded, not restarted.
    changed = _run(env, "-e", "balancer_bgp_enabled=true", "-e", '{"balancer_bgp_communities": ["65010:8"]}')
    configured = result(changed, CONFIGURE, "lb")
    assert configured["changed"] and configured["reloaded"], configured
    assert not result(changed, START, "lb")["changed"]
    with open(env["pid"]) as handle:
        assert handle.read().strip() == pid

    # Check mode with a diff: the change shown, nothing written.
    before = env["conf"].read_text()
    checked = _run(env, "-e", "balancer_bgp_enabled=true", "-e", '{"balancer_bgp_communities": ["65010:9"]}', "--check", "--diff")
    assert result(checked, CONFIGURE, "lb")["changed"]
    assert env["conf"].read_text() == before
