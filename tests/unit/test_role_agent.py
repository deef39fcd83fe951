"""The balancer role's agent pieces, rendered as Ansible renders them: the agent's unit (checked by
systemd-analyze verify), the state document's health defaults, the process mode's command line."""
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import statefile

try:  # ansible-core 2.19+: only trusted strings are templates
    from ansible.template import trust_as_template
except ImportError:  # pragma: no cover - 2.17, 2.18
    def trust_as_template(value):
        return value

ROLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles", "balancer")


def _load(*parts):
    with open(os.path.join(ROLE, *parts)) as handle:
        return yaml.safe_load(handle)


DEFAULTS = _load("defaults", "main.yml")
VARS = _load("vars", "main.yml")
TASKS = _load("tasks", "main.yml")


def _trusted(value):
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value


def render(template, **overrides):
    """`template` templated with the role's defaults and vars (and `overrides`), as a play would."""
    variables = dict(DEFAULTS, **VARS)
    variables.update(overrides)
    return Templar(loader=DataLoader(), variables=_trusted(variables)).template(_trusted(template))


def _task(name_start):
    return next(t for t in TASKS if t["name"].startswith(name_start))


def agent_unit(**overrides):
    return render(VARS["balancer_agent_unit"]["content"], **overrides)


# ------------------------------------------------------------------ the unit
def test_the_agent_unit_runs_the_agent_with_least_privilege():
    text = agent_unit()
    lines = text.splitlines()
    assert "ExecStart=@PYTHON@ -m xdplb_engine agent /etc/xdplb/balancer.json --health-state /var/lib/xdplb/health.json" in lines
    assert "Environment=PYTHONPATH=/usr/local/lib/xdplb" in lines
    for line in ("After=xdplb-balancer.service network-online.target", "Restart=on-failure", "RestartPreventExitStatus=2",
                 "ExecReload=kill -HUP $MAINPID", "CapabilityBoundingSet=CAP_SYS_ADMIN CAP_NET_ADMIN CAP_NET_RAW",
                 "AmbientCapabilities=CAP_SYS_ADMIN CAP_NET_ADMIN CAP_NET_RAW", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ReadWritePaths=/var/lib/xdplb -/sys/fs/bpf/xdplb", "StateDirectory=xdplb",
                 "StateDirectoryMode=0700", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
                 "ProtectKernelModules=yes", "ProtectControlGroups=yes",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_NETLINK AF_UNIX", "LockPersonality=yes",
                 "SystemCallArchitectures=native", "LimitMEMLOCK=infinity", "WantedBy=multi-user.target"):
        assert line in lines, line
    assert "MemoryDenyWriteExecute" not in text  # ctypes
    assert not any(line.startswith(("{%", " ")) or line.endswith(" ") for line in lines), text


def test_the_agent_unit_follows_the_role_paths_and_capabilities():
    text = agent_unit(balancer_health_state_file="/srv/xdplb/health/health.json", balancer_state_dir="/etc/lb1",
                      balancer_lib_dir="/opt/xdplb", balancer_pin_root="/sys/fs/bpf/lb1",
                      balancer_agent_capabilities=["CAP_NET_ADMIN", "CAP_BPF"])
    lines = text.splitlines()
    assert "ExecStart=@PYTHON@ -m xdplb_engine agent /etc/lb1/balancer.json --health-state /srv/xdplb/health/health.json" in lines
    assert "ReadWritePaths=/srv/xdplb/health -/sys/fs/bpf/lb1" in lines
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_BPF" in lines and "Environment=PYTHONPATH=/opt/xdplb" in lines
    # StateDirectory only names directories below /var/lib.
    assert "StateDirectory" not in text
    deeper = agent_unit(balancer_health_state_file="/var/lib/xdplb/lb1/health.json")
    assert "StateDirectory=xdplb/lb1" in deeper.splitlines()
    assert render(VARS["balancer_agent_unit"]["path"], balancer_systemd_dir="/etc/systemd/system") \
        == "/etc/systemd/system/xdplb-agent.service"


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.parametrize("overrides", [{}, {"balancer_health_state_file": "/srv/xdplb/health.json",
                                            "balancer_agent_capabilities": ["CAP_NET_ADMIN"]},
                                       {"balancer_metrics_enabled": True, "balancer_bgp_enabled": True}])
def test_systemd_analyze_verify_accepts_both_units(tmp_path, overrides):
    # Not skipped when missing: a check that runs nowhere proves nothing (bindep.txt: systemd [test]).
    assert SYSTEMD_ANALYZE, "systemd-analyze is needed to check the agent's unit (Debian: apt install systemd)"
    # The interpreter that runs this test stands in for the host's (@PYTHON@): verify wants it to exist.
    units = {"xdplb-agent.service": agent_unit(**overrides),
             "xdplb-balancer.service": render(VARS["balancer_unit"]["content"])}
    for name, text in units.items():
        (tmp_path / name).write_text(text.replace("@PYTHON@", sys.executable))
    paths = [str(tmp_path / name) for name in units]
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no"] + paths, capture_output=True, text=True, check=False,
                          env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"), timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    # And it does refuse a broken one (the check is not a no-op).
    (tmp_path / "xdplb-agent.service").write_text(units["xdplb-agent.service"].replace("@PYTHON@", "/nonexistent/python3"))
    broken = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", paths[0]], capture_output=True, text=True,
                            check=False, timeout=60)
    assert broken.returncode != 0 and "/nonexistent/python3" in broken.stderr, broken
    # A value systemd would ignore only warns (exit 0): the empty stderr above is what catches it.
    (tmp_path / "xdplb-agent.service").write_text(units["xdplb-agent.service"].replace("@PYTHON@", sys.executable)
                                                  .replace("ProtectSystem=strict", "ProtectSystem=stric"))
    ignored = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", paths[0]], capture_output=True, text=True,
                             check=False, timeout=60)
    assert "ProtectSystem" in ignored.stderr or "protect system" in ignored.stderr, ignored


