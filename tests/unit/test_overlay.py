"""overlay.effective: configured weights x health (pure)."""
from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import overlay, vipspec


def vip(weights):
    return vipspec.parse_vip({"address": "10.99.0.1", "port": 80,
                              "reals": [{"address": a, "weight": w} for a, w in weights.items()]})


def weights(v):
    return {r["address"]: r["weight"] for r in v["reals"]}


DOWN, UP = {"state": "down"}, {"state": "up"}


def test_no_health_is_the_same_vip():
    v = vip({"10.1.0.1": 1, "10.1.0.2": 2})
    assert overlay.effective(v, None, None) == (v, {"down": [], "fail_open": False})


def test_down_real_gets_zero_drain_stays_zero():
    v = vip({"10.1.0.1": 1, "10.1.0.2": 2, "10.1.0.3": 0})
    eff, st = overlay.effective(v, {"10.1.0.1": DOWN, "10.1.0.2": UP, "10.1.0.3": UP}, None)
    assert weights(eff) == {"10.1.0.1": 0, "10.1.0.2": 2, "10.1.0.3": 0}
    assert st == {"down": ["10.1.0.1"], "fail_open": False}
    assert weights(v)["10.1.0.1"] == 1  # input untouched


def test_all_down_fails_open_with_the_kernel_weights():
    v = vip({"10.1.0.1": 1, "10.1.0.2": 1, "10.1.0.3": 0})
    health = {a: DOWN for a in ("10.1.0.1", "10.1.0.2", "10.1.0.3")}
    eff, st = overlay.effective(v, health, {"10.1.0.1": 0, "10.1.0.2": 1, "10.1.0.3": 5})
    assert weights(eff) == {"10.1.0.1": 0, "10.1.0.2": 1, "10.1.0.3": 0}
    assert st["fail_open"] is True


def test_all_down_without_a_ring_uses_the_configured_weights():
    v = vip({"10.1.0.1": 1, "10.1.0.2": 2})
    eff, st = overlay.effective(v, {"10.1.0.1": DOWN, "10.1.0.2": DOWN}, None)
    assert eff is v and st["fail_open"] is True


def test_kind_none_ignores_health():
    v = vipspec.parse_vip({"address": "10.99.0.1", "port": 80, "reals": ["10.1.0.1", "10.1.0.2"],
                           "health": {"kind": "none"}})
    assert overlay.effective(v, {"10.1.0.1": DOWN}, None)[0] is v
