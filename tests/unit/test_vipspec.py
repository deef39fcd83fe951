"""VIP request validation: every error names the field path and the value; no kernel needed."""
import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import vipspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


def vip(**kw):
    base = {"address": "192.0.2.10", "port": 80, "protocol": "tcp",
            "reals": [{"address": "10.1.0.1", "weight": 1}, {"address": "10.1.0.2", "weight": 2}]}
    base.update(kw)
    return base


def error(vips, **kw):
    with pytest.raises(EngineError) as info:
        vipspec.parse_vips(vips, **kw)
    return info.value


def test_normalises_a_valid_request():
    out = vipspec.parse_vips([vip(address=" 2001:DB8::A ", protocol="UDP", flags=["no_sport", "dport_hash"],
                                  reals=["2001:db8:1::2", {"address": "2001:0db8:1::1", "weight": 5}])])
    assert out == [{"address": "2001:db8::a", "port": 80, "protocol": "udp", "flags": ["dport_hash", "no_sport"],
                    "icmp_echo": True, "key": "[2001:db8::a]:80/udp",
                    "reals": [{"address": "2001:db8:1::1", "weight": 5}, {"address": "2001:db8:1::2", "weight": 1}],
                    "health": {"kind": "tcp", "port": 80, "interval": 1.0, "timeout": 1.0, "rise": 2, "fall": 3,
                               "path": "/", "host": "", "status": [200], "payload": "", "expect": ""}}]


def test_order_of_reals_and_flags_does_not_matter():
    a = vipspec.parse_vips([vip(flags=["no_sport", "no_conn_table"])])
    b = vipspec.parse_vips([vip(flags=["no_conn_table", "no_sport"], reals=list(reversed(vip()["reals"])))])
    assert a == b


def test_ipv4_vip_takes_ipv4_and_ipv6_reals():
    out = vipspec.parse_vips([vip(reals=["10.1.0.1", "2001:db8:1::1"])])
    assert [r["address"] for r in out[0]["reals"]] == ["10.1.0.1", "2001:db8:1::1"]


def test_weight_example_from_the_brief():
    bad = [{"address": "10.1.0.1"}, {"address": "10.1.0.2", "weight": -1}]
    vips = [vip(), vip(port=81), vip(port=82), vip(port=83, reals=bad)]
    e = error(vips)
    assert str(e) == "vips[3].reals[1].weight: -1 must be >= 0"
    assert (e.field, e.value) == ("vips[3].reals[1].weight", -1)


@pytest.mark.parametrize("change, field, words", [
    ({"address": "10.0.0.300"}, "vips[0].address", "'10.0.0.300' is not a valid"),
    ({"address": "10.0.0.0/24"}, "vips[0].address", "without a prefix"),
    ({"address": "0.0.0.0"}, "vips[0].address", "unicast"),
    ({"address": "ff02::1"}, "vips[0].address", "unicast"),
    ({"address": None}, "vips[0].address", "None is not an IP address"),
    ({"port": 65536}, "vips[0].port", "65536 must be <= 65535"),
    ({"port": -1}, "vips[0].port", "-1 must be >= 0"),
    ({"port": "http"}, "vips[0].port", "'http' must be an integer"),
    ({"port": True}, "vips[0].port", "not a boolean"),
    ({"port": None}, "vips[0].port", "is required"),
    ({"protocol": "sctp"}, "vips[0].protocol", "'sctp' is not a supported protocol"),
    ({"flags": ["no_sport", "fast"]}, "vips[0].flags[1]", "'fast' is not a VIP flag"),
    ({"icmp_echo": "yes"}, "vips[0].icmp_echo", "true or false"),
    ({"reals": "10.1.0.1"}, "vips[0].reals", "must be a list"),
    ({"reals": []}, "vips[0].reals", "at least one real with weight > 0"),
    ({"reals": [{"address": "10.1.0.1", "weight": 0}, {"address": "10.1.0.2", "weight": 0}]},
     "vips[0].reals", "[0, 0] needs at least one real with weight > 0"),
    ({"reals": [{"address": "10.1.0.1", "weight": 70000}]}, "vips[0].reals[0].weight", "70000 must be <= 65535"),
    ({"reals": [{"address": "10.1.0.1", "weight": 1.5}]}, "vips[0].reals[0].weight", "must be an integer"),
    ({"reals": [{"address": "10.1.0.1"}, {"address": "10.1.0.01"}]}, "vips[0].reals[1].address",
     "not a valid"),
    ({"reals": [{"address": "2001:db8::1"}, {"address": "2001:DB8:0::1"}]}, "vips[0].reals[1].address",
     "'2001:db8::1' is listed twice (also vips[0].reals[0])"),
    ({"reals": [{"address": "10.1.0.1", "wieght": 2}]}, "vips[0].reals[0].wieght", "not a known field"),
    ({"prot": "tcp"}, "vips[0].prot", "not a known field"),
])
def test_each_error_names_field_and_value(change, field, words):
    e = error([vip(**change)])
    assert e.field == field
    assert str(e).startswith(field + ": ")
    assert words in str(e)


