"""drain.yml and undrain.yml keep the balancer's state file the way the balancer role does.

They wrote it with to_nice_json (sorted keys, indented, every real as a mapping) while the role keeps
the bytes of `to_json` that lb_vip got, so the next site.yml after a drain and an undrain rewrote the
file and reported `changed` with nothing to show. Here one balancer (a namespace with a veth, the
role run for real under `nsenter --net`) gets the role, drain.yml and undrain.yml of a backend that
is not in the inventory (as an address, which needs no lab), and the role again: the state file must
be the role's bytes again, and the role must change nothing.
"""
import json
import os

import pytest
import yaml

from balancer_env import BalancerNS, build_objects
from lab_playbook import BIN, REPO, changed_total
from netns_playbook import playbook, result

STATE_TASK = "Put the VIPs in service and keep them as the state file the boot unit restores"
DRAIN, UNDRAIN = (os.path.join(REPO, "playbooks", n) for n in ("drain.yml", "undrain.yml"))
BACKEND = "10.1.0.1"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: run as root")


def _run(env, path, *args):
    return playbook(env["ns"].name, env["inventory"], path, *args)[1]


def _result(data, task):
    return result(data, task, "lb")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    build_objects()
    tmp = tmp_path_factory.mktemp("drainstate")
    ns = BalancerNS()
    ns.ip("addr", "add", "10.9.0.1/24", "dev", "lb0")
    # Every form a real takes in balancer_vips: an address, a mapping with and without a weight,
    # and the address: weight mapping; the drained backend appears in each.
    vips = [{"address": "10.99.0.10", "port": 80, "reals": [BACKEND, "10.1.0.2"]},
            {"address": "10.99.0.11", "port": 80, "protocol": "tcp",
             "reals": [{"weight": 3, "address": BACKEND}, {"address": "10.1.0.2"}]},
            {"address": "10.99.0.12", "port": 53, "protocol": "udp", "reals": [{"address": BACKEND}, "10.1.0.3"]},
            {"address": "10.99.0.13", "port": 443, "reals": {"10.1.0.3": 2, BACKEND: 5}}]
    host = {"ansible_connection": "local", "ansible_python_interpreter": os.path.join(BIN, "python"),
            "balancer_interface": "lb0", "balancer_pin_root": ns.pin_root, "balancer_vips": vips,
            "balancer_gateway_mac": "02:00:00:00:00:fe", "balancer_source_v4": "10.9.0.1",
            "balancer_state_dir": str(tmp / "etc"), "balancer_lib_dir": str(tmp / "lib"),
            "balancer_systemd_dir": str(tmp / "systemd"), "balancer_systemd_enable": False,
            "balancer_health_state_file": str(tmp / "health" / "health.json"),
            "balancer_packages": [], "balancer_verify_connection": False}
    inventory = tmp / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"balancers": {"hosts": {"lb": host}}}}}))
    play = tmp / "balancer.yml"
    play.write_text(yaml.safe_dump([{"hosts": "balancers", "gather_facts": False,
                                     "roles": [{"role": "xdplb.katran.balancer"}]}]))
    try:
        yield {"ns": ns, "inventory": str(inventory), "play": str(play), "state": tmp / "etc" / "balancer.json"}
    finally:
        ns.close()


def test_site_after_drain_and_undrain_changes_nothing(env):
    first = _run(env, env["play"])
    assert _result(first, STATE_TASK)["changed"]
    role_bytes = env["state"].read_bytes()

    drained = _run(env, DRAIN, "-e", "drain_backend=" + BACKEND, "-e", "drain_timeout=0")
    assert _result(drained, "Keep the drain across a reboot (state file)")["kept"]
    doc = json.loads(env["state"].read_text())
    weights = [r["weight"] if isinstance(r, dict) else 1 for v in doc["vips"] if isinstance(v["reals"], list)
               for r in v["reals"] if (r["address"] if isinstance(r, dict) else r) == BACKEND]
    assert weights == [0, 0, 0] and doc["vips"][3]["reals"][BACKEND] == 0, doc["vips"]
    # The role's serialisation (to_json, the role's key order), not to_nice_json's.
    assert env["state"].read_text() == json.dumps(doc)

    undrained = _run(env, UNDRAIN, "-e", "drain_backend=" + BACKEND, "-e", "undrain_check=false")
    assert _result(undrained, "Keep the weights across a reboot (state file)")["kept"]
    assert env["state"].read_bytes() == role_bytes

    again = _run(env, env["play"])
    assert not _result(again, STATE_TASK)["changed"]
    assert changed_total(again) == 0, [t["task"] for t in again["tasks"] if t["result"].get("changed")]
