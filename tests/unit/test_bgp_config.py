"""engine/bgp: the BGP request's checks (bgpspec) name the field and the value; the text birdconf
renders is what BIRD 2 itself accepts (`bird -p -c`, the real binary) and says what it should."""
import os
import shutil
import subprocess

import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bgp import bgpspec, bird, birdconf
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError

PEER4 = {"address": "10.20.1.1", "as": 65000}
PEER6 = {"address": "fd00:20:1::1", "as": 65000}
GOOD = {"local_as": 65010, "peers": [PEER4, PEER6]}


def error(request):
    with pytest.raises(EngineError) as info:
        bgpspec.check(request)
    return info.value


def test_the_lab_request_is_normalised():
    out = bgpspec.check(dict(GOOD, peers=[PEER4, dict(PEER6, address="FD00:20:1:0::1", bfd=False, name="up6")],
                             password="s", communities=["65010:1", " 65010 : 1", "0:65535"], med="7",
                             vip_attributes={"10.99.0.1": {"med": 5}, "fd00:99:0::1": None}))
    assert out["local_as"] == 65010 and out["families"] == ["ipv4", "ipv6"] and out["table"] == 4242
    assert out["peers"] == [
        {"address": "10.20.1.1", "family": "ipv4", "as": 65000, "password": "s", "bfd": True, "name": "peer_10_20_1_1"},
        {"address": "fd00:20:1::1", "family": "ipv6", "as": 65000, "password": "s", "bfd": False, "name": "up6"}]
    assert out["communities"] == ["65010:1", "0:65535"] and out["med"] == 7
    assert out["vip_attributes"] == {"10.99.0.1": {"family": "ipv4", "communities": None, "med": 5},
                                     "fd00:99::1": {"family": "ipv6", "communities": None, "med": None}}
    assert bgpspec.masked(out)["peers"][0]["password"] == "********"


@pytest.mark.parametrize("change, field, text", [
    # The four.
    ({"local_as": 0}, "local_as", "local_as: 0 is out of range"),
    ({"local_as": 4294967296}, "local_as", "local_as: 4294967296 is out of range"),
    ({"peers": [PEER4, dict(PEER6, **{"as": 2 ** 32})]}, "peers[1].as", "peers[1].as: 4294967296 is out of range"),
    ({"peers": [PEER4, {"address": "router1", "as": 65000}]}, "peers[1].address", "peers[1].address: 'router1' is not an address"),
    ({"peers": [{"address": "10.20.1.1/24", "as": 65000}]}, "peers[0].address", "'10.20.1.1/24' is not an address"),
    ({"peers": [], "password": "secret"}, "password", "password: is set but peers is empty (a password without a peer)"),
    ({"families": ["ipv4"], "peers": [{"address": "fd00::1", "as": 65000}]}, "peers[0].address",
     "peers[0].address: 'fd00::1' is an IPv6 peer on an IPv4-only session"),
    # The others.
    ({"local_as": None}, "local_as", "local_as: None is required"),
    ({"local_as": "AS65010"}, "local_as", "local_as: 'AS65010' must be an AS number"),
    ({"local_as": True}, "local_as", "not a boolean"),
    ({"peers": [PEER4, dict(PEER4, name="again")]}, "peers[1].address", "'10.20.1.1' is listed twice (also peers[0].address)"),
    ({"peers": [PEER4, {"address": "10.20.1.01", "as": 1}]}, "peers[1].address", "is not an address"),
    ({"peers": [dict(PEER4, name="Up")]}, "peers[0].name", "peers[0].name: 'Up' is not a protocol name"),
    ({"peers": [dict(PEER4, name="x"), dict(PEER6, name="x")]}, "peers[1].name", "'x' is the name of peers[0] too"),
    ({"peers": [dict(PEER4, bfd="yes")]}, "peers[0].bfd", "peers[0].bfd: 'yes' must be true or false"),
    ({"peers": [dict(PEER4, port=179)]}, "peers[0].port", "peers[0].port: 179 is not a known key"),
    ({"peers": [{"as": 65000}]}, "peers[0].address", "is required"),
    ({"peers": [{"address": "224.0.0.5", "as": 65000}]}, "peers[0].address", "is not a unicast address"),
    ({"peers": "10.20.1.1"}, "peers", "must be a list of peers"),
    ({"communities": ["65010:65536"]}, "communities[0]", "communities[0]: '65010:65536' is not a standard community"),
    ({"communities": ["65010"]}, "communities[0]", "'65010' is not a standard community"),
    ({"communities": "65010:1"}, "communities", "must be a list of communities"),
    ({"med": -1}, "med", "med: -1 is out of range"),
    ({"med": 2 ** 32}, "med", "med: 4294967296 is out of range: a MED must be between 0 and 4294967295"),
    ({"router_id": "fd00::2"}, "router_id", "router_id: 'fd00::2' is not an IPv4 address"),
    ({"router_id": "lb1"}, "router_id", "router_id: 'lb1' is not an address"),
    ({"table": 254}, "table", "table: 254 is a table of the kernel's own"),
    ({"table": 0}, "table", "table: 0 is out of range"),
    ({"bfd_interval": 5}, "bfd_interval", "bfd_interval: 5 is out of range: milliseconds must be between 10 and 10000"),
    ({"bfd_interval": 10001}, "bfd_interval", "10001 is out of range"),
    ({"bfd_multiplier": 0}, "bfd_multiplier", "bfd_multiplier: 0 is out of range"),
    ({"bfd_multiplier": 256}, "bfd_multiplier", "bfd_multiplier: 256 is out of range"),
    ({"vip_attributes": {"vip1": {"med": 1}}}, "vip_attributes.vip1", "vip_attributes.vip1: 'vip1' is not an address"),
    ({"vip_attributes": {"10.99.0.1/32": {}}}, "vip_attributes.10.99.0.1/32", "is not an address"),
    ({"vip_attributes": {"10.99.0.1": {"med": 2 ** 32}}}, "vip_attributes.10.99.0.1.med", "4294967296 is out of range"),
    ({"vip_attributes": {"10.99.0.1": {"communities": ["1:x"]}}}, "vip_attributes.10.99.0.1.communities[0]",
     "'1:x' is not a standard community"),
    ({"vip_attributes": {"10.99.0.1": {"weight": 1}}}, "vip_attributes.10.99.0.1.weight", "is not a known key"),
    ({"vip_attributes": ["10.99.0.1"]}, "vip_attributes", "must be a mapping"),
    ({"families": []}, "families", "must be a non-empty list"),
    ({"families": ["ipv4", "inet"]}, "families[1]", "families[1]: 'inet' is not an address family"),
    ({"asn": 1}, "asn", "asn: 1 is not a known BGP setting"),
])
def test_each_error_names_the_field_and_the_value(change, field, text):
    exc = error(dict(GOOD, **change))
    assert exc.field == field, exc.msg
    assert text in exc.msg, exc.msg


