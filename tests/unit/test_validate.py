"""Argument validation: every bad input names its field and value, before anything is touched."""
import ipaddress

import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine import validate
from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import addresses, netconf, tunnel
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


def fails(func, *args, **kwargs):
    with pytest.raises(EngineError) as info:
        func(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("name", ["eth0", "eth0.100", "ipip0", "x" * 15, "tun-lb1", "br_0"])
def test_device_name_accepts(name):
    assert validate.device_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 16, ".", "..", "a/b", "a:b", "a b", "a\tb", 5, None])
def test_device_name_rejects_with_field_and_value(name):
    err = fails(validate.device_name, name, "devices")
    assert err.field == "devices" and err.value == name
    assert err.msg.startswith("devices: ") and repr(name) in err.msg


def test_device_names_dedupes_and_wants_a_list():
    assert validate.device_names(["a", "b", "a"]) == ["a", "b"]
    assert fails(validate.device_names, "eth0", "devices").field == "devices"


@pytest.mark.parametrize("value, expected", [(0, 0), ("2", 2), (" 1 ", 1), ("-3", -3)])
def test_integer_accepts(value, expected):
    assert validate.integer(value, "f") == expected


@pytest.mark.parametrize("value, bounds, text", [
    (True, (None, None), "boolean"),
    ("1.5", (None, None), "integer"),
    ("", (None, None), "integer"),
    (1.0, (None, None), "integer"),
    (3, (0, 2), "between 0 and 2"),
    (-1, (0, None), "at least 0"),
    (9, (None, 8), "at most 8"),
])
def test_integer_rejects(value, bounds, text):
    err = fails(validate.integer, value, "ipv4.rp_filter", *bounds)
    assert err.field == "ipv4.rp_filter" and text in err.msg


@pytest.mark.parametrize("value, expected", [
    ("192.0.2.1", "192.0.2.1/32"),
    ("2001:DB8::1", "2001:db8::1/128"),
    ("10.0.0.1/24", "10.0.0.1/24"),
    (" 2001:db8::1/64 ", "2001:db8::1/64"),
])
def test_ip_interface_defaults_to_a_host_prefix(value, expected):
    assert str(validate.ip_interface(value, "addresses")) == expected


@pytest.mark.parametrize("value, text", [
    ("192.0.2.300", "not a valid"),
    ("10.0.0.1/33", "at most 32"),
    ("2001:db8::1/129", "at most 128"),
    ("10.0.0.1/x", "must be a number"),
    ("fe80::1%eth0", "scoped"),
    ("224.0.0.1", "multicast"),
    ("::", "unspecified"),
    ("", "expected an IP address"),
    (None, "expected an IP address"),
])
def test_ip_interface_rejects(value, text):
    err = fails(validate.ip_interface, value, "addresses")
    assert err.field == "addresses" and err.value == value and text in err.msg


def test_ip_address_family_and_prefix():
    assert validate.ip_address("192.0.2.1", "local", 4) == ipaddress.ip_address("192.0.2.1")
    assert "IPv6" in fails(validate.ip_address, "192.0.2.1", "local", 6).msg
    assert "without a prefix" in fails(validate.ip_address, "192.0.2.1/32", "local").msg


def test_ip_network_refuses_host_bits():
    assert str(validate.ip_network("192.0.2.0/24", "managed_networks")) == "192.0.2.0/24"
    assert fails(validate.ip_network, "192.0.2.1/24", "managed_networks").field == \
        "managed_networks"


def test_choice_and_boolean():
    assert validate.choice("a", "state", ("a", "b")) == "a"
    assert "one of a, b" in fails(validate.choice, "c", "state", ("a", "b")).msg
    assert fails(validate.boolean, "yes", "exclusive").field == "exclusive"


# ---------------------------------------------------------------- per-engine argument checks

@pytest.mark.parametrize("kwargs, field, text", [
    ({"name": "ipip0", "addresses": ["2001:db8::1"]}, "addresses", "carries only IPv4"),
    ({"name": "t6", "kind": "ip6tnl", "mode": "ip6ip6", "addresses": ["10.0.0.1"]},
     "addresses", "carries only IPv6"),
    ({"name": "ipip0", "external": False}, "remote", "point-to-point"),
    ({"name": "ipip0", "local": "192.0.2.1"}, "local", "external"),
    ({"name": "ipip0", "external": False, "remote": "2001:db8::1"}, "remote", "IPv4"),
    ({"name": "t6", "kind": "ip6tnl", "external": False, "remote": "192.0.2.1"}, "remote", "IPv6"),
    ({"name": "ipip0", "mode": "ip6ip6"}, "mode", "one of any, ipip"),
    ({"name": "ipip0", "kind": "gre"}, "kind", "one of ipip, ip6tnl"),
    ({"name": "ipip0", "mtu": 67}, "mtu", "between 68 and 65535"),
    ({"name": "t6", "kind": "ip6tnl", "mode": "ip6ip6", "mtu": 1279}, "mtu", "1280"),
    ({"name": "tunl0", "state": "absent"}, "state", "cannot be removed"),
    ({"name": "tunl0", "remote": "192.0.2.1", "external": False}, "remote", "fallback"),
    ({"name": "ipip-with-a-long-name"}, "name", "at most 15"),
])
def test_tunnel_arguments(kwargs, field, text):
    err = fails(tunnel.normalize, **kwargs)
    assert err.field == field and text in err.msg, err.msg


