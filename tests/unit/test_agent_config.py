"""The agent's configuration errors (exit 2, named) and its restart from the health file."""
import io
import json

from ansible_collections.xdplb.katran.plugins.module_utils.engine import cli
from ansible_collections.xdplb.katran.plugins.module_utils.engine.health import agent


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    return cli.main(argv, out=out, err=err), out.getvalue(), err.getvalue()


def _state(tmp_path, **health):
    path = tmp_path / "balancer.json"
    obj = tmp_path / "balancer.o"
    obj.write_bytes(b"")
    path.write_text(json.dumps({"version": 1, "object": str(obj), "interface": "eth0",
                                "pin_root": str(tmp_path / "pins"), "health": health or None,
                                "vips": [{"address": "10.99.0.10", "port": 80, "reals": ["10.30.1.2"]}]}))
    return path


def test_a_bad_health_setting_exits_2_naming_the_field(tmp_path):
    rc, _out, err = _run(["agent", str(_state(tmp_path, fall=0))])
    assert rc == 2
    assert "agent: error:" in err and "health.fall: 0 must be >= 1" in err


def test_a_missing_state_file_or_object_exits_2(tmp_path):
    rc, _out, err = _run(["agent", str(tmp_path / "nope.json")])
    assert rc == 2 and "nope.json" in err
    rc, _out, err = _run(["agent", str(_state(tmp_path))])
    assert rc == 2 and "hc_encap.o is not a file" in err


def test_daemon_needs_its_paths(tmp_path):
    rc, _out, err = _run(["agent", str(_state(tmp_path)), "--daemon"])
    assert rc == 2 and "--daemon needs --pidfile and --log-file" in err


def test_restored_states_follow_the_check_id_or_any_vip_of_the_check():
    checks = {"tcp:10.30.1.2:80@10.99.0.10": {"members": [("10.99.0.10:80/tcp", "10.30.1.2"),
                                                          ("10.99.0.11:80/tcp", "10.30.1.2")]},
              "tcp:10.30.2.2:80@10.99.0.10": {"members": [("10.99.0.10:80/tcp", "10.30.2.2")]}}
    entry = {"state": "down", "since": 5.0, "check": "tcp:10.30.1.2:80@10.99.0.11", "reason": "connection refused",
             "last": {"ok": False}}
    doc = {"reals": {"10.99.0.11:80/tcp": {"10.30.1.2": entry}}}
    got = agent._restored(checks, doc)  # pylint: disable=protected-access
    assert got == {"tcp:10.30.1.2:80@10.99.0.10": {"state": "down", "since": 5.0, "reason": "connection refused",
                                                   "last": {"ok": False}}}