def test_a_password_is_never_quoted_in_an_error():
    for request in (dict(GOOD, password="x" * 81), dict(GOOD, peers=[dict(PEER4, password='a"b')]),
                    {"local_as": 1, "password": "hunter2"}):
        exc = error(request)
        assert "hunter2" not in exc.msg and "xxxx" not in exc.msg and 'a"b' not in exc.msg
        assert exc.value == "********"


def test_the_prefix_names_the_role_variables():
    exc = error_with(dict(GOOD, peers=[PEER4, {"address": "x", "as": 1}]), "balancer_bgp_")
    assert exc.field == "balancer_bgp_peers[1].address"
    assert exc.msg.startswith("balancer_bgp_peers[1].address: 'x' is not an address")
    assert error_with({"local_as": 1, "password": "p"}, "balancer_bgp_").msg.startswith(
        "balancer_bgp_password: is set but balancer_bgp_peers is empty")


def error_with(request, prefix):
    with pytest.raises(EngineError) as info:
        bgpspec.check(request, prefix)
    return info.value


FULL = dict(GOOD, router_id="10.20.1.2", password="top secret", communities=["65010:100", "65010:200"], med=50,
            peers=[PEER4, dict(PEER6, bfd=False, password="other", name="up6")],
            vip_attributes={"10.99.0.1": {"communities": ["65010:1"], "med": 10}, "fd00:99::1": {"communities": []},
                            "10.99.0.2": {"med": 0}},
            bfd_interval=50, bfd_multiplier=5, table=100)


def _bird_accepts(tmp_path, text):
    path = tmp_path / "bird.conf"
    path.write_text(text)
    done = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr + text
    bird.check_file(str(path))


def test_bird_parses_the_rendered_text(tmp_path):
    assert shutil.which("bird"), "BIRD 2 (bird2) is installed on the test machine"
    for request in (GOOD, FULL, dict(GOOD, families=["ipv4"], peers=[PEER4]), dict(GOOD, peers=[], families=["ipv6"]),
                    dict(GOOD, peers=[dict(PEER4, bfd=False)])):
        _bird_accepts(tmp_path, birdconf.render(bgpspec.check(request)))


