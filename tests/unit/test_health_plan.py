"""Which checks the agent runs: shared by VIPs, stable ids and marks (engine/health/plan.py)."""
import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import healthspec, vipspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.health import plan


def _vips(raw, defaults=None):
    return vipspec.parse_vips(raw, health=healthspec.parse_defaults(defaults))


def test_vips_with_the_same_real_port_and_kind_share_one_check_against_the_lowest_vip():
    vips = _vips([{"address": "10.99.0.20", "port": 80, "reals": ["10.30.1.2", "10.30.2.2"]},
                  {"address": "10.99.0.10", "port": 80, "reals": ["10.30.1.2"]},
                  {"address": "10.99.0.10", "port": 80, "protocol": "udp", "reals": ["10.30.1.2"]}])
    checks = plan.build(vips)
    assert sorted(checks) == ["tcp:10.30.1.2:80@10.99.0.10", "tcp:10.30.2.2:80@10.99.0.20"]
    shared = checks["tcp:10.30.1.2:80@10.99.0.10"]
    assert shared["members"] == [("10.99.0.10:80/tcp", "10.30.1.2"), ("10.99.0.10:80/udp", "10.30.1.2"),
                                 ("10.99.0.20:80/tcp", "10.30.1.2")]
    assert shared["spec"]["address"] == "10.99.0.10" and shared["family"] == 4


def test_different_kinds_timings_or_families_are_different_checks_and_none_is_not_checked():
    vips = _vips([{"address": "10.99.0.10", "port": 80, "reals": ["10.30.1.2"]},
                  {"address": "10.99.0.11", "port": 80, "reals": ["10.30.1.2"], "health": {"kind": "http"}},
                  {"address": "10.99.0.12", "port": 80, "reals": ["10.30.1.2"], "health": {"interval": 2}},
                  {"address": "10.99.0.13", "port": 80, "reals": ["10.30.1.2"], "health": {"kind": "none"}},
                  {"address": "fd00:99::10", "port": 80, "reals": ["fd00:30:1::2"]},
                  {"address": "10.99.0.14", "port": 80, "reals": ["fd00:30:1::2"]}])
    checks = plan.build(vips)
    assert sorted(checks) == ["http:10.30.1.2:80@10.99.0.11", "tcp:10.30.1.2:80@10.99.0.10",
                              "tcp:10.30.1.2:80@10.99.0.12", "tcp:[fd00:30:1::2]:80@10.99.0.14",
                              "tcp:[fd00:30:1::2]:80@[fd00:99::10]"]
    assert checks["tcp:[fd00:30:1::2]:80@10.99.0.14"]["family"] == 4  # 4in6: the inner packet is the VIP's


def test_same_id_for_two_timings_of_one_vip_address_gets_a_suffix():
    vips = _vips([{"address": "10.99.0.10", "port": 80, "reals": ["10.30.1.2"]},
                  {"address": "10.99.0.10", "port": 81, "reals": ["10.30.1.2"], "health": {"port": 80, "rise": 5}}])
    assert sorted(plan.build(vips)) == ["tcp:10.30.1.2:80@10.99.0.10", "tcp:10.30.1.2:80@10.99.0.10#2"]


def test_marks_are_kept_across_reloads_and_new_reals_take_the_lowest_free_one():
    first = plan.marks({"10.0.0.2", "10.0.0.1"}, {}, 100, 8)
    assert first == {"10.0.0.1": 101, "10.0.0.2": 102}
    again = plan.marks({"10.0.0.2", "10.0.0.3"}, first, 100, 8)
    assert again == {"10.0.0.2": 102, "10.0.0.3": 101}
    with pytest.raises(ValueError, match="exceed the 1"):
        plan.marks({"10.0.0.2", "10.0.0.3"}, {}, 100, 1)


def test_a_vip_on_every_port_is_not_checked_unless_its_health_gives_the_port():
    vips = _vips([{"address": "10.99.0.10", "port": 0, "reals": ["10.30.1.2"]},
                  {"address": "10.99.0.11", "port": 0, "reals": ["10.30.1.2"], "health": {"port": 22}}])
    assert vips[0]["health"] == {"kind": "none"}
    assert sorted(plan.build(vips)) == ["tcp:10.30.1.2:22@10.99.0.11"]
    with pytest.raises(Exception, match=r"vips\[0\].health.port: .*is required"):
        _vips([{"address": "10.99.0.10", "port": 0, "reals": ["10.30.1.2"], "health": {"kind": "http"}}])