def test_ipv6_vip_with_ipv4_real_is_refused():
    e = error([vip(address="2001:db8::10", reals=["2001:db8:1::1", "10.1.0.1"])])
    assert e.field == "vips[0].reals[1].address"
    assert "'10.1.0.1' is IPv4 but the VIP 2001:db8::10 is IPv6" in str(e)


def test_duplicate_vip():
    e = error([vip(), vip(protocol="udp"), vip(address="192.0.2.010".replace("010", "10"))])
    assert e.field == "vips[2]" and "listed twice (also vips[0])" in str(e)


def test_conflicting_echo_on_one_address():
    e = error([vip(icmp_echo=True), vip(port=443, icmp_echo=False)])
    assert e.field == "vips[1].icmp_echo"


def test_echo_follows_the_vip_that_sets_it():
    out = vipspec.parse_vips([vip(port=443), vip(icmp_echo=False)])
    assert [v["icmp_echo"] for v in out] == [False, False]


def test_too_many_vips_and_reals():
    e = error([vip(port=p) for p in range(1, 5)], max_vips=3)
    assert e.field == "vips" and "4 VIPs exceed the 3" in str(e)
    many = [vip(reals=["10.1.%d.%d" % (i // 250, i % 250) for i in range(8)])]
    e = error(many, max_reals=8)
    assert "8 distinct reals exceed the 7" in str(e)


@pytest.mark.parametrize("size, ok", [(65537, True), (7, True), (65536, False), (1, False), ("x", False)])
def test_ring_size_must_be_prime(size, ok):
    if ok:
        assert vipspec.ring_size(size) == size
    else:
        with pytest.raises(EngineError) as info:
            vipspec.ring_size(size)
        assert info.value.field == "ring_size"


def test_single_vip_paths_have_no_prefix():
    with pytest.raises(EngineError) as info:
        vipspec.parse_vip(vip(reals=[{"address": "10.1.0.1", "weight": -3}]))
    assert str(info.value) == "reals[0].weight: -3 must be >= 0"


def test_string_numbers_from_templating_are_accepted():
    out = vipspec.parse_vips([vip(port="443", reals=[{"address": "10.1.0.1", "weight": "7"}])])
    assert out[0]["port"] == 443 and out[0]["reals"][0]["weight"] == 7


def test_flag_values_round_trip():
    assert vipspec.flag_names(vipspec.flags_value(["dport_hash", "no_sport"])) == ["dport_hash", "no_sport"]
    assert vipspec.flag_names(0x80) == ["0x80"]


def test_compact_reals_mapping_means_the_same():
    as_list = vipspec.parse_vips([vip(reals=[{"address": "10.1.0.2", "weight": 3}, "10.1.0.1"])])
    as_map = vipspec.parse_vips([vip(reals={"10.1.0.1": 1, "10.1.0.2": 3})])
    assert as_list == as_map


@pytest.mark.parametrize("reals, field, words", [
    ({"10.1.0.1": 1, "10.1.0.2": -1}, "vips[0].reals[10.1.0.2]", "-1 must be >= 0"),
    ({"10.1.0.x": 1}, "vips[0].reals[10.1.0.x]", "not a valid"),
    ({"2001:db8::1": 1, "2001:DB8::1": 2}, "vips[0].reals[2001:DB8::1]", "listed twice (also vips[0].reals[2001:db8::1])"),
])
def test_compact_form_errors_name_the_real(reals, field, words):
    e = error([vip(reals=reals)])
    assert e.field == field and words in str(e), str(e)


TRICKY_ADDRESSES = ["10.1.0.1", " 10.1.0.2 ", "10.1.0.1", "010.1.0.3", "10.1.0.256", "10.1.0", "10.1.0.4.",
                    "0.0.0.0", "224.0.0.1", "239.255.255.255", "240.0.0.1", "255.255.255.255", "1.2.3.4/32",
                    "10.1.0.5%eth0", "", " ", "10.1.0.\u0666", "10.1.0.6\x00", "2001:db8::1", "2001:DB8::1",
                    "::ffff:10.1.0.1", "::", "ff02::1", "2001:db8::1%eth0", "1e.0.0.1", "0x0a.0.0.1", 7, None]
TRICKY_WEIGHTS = [0, 1, 3, 65535, 65536, -1, True, "2", None, 1.5]


def _item_by_item(reals, vip_address):
    """What _reals returns when the bulk path is not taken: the reference for the bulk path."""
    saved = vipspec._reals_fast
    vipspec._reals_fast = lambda *args: None
    try:
        return vipspec._reals(reals, "reals", vipspec.address(vip_address, "address"), {})
    finally:
        vipspec._reals_fast = saved


def test_bulk_path_accepts_and_returns_exactly_what_the_item_loop_does():
    import random
    rnd = random.Random(5)
    for case in range(3000):
        n = rnd.randint(1, 4)
        addrs = [rnd.choice(TRICKY_ADDRESSES) for _unused in range(n)]
        weights = [rnd.choice(TRICKY_WEIGHTS) if rnd.random() < 0.3 else rnd.randint(0, 3) for _unused in range(n)]
        form = case % 3
        if form == 0:
            reals = [{"address": a, "weight": w} for a, w in zip(addrs, weights)]
        elif form == 1:
            reals = {a: w for a, w in zip(addrs, weights) if isinstance(a, str)}
        else:
            reals = list(addrs)
        vip_address = rnd.choice(["192.0.2.10", "2001:db8::10"])
        try:
            want = _item_by_item(reals, vip_address)
        except EngineError:
            want = None
        got = vipspec._reals_fast(reals, isinstance(reals, dict), vip_address != "192.0.2.10", {})
        assert got is None or got == want, (reals, vip_address, got, want)
        try:
            full = vipspec._reals(reals, "reals", vipspec.address(vip_address, "address"), {})
        except EngineError:
            full = None
        assert full == want, (reals, vip_address)


@pytest.mark.parametrize("vip, field", [
    ({"address": "1" * 65537, "port": 80, "reals": ["10.1.0.1"]}, "vips[0].address"),
    ({"address": "10.0.0.1", "port": 80, "protocol": "p" * 65537, "reals": ["10.1.0.1"]}, "vips[0].protocol"),
    ({"address": "10.0.0.1", "port": 80, "reals": [{"address": "10.1.0.1", "weight": "w" * 65537}]},
     "vips[0].reals[0].weight"),
])
def test_a_huge_value_is_quoted_cut_with_its_length(vip, field):
    """A 65,537-character value in a message Ansible repeats makes hundreds of KB of log."""
    with pytest.raises(EngineError) as info:
        vipspec.parse_vips([vip])
    msg = info.value.msg
    assert info.value.field == field
    assert "characters)" in msg and len(msg) < 1000
    assert info.value.value is not None
