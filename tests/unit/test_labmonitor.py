"""The lab Prometheus's configuration, rendered from the lab plan, as promtool judges it."""
import os
import shutil
import subprocess

import pytest
import yaml

from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError
from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import lab, labmonitor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(REPO, "files", "prometheus", "xdplb.rules.yml")
needs_promtool = pytest.mark.skipif(not shutil.which("promtool"), reason="needs promtool (apt-get install prometheus)")


def _plan():
    return lab.plan("xkt-", balancers=2, backends=3)


def _targets(config, job):
    scrape = next(s for s in config["scrape_configs"] if s["job_name"] == job)
    return {c["labels"]["instance"]: c["targets"] for c in scrape["static_configs"]}


def test_every_balancer_and_backend_scraped_at_its_lab_address_named_by_its_host():
    config = yaml.safe_load(labmonitor.render(_plan()))
    assert config["global"] == {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"}
    assert _targets(config, "xdplb_balancer") == {"xkt-lb1": ["10.20.1.2:9437"], "xkt-lb2": ["10.20.2.2:9437"]}
    assert _targets(config, "xdplb_backend") == {f"xkt-be{n}": [f"10.30.{n}.2:9438"] for n in (1, 2, 3)}
    assert "rule_files" not in config


def test_listens_on_the_routers_address_facing_the_client_inside_the_router_namespace():
    plan = _plan()
    assert labmonitor.url(plan) == "http://10.10.1.1:9090" and labmonitor.listen_address(plan, 9091) == "10.10.1.1:9091"
    path = labmonitor.directory("/run/xdplb-lab", plan["router"])
    argv = labmonitor.argv(plan["router"], path, "10.10.1.1:9090")
    assert argv[:3] == ["nsenter", "--net=/run/netns/xkt-router", "prometheus"]
    assert f"--config.file={path}/prometheus.yml" in argv and f"--storage.tsdb.path={path}/data" in argv
    assert "--web.listen-address=10.10.1.1:9090" in argv


def _write(tmp_path, text):
    conf = tmp_path / "prometheus.yml"
    conf.write_text(text)
    return subprocess.run(["promtool", "check", "config", str(conf)], capture_output=True, text=True, check=False)


@needs_promtool
def test_promtool_accepts_the_configuration_with_the_collections_rules(tmp_path):
    rules = [RULES] if os.path.exists(RULES) else []
    if not rules:
        # Until files/prometheus ships its rules: a rule file of the same shape.
        minimal = tmp_path / "xdplb.rules.yml"
        minimal.write_text("groups:\n  - name: xdplb\n    rules:\n      - alert: XdplbVipNoHealthyReal\n"
                           "        expr: xdplb_vip_healthy_reals == 0\n        for: 3s\n")
        rules = [str(minimal)]
    files = labmonitor._files(_plan(), str(tmp_path / "p"), rules)  # pylint: disable=protected-access
    for path, text in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
    conf = str(tmp_path / "p" / "prometheus.yml")
    check = subprocess.run(["promtool", "check", "config", conf], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 1 rule files found" in check.stdout + check.stderr
    # The rules are the lab directory's copy, not the collection's file: a changed rule is a changed file there.
    assert yaml.safe_load(files[conf])["rule_files"] == [str(tmp_path / "p" / "rules" / os.path.basename(rules[0]))]


@needs_promtool
def test_promtool_rejects_what_the_render_must_never_write(tmp_path):
    # The check above can fail: a timeout over the interval is refused by promtool.
    text = labmonitor.render(_plan()).replace("scrape_timeout: 900ms", "scrape_timeout: 2s")
    check = _write(tmp_path, text)
    assert check.returncode != 0 and "scrape timeout greater than scrape interval" in check.stdout + check.stderr


def test_bad_port_or_rule_file_is_refused_naming_the_option(tmp_path):
    for port in (0, 65536, True, "9090"):
        with pytest.raises(EngineError) as err:
            labmonitor.check(port)
        assert err.value.field == "prometheus_port"
    if shutil.which("prometheus"):
        with pytest.raises(EngineError) as err:
            labmonitor.check(9090, [str(tmp_path / "missing.rules.yml")])
        assert err.value.field == "prometheus_rule_files" and "missing.rules.yml" in err.value.msg
    with pytest.raises(EngineError) as err:
        lab.present(_plan(), "/nonexistent.o", prometheus=True)
    assert err.value.field == "state_root"
