"""The lab router's FRR configuration, rendered from the lab plan."""
import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError
from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import lab, labrouting

DIR = "/run/xdplb-lab/xkt-router/frr"


def _render(**kwargs):
    return labrouting.render(lab.plan("xkt-", balancers=2, backends=1, **kwargs), DIR)


def test_one_file_per_daemon_logging_to_the_routers_directory():
    files = _render()
    assert sorted(files) == ["bfdd.conf", "bgpd.conf", "zebra.conf"]
    for text in files.values():
        assert f"log file {DIR}/frr.log informational\n" in text and text.endswith("end\n")
        assert "/etc/frr" not in text and "/var/run/frr" not in text


def test_two_ebgp_sessions_per_balancer_each_one_family_with_bfd():
    bgp = _render()["bgpd.conf"]
    assert "router bgp 65000\n" in bgp and " no bgp ebgp-requires-policy\n" in bgp and " no bgp default ipv4-unicast\n" in bgp
    for n in (1, 2):
        for peer, local in ((f"10.20.{n}.2", f"10.20.{n}.1"), (f"fd00:20:{n}::2", f"fd00:20:{n}::1")):
            assert f" neighbor {peer} remote-as 65010\n" in bgp
            assert f" neighbor {peer} bfd profile lab\n" in bgp
            assert f" neighbor {peer} update-source {local}\n" in bgp
    v4, v6 = bgp.split(" address-family ipv4 unicast\n")[1].split(" address-family ipv6 unicast\n")
    assert "  neighbor 10.20.1.2 activate\n" in v4 and "fd00:" not in v4.split("exit-address-family")[0]
    assert "  neighbor fd00:20:2::2 activate\n" in v6 and "10.20." not in v6.split("exit-address-family")[0]
    for family in (v4, v6):
        assert "  maximum-paths 8\n" in family


def test_accepts_only_the_vip_prefixes_and_announces_nothing():
    bgp = _render(vip_prefix4="10.98.0.0/24", vip_prefix6="fd00:98::/64")["bgpd.conf"]
    assert "ip prefix-list lab-vips4 seq 10 permit 10.98.0.0/24 le 32\n" in bgp
    assert "ipv6 prefix-list lab-vips6 seq 10 permit fd00:98::/64 le 128\n" in bgp
    assert "route-map lab-announce-nothing deny 10\n" in bgp
    assert bgp.count("prefix-list lab-vips4 in\n") == 2 and bgp.count("prefix-list lab-vips6 in\n") == 2
    assert bgp.count("route-map lab-announce-nothing out\n") == 4
    assert "redistribute" not in bgp and "network " not in bgp


def test_bfd_profile_100_ms_times_3():
    bfd = _render()["bfdd.conf"]
    assert "bfd\n profile lab\n  detect-multiplier 3\n  receive-interval 100\n  transmit-interval 100\n" in bfd


def test_as_numbers_given_and_checked():
    plan = lab.plan("xkt-", balancers=1)
    assert "router bgp 4200000000\n" in labrouting.render(plan, DIR, 4200000000, 64512)["bgpd.conf"]
    for router_as, balancer_as, field in ((0, 65010, "router_as"), (65000, 2 ** 32, "balancer_as"),
                                          (65000, 65000, "balancer_as"), (65000, True, "balancer_as")):
        with pytest.raises(EngineError) as err:
            labrouting.check_as(router_as, balancer_as)
        assert err.value.field == field


def test_vtysh_talks_to_this_instance_only():
    assert labrouting.vtysh_argv(DIR) == ["vtysh", "--vty_socket", DIR]
    argv = labrouting._argv("xkt-router", DIR, "bfdd")  # pylint: disable=protected-access
    assert argv[:2] == ["nsenter", "--net=/run/netns/xkt-router"]
    for option, value in (("-f", DIR + "/bfdd.conf"), ("-i", DIR + "/bfdd.pid"), ("-z", DIR + "/zserv.api"),
                          ("--vty_socket", DIR), ("--bfdctl", DIR + "/bfdd.sock")):
        assert argv[argv.index(option) + 1] == value


def test_unknown_routing_is_refused():
    with pytest.raises(EngineError) as err:
        lab.present(lab.plan("xkt-"), "/nonexistent.o", routing="ospf")
    assert err.value.field == "routing"
    with pytest.raises(EngineError) as err:
        lab.present(lab.plan("xkt-"), "/nonexistent.o", routing="bgp")
    assert err.value.field == "state_root"
