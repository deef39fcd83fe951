"""xdplb.katran.validate_request's checks: the engine's own, under the roles' variable names.

Each case is a role variable as a user sets it; the check must name that variable (with the path
inside it) and the value, cut to a readable length, and report every bad variable, not the first.
"""
import pytest

from ansible_collections.xdplb.katran.plugins.action import validate_request as vr

VIP = {"address": "10.99.0.10", "port": 80, "reals": ["10.1.0.11", "10.1.0.12"]}


def getter(**values):
    return lambda name: (name in values, values.get(name))


def balancer_errors(**values):
    return [(e.field, e.msg) for e in vr.check_balancer(getter(**values))]


def backend_errors(derived=None, **values):
    return [(e.field, e.msg) for e in vr.check_backend(getter(**values), derived)]


def test_valid_balancer_and_backend_variables_pass():
    assert balancer_errors(balancer_vips=[VIP], balancer_interface="eth0", balancer_xdp_mode="generic",
                           balancer_ring_size="65537", balancer_gateway_mac="02:00:00:00:00:01",
                           balancer_source_mode="per_flow", balancer_source_v4="10.0.0.1",
                           balancer_source_v6="fd00::1", balancer_max_packet_size="1500",
                           balancer_engine_python="/usr/bin/python3") == []
    assert backend_errors(backend_vips=["10.99.0.10", "fd00:99::10/128"], backend_interface="eth0",
                          backend_rp_filter=2, backend_tunnel_address="10.30.0.5/32", backend_arp_ignore=1,
                          backend_arp_announce="2", backend_advmss=1440, backend_ipip_device="ipip0",
                          backend_ip6tnl_device="ip6tnl1", backend_engine_python="/opt/py/bin/python3") == []


def test_nothing_defined_nothing_checked():
    assert balancer_errors() == [] and backend_errors() == [] and vr.check_drain(getter()) == []


def test_the_role_defaults_pass():
    """Empty strings and zeros are the roles' defaults: "take it from the host", "no limit"."""
    assert balancer_errors(balancer_vips=[], balancer_interface="", balancer_gateway_mac="", balancer_source_v4="",
                           balancer_source_v6="", balancer_max_packet_size=0, balancer_source_mode="balancer",
                           balancer_xdp_mode="auto", balancer_ring_size=65537, balancer_engine_python="") == []
    assert backend_errors(backend_vips=["10.99.0.10"], backend_interface="", backend_tunnel_address="",
                          backend_rp_filter=0, backend_advmss=0, backend_engine_python="") == []


@pytest.mark.parametrize("vips, field, text", [
    ([dict(VIP, port=70000)], "balancer_vips[0].port", "balancer_vips[0].port: 70000 must be <= 65535"),
    ([VIP, dict(VIP, port=81, reals=[{"address": "10.1.0.11", "weight": -1}])], "balancer_vips[1].reals[0].weight",
     "balancer_vips[1].reals[0].weight: -1 must be >= 0"),
    ([dict(VIP, reals=["10.1.0.11", "10.1.0.11"])], "balancer_vips[0].reals[1].address", "is listed twice"),
    ([dict(VIP, portt=80)], "balancer_vips[0].portt", "is not a known field"),
    ([dict(VIP, reals=[["10.1.0.11"]])], "balancer_vips[0].reals[0]", "must be a mapping with address and weight"),
    ([dict(VIP, protocol="sctp")], "balancer_vips[0].protocol", "'sctp' is not a supported protocol"),
    ([VIP, VIP], "balancer_vips[1]", "is listed twice (also balancer_vips[0])"),
    ({"address": "10.99.0.10"}, "balancer_vips", "must be a list of VIPs"),
    ([dict(VIP, address="fd00:99::10")], "balancer_vips[0].reals[0].address", "is IPv4 but the VIP fd00:99::10 is IPv6"),
])
def test_balancer_vips_errors_name_the_users_path(vips, field, text):
    errors = balancer_errors(balancer_vips=vips)
    assert [f for f, _m in errors] == [field]
    assert text in errors[0][1] and errors[0][1].startswith(field + ": ")


