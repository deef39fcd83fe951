"""The fleet playbooks validate their inputs (playbooks/specs/*.yml) before any host is touched.

Runs ansible-playbook as a user does (extra vars, as an AWX survey passes them) against an inventory
of hosts that cannot be reached: network namespaces that do not exist. No root, no lab, no network;
the runs go in parallel, so the module takes well under a minute (about 10-20 s).
"""
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from lab_playbook import playbook, REPO

PLAYBOOKS = ("site", "rollout", "drain", "undrain", "doctor")
ROLES_OF = {"site": ("backend", "balancer"), "rollout": ("balancer",)}
VALIDATE = "The playbook's variables"
VALIDATE_ROLES = "The roles' variables (their own argument specs; required ones may come from the inventory)"

# Several bad values in one run: the validation reports every one of them.
BAD = {
    "site": {"xdplb_check": "perhaps", "xdplb_check_timeout": "soon"},
    "rollout": {"rollout_soak": "a while", "rollout_rollback": "maybe"},
    "drain": {"drain_timeout": "abc", "drain_poll": "often"},  # and no drain_backend
    "undrain": {"undrain_weight": "heavy"},  # and no drain_backend
    "doctor": {"doctor_fail_on": "bogus", "xdplb_check_flows": "many"},
}
BAD_NAMES = {
    "site": ["xdplb_check", "xdplb_check_timeout"],
    "rollout": ["rollout_soak", "rollout_rollback"],
    "drain": ["drain_backend", "drain_timeout", "drain_poll"],
    "undrain": ["drain_backend", "undrain_weight"],
    "doctor": ["doctor_fail_on", "xdplb_check_flows"],
}
# The playbook's own variables are right, a role variable is not (validated by the role's own spec).
BAD_ROLE = {
    "site": ({"balancer_xdp_mode": "bogus", "backend_advmss": "wide"}, ["balancer_xdp_mode", "backend_advmss"]),
    "rollout": ({"balancer_source_mode": "random"}, ["balancer_source_mode"]),
}
# Valid inputs, mostly as strings (what survey text fields and -e key=value give); doctor gets none
# (optional variables left undefined pass).
GOOD = {
    "site": {"xdplb_check": "false", "xdplb_check_from": "", "xdplb_check_flows": "8", "xdplb_check_timeout": 1,
             "xdplb_check_backends": True, "xdplb_require_forwarding": "no", "balancer_xdp_mode": "generic",
             "balancer_source_mode": "per_flow", "backend_advmss": "1440",
             "balancer_vips": [{"address": "10.99.0.10", "port": 80, "reals": ["10.1.0.11"]}]},
    "rollout": {"rollout_object": "/srv/bpf/balancer.o", "rollout_soak": "30", "rollout_rollback": "false",
                "xdplb_check_from": "client1", "xdplb_require_forwarding": True, "balancer_max_packet_size": 1500},
    "drain": {"drain_backend": "be1", "drain_addresses": "10.1.0.11, fd00:1::11", "drain_timeout": "900",
              "drain_poll": "2", "drain_fail_on_timeout": "yes", "drain_hook_tasks": "/srv/hooks/maintenance.yml"},
    "undrain": {"drain_backend": "10.1.0.11", "drain_addresses": ["10.1.0.11"], "undrain_weight": "2",
                "undrain_check": "no"},
    "doctor": {},
}

INVENTORY = {"all": {"children": {
    "balancers": {"hosts": {"lb1": {}, "lb2": {}}},
    "backends": {"hosts": {"be1": {}, "be2": {}}}},
    "vars": {"ansible_connection": "xdplb.katran.netns",
             "ansible_netns_name": "xdplb-inputs-test-{{ inventory_hostname }}-absent"}}}


def _path(name):
    return os.path.join(REPO, "playbooks", name + ".yml")


def _spec(name):
    with open(os.path.join(REPO, "playbooks", "specs", name + ".yml")) as handle:
        return yaml.safe_load(handle)["argument_specs"]["main"]


