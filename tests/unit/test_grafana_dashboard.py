"""The Grafana dashboard the collection ships (files/grafana/xdplb-dashboard.json).

No Grafana here: what can be proved without one is that the file is a dashboard Grafana imports
(JSON, panels on its 24-column grid, every query on the dashboard's Prometheus variable) and that
every PromQL expression in it parses, by promtool, as a recording rule of a generated rules file,
with Grafana's variables replaced by what Grafana would put in their place.
"""
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARD = os.path.join(REPO, "files", "grafana", "xdplb-dashboard.json")
# Grafana's own variables the dashboard uses, as Grafana expands them.
BUILTIN = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def _dashboard():
    with open(DASHBOARD) as handle:
        return json.load(handle)


def _panels(dash):
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _expressions(dash):
    """(where, PromQL) of every panel target and of every query variable's label_values() selector."""
    found = []
    for panel in _panels(dash):
        for target in panel.get("targets", []):
            found.append(("panel %r target %s" % (panel["title"], target["refId"]), target["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, "variable %s: %r is not label_values(selector, label)" % (var["name"], query)
            found.append(("variable %s" % var["name"], match.group(1)))
    return found


def _expand(expr, variables):
    def one(match):
        name = match.group(1) or match.group(2)
        if name in BUILTIN:
            return BUILTIN[name]
        if name in variables:
            return ".*"  # a multi-value variable with All: the regex Grafana substitutes
        raise AssertionError("$%s in %r is not a variable of the dashboard" % (name, expr))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def test_the_dashboard_is_a_grafana_dashboard_on_its_prometheus_variable():
    dash = _dashboard()
    assert dash["uid"] == "xdplb-katran" and dash["title"] and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids repeat: %s" % ids
    problems = []
    for panel in _panels(dash):
        grid = panel["gridPos"]
        if grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > 24:
            problems.append("%r is off Grafana's 24-column grid: %s" % (panel["title"], grid))
        if panel["type"] == "row":
            continue
        if not panel.get("targets"):
            problems.append("%r has no query" % panel["title"])
        for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
            if ds != {"type": "prometheus", "uid": "${datasource}"}:
                problems.append("%r queries %r, not the dashboard's ${datasource}" % (panel["title"], ds))
    assert not problems, "\n".join(problems)


def test_every_promql_expression_of_the_dashboard_parses(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is not on PATH: scripts/bootstrap.sh (make venv) installs Debian's "
                    "`prometheus` package, which ships /usr/bin/promtool")
    dash = _dashboard()
    variables = {v["name"] for v in dash["templating"]["list"]}
    exprs = _expressions(dash)
    assert len(exprs) > 20, exprs
    rules = [{"record": "xdplb_dashboard:expr_%d" % i, "expr": _expand(expr, variables)}
             for i, (_where, expr) in enumerate(exprs)]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    out = done.stdout + done.stderr
    # promtool names a failing rule by its position: map it back to the panel.
    where = "\n".join("%d: %s: %s" % (i, w, e) for i, (w, e) in enumerate(exprs))
    assert done.returncode == 0 and "SUCCESS: %d rules found" % len(rules) in out, out + "\n" + where
