"""The backend role on a host where nothing is installed yet: no pyroute2 until the role installs it.

Its first module task used to be backend_check, which needs pyroute2, so a fresh Debian host failed
before the package task that would have installed python3-pyroute2 (the lab sets backend_packages: []
and runs the controller's virtualenv Python, so it never saw it). Two tests:

- static: in the order the role runs its tasks (include_tasks and blocks followed, from the task
  files), nothing before the package task needs pyroute2 or libbpf on the host. The tasks that may
  come first are named below, each for a reason that the second test then proves on a real run.
- a run: the role in a namespace with Debian's /usr/bin/python3 (no pyroute2 here; else a venv of it), and
  backend_packages: [] (the test cannot install packages on this machine). Every task up to the
  package task must work without pyroute2, and the role must stop at the first task that needs it,
  with a message naming pyroute2 and backend_packages, having changed nothing.
"""
import os
import subprocess

import pytest
import yaml

from backend_netns import NetNS
from host_snapshot import snapshot
from lab_playbook import REPO
from netns_playbook import playbook

SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = "Packages the modules and the boot unit need"
# What may run before the package task, and why it needs neither pyroute2 nor libbpf on the host.
WITHOUT_PYROUTE2 = {
    "xdplb.katran.validate_request": "an action plugin: runs on the controller",
    "ansible.builtin.setup": "ansible-core's own facts",
    "ansible.builtin.set_fact": "controller",
    "ansible.builtin.assert": "controller",
    "ansible.builtin.command": "only when delegated to the controller (delegate_to: localhost)",
    "xdplb.katran.backend_state": "the document's schema and a file (check mode): no netlink",
    "xdplb.katran.backend_check": "only with inspect: false (kernel tunnel support from /sys and /lib/modules)",
}
KEYWORDS = {"name", "when", "register", "vars", "check_mode", "diff", "changed_when", "failed_when", "notify",
            "delegate_to", "run_once", "loop", "loop_control", "tags", "become", "ignore_errors", "no_log",
            "environment", "until", "retries", "delay"}


def _module(task):
    found = [k for k in task if k not in KEYWORDS and k not in ("block", "rescue", "always")]
    assert len(found) == 1, task
    return found[0]


def _flatten(role, name="main.yml"):
    """The role's tasks in the order they run (an include in place, a block's tasks then its rescue)."""
    with open(os.path.join(REPO, "roles", role, "tasks", name)) as handle:
        tasks = yaml.safe_load(handle)
    out = []

    def walk(items):
        for task in items:
            if "block" in task:
                walk(task["block"] + task.get("rescue", []) + task.get("always", []))
            elif _module(task) == "ansible.builtin.include_tasks":
                out.extend(_flatten(role, task["ansible.builtin.include_tasks"]))
            else:
                out.append(task)
    walk(tasks)
    return out


def _runs_without_pyroute2(task):
    module = _module(task)
    if module == "ansible.builtin.command":
        return task.get("delegate_to") == "localhost"
    if module == "xdplb.katran.backend_check":
        return task[module].get("inspect") is False
    return module in WITHOUT_PYROUTE2


@pytest.mark.parametrize("role", ["backend", "balancer"])
def test_nothing_before_the_package_task_needs_pyroute2(role):
    tasks = _flatten(role)
    names = [t.get("name") for t in tasks]
    assert names.count(PACKAGES) == 1, names
    before = tasks[:names.index(PACKAGES)]
    assert before[0].get(_module(before[0])) == {"role": role}, "the controller-side check stays first"
    needy = [(t["name"], _module(t)) for t in before if not _runs_without_pyroute2(t)]
    assert not needy, "these run before %s installs pyroute2 and libbpf: %s" % (role + "_packages", needy)
    if role == "backend":
        # The whole-request check still comes before any change (the package task is the first).
        assert "Check the whole request before changing anything (the state document's own schema)" in \
            [t["name"] for t in before]


def _python_without_pyroute2(tmp_path):
    """Debian's /usr/bin/python3 while it has no pyroute2 (as on a fresh host); once a run has installed
    python3-pyroute2 on this machine, a virtual environment of it without the system's packages."""
    if subprocess.run([SYSTEM_PYTHON, "-c", "import pyroute2"], capture_output=True, check=False).returncode != 0:
        return SYSTEM_PYTHON
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    return str(tmp_path / "bare" / "bin" / "python3")


@pytest.fixture
def fresh(tmp_path):
    python = _python_without_pyroute2(tmp_path)
    ns = NetNS()
    ns.veth("eth0", "peer0")
    ns.ip("addr", "add", "10.9.0.2/24", "dev", "eth0")
    ns.ip("route", "add", "default", "via", "10.9.0.1")
    pin_root = "/sys/fs/bpf/xdplb-test-fresh-%d" % os.getpid()
    host = {"ansible_connection": "local", "ansible_python_interpreter": python,
            "backend_vips": ["10.99.0.10"], "backend_packages": [], "backend_pin_root": pin_root,
            "backend_state_dir": str(tmp_path / "etc"), "backend_lib_dir": str(tmp_path / "lib"),
            "backend_sysctl_file": str(tmp_path / "sysctl.conf"), "backend_systemd_dir": str(tmp_path / "systemd"),
            "backend_systemd_enable": False}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"backends": {"hosts": {"be": host}}}}}))
    play = tmp_path / "backend.yml"
    play.write_text(yaml.safe_dump([{"hosts": "backends", "gather_facts": False,
                                     "roles": [{"role": "xdplb.katran.backend"}]}]))
    files = [str(tmp_path / n) for n in ("etc", "lib", "sysctl.conf", "systemd")]
    try:
        yield {"ns": ns, "inventory": inventory, "play": play, "python": python,
               "snap": lambda: snapshot(ns=ns.name, pin_roots=[pin_root], files=files)}
    finally:
        ns.delete()


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_a_host_without_pyroute2_stops_before_any_change_naming_backend_packages(fresh):
    before = fresh["snap"]()
    rc, data = playbook(fresh["ns"].name, fresh["inventory"], fresh["play"], check=False)
    assert rc != 0
    ran = [(t["task"].split(" : ")[-1], t["status"]) for t in data["tasks"]]
    # Everything up to the package task ran with a Python that has no pyroute2.
    assert ("Kernel tunnel support (read from /sys/module and /lib/modules; pyroute2 is not installed yet)",
            "ok") in ran, ran
    assert ("Check the whole request before changing anything (the state document's own schema)", "ok") in ran
    assert (PACKAGES, "skipped") in ran
    failed = [t for t in data["tasks"] if t["status"] == "failed"]
    assert [t["task"].split(" : ")[-1] for t in failed] == ["Inspect the backend (current findings)",
                                                            "Say what the host lacks"], ran
    msg = failed[-1]["result"]["msg"]
    assert "pyroute2" in msg and "backend_packages ([])" in msg and fresh["python"] in msg, msg
    assert msg.endswith("Nothing was changed"), msg
    assert "Traceback" not in msg
    assert data["stats"]["be"]["changed"] == 0
    assert fresh["snap"]() == before
