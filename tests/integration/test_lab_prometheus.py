"""The lab's Prometheus (lab_prometheus): a server in the router namespace that scrapes the lab's hosts,
restarts for a new rule file, and is gone with the lab."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import lab, labmonitor

PREFIX = "xkp-"
STATE_ROOT = "/run/xdplb-labtest-prom"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASS_OBJECT = os.path.join(REPO, "files", "bpf", "pass.o")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)"),
    pytest.mark.skipif(not shutil.which("prometheus"), reason="needs prometheus (apt-get install prometheus)"),
    pytest.mark.skipif(not os.path.exists(PASS_OBJECT), reason="needs files/bpf/pass.o (make bpf)"),
]

# An exporter of one gauge in the balancer's namespace: what the job scrapes, not the agent's.
EXPORTER = ("import sys, time, prometheus_client\n"
            "prometheus_client.Gauge('xdplb_lab_test', 'test').set(7)\n"
            "prometheus_client.start_http_server(9437, addr=sys.argv[1])\n"
            "time.sleep(120)\n")


def _in_router(plan, path):
    """GET path of the lab's Prometheus from inside the router namespace (the controller cannot reach it)."""
    code = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"
    out = subprocess.run(["nsenter", f"--net=/run/netns/{plan['router']}", sys.executable, "-c", code,
                          labmonitor.url(plan) + path], capture_output=True, text=True, check=True, timeout=10).stdout
    return json.loads(out)


def _up(plan):
    result = _in_router(plan, "/api/v1/query?query=up")["data"]["result"]
    return {(r["metric"]["job"], r["metric"]["instance"]): r["value"][1] for r in result}


def _prometheus_processes():
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("prometheus ") and STATE_ROOT in line]


@pytest.fixture(scope="module")
def prom_lab(tmp_path_factory):
    lab.absent(PREFIX, [STATE_ROOT])
    plan = lab.plan(PREFIX, balancers=1, backends=1)
    rules = tmp_path_factory.mktemp("rules") / "lab.rules.yml"
    rules.write_text("groups:\n  - name: lab\n    rules:\n      - alert: LabTest\n        expr: xdplb_lab_test > 5\n")
    changes = lab.present(plan, PASS_OBJECT, state_root=STATE_ROOT, prometheus=True, prometheus_rule_files=[str(rules)])
    assert f"{plan['router']}: start prometheus on 10.10.1.1:9090" in changes, changes
    lb = [h for h in plan["hosts"] if h["kind"] == "lb"][0]
    exporter = subprocess.Popen(["nsenter", f"--net=/run/netns/{lb['netns']}", sys.executable, "-c", EXPORTER,
                                 lb["ipv4"].split("/")[0]])
    yield plan, rules
    exporter.kill()
    exporter.wait()
    lab.absent(PREFIX, [STATE_ROOT])


def _wait(what, timeout):
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.2)


def test_it_runs_in_the_router_namespace_and_scrapes_each_host_by_its_name(prom_lab):
    plan, _rules = prom_lab
    pid = labmonitor.pid(labmonitor.directory(STATE_ROOT, plan["router"]), plan["router"])
    assert pid and os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{plan['router']}").st_ino
    # The balancer's exporter answers (1), the backend has none (0): the jobs and instances are the lab's.
    _wait(lambda: _up(plan) == {("xdplb_balancer", PREFIX + "lb1"): "1", ("xdplb_backend", PREFIX + "be1"): "0"}, 10)
    # The rule file is evaluated every second.
    _wait(lambda: _in_router(plan, '/api/v1/query?query=ALERTS{alertname="LabTest",alertstate="firing"}')["data"]["result"], 5)


def test_a_second_run_changes_nothing_and_a_new_rule_restarts_it(prom_lab):
    plan, rules = prom_lab
    directory = labmonitor.directory(STATE_ROOT, plan["router"])
    before = labmonitor.pid(directory, plan["router"])
    assert lab.present(plan, PASS_OBJECT, state_root=STATE_ROOT, prometheus=True, prometheus_rule_files=[str(rules)]) == []
    rules.write_text(rules.read_text().replace("> 5", "> 6"))
    assert lab.present(plan, PASS_OBJECT, state_root=STATE_ROOT, prometheus=True, prometheus_rule_files=[str(rules)],
                       check_mode=True) == [f"{plan['router']}: prometheus rules/lab.rules.yml",
                                            f"{plan['router']}: restart prometheus for the new configuration"]
    lab.present(plan, PASS_OBJECT, state_root=STATE_ROOT, prometheus=True, prometheus_rule_files=[str(rules)])
    after = labmonitor.pid(directory, plan["router"])
    assert after and after != before
    rule = _in_router(plan, "/api/v1/rules")["data"]["groups"][0]["rules"][0]
    assert rule["query"] == "xdplb_lab_test > 6"


def test_teardown_leaves_no_prometheus_and_no_files(prom_lab):
    plan, _rules = prom_lab
    assert _prometheus_processes()
    lab.absent(PREFIX, [STATE_ROOT])
    assert not _prometheus_processes() and not os.path.exists(STATE_ROOT)
    # Off again on a lab that runs one: stopped, its directory gone, the rest of the lab kept.
    lab.present(plan, PASS_OBJECT, state_root=STATE_ROOT, prometheus=True)
    assert _prometheus_processes()
    changes = lab.present(plan, PASS_OBJECT, state_root=STATE_ROOT)
    assert f"{plan['router']}: stop prometheus" in changes
    assert not _prometheus_processes() and not os.path.exists(labmonitor.directory(STATE_ROOT, plan["router"]))