def test_tunnel_fallback_is_never_external():
    assert tunnel.normalize("tunl0")["external"] is False
    assert tunnel.normalize("ip6tnl0", kind="ip6tnl")["fallback"]
    assert not tunnel.normalize("tunl0", kind="ip6tnl")["fallback"]


@pytest.mark.parametrize("args, kwargs, field", [
    (("lo", ["2001:db8::1", "2001:db8::1/64"]), {}, "addresses"),
    (("lo", ["192.0.2.1"]), {"state": "absent", "exclusive": True}, "exclusive"),
    (("lo", []), {}, "addresses"),
    (("lo", "192.0.2.1"), {}, "addresses"),
    (("lo", ["192.0.2.1"]), {"managed_networks": ["192.0.2.1/24"]}, "managed_networks"),
    (("lo", ["192.0.2.1"]), {"state": "gone"}, "state"),
    (("bad name", ["192.0.2.1"]), {}, "device"),
])
def test_address_arguments(args, kwargs, field):
    assert fails(addresses.normalize, *args, **kwargs).field == field


def test_ipv4_same_address_two_prefixes_is_fine():
    got = addresses.normalize("lo", ["10.0.0.1/32", "10.0.0.1/24"])["addresses"]
    assert [a["cidr"] for a in got] == ["10.0.0.1/32", "10.0.0.1/24"]


@pytest.mark.parametrize("kwargs, field, value", [
    ({"ipv4": {"rp_filterr": 0}, "devices": ["eth0"]}, "ipv4", "rp_filterr"),
    ({"ipv6": {"rp_filter": 0}, "devices": ["eth0"]}, "ipv6", "rp_filter"),
    ({"ipv4": {"rp_filter": 3}, "devices": ["eth0"]}, "ipv4.rp_filter", 3),
    ({"ipv4": {"arp_ignore": 9}, "devices": ["eth0"]}, "ipv4.arp_ignore", 9),
    ({"ipv4": {"arp_announce": "x"}, "devices": ["eth0"]}, "ipv4.arp_announce", "x"),
    ({"ipv4": {"rp_filter": True}, "devices": ["eth0"]}, "ipv4.rp_filter", True),
    ({"ipv4": {"rp_filter": 0}, "devices": ["default"]}, "devices", "default"),
    ({"ipv4": {"rp_filter": 0}, "devices": []}, "devices", []),
    ({"ipv4": {}, "devices": ["eth0"]}, "ipv4", {}),
    ({"ipv4": ["rp_filter"], "devices": ["eth0"]}, "ipv4", ["rp_filter"]),
])
def test_net_conf_arguments(kwargs, field, value):
    err = fails(netconf.normalize, **kwargs)
    assert (err.field, err.value) == (field, value)


def test_net_conf_unknown_key_lists_the_supported_ones():
    assert "rp_filter" in fails(netconf.normalize, ipv4={"rpf": 1}, devices=["eth0"]).msg


def test_net_conf_accepts_strings_from_templates():
    request = netconf.normalize(ipv4={"rp_filter": "2"}, devices=["eth0.100"])
    assert request["settings"] == {"ipv4": {"rp_filter": 2}}


@pytest.mark.parametrize("func, args", [
    (validate.device_name, ("e" * 65537, "interface")),
    (validate.ip_address, ("1" * 65537, "gateway")),
    (validate.ip_interface, ("1" * 65537 + "/32", "addresses")),
    (validate.choice, ("m" * 65537, "mode", ("auto", "native"))),
    (validate.integer, ("i" * 65537, "max_packet_size")),
])
def test_a_huge_value_is_quoted_cut_with_its_length(func, args):
    err = fails(func, *args)
    assert err.msg.startswith(args[1] + ": ") and "characters)" in err.msg and len(err.msg) < 300, err.msg
    assert err.value in (args[0], args[0].split("/")[0])
