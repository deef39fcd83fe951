"""validate_request on the balancer role's health and agent variables: named as the user wrote them."""
import os

import pytest
import yaml

from test_validate_request import VIP, balancer_errors
from test_role_agent import DEFAULTS, ROLE


def test_the_role_defaults_of_health_and_agent_pass():
    names = [n for n in DEFAULTS if n.startswith(("balancer_health_", "balancer_agent"))]
    assert len(names) == 9, names
    assert balancer_errors(balancer_vips=[VIP], **{n: DEFAULTS[n] for n in names}) == []


@pytest.mark.parametrize("values, field, text", [
    ({"balancer_health_fall": 0}, "balancer_health_fall", "balancer_health_fall: 0 must be >= 1"),
    ({"balancer_health_rise": 101}, "balancer_health_rise", "balancer_health_rise: 101 must be <= 100"),
    ({"balancer_health_interval": 0.01}, "balancer_health_interval", "balancer_health_interval: 0.01 must be >= 0.05"),
    ({"balancer_health_timeout": 2, "balancer_health_interval": 1.0}, "balancer_health_timeout",
     "balancer_health_timeout: 2.0 must be <= the interval (1.0 s)"),
    ({"balancer_health_kind": "icmp"}, "balancer_health_kind", "balancer_health_kind: 'icmp' is not a health check kind"),
    ({"balancer_health_state_file": "health.json"}, "balancer_health_state_file", "expected an absolute path"),
    ({"balancer_health_state_file": "/var/lib/x dplb/health.json"}, "balancer_health_state_file", "without spaces"),
    ({"balancer_health_state_file": "/var/lib/xdplb/"}, "balancer_health_state_file", "to a file"),
    ({"balancer_agent_mode": "cron"}, "balancer_agent_mode", "must be one of systemd, process"),
    ({"balancer_agent_capabilities": ["CAP_BPF", "net_raw"]}, "balancer_agent_capabilities[1]",
     "is not a Linux capability name"),
    ({"balancer_agent_capabilities": ["CAP_BPF", "CAP_BPF"]}, "balancer_agent_capabilities[1]", "is listed twice"),
    ({"balancer_agent_capabilities": "CAP_BPF"}, "balancer_agent_capabilities", "expected a list"),
])
def test_health_and_agent_variables_name_the_role_variable(values, field, text):
    errors = balancer_errors(**values)
    assert [f for f, _m in errors] == [field], errors
    assert text in errors[0][1], errors


def test_a_vips_own_health_is_named_at_its_path_and_resolved_with_the_role_defaults():
    bad = dict(VIP, health={"fall": 0})
    assert balancer_errors(balancer_vips=[VIP, bad]) == [
        ("balancer_vips[1].health.fall", "balancer_vips[1].health.fall: 0 must be >= 1")]
    # A port-0 VIP is not checked unless its own health asks for it: then it needs a port, unless its kind is none.
    assert balancer_errors(balancer_vips=[dict(VIP, port=0)]) == []
    any_port = dict(VIP, port=0, health={"fall": 2})
    assert [f for f, _m in balancer_errors(balancer_vips=[any_port])] == ["balancer_vips[0].health.port"]
    assert balancer_errors(balancer_vips=[any_port], balancer_health_kind="none") == []
    assert balancer_errors(balancer_vips=[dict(any_port, health={"port": 80})]) == []
    # The VIP's timeout inherits the defaults' interval check.
    errors = balancer_errors(balancer_vips=[dict(VIP, health={"timeout": 3})], balancer_health_interval=2)
    assert errors == [("balancer_vips[0].health.timeout", "balancer_vips[0].health.timeout: 3.0 must be <= the interval (2.0 s)")]
    assert balancer_errors(balancer_vips=[dict(VIP, health={"kind": "http", "payload": "x"})])[0][0] == "balancer_vips[0].health.payload"


def test_every_bad_health_variable_is_reported_with_the_vips():
    errors = balancer_errors(balancer_vips=[dict(VIP, port=70000)], balancer_health_fall=0, balancer_health_rise=0,
                             balancer_agent_mode="cron")
    # parse_defaults stops at its first error; the others are each their own.
    assert [f for f, _m in errors] == ["balancer_health_rise", "balancer_vips[0].port", "balancer_agent_mode"], errors


def test_the_argument_spec_and_the_defaults_agree():
    with open(os.path.join(ROLE, "meta", "argument_specs.yml")) as handle:
        options = yaml.safe_load(handle)["argument_specs"]["main"]["options"]
    for name, value in DEFAULTS.items():
        assert options[name].get("default", []) == value, name
