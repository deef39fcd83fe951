"""The CLI status (and lb_info's annotate_from) with the agent's health: a fake balancer, real files."""
import io
import json

import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine import cli
from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer, healthstate
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import StateFileError

KEY, OTHER = "10.99.0.10:8080/tcp", "10.99.0.11:80/tcp"
SINCE = 1765108801.0  # 2025-12-07 12:00:01 UTC


def _info():
    def vip(key, reals):
        addr, port = key.split("/")[0].rsplit(":", 1)
        return {"key": key, "address": addr, "port": int(port), "protocol": "tcp", "flags": [], "icmp_echo": True,
                "vip_num": 0, "ring": {"present": True, "consistent": True},
                "reals": [{"address": a, "weight": w, "index": i + 1} for i, (a, w) in enumerate(reals)]}
    return {"config": {"if_mac": "02:00:00:00:00:01", "gateway_mac": "02:00:00:00:00:fe", "source_mode": "balancer",
                       "source_v4": "10.20.1.2", "source_v6": None, "max_packet_size": 0},
            "limits": {"vips": 2, "max_vips": 512, "reals": 3, "max_reals": 4096},
            "vips": [vip(KEY, [("10.30.1.2", 0), ("10.30.2.2", 1)]), vip(OTHER, [("10.30.1.2", 1), ("10.30.3.2", 0)])],
            "reals": []}


def _entry(state, reason, ok=None):
    return {"state": state, "since": SINCE, "check": "tcp", "reason": reason,
            "last": {"ok": state == "up" if ok is None else ok, "at": SINCE + 5, "reason": reason}}


HEALTH = {"version": 1, "updated": SINCE + 5, "pid": 4321,
          "vips": {OTHER: {"fail_open": True, "reason": "every real is down"}},
          "reals": {KEY: {"10.30.1.2": _entry("down", "tcp:10.30.1.2:8080@10.99.0.10 connection refused (3 failures in a row)"),
                          "10.30.2.2": _entry("up", "timed out after 1.0 s", ok=False)},
                    OTHER: {"10.30.1.2": _entry("down", "connection refused")}}}
STATE = {"version": 1, "object": "/usr/local/lib/xdplb/bpf/balancer.o", "interface": "eth0", "pin_root": "/x",
         "vips": [{"address": "10.99.0.10", "port": 8080, "reals": [{"address": "10.30.1.2", "weight": 1},
                                                                    {"address": "10.30.2.2", "weight": 1}]},
                  {"address": "10.99.0.11", "port": 80, "reals": [{"address": "10.30.1.2", "weight": 1},
                                                                  {"address": "10.30.3.2", "weight": 0}]}]}


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setattr(balancer, "is_loaded", lambda pin_root: True)
    monkeypatch.setattr(balancer, "info", lambda pin_root, stats=False, ring_slots=False: _info())
    health, state = tmp_path / "health.json", tmp_path / "balancer.json"
    health.write_text(json.dumps(HEALTH))
    state.write_text(json.dumps(STATE))
    return {"health": str(health), "state": str(state), "tmp": tmp_path}


def _status(*args):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--pin-root", "/x", "status"] + list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_status_shows_each_reals_health_and_a_loud_fail_open(files):
    code, out, err = _status("--health-state", files["health"], "--state-file", files["state"])
    assert code == 0, err
    lines = out.splitlines()
    i = lines.index("  %s:" % KEY)
    assert lines[i + 1] == ("    10.30.1.2 w0 (configured 1) down since 2025-12-07 12:00:01 UTC: "
                            "tcp:10.30.1.2:8080@10.99.0.10 connection refused (3 failures in a row)")
    assert lines[i + 2] == "    10.30.2.2 w1 (configured 1) up (last check failed: timed out after 1.0 s)"
    j = lines.index("  %s: FAIL OPEN: every real in its ring is down, the last ring is kept" % OTHER)
    assert lines[j + 1].startswith("    10.30.1.2 w1 (configured 1) down since")
    # Drained by the operator and not listed by the agent.
    assert lines[j + 2] == "    10.30.3.2 w0 (configured 0) unknown"


def test_status_without_the_files_is_as_before(files):
    code, out, _err = _status()
    assert code == 0 and "  %s: 10.30.1.2 w0, 10.30.2.2 w1\n" % KEY in out and "FAIL OPEN" not in out
    # Only the health file: no configured weights to show.
    _code, out, _err = _status("--health-state", files["health"])
    assert "    10.30.2.2 w1 up (last check failed" in out
    # No health file yet (the agent has not written one): every real unknown.
    _code, out, _err = _status("--health-state", str(files["tmp"] / "none.json"), "--state-file", files["state"])
    assert "    10.30.1.2 w0 (configured 1) unknown\n" in out and "FAIL OPEN" not in out


def test_status_json_carries_health_configured_weight_and_fail_open(files):
    code, out, _err = _status("--health-state", files["health"], "--state-file", files["state"], "--json")
    data = json.loads(out)
    assert code == 0
    first, second = data["vips"]
    assert first["fail_open"] is False and second["fail_open"] is True
    assert first["reals"][0]["health"] == {"state": "down", "since": SINCE, "reason": HEALTH["reals"][KEY]["10.30.1.2"]["reason"],
                                           "last": HEALTH["reals"][KEY]["10.30.1.2"]["last"]}
    assert [r["configured_weight"] for r in first["reals"] + second["reals"]] == [1, 1, 1, 0]


def test_a_bad_health_file_exits_2_naming_it(files):
    bad = files["tmp"] / "bad.json"
    bad.write_text(json.dumps({"version": 7}))
    code, out, err = _status("--health-state", str(bad))
    assert code == 2 and out == "" and str(bad) in err and "version 7 is not supported" in err, err


def test_annotate_from_leaves_the_info_alone_without_files():
    info = _info()
    assert healthstate.annotate_from(info) == _info()
    with pytest.raises(StateFileError):
        healthstate.annotate_from(_info(), None, "/nonexistent/balancer.json")


def test_real_line_without_health_annotations():
    assert cli.real_line({"address": "10.1.0.1", "weight": 3}) == "10.1.0.1 w3 unknown"
    assert cli.real_line({"address": "10.1.0.1", "weight": 0, "configured_weight": 2,
                          "health": {"state": "down", "since": None, "reason": ""}}) \
        == "10.1.0.1 w0 (configured 2) down since ?: no reason given"
