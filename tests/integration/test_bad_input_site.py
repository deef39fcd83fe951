"""site.yml refuses a bad request on a real fleet (the lab's namespaces) and changes nothing.

One lab (a balancer, two backends) is built and deployed with a good request once; then each bad
request goes to site.yml as extra vars, as a user passes them. Those the engine's checks refuse in
the first play touch no host, so they run in parallel; the one only the host can refuse (an unknown
interface) runs on its own. Every namespace, its pins and its files are compared before and after.
"""
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab_fleet import built_lab
from lab_playbook import changed_total, playbook, REPO

PREFIX = "xki-"  # unique among the tests (lab_fleet.py lists the prefixes in use)
STATE_ROOT = "/run/xdplb-badinput"
PIN_ROOT = "/sys/fs/bpf/xdplb-badinput"
INVENTORY = STATE_ROOT + "/inventory.yml"
SITE = os.path.join(REPO, "playbooks", "site.yml")
VALIDATE_REQUEST = "The whole request, with the engine's own checks (on the controller, no host contacted)"
LB, BACKENDS = PREFIX + "lb1", [PREFIX + "be1", PREFIX + "be2"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)")


def _bad_cases(good):
    vips = good["balancer_vips"]
    v4 = vips[0]
    return {
        # A new, valid VIP address with a bad port: it must not reach the backends' lo.
        "new_vip_port_70000": ({"balancer_vips": vips + [dict(v4, address="10.99.0.20", port=70000)]},
                               ["balancer_vips[2].port: 70000 must be <= 65535"], [LB]),
        "duplicate_real": ({"balancer_vips": [dict(v4, reals=[v4["reals"][0], v4["reals"][0]]), vips[1]]},
                           ["balancer_vips[0].reals[1].address", "is listed twice"], [LB]),
        "unknown_key": ({"balancer_vips": [dict(v4, reals=[{"address": v4["reals"][0], "wieght": 2}])]},
                        ["balancer_vips[0].reals[0].wieght", "is not a known field"], [LB]),
        "nested_type": ({"balancer_vips": [dict(v4, reals=[{"address": v4["reals"][0], "weight": "heavy"}])]},
                        ["balancer_vips[0].reals[0].weight", "'heavy'", "must be an integer"], [LB]),
        "ipv4_real_for_ipv6_vip": ({"balancer_vips": [v4, dict(vips[1], reals=v4["reals"])]},
                                   ["balancer_vips[1].reals[0].address", "is IPv4 but the VIP fd00:99::10 is IPv6"], [LB]),
        "bad_backend_vips": ({"backend_vips": ["10.99.0.10", "10.99.0.10/33"]},
                             ["backend_vips[1]", "'10.99.0.10/33'", "prefix length must be at most 32"], BACKENDS),
        "huge_address": ({"balancer_vips": [dict(v4, address="1" * 65537)]},
                         ["balancer_vips[0].address", "(65539 characters)"], [LB]),
        "gateway_mac": ({"balancer_gateway_mac": "02:58:4b:20:01"},
                        ["balancer_gateway_mac", "'02:58:4b:20:01' is not a MAC address"], [LB]),
        "ring_size": ({"balancer_ring_size": 65535}, ["balancer_ring_size: 65535 is not prime"], [LB]),
        "rp_filter_without_tunnel_address": ({"backend_rp_filter": 2},
                                             ["backend_rp_filter", "needs backend_tunnel_address"], BACKENDS),
        "bad_interface_name": ({"balancer_interface": "eth0/1"},
                               ["balancer_interface", "'eth0/1'", "cannot contain '/'"], [LB]),
    }


def _site(tmp_path, name, values):
    extra = tmp_path / f"{name}.json"  # a 65,537-character value is too long for argv
    extra.write_text(json.dumps(values))
    return playbook(SITE, "-i", INVENTORY, "-e", "@" + str(extra), check=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with built_lab(PREFIX, STATE_ROOT, PIN_ROOT) as fleet:
        good = dict(fleet.good_request(), xdplb_check=False)
        tmp = tmp_path_factory.mktemp("site")
        rc, data = _site(tmp, "good", good)
        assert rc == 0, data and [t for t in data["tasks"] if t["status"] == "failed"]
        yield {"good": good, "tmp": tmp, "before": fleet.fleet(), "fleet": fleet}


@pytest.fixture(scope="module")
def refused(lab):
    """Every bad request of _bad_cases, in parallel (they must not get past the first play)."""
    cases = _bad_cases(lab["good"])
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_site, lab["tmp"], name, dict(lab["good"], **values))
                   for name, (values, _texts, _hosts) in cases.items()}
        return {name: (future.result(), cases[name]) for name, future in futures.items()}


