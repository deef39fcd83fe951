"""The Monitor's state machine (rise / fall, restored states, reload) without sockets."""

from ansible_collections.xdplb.katran.plugins.module_utils.engine.health import monitor as M
from ansible_collections.xdplb.katran.plugins.module_utils.engine.health.checks import Result


def _spec(**kw):
    spec = {"kind": "tcp", "address": "10.99.0.1", "port": 80, "interval": 1.0, "timeout": 0.5, "rise": 2, "fall": 3}
    spec.update(kw)
    return spec


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _monitor(specs, states=None):
    changes = []
    clock = Clock()
    mon = M.Monitor(specs, states, on_change=lambda *a: changes.append(a[:3]), clock=clock, wall=clock)
    return mon, changes


def test_falls_after_fall_failures_and_rises_after_rise_successes():
    mon, changes = _monitor({"a": _spec()})
    for _attempt in range(2):
        mon._record("a", Result(False, "connection refused"))
    assert mon.states["a"]["state"] == "up" and not changes
    mon._record("a", Result(False, "connection refused"))
    assert changes == [("a", "up", "down")]
    assert mon.snapshot()["a"]["reason"] == "connection refused"
    mon._record("a", Result(True, "connected"))
    assert mon.states["a"]["state"] == "down"
    mon._record("a", Result(True, "connected"))
    assert changes[-1] == ("a", "down", "up")


def test_a_success_between_failures_resets_the_count():
    mon, changes = _monitor({"a": _spec(fall=2)})
    for ok in (False, True, False, True, False):
        mon._record("a", Result(ok, "x"))
    assert not changes and mon.states["a"]["state"] == "up"


def test_restored_state_is_kept_and_reload_keeps_states_of_remaining_checks():
    mon, changes = _monitor({"a": _spec(), "b": _spec(port=81)}, states={"a": {"state": "down", "since": 5.0}})
    assert mon.states["a"]["state"] == "down" and mon.states["a"]["since"] == 5.0
    assert mon.states["b"]["state"] == "up"
    mon.update({"a": _spec(interval=2.0), "c": _spec(port=82)})
    assert set(mon.states) == {"a", "c"} and mon.states["a"]["state"] == "down"
    assert mon.specs["a"]["interval"] == 2.0
    assert not changes


def test_first_runs_are_spread_over_one_interval():
    specs = {"c%d" % i: _spec(port=1000 + i) for i in range(200)}
    mon, _changes = _monitor(specs)
    offsets = sorted(t - 1000.0 for t, _cid in mon._due)
    assert 0.0 <= offsets[0] and offsets[-1] < 1.0
    assert offsets[100] - offsets[99] < 0.1 and offsets[-1] - offsets[0] > 0.8


def test_kind_none_is_never_run():
    mon, _changes = _monitor({"a": _spec(kind="none")})
    assert not mon.specs and not mon._due
