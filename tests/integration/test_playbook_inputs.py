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
RANGES = "Ranges the spec cannot express"  # drain.yml
VALIDATE_REQUEST = "The whole request, with the engine's own checks (on the controller, no host contacted)"

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

# Contents the hosts would refuse, with types the argument specs accept: refused by the engine's own
# checks in the first play. (playbook, extra vars, [what the message names], hosts named).
_VIP = {"address": "10.99.0.10", "port": 80, "reals": ["10.1.0.11", "10.1.0.12"]}
HUGE = "9" * 65537
CONTENT = {
    "port": ("site", {"balancer_vips": [dict(_VIP, address="10.99.0.77", port=70000)]},
             ["balancer_vips[0].port: 70000 must be <= 65535"], ["lb1", "lb2"]),
    "duplicate_real": ("site", {"balancer_vips": [dict(_VIP, reals=["10.1.0.11", "10.1.0.11"])]},
                       ["balancer_vips[0].reals[1].address", "'10.1.0.11' is listed twice"], ["lb1", "lb2"]),
    "unknown_key": ("site", {"balancer_vips": [dict(_VIP, prot="udp")]},
                    ["balancer_vips[0].prot", "is not a known field"], ["lb1", "lb2"]),
    "nested_type": ("site", {"balancer_vips": [_VIP, dict(_VIP, port=81, reals=[{"address": "10.1.0.11", "weight": [1]}])]},
                    ["balancer_vips[1].reals[0].weight", "[1]", "must be an integer"], ["lb1", "lb2"]),
    "duplicate_vip": ("site", {"balancer_vips": [_VIP, dict(_VIP, address=" 10.99.0.10")]},
                      ["balancer_vips[1]", "is listed twice (also balancer_vips[0])"], ["lb1", "lb2"]),
    "backend_vips": ("site", {"balancer_vips": [_VIP], "backend_vips": ["10.99.0.10", "10.99.0.300"]},
                     ["backend_vips[1]", "'10.99.0.300'", "not a valid IPv4 or IPv6 address"], ["be1", "be2"]),
    "backend_vips_twice": ("site", {"balancer_vips": [_VIP], "backend_vips": ["10.99.0.10", "10.99.0.10/32"]},
                           ["backend_vips[1]", "listed twice (also backend_vips[0])"], ["be1", "be2"]),
    "gateway_mac": ("site", {"balancer_vips": [_VIP], "balancer_gateway_mac": "02:00:00:00:00"},
                    ["balancer_gateway_mac", "'02:00:00:00:00'", "is not a MAC address"], ["lb1", "lb2"]),
    "interface_name": ("site", {"balancer_vips": [_VIP], "balancer_interface": "eth0:1"},
                       ["balancer_interface", "'eth0:1'"], ["lb1", "lb2"]),
    "ring_size": ("site", {"balancer_vips": [_VIP], "balancer_ring_size": 65536},
                  ["balancer_ring_size: 65536 is not prime"], ["lb1", "lb2"]),
    "source_v4": ("site", {"balancer_vips": [_VIP], "balancer_source_v4": "fd00::1"},
                  ["balancer_source_v4", "'fd00::1'", "expected an IPv4 address"], ["lb1", "lb2"]),
    "rp_filter": ("site", {"balancer_vips": [_VIP], "backend_rp_filter": 2},
                  ["backend_rp_filter", "needs backend_tunnel_address"], ["be1", "be2"]),
    "huge": ("site", {"balancer_vips": [dict(_VIP, address=HUGE)]},
             ["balancer_vips[0].address", "'999999", "(65539 characters)"], ["lb1", "lb2"]),
    "rollout_port": ("rollout", {"balancer_vips": [dict(_VIP, port=70000)]},
                     ["balancer_vips[0].port: 70000 must be <= 65535"], ["lb1", "lb2"]),
    "rollout_weight": ("rollout", {"balancer_vips": [dict(_VIP, reals=[{"address": "10.1.0.11", "weight": -1}])]},
                       ["balancer_vips[0].reals[0].weight: -1 must be >= 0"], ["lb1", "lb2"]),
    "undrain_weight": ("undrain", {"drain_backend": "be1", "undrain_weight": 70000},
                       ["undrain_weight: 70000 must be <= 65535"], ["lb1", "lb2"]),
    "drain_addresses": ("drain", {"drain_backend": "be1", "drain_addresses": ["10.1.0.11", "224.0.0.1"]},
                        ["drain_addresses[1]", "'224.0.0.1' must be a unicast address"], ["lb1", "lb2"]),
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
    for case, (name, values, _names, _hosts) in CONTENT.items():
        extra = tmp_path_factory.mktemp("extra") / "vars.json"  # a 65,537-character value is too long for argv
        extra.write_text(json.dumps(dict(GOOD[name], **values)))
        jobs[("content", case)] = (_path(name), "-e", "@" + str(extra))
    # One host of the inventory is wrong (its own host variables): it is named, the others are not.
    per_host = tmp_path_factory.mktemp("inputs") / "per_host.yml"
    inventory_lb2 = json.loads(json.dumps(INVENTORY))
    inventory_lb2["all"]["vars"]["balancer_vips"] = [_VIP]
    hosts = inventory_lb2["all"]["children"]["balancers"]["hosts"]
    hosts["lb2"] = {"balancer_vips": [dict(_VIP, port=70000)]}
    inventory_lb2["all"]["children"]["backends"]["hosts"]["be2"] = {"backend_vips": ["10.99.0.10/33"]}
    per_host.write_text(yaml.safe_dump(inventory_lb2))
    # balancer_vips as inventories (and the fleet scenario) often build it: from the backends'
    # own variables through hostvars; valid, then with one backend's address wrong.
    from_hostvars = {}
    for case, address in (("good", "10.1.0.12"), ("bad", "10.1.0.300")):
        inv = json.loads(json.dumps(INVENTORY))
        inv["all"]["vars"]["balancer_vips"] = (
            "{{ [{'address': '10.99.0.10', 'port': 80, 'reals': groups['backends'] | map('extract', hostvars, 'real_ip') | list}] }}")
        inv["all"]["children"]["backends"]["hosts"] = {"be1": {"real_ip": "10.1.0.11"}, "be2": {"real_ip": address}}
        from_hostvars[case] = tmp_path_factory.mktemp("inputs") / ("hostvars_%s.yml" % case)
        from_hostvars[case].write_text(yaml.safe_dump(inv))
    with ThreadPoolExecutor(max_workers=min(6, os.cpu_count() or 1)) as pool:
        futures = {key: pool.submit(playbook, args[0], "-i", str(inventory), *args[1:], check=False)
                   for key, args in jobs.items()}
        futures[("content", "per_host")] = pool.submit(playbook, _path("site"), "-i", str(per_host), check=False)
        for case, path in from_hostvars.items():
            futures[("hostvars", case)] = pool.submit(playbook, _path("site"), "-i", str(path), check=False)
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
    assert {t["task"] for t in data["tasks"]} <= {VALIDATE, VALIDATE_ROLES, RANGES, VALIDATE_REQUEST}
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
    checks = [t for t in data["tasks"] if t["task"] in (VALIDATE, VALIDATE_ROLES, VALIDATE_REQUEST)]
    assert [(t["task"], t["host"], t["status"]) for t in checks] == (
        [(VALIDATE, "localhost", "ok")] + ([(VALIDATE_ROLES, "localhost", "ok")] if name in ROLES_OF else [])
        + ([(VALIDATE_REQUEST, "localhost", "ok")] if name != "doctor" else []))
    # The run went on to the fleet (which cannot be reached here).
    assert {t["host"] for t in data["tasks"]} - {"localhost"}


def test_variables_built_from_hostvars_are_checked_as_the_hosts_play_sees_them(runs):
    _rc, data = runs[("hostvars", "good")]
    checks = [(t["host"], t["status"]) for t in data["tasks"] if t["task"] == VALIDATE_REQUEST]
    assert checks == [("localhost", "ok")], [t for t in data["tasks"] if t["task"] == VALIDATE_REQUEST]
    result = _failure(*runs[("hostvars", "bad")], VALIDATE_REQUEST)
    assert "lb1, lb2: balancer_vips[0].reals[1].address: '10.1.0.300' is not a valid IPv4 or IPv6 address" in result["msg"]


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


@pytest.mark.parametrize("case", sorted(CONTENT))
def test_content_a_host_would_refuse_fails_first_naming_host_variable_and_value(runs, case):
    """Valid types, contents a host would refuse: the engine's own checks refuse the request on the
    controller (the hosts here cannot even be reached), naming each bad host, the variable path and the value."""
    _name, _values, names, hosts = CONTENT[case]
    result = _failure(*runs[("content", case)], VALIDATE_REQUEST)
    message = result["msg"]
    assert message.startswith("the request is refused (checked on the controller, before any host was touched): ")
    for text in names:
        assert text in message, message
    assert ", ".join(hosts) + ": " in message, message
    assert sorted({e["host"] for e in result["errors"]}) == sorted(hosts)
    # One error per host, the value cut: a 65,537-character value is not echoed, not even in the result.
    assert len(message) < 1000, len(message)
    assert len(json.dumps(result)) < 4000


def test_only_the_host_with_the_bad_variables_is_named(runs):
    result = _failure(*runs[("content", "per_host")], VALIDATE_REQUEST)
    message = result["msg"]
    assert "lb2: balancer_vips[0].port: 70000 must be <= 65535" in message, message
    assert "be2: backend_vips[0]: the prefix length must be at most 32 for IPv4 (got '10.99.0.10/33')" in message, message
    assert "lb1" not in message and "be1" not in message
    assert [(e["host"], e["field"]) for e in result["errors"]] == [("lb2", "balancer_vips[0].port"),
                                                                   ("be2", "backend_vips[0]")]