def _role_spec(role):
    with open(os.path.join(REPO, "roles", role, "meta", "argument_specs.yml")) as handle:
        return yaml.safe_load(handle)["argument_specs"]["main"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, started together: {key: (rc, data)}."""
    inventory = tmp_path_factory.mktemp("inputs") / "inventory.yml"
    inventory.write_text(yaml.safe_dump(INVENTORY))
    jobs = {}
    for name in PLAYBOOKS:
        jobs[("bad", name)] = (_path(name), "-e", json.dumps(BAD[name]))
        jobs[("good", name)] = (_path(name), "-e", json.dumps(GOOD[name]))
    for name, (values, _names) in BAD_ROLE.items():
        jobs[("bad_role", name)] = (_path(name), "-e", json.dumps(dict(GOOD[name], **values)))
    # --limit without localhost: the validation runs on the first limited host, needing no connection.
    jobs[("limit", "rollout")] = (_path("rollout"), "--limit", "lb1", "-e", json.dumps(BAD["rollout"]))
    jobs[("limit", "drain")] = (_path("drain"), "--limit", "balancers", "-e", json.dumps(GOOD["drain"]))
    jobs[("range", "drain")] = (_path("drain"), "-e", json.dumps(dict(GOOD["drain"], drain_poll="0")))
    with ThreadPoolExecutor(max_workers=min(6, os.cpu_count() or 1)) as pool:
        futures = {key: pool.submit(playbook, args[0], "-i", str(inventory), *args[1:], check=False)
                   for key, args in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def _failure(rc, data, task, hosts=("localhost",)):
    """The run failed at the validation task, and no other task ran anywhere."""
    assert rc != 0
    assert data is not None
    assert {t["host"] for t in data["tasks"]} == set(hosts), data["tasks"]
    assert set(data["stats"]) == set(hosts)
    assert all(stats["unreachable"] == 0 and stats["changed"] == 0 for stats in data["stats"].values())
    failed = [t for t in data["tasks"] if t["status"] == "failed"]
    assert [t["task"] for t in failed] == [task]
    assert {t["task"] for t in data["tasks"]} <= {VALIDATE, VALIDATE_ROLES}
    return failed[0]["result"]


def _messages(result):
    """The validation errors, also of a looped task (one result per role)."""
    items = result.get("results", [result])
    return "\n".join(item.get("msg", "") for item in items)


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_bad_value_fails_first_and_names_the_variable(runs, name):
    result = _failure(*runs[("bad", name)], VALIDATE)
    message = result["msg"]
    assert message.startswith("Validation of arguments failed")
    for variable in BAD_NAMES[name]:
        assert variable in message, message
    assert len(result["argument_errors"]) == len(BAD_NAMES[name]), result["argument_errors"]


@pytest.mark.parametrize("name", sorted(BAD_ROLE))
def test_bad_role_variable_fails_first_and_names_it(runs, name):
    message = _messages(_failure(*runs[("bad_role", name)], VALIDATE_ROLES))
    for variable in BAD_ROLE[name][1]:
        assert variable in message, message


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_valid_values_pass_the_validation(runs, name):
    _rc, data = runs[("good", name)]
    checks = [t for t in data["tasks"] if t["task"] in (VALIDATE, VALIDATE_ROLES)]
    assert [(t["task"], t["host"], t["status"]) for t in checks] == (
        [(VALIDATE, "localhost", "ok")] + ([(VALIDATE_ROLES, "localhost", "ok")] if name in ROLES_OF else []))
    # The run went on to the fleet (which cannot be reached here).
    assert {t["host"] for t in data["tasks"]} - {"localhost"}


def test_limit_without_localhost_still_validates_first(runs):
    """AWX job templates limit rollout to balancers; --limit drops localhost from every play."""
    result = _failure(*runs[("limit", "rollout")], VALIDATE, hosts=("lb1",))
    assert "rollout_soak" in result["msg"] and "rollout_rollback" in result["msg"]
    _rc, data = runs[("limit", "drain")]
    first = data["tasks"][0]
    assert (first["task"], first["host"], first["status"]) == (VALIDATE, "lb1", "ok")
    assert [t["task"] for t in data["tasks"]].count(VALIDATE) == 1


def test_drain_poll_of_zero_is_refused_before_any_host(runs):
    rc, data = runs[("range", "drain")]
    assert rc != 0
    assert {t["host"] for t in data["tasks"]} == {"localhost"}
    failed = [t for t in data["tasks"] if t["status"] == "failed"]
    assert len(failed) == 1 and "drain_poll=0" in failed[0]["result"]["msg"]


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_spec_file(name):
    """Each option is documented and used by the playbook; shared ones agree with the roles' specs."""
    spec = _spec(name)
    assert spec["short_description"]
    with open(_path(name)) as handle:
        text = handle.read()
    assert f"playbook_dir ~ '/specs/{name}.yml'" in text
    used = text
    for tasks in os.listdir(os.path.join(REPO, "playbooks", "tasks")):
        with open(os.path.join(REPO, "playbooks", "tasks", tasks)) as handle:
            used += handle.read()
    role_options = {}
    for role in ("backend", "balancer"):
        role_options.update(_role_spec(role)["options"])
    for option, attrs in spec["options"].items():
        assert attrs.get("type") and attrs.get("description"), option
        assert not (attrs.get("required") and "default" in attrs), option
        assert option in used, f"{option} is not used by {name}.yml or playbooks/tasks"
        if option in role_options:
            for key in ("type", "elements", "choices"):
                assert attrs.get(key) == role_options[option].get(key), (option, key)
    for role in ROLES_OF.get(name, ()):
        assert not set(spec["options"]) & set(_role_spec(role)["options"])