def test_each_bad_request_is_refused_before_any_host_naming_host_variable_and_value(refused):
    assert len(refused) >= 8
    for name, ((rc, data), (_values, texts, hosts)) in sorted(refused.items()):
        assert rc != 0, name
        assert {t["host"] for t in data["tasks"]} == {"localhost"}, (name, data["tasks"][-1])
        failed = [t for t in data["tasks"] if t["status"] == "failed"]
        assert [t["task"] for t in failed] == [VALIDATE_REQUEST], name
        message = failed[0]["result"]["msg"]
        assert message.startswith("the request is refused (checked on the controller, before any host was touched): ")
        assert ", ".join(hosts) + ": " in message, (name, message)
        for text in texts:
            assert text in message, (name, message)
        assert len(message) < 1000, (name, len(message))


def test_an_unknown_interface_fails_before_attaching_and_changes_nothing(lab):
    """Only the balancer can tell that eth9 does not exist: the role stops before the program is
    attached (engine_install reports the host's interfaces), names balancer_interface and its value,
    and there is nothing to roll back: no rescue runs (the recap once said rescued=1 failed=1)."""
    rc, data = _site(lab["tmp"], "eth9", dict(lab["good"], balancer_interface="eth9"))
    assert rc != 0
    assert changed_total(data) == 0
    failed = [t for t in data["tasks"] if t["status"] == "failed" and t["host"] == LB]
    message = failed[-1]["result"]["msg"]
    assert "balancer_interface" in message and "eth9" in message and "nothing was changed" in message.lower(), message
    assert failed[-1]["task"] == "xdplb.katran.balancer : The interface exists (before anything is attached, so a typo changes nothing)"
    for task in ("Roll back to the last object that worked", "Detach the new program (there was none before)"):
        ran = [t["status"] for t in data["tasks"] if t["task"] == "xdplb.katran.balancer : " + task]
        assert set(ran) <= {"skipped"}, (task, ran)
    assert data["stats"][LB]["changed"] == 0 and data["stats"][LB]["failures"] == 1
    assert data["stats"][LB].get("rescued", 0) == 0, data["stats"][LB]


ROLES_ALONE = [
    {"name": "Backends", "hosts": "backends", "gather_facts": False,
     "roles": [{"role": "xdplb.katran.backend"}]},
    {"name": "Balancers", "hosts": "balancers", "gather_facts": False,
     "roles": [{"role": "xdplb.katran.balancer"}]},
]
ROLE_CHECK = "Check the request with the engine's own checks (on the controller, before the host is touched)"


@pytest.mark.parametrize("role, values, hosts, text", [
    ("balancer", {"balancer_vips": [{"address": "10.99.0.10", "port": 70000, "reals": ["10.30.1.2"]}]}, [LB],
     "balancer_vips[0].port: 70000 must be <= 65535"),
    ("backend", {"backend_vips": ["10.99.0.10", "10.99.0.1O"]}, BACKENDS,
     "backend_vips[1]: not a valid IPv4 or IPv6 address (got '10.99.0.1O')"),
])
def test_a_role_run_alone_names_its_own_variables(lab, role, values, hosts, text):
    """Not lb_vip's content[0].port nor the backend modules' vips[0]: the role's variable, before its
    first module runs on the host."""
    play = lab["tmp"] / f"{role}_alone.json"
    play.write_text(json.dumps([p for p in ROLES_ALONE if p["roles"][0]["role"].endswith(role)]))
    extra = lab["tmp"] / f"{role}_alone_vars.json"
    extra.write_text(json.dumps(values))
    rc, data = playbook(str(play), "-i", INVENTORY, "-e", "@" + str(extra), check=False)
    assert rc != 0
    failed = [t for t in data["tasks"] if t["status"] == "failed"]
    assert sorted(t["host"] for t in failed) == sorted(hosts)
    for task in failed:
        assert task["task"] == f"xdplb.katran.{role} : {ROLE_CHECK}"
        assert task["result"]["msg"] == "the request is refused: " + text
    # Before it only the role's argument spec ran (on the controller as well).
    others = {t["task"] for t in data["tasks"]} - {f"xdplb.katran.{role} : {ROLE_CHECK}"}
    assert all(name.startswith(f"xdplb.katran.{role} : Validating arguments against arg spec") for name in others), others
    assert changed_total(data) == 0


def test_nothing_changed_on_any_lab_host(lab, refused):
    # Depends on `refused` and runs after the interface test: every bad run is done.
    assert lab["fleet"].fleet() == lab["before"]