# ------------------------------------------------------------------ the state document
def _state(**overrides):
    task = _task("Put the VIPs in service")
    base = dict(balancer_iface="eth0", balancer_config={"config": {"gateway_mac": "02:00:00:00:00:01"}},
                balancer_vips=[{"address": "10.99.0.10", "port": 80, "reals": ["10.30.1.2"],
                                "health": {"kind": "http", "path": "/healthz", "fall": 5}}])
    base.update(overrides)
    return render(task["vars"]["balancer_state"], **base)


def test_the_state_document_carries_the_health_defaults_and_each_vips_own():
    doc = _state()
    assert doc["health"] == {"kind": "tcp", "interval": 1.0, "timeout": 1.0, "rise": 2, "fall": 3}
    assert all(type(doc["health"][k]) is float for k in ("interval", "timeout"))  # pylint: disable=unidiomatic-typecheck
    assert all(type(doc["health"][k]) is int for k in ("rise", "fall"))  # pylint: disable=unidiomatic-typecheck
    assert doc["vips"][0]["health"] == {"kind": "http", "path": "/healthz", "fall": 5}, "passed through unchanged"
    # As the boot restore and the agent read it.
    parsed = statefile.parse_state(doc)
    assert parsed["health"]["fall"] == 3 and parsed["vips"][0]["health"]["fall"] == 5
    assert parsed["vips"][0]["health"]["kind"] == "http" and parsed["vips"][0]["health"]["rise"] == 2
    other = _state(balancer_health_kind="udp", balancer_health_interval="0.5", balancer_health_timeout=0.2,
                   balancer_health_rise="4", balancer_health_fall=1)
    assert other["health"] == {"kind": "udp", "interval": 0.5, "timeout": 0.2, "rise": 4, "fall": 1}


def test_lb_vip_applies_weights_through_health_only_with_the_agent():
    args = _task("Put the VIPs in service")["xdplb.katran.lb_vip"]
    assert render(args["health_state_file"]) == "/var/lib/xdplb/health.json"
    # Without an agent the file is never updated again: its last findings must not keep reals out.
    assert "omit" in args["health_state_file"] and "balancer_agent" in args["health_state_file"]


# ------------------------------------------------------------------ process mode
def test_process_mode_runs_the_agent_under_setpriv_with_the_units_capabilities():
    task = _task("Run the health-check agent (a daemon")
    engine = {"host": {"python": "/usr/bin/python3"}}
    argv = render(task["ansible.builtin.command"]["argv"], balancer_engine=engine, balancer_state_dir="/run/lab/lb1/etc")
    assert argv == ["setpriv", "--bounding-set=-all,+sys_admin,+net_admin,+net_raw", "--inh-caps=-all",
                    "/usr/bin/python3", "-m", "xdplb_engine", "agent", "/run/lab/lb1/etc/balancer.json",
                    "--health-state", "/var/lib/xdplb/health.json", "--daemon", "--pidfile", "/run/lab/lb1/etc/agent.pid",
                    "--log-file", "/run/lab/lb1/etc/agent.log"]
    fewer = render(task["ansible.builtin.command"]["argv"], balancer_engine=engine, balancer_agent_capabilities=[],
                   balancer_engine_python="/opt/py/bin/python3")
    assert fewer[:4] == ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "/opt/py/bin/python3"]
    assert render(task["environment"]["PYTHONPATH"]) == "/usr/local/lib/xdplb"
    assert "started " in task["changed_when"] and "balancer_agent_mode == 'process'" in task["when"]


# ------------------------------------------------------------------ metrics
def test_metrics_add_the_listen_address_to_both_ways_of_running_the_agent():
    on = {"balancer_metrics_enabled": True}
    assert "--metrics-listen" not in agent_unit()
    unit = agent_unit(**on).splitlines()
    assert ("ExecStart=@PYTHON@ -m xdplb_engine agent /etc/xdplb/balancer.json --health-state /var/lib/xdplb/health.json"
            " --metrics-listen 127.0.0.1:9437") in unit
    six = agent_unit(balancer_metrics_enabled=True, balancer_metrics_listen_address="fd00::1", balancer_metrics_port=9500)
    assert "--metrics-listen [fd00::1]:9500" in six
    # With BGP, the sessions' states come through BIRD's socket, which the unit reaches as group bird.
    bgp = agent_unit(balancer_metrics_enabled=True, balancer_bgp_enabled=True).splitlines()
    assert any(line.endswith("--drain-file /etc/xdplb/bgp-drained --metrics-listen 127.0.0.1:9437 "
                             "--bird-socket /run/bird/bird.ctl") for line in bgp), bgp
    assert "SupplementaryGroups=bird" in bgp and "SupplementaryGroups=bird" not in unit
    task = _task("Run the health-check agent (a daemon")
    engine = {"host": {"python": "/usr/bin/python3"}}
    argv = render(task["ansible.builtin.command"]["argv"], balancer_engine=engine, **on)
    assert argv[-2:] == ["--metrics-listen", "127.0.0.1:9437"]
    # An agent started with other arguments is replaced: "restarted PID" is a change too.
    assert "(re)?started " in task["changed_when"]


def test_metrics_install_the_exporters_library_only_when_enabled():
    task = _task("Packages the modules and the boot unit need")
    assert render(task["ansible.builtin.package"]["name"]) == ["libbpf1", "python3-pyroute2"]
    assert render(task["ansible.builtin.package"]["name"], balancer_metrics_enabled=True) == [
        "libbpf1", "python3-pyroute2", "python3-prometheus-client"]
