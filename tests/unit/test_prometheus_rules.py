"""The Prometheus alerting rules the collection ships (files/prometheus/xdplb.rules.yml).

promtool (Debian's `prometheus` package, which scripts/bootstrap.sh installs) checks the file as
Prometheus would load it and runs the unit tests in tests/prometheus/: each alert fires on its bad
series, not on the healthy ones next to them, and not before its `for:`. The YAML tests here keep
the two files and the operator guide together: no alert without its promtool test and a runbook
section an operator can open.
"""
import os
import re
import shutil
import subprocess

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = "files/prometheus/xdplb.rules.yml"
RULE_TESTS = "tests/prometheus/xdplb.rules.test.yml"
# The operator guide holds the runbooks (its "Alerts" section).
RUNBOOK_DOCS = ("docs/operator-guide.md",)


def _promtool():
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool is not on PATH: scripts/bootstrap.sh (make venv) installs Debian's "
                    "`prometheus` package, which ships /usr/bin/promtool")
    return path


def _run(*args):
    done = subprocess.run([_promtool(), *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout + done.stderr


def _load(rel):
    with open(os.path.join(REPO, rel)) as handle:
        return yaml.safe_load(handle)


def _alerts():
    return [rule for group in _load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def _kebab(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def test_promtool_accepts_the_rules_file():
    rc, out = _run("check", "rules", RULES)
    assert rc == 0, out
    assert "SUCCESS: %d rules found" % sum(len(g["rules"]) for g in _load(RULES)["groups"]) in out, out


def test_promtool_unit_tests_pass():
    rc, out = _run("test", "rules", RULE_TESTS)
    assert rc == 0 and "SUCCESS" in out, out


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    cases = {}
    for group in _load(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(case)
    names = sorted({rule["alert"] for rule in _alerts()})
    untested = [n for n in names if not any(c.get("exp_alerts") for c in cases.get(n, []))]
    assert not untested, "alerts no promtool test sees firing: %s" % untested
    never_quiet = [n for n in names if not any(not c.get("exp_alerts") for c in cases.get(n, []))]
    assert not never_quiet, "alerts no promtool test sees quiet (healthy series, before for:): %s" % never_quiet
    assert not set(cases) - set(names), "tests of alerts the rules file does not have: %s" % sorted(set(cases) - set(names))


def test_every_alert_has_severity_for_texts_and_a_runbook_section():
    docs = ""
    for rel in RUNBOOK_DOCS:
        if os.path.exists(os.path.join(REPO, rel)):
            with open(os.path.join(REPO, rel)) as handle:
                docs += handle.read()
    problems = []
    for rule in _alerts():
        name, notes = rule["alert"], rule.get("annotations", {})
        if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
            problems.append("%s: labels.severity must be critical or warning" % name)
        if not rule.get("for"):
            problems.append("%s: no for:" % name)
        for key in ("summary", "description"):
            if "$labels." not in notes.get(key, ""):
                problems.append("%s: annotations.%s must name the series ($labels)" % (name, key))
        anchor = "alert-" + _kebab(name)
        if notes.get("runbook") != "docs/operator-guide.md#" + anchor:
            problems.append("%s: annotations.runbook is %r, expected docs/operator-guide.md#%s"
                            % (name, notes.get("runbook"), anchor))
        elif '<a id="%s"></a>' % anchor not in docs or "### Alert: %s\n" % name not in docs:
            problems.append("%s: no runbook section (<a id=\"%s\"></a> and ### Alert: %s) in %s"
                            % (name, anchor, name, " or ".join(RUNBOOK_DOCS)))
    assert not problems, "\n".join(problems)
