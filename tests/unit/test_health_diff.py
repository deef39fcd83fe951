"""lb_vip's diff shows health checks (viprequest.diff_text, _health_diff): check and diff mode for
the check configuration, without a line per VIP when nothing is known of the health before."""
from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import healthspec, viprequest, vipspec


def _vips(**health):
    return vipspec.parse_vips([{"address": "10.99.0.10", "port": 80, "reals": ["10.30.1.2"], "health": health or None},
                               {"address": "10.99.0.11", "port": 80, "reals": ["10.30.1.2"]}],
                              health=healthspec.parse_defaults(None))


def _nothing_shown():
    return {"before": {"vips": {}}, "after": {"vips": {}}}


def test_a_health_only_change_is_one_line_before_and_after():
    kept = {v["key"]: v["health"] for v in _vips()}
    before, after = viprequest._health_diff(kept, _vips(kind="http", path="/healthz"), _nothing_shown())  # pylint: disable=protected-access
    assert list(before) == list(after) == ["10.99.0.10:80/tcp"]
    view = {"vips": {}}
    assert viprequest.diff_text(view, before) == ("10.99.0.10:80/tcp: health tcp port 80 interval 1.0 timeout 1.0 "
                                                  "rise 2 fall 3\n")
    assert viprequest.diff_text(view, after) == ("10.99.0.10:80/tcp: health http port 80 interval 1.0 timeout 1.0 "
                                                 "rise 2 fall 3 path /healthz host (vip) status 200\n")


def test_without_a_kept_file_only_the_vips_the_plan_shows_get_a_health_line():
    shown = {"before": {"vips": {}}, "after": {"vips": {"10.99.0.11:80/tcp": {}}}}
    before, after = viprequest._health_diff({}, _vips(), shown)  # pylint: disable=protected-access
    assert before == {} and list(after) == ["10.99.0.11:80/tcp"]
