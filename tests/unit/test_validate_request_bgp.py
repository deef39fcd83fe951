"""validate_request on the balancer role's balancer_bgp_* variables: the engine's bgpspec checks,
each error named after the role's variable and quoting the value; nothing looked at when BGP is off."""
import pytest

from test_validate_request import VIP, balancer_errors
from test_role_agent import DEFAULTS

ON = {"balancer_bgp_enabled": True, "balancer_bgp_local_as": 65010,
      "balancer_bgp_peers": [{"address": "10.20.1.1", "as": 65000}, {"address": "fd00:20:1::1", "as": 65000}]}


def test_the_role_defaults_of_bgp_pass_and_are_not_looked_at_when_off():
    names = [n for n in DEFAULTS if n.startswith("balancer_bgp_")]
    assert len(names) == 19, names
    values = {n: DEFAULTS[n] for n in names if "{{" not in str(DEFAULTS[n])}
    assert balancer_errors(balancer_vips=[VIP], **values) == []
    # Off, even bad values are not an error: the role touches nothing of BGP.
    assert balancer_errors(balancer_bgp_local_as=0, balancer_bgp_password="x") == []
    assert balancer_errors(balancer_bgp_enabled="false", balancer_bgp_local_as=0) == []
    assert balancer_errors(**ON) == []
    assert balancer_errors(**{**ON, "balancer_bgp_enabled": "true", "balancer_bgp_mode": "process",
                              "balancer_bgp_pidfile": "/etc/xdplb/bird.pid"}) == []


@pytest.mark.parametrize("values, field, text", [
    ({"balancer_bgp_local_as": 4294967296}, "balancer_bgp_local_as",
     "balancer_bgp_local_as: 4294967296 is out of range: an AS number must be between 1 and 4294967295"),
    ({"balancer_bgp_local_as": None}, "balancer_bgp_local_as", "balancer_bgp_local_as: None is required"),
    ({"balancer_bgp_peers": [ON["balancer_bgp_peers"][0], {"address": "router", "as": 65000}]},
     "balancer_bgp_peers[1].address", "balancer_bgp_peers[1].address: 'router' is not an address"),
    ({"balancer_bgp_peers": [{"address": "10.20.1.1", "as": 0}]}, "balancer_bgp_peers[0].as",
     "balancer_bgp_peers[0].as: 0 is out of range"),
    ({"balancer_bgp_peers": [], "balancer_bgp_password": "secret"}, "balancer_bgp_password",
     "balancer_bgp_password: is set but balancer_bgp_peers is empty (a password without a peer)"),
    ({"balancer_bgp_families": ["ipv4"], "balancer_bgp_peers": [{"address": "fd00::1", "as": 65000}]},
     "balancer_bgp_peers[0].address", "balancer_bgp_peers[0].address: 'fd00::1' is an IPv6 peer on an IPv4-only session"),
    ({"balancer_bgp_communities": ["65010:70000"]}, "balancer_bgp_communities[0]", "'65010:70000' is not a standard community"),
    ({"balancer_bgp_med": -1}, "balancer_bgp_med", "balancer_bgp_med: -1 is out of range"),
    ({"balancer_bgp_table": 255}, "balancer_bgp_table", "balancer_bgp_table: 255 is a table of the kernel's own"),
    ({"balancer_bgp_bfd_interval": 1}, "balancer_bgp_bfd_interval", "balancer_bgp_bfd_interval: 1 is out of range"),
    ({"balancer_bgp_router_id": "fd00::1"}, "balancer_bgp_router_id", "is not an IPv4 address"),
    ({"balancer_bgp_vip_attributes": {"vip": {}}}, "balancer_bgp_vip_attributes.vip", "'vip' is not an address"),
    ({"balancer_bgp_mode": "cron"}, "balancer_bgp_mode", "balancer_bgp_mode: must be one of systemd, process"),
    ({"balancer_bgp_config_file": "bird.conf"}, "balancer_bgp_config_file", "expected an absolute path"),
    ({"balancer_bgp_enabled": "maybe"}, "balancer_bgp_enabled", "balancer_bgp_enabled: expected true or false"),
    ({"balancer_agent": False}, "balancer_agent", "balancer_agent: must be true with balancer_bgp_enabled"),
])
def test_bgp_variables_name_the_role_variable(values, field, text):
    errors = balancer_errors(**{**ON, **values})
    assert [f for f, _m in errors] == [field], errors
    assert text in errors[0][1], errors


def test_a_password_is_not_quoted():
    errors = balancer_errors(**{**ON, "balancer_bgp_peers": [], "balancer_bgp_password": "hunter2"})
    assert errors and "hunter2" not in errors[0][1]


def test_one_peer_given_as_a_mapping_is_refused_without_its_password():
    errors = balancer_errors(**{**ON, "balancer_bgp_peers": {"address": "10.20.1.1", "as": 65000, "password": "hunter2"}})
    assert [f for f, _m in errors] == ["balancer_bgp_peers"], errors
    assert "must be a list of peers" in errors[0][1] and "hunter2" not in errors[0][1]
