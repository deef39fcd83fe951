"""doctor.yml and tasks/vips_answer.yml with the agent's findings, rendered as Ansible renders them:
down reals and VIPs failing open are warnings; a real the agent took out of the ring is not drift."""
import os

import yaml

from test_role_agent import Templar, DataLoader, _trusted

PLAYBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "playbooks")
KEY, OTHER = "10.99.0.10:8080/tcp", "10.99.0.11:80/tcp"


def _tasks(path):
    with open(os.path.join(PLAYBOOKS, path)) as handle:
        data = yaml.safe_load(handle)
    plays = data if isinstance(data, list) and data and "hosts" in data[0] else [{"tasks": data}]
    return [t for play in plays for t in play.get("tasks", [])]


def _render(template, variables):
    return Templar(loader=DataLoader(), variables=_trusted(variables)).template(_trusted(template))


def _real(addr, weight, configured, state, reason="", since=1765108801.0):
    health = {"state": state, "since": since if state != "unknown" else None, "reason": reason, "last": {}}
    return {"address": addr, "weight": weight, "configured_weight": configured, "index": 1, "ring_slots": 10,
            "stats": {"packets": 0, "bytes": 0}, "health": health}


def _vip(key, reals, fail_open=False):
    addr, port = key.split("/")[0].rsplit(":", 1)
    return {"key": key, "address": addr, "port": int(port), "protocol": "tcp", "flags": [], "fail_open": fail_open,
            "ring": {"present": True, "consistent": True}, "stats": {"packets": 5, "bytes": 500}, "reals": reals}


INFO = {"loaded": True, "program": {"name": "xdp_balancer", "mode": "native"}, "global": {},
        "vips": [_vip(KEY, [_real("10.30.1.2", 0, 1, "down", "connection refused (3 failures in a row)"),
                            _real("10.30.2.2", 1, 1, "up")]),
                 _vip(OTHER, [_real("10.30.1.2", 1, 1, "down", "connection refused"), _real("10.30.3.2", 0, 0, "unknown")],
                      fail_open=True)]}


def test_doctor_reports_down_reals_and_fail_open_as_warnings():
    task = next(t for t in _tasks("doctor.yml") if t["name"] == "Findings of the balancer")
    found = _render(task["ansible.builtin.set_fact"]["doctor_findings"],
                    {"xdplb_vips_answer": {"problems": []}, "xdplb_info_after": INFO})
    assert {f["severity"] for f in found} == {"warning"}
    assert [f["check"] for f in found] == ["health", "fail_open", "health"]
    assert found[0]["message"] == (KEY + ": real 10.30.1.2 is down since 2025-12-07 12:00:01 UTC (connection refused "
                                   "(3 failures in a row)), out of the ring (configured weight 1)")
    assert found[1]["message"].startswith(OTHER + ": FAIL OPEN")
    assert "backend_check" in found[0]["fix"]
    # Without health in lb_info's result (no agent), nothing of it is reported.
    plain = {"loaded": True, "program": INFO["program"], "global": {},
             "vips": [dict(v, reals=[{k: r[k] for k in ("address", "weight")} for r in v["reals"]]) for v in INFO["vips"]]}
    for v in plain["vips"]:
        del v["fail_open"]
    assert _render(task["ansible.builtin.set_fact"]["doctor_findings"],
                   {"xdplb_vips_answer": {"problems": []}, "xdplb_info_after": plain}) == []


def _answer(info):
    task = next(t for t in _tasks("tasks/vips_answer.yml") if t["name"] == "Sum up what the balancer and its VIPs answered")
    lb = {"interface": "lb0", "pin_root": "/sys/fs/bpf/x", "object": "/usr/local/lib/xdplb/bpf/balancer.o",
          "vips": [{"address": "10.99.0.10", "port": 8080, "reals": [{"address": "10.30.1.2", "weight": 1}, "10.30.2.2"]},
                   {"address": "10.99.0.11", "port": 80, "reals": ["10.30.1.2", {"address": "10.30.3.2", "weight": 0}]}]}
    return _render(task["ansible.builtin.set_fact"]["xdplb_vips_answer"],
                   {"xdplb_info_after": info, "xdplb_info_before": info, "xdplb_lb": lb, "inventory_hostname": "lb1",
                    "xdplb_lb_state_file": {"source": "/etc/xdplb/balancer.json"}})


def test_a_real_out_of_the_ring_by_health_is_not_drift_but_an_operator_change_is():
    assert _answer(INFO)["problems"] == []
    changed = yaml.safe_load(yaml.safe_dump(INFO))
    changed["vips"][0]["reals"][1]["weight"] = 3  # the kernel differs from the state file, health or not
    assert [(p["check"], p["vip"]) for p in _answer(changed)["problems"]] == [("drift", KEY)]
    up = yaml.safe_load(yaml.safe_dump(INFO))
    up["vips"][0]["reals"][0]["health"]["state"] = "up"  # weight 0 while up: drift
    assert [(p["check"], p["vip"]) for p in _answer(up)["problems"]] == [("drift", KEY)]