@pytest.mark.parametrize("name, value, text", [
    ("balancer_interface", "eth0:1", "device names cannot contain"),
    ("balancer_interface", "x" * 16, "at most 15 characters"),
    ("balancer_xdp_mode", "turbo", "must be one of"),
    ("balancer_ring_size", 65536, "is not prime"),
    ("balancer_gateway_mac", "01:00:5e:00:00:01", "must be a unicast, non-zero MAC address"),
    ("balancer_gateway_mac", "02:00:00:00:00", "is not a MAC address"),
    ("balancer_source_mode", "random", "must be one of"),
    ("balancer_source_v4", "fd00::1", "expected an IPv4 address"),
    ("balancer_source_v6", "10.0.0.1", "expected an IPv6 address"),
    ("balancer_max_packet_size", 70000, "must be between 0 and 65535"),
    ("balancer_max_packet_size", "big", "expected an integer"),
    ("balancer_engine_python", "python3", "expected an absolute path"),
    ("balancer_engine_python", "/usr/bin/python3\nExecStartPre=/bin/rm", "expected an absolute path"),
])
def test_balancer_settings_name_the_role_variable(name, value, text):
    errors = balancer_errors(**{name: value})
    assert [f for f, _m in errors] == [name]
    assert errors[0][1].startswith(name + ": ") and text in errors[0][1], errors


def test_every_bad_balancer_variable_is_reported():
    errors = balancer_errors(balancer_vips=[dict(VIP, port=-1)], balancer_interface="a b", balancer_ring_size=4,
                             balancer_gateway_mac="zz")
    assert [f for f, _m in errors] == ["balancer_vips[0].port", "balancer_interface", "balancer_ring_size",
                                       "balancer_gateway_mac"]


@pytest.mark.parametrize("values, field, text", [
    ({"backend_vips": ["10.99.0.10", "10.99.0.300"]}, "backend_vips[1]", "not a valid IPv4 or IPv6 address"),
    ({"backend_vips": ["10.99.0.10", "10.99.0.10/32"]}, "backend_vips[1]", "listed twice (also backend_vips[0])"),
    ({"backend_vips": ["224.0.0.1"]}, "backend_vips[0]", "multicast"),
    ({"backend_vips": ["fe80::1%eth0"]}, "backend_vips[0]", "scoped IPv6 addresses"),
    ({"backend_vips": [{"address": "10.99.0.10"}]}, "backend_vips[0]", "expected an IP address as a string"),
    ({"backend_vips": "10.99.0.10"}, "backend_vips", "expected a list of VIP addresses"),
    ({"backend_vips": []}, "backend_vips", "must list at least one VIP address"),
    ({"backend_interface": "a/b"}, "backend_interface", "device names cannot contain"),
    ({"backend_ipip_device": "x" * 16}, "backend_ipip_device", "at most 15"),
    ({"backend_tunnel_address": "10.30.0.5/40"}, "backend_tunnel_address", "prefix length must be at most 32"),
    ({"backend_arp_ignore": 9}, "backend_arp_ignore", "must be between 0 and 8"),
    ({"backend_arp_announce": 3}, "backend_arp_announce", "must be between 0 and 2"),
    ({"backend_advmss": 100}, "backend_advmss", "must be 0 (leave the routes alone) or between 536 and 65495"),
    ({"backend_advmss": 70000}, "backend_advmss", "must be between 0 and 65495"),
    ({"backend_rp_filter": 2}, "backend_rp_filter", "needs backend_tunnel_address"),
    ({"backend_engine_python": "/usr/bin/python 3"}, "backend_engine_python", "expected an absolute path"),
])
def test_backend_variables_name_the_role_variable(values, field, text):
    errors = backend_errors(**values)
    assert [f for f, _m in errors] == [field]
    assert errors[0][1].startswith(field + ": ") and text in errors[0][1], errors


def test_backend_vips_derived_from_balancer_vips_are_checked_as_the_backend_binds_them():
    assert backend_errors(derived=[VIP]) == []
    errors = backend_errors(derived=[VIP, dict(VIP, address="10.99.0.999")])
    assert errors == [("balancer_vips[1].address",
                       "balancer_vips[1].address: not a valid IPv4 or IPv6 address (got '10.99.0.999')")]
    # The backend's own backend_vips win over the derived ones, as in site.yml.
    assert backend_errors(derived=[dict(VIP, address="bad")], backend_vips=["10.99.0.10"]) == []