def test_bird_refuses_what_check_file_reports(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text("protocol bgp x { neighbor 10.0.0.1 as 1; local as 70000000000; }\n")
    with pytest.raises(EngineError) as info:
        bird.check_file(str(path))
    assert info.value.msg.startswith("BIRD refuses the configuration: ") and "bad.conf" in info.value.msg


def test_the_rendered_text_says_what_is_asked():
    text = birdconf.render(bgpspec.check(FULL))
    assert text.startswith("# Managed by Ansible (xdplb.katran.balancer role, module xdplb.katran.bird_config)")
    assert "router id 10.20.1.2;" in text
    assert 'interface "*" {\n    min rx interval 50 ms;\n    min tx interval 50 ms;\n    multiplier 5;' in text
    for family, kernel in (("ipv4", "xdplb_vips4"), ("ipv6", "xdplb_vips6")):
        assert ("protocol kernel %s {\n  kernel table 100;\n  learn;\n  scan time 1;\n  %s { import all; export none; };"
                % (kernel, family)) in text
        assert 'if proto != "%s" then reject;' % kernel in text
    # The per-address attributes replace the global ones; an address without its own keeps them.
    assert ("  if net = 10.99.0.1/32 then {\n    bgp_community.add((65010, 1));\n    bgp_med = 10;\n    accept;\n  }") in text
    assert "  if net = 10.99.0.2/32 then {\n    bgp_community.add((65010, 100));\n    bgp_community.add((65010, 200));\n" \
           "    bgp_med = 0;\n    accept;\n  }" in text
    assert "  if net = fd00:99::1/128 then {\n    bgp_med = 50;\n    accept;\n  }" in text
    assert "  bgp_community.add((65010, 100));\n  bgp_community.add((65010, 200));\n  bgp_med = 50;\n  accept;\n}" in text
    peer4 = text[text.index("protocol bgp peer_10_20_1_1 {"):]
    peer4 = peer4[:peer4.index("\n}\n")]
    for line in ("local as 65010;", "neighbor 10.20.1.1 as 65000;", 'password "top secret";', "bfd on;",
                 "connect retry time 3;", "error wait time 1, 10;", "ipv4 {", "import none;",
                 "export filter xdplb_export4;", "next hop self;"):
        assert line in peer4, line
    assert "ipv6" not in peer4
    peer6 = text[text.index("protocol bgp up6 {"):]
    assert 'password "other";' in peer6 and "bfd on" not in peer6 and "export filter xdplb_export6;" in peer6
    assert birdconf.protocols(bgpspec.check(FULL)) == ["device1", "xdplb_bfd", "xdplb_vips4", "xdplb_vips6",
                                                       "peer_10_20_1_1", "up6"]
    # The same request, the same bytes (the module compares texts).
    assert birdconf.render(bgpspec.check(FULL)) == text
    masked = bird.mask(text)
    assert "top secret" not in masked and "other" not in masked and masked.count('password "********";') == 2


def test_no_router_id_and_one_family():
    text = birdconf.render(bgpspec.check(dict(GOOD, families=["ipv4"], peers=[dict(PEER4, bfd=False)])))
    assert "router id" not in text.replace("No router id", "") and "xdplb_vips6" not in text
    assert "protocol bfd" not in text


def test_show_protocols_is_parsed():
    text = ("BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\n"
            "device1    Device     ---        up     15:42:57.092  \n"
            "peer_10_20_1_1 BGP        ---        up     2026-12-07 15:42:57  Established   \n"
            "peer_fd00__1 BGP        ---        start  15:42:57.092  Active        Socket: Connection refused\n")
    assert bird.parse_protocols(text) == [
        {"name": "device1", "proto": "Device", "table": "", "state": "up", "since": "15:42:57.092", "info": ""},
        {"name": "peer_10_20_1_1", "proto": "BGP", "table": "", "state": "up", "since": "2026-12-07 15:42:57",
         "info": "Established"},
        {"name": "peer_fd00__1", "proto": "BGP", "table": "", "state": "start", "since": "15:42:57.092",
         "info": "Active Socket: Connection refused"}]


def test_apply_writes_validates_and_fixes_permissions(tmp_path):
    path = str(tmp_path / "etc" / "bird.conf")
    socket = str(tmp_path / "none.ctl")
    res = bird.apply(path, socket, GOOD, check_mode=True)
    assert res["changed"] and not (tmp_path / "etc").exists() and res["running"] is False
    res = bird.apply(path, socket, dict(GOOD, password="pw"))
    assert res["changed"] and not res["reloaded"] and 'password "********";' in res["after"] and "pw" not in res["after"]
    with open(path) as handle:
        assert 'password "pw";' in handle.read()
    assert not bird.apply(path, socket, dict(GOOD, password="pw"))["changed"]
    os.chmod(path, 0o644)
    assert bird.apply(path, socket, dict(GOOD, password="pw"))["changed"]
    assert os.stat(path).st_mode & 0o077 in (0o040, 0o000)
    assert not bird.apply(path, socket, dict(GOOD, password="pw"))["changed"]
    # BIRD refuses it (a link-local neighbour needs an interface): its message, the file as it was.
    with open(path) as handle:
        good = handle.read()
    with pytest.raises(EngineError) as info:
        bird.apply(path, socket, dict(GOOD, peers=[{"address": "fe80::1", "as": 1}]))
    assert info.value.msg.startswith("BIRD refuses the configuration: ")
    with open(path) as handle:
        assert handle.read() == good
    assert sorted(os.listdir(os.path.dirname(path))) == ["bird.conf"]
    with pytest.raises(EngineError) as info:
        bird.apply("bird.conf", socket, GOOD)
    assert info.value.field == "path"