@pytest.mark.parametrize("values, field, text", [
    ({"drain_addresses": ["10.1.0.11", "224.0.0.1"]}, "drain_addresses[1]", "must be a unicast address"),
    ({"drain_addresses": "web3"}, "drain_addresses", "expected the backend's real addresses"),
    ({"undrain_weight": 70000}, "undrain_weight", "70000 must be <= 65535"),
    ({"undrain_weight": 0}, "undrain_weight", "0 must be >= 1"),
])
def test_drain_variables(values, field, text):
    errors = [(e.field, e.msg) for e in vr.check_drain(getter(**values))]
    assert [f for f, _m in errors] == [field] and text in errors[0][1], errors


def test_drain_addresses_as_a_string_are_read_as_drain_yml_reads_them():
    assert vr.check_drain(getter(drain_addresses="10.1.0.11, fd00:1::11", undrain_weight="2")) == []


@pytest.mark.parametrize("values", [
    {"balancer_vips": [dict(VIP, address="1" * 65537)]},
    {"balancer_gateway_mac": "a" * 65537},  # hostnet.parse_mac quotes the value with %r
    {"balancer_interface": "e" * 65537},
    {"backend_vips": ["b" * 65537]},
    {"balancer_vips": [dict(VIP, port="9" * 65537)]},  # beyond int()'s default 4300 digits
    {"balancer_max_packet_size": "9" * 65537},
    {"balancer_max_packet_size": "9" * 200000},  # beyond INT_DIGITS: still an error, not a traceback
    {"balancer_vips": [dict(VIP, **{"k" * 65537: 1})]},  # the engine puts an unknown key in the path whole
])
def test_a_huge_value_is_cut(values):
    errors = vr.check_balancer(getter(**values)) + vr.check_backend(getter(**values))
    assert len(errors) == 1
    assert len(errors[0].msg) <= vr.MAX_MESSAGE and "characters" in errors[0].msg, errors[0].msg
    msg, listed = vr.report([("lb1", errors[0])])
    assert len(msg) < 400 and len(str(listed)) < 600


def test_report_groups_hosts_by_error_and_caps_the_list():
    port = vr.Refused("balancer_vips[0].port", 70000, "balancer_vips[0].port: 70000 must be <= 65535")
    mac = vr.Refused("balancer_gateway_mac", "zz", "balancer_gateway_mac: 'zz' is not a MAC address")
    msg, errors = vr.report([("lb1", port), ("lb2", port), ("lb2", mac)])
    assert msg == ("lb1, lb2: balancer_vips[0].port: 70000 must be <= 65535; "
                   "lb2: balancer_gateway_mac: 'zz' is not a MAC address")
    assert [(e["host"], e["field"], e["value"]) for e in errors] == [
        ("lb1", "balancer_vips[0].port", 70000), ("lb2", "balancer_vips[0].port", 70000),
        ("lb2", "balancer_gateway_mac", "zz")]
    many = [("lb%d" % i, port) for i in range(20)]
    msg, errors = vr.report(many)
    assert msg.startswith("lb0, lb1, lb2, lb3, lb4, lb5, lb6, lb7 and 12 more: ") and len(errors) == 20
    distinct = [("lb1", vr.Refused("f%d" % i, i, "f%d: bad" % i)) for i in range(15)]
    msg, _errors = vr.report(distinct)
    assert msg.endswith("; and 5 more (see errors)") and "f9: bad" in msg and "f10: bad" not in msg


def test_plain_gives_the_types_a_module_receives():
    class Tagged(str):
        pass

    class Lazy(dict):
        pass
    value = vr.plain(Lazy(reals=(Tagged("10.1.0.1"),), port=80, echo=True, none=None))
    assert value == {"reals": ["10.1.0.1"], "port": 80, "echo": True, "none": None}
    assert [type(value), type(value["reals"]), type(value["reals"][0])] == [dict, list, str]
    # vipspec._reals takes an exact dict only (a dict subclass ends in UnboundLocalError there): plain() first.
    assert balancer_errors(balancer_vips=vr.plain([Lazy(VIP, reals=[Lazy(address="10.1.0.1", weight=1)])])) == []


def test_a_huge_number_is_named_at_its_path():
    errors = balancer_errors(balancer_vips=[dict(VIP, port="9" * 65537)])
    assert errors[0][0] == "balancer_vips[0].port"
    assert errors[0][1].startswith("balancer_vips[0].port: '99999") and errors[0][1].endswith("is out of range (must be between 0 and 65535)")
