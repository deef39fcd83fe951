"""The engine as a standalone CLI: the package copied elsewhere under another name and run with
Debian's own python3 (stdlib only, no Ansible, no pyroute2), as the boot unit does."""
import json
import os
import shutil
import subprocess

import pytest

from balancer_env import BALANCER_O, PASS_O, BalancerNS, build_objects, dump
from host_snapshot import snapshot

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import program

ENGINE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "plugins", "module_utils", "engine")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: run as root")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    build_objects()
    tmp = tmp_path_factory.mktemp("cli")
    lib = tmp / "lib"
    shutil.copytree(ENGINE, str(lib / "xdplb_engine"), ignore=shutil.ignore_patterns("__pycache__"))
    ns = BalancerNS()
    ns.ip("addr", "add", "10.9.0.1/24", "dev", "lb0")
    state = {"version": 1, "object": BALANCER_O, "interface": "lb0", "mode": "auto", "pin_root": ns.pin_root,
             "config": {"gateway_mac": "02:00:00:00:00:fe", "source_v4": "10.9.0.1", "source_v6": "fd00:9::1"},
             "vips": [{"address": "10.99.0.10", "port": 80, "reals": [{"address": "10.1.0.1", "weight": 2},
                                                                      {"address": "10.1.0.2", "weight": 1}]},
                      {"address": "fd00:99::10", "port": 53, "protocol": "udp", "reals": ["fd00:1::1"]}]}
    path = tmp / "balancer.json"
    path.write_text(json.dumps(state))
    try:
        yield {"ns": ns, "lib": str(lib), "state": str(path), "tmp": tmp}
    finally:
        ns.close()


def cli(env, *args):
    """python3 -m xdplb_engine ARGS inside the namespace (nsenter keeps the host's bpffs)."""
    cmd = ["nsenter", "--net=/run/netns/%s" % env["ns"].name, PYTHON, "-E", "-s", "-m", "xdplb_engine"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run(cmd + list(args), cwd=env["lib"], capture_output=True, text=True,
                          env=dict(clean, LANG="C"), timeout=120, check=False)


def test_usage_and_not_loaded(env):
    done = cli(env, "--help")
    assert done.returncode == 0 and "python3 -m xdplb_engine" in done.stdout and "exit codes" in done.stdout
    done = cli(env, "--pin-root", env["ns"].pin_root, "status")
    assert done.returncode == 3 and "not loaded" in done.stdout
    assert cli(env).returncode == 2


def test_restore_check_then_restore_then_idempotent(env):
    pin = env["ns"].pin_root
    done = cli(env, "restore", env["state"], "--check")
    assert done.returncode == 0, done.stderr
    assert "would be written" in done.stdout and not os.path.exists(pin)
    done = cli(env, "restore", env["state"])
    assert done.returncode == 0, done.stderr
    assert "xdp_balancer attached on lb0" in done.stdout and "2 added" in done.stdout
    done = cli(env, "--pin-root", pin, "status", "--interface", "lb0")
    assert done.returncode == 0, done.stderr
    assert "xdp_balancer id" in done.stdout and "10.99.0.10:80/tcp: 10.1.0.1 w2, 10.1.0.2 w1" in done.stdout
    assert "[fd00:99::10]:53/udp" in done.stdout and "gateway 02:00:00:00:00:fe" in done.stdout
    done = cli(env, "restore", env["state"])
    assert done.returncode == 0 and "unchanged on lb0" in done.stdout
    assert "config: unchanged" in done.stdout and "0 added, 0 changed, 0 removed, 2 unchanged" in done.stdout
    done = cli(env, "--pin-root", pin, "stats", "--json")
    assert done.returncode == 0 and set(json.loads(done.stdout)) == {"global", "vips", "reals"}


def test_save_round_trips(env):
    saved = str(env["tmp"] / "etc" / "saved.json")
    done = cli(env, "--pin-root", env["ns"].pin_root, "save", saved, "--object", BALANCER_O, "--interface", "lb0")
    assert done.returncode == 0, done.stderr
    assert oct(os.stat(saved).st_mode & 0o777) == "0o600"
    data = json.load(open(saved))
    assert [v["address"] for v in data["vips"]] == ["10.99.0.10", "fd00:99::10"]
    assert data["vips"][0]["reals"] == [{"address": "10.1.0.1", "weight": 2}, {"address": "10.1.0.2", "weight": 1}]
    done = cli(env, "restore", saved)
    assert done.returncode == 0 and "0 added, 0 changed, 0 removed, 2 unchanged" in done.stdout, done.stdout


def test_bad_state_file_exits_2_naming_the_field_and_changes_nothing(env):
    pin = env["ns"].pin_root
    before = dump(pin)
    state = json.load(open(env["state"]))
    state["vips"][0]["reals"][1]["weight"] = -1
    bad = env["tmp"] / "bad.json"
    bad.write_text(json.dumps(state))
    done = cli(env, "restore", str(bad))
    assert done.returncode == 2
    assert done.stderr.strip() == "xdplb_engine: error: %s: vips[0].reals[1].weight: -1 must be >= 0" % bad
    state["vips"][0]["reals"][1]["weight"] = 1
    state["object"] = "/nonexistent/balancer.o"
    bad.write_text(json.dumps(state))
    done = cli(env, "restore", str(bad))
    assert done.returncode == 1 and "object: cannot read '/nonexistent/balancer.o'" in done.stderr
    bad.write_text("{not json")
    assert cli(env, "restore", str(bad)).returncode == 2
    assert dump(pin) == before


def _fresh_cli(env, ns, state, tmp, name):
    path = tmp / name
    path.write_text(json.dumps(state))
    return cli(dict(env, ns=ns), "restore", str(path)), str(path)


def test_restore_without_pyroute2_checks_first_and_leaves_the_nic_as_it_was(env, tmp_path):
    """The boot unit's Python lacks pyroute2 and the config needs it (no outer source given): the
    restore refuses before attaching, naming the interpreter and the two ways to fix it."""
    ns = BalancerNS()
    try:
        state = {"version": 1, "object": BALANCER_O, "interface": "lb0", "pin_root": ns.pin_root,
                 "config": {"gateway_mac": "02:00:00:00:00:fe"}, "purge": True,
                 "vips": [{"address": "10.99.0.10", "port": 80, "reals": ["10.1.0.1"]}]}
        before = snapshot(ns=ns.name, pin_roots=[ns.pin_root])
        done, path = _fresh_cli(env, ns, state, tmp_path, "needs-netlink.json")
        assert done.returncode == 1, done.stderr
        assert "cannot import pyroute2" in done.stderr and PYTHON in done.stderr
        assert "python3-pyroute2" in done.stderr and "balancer_engine_python" in done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
        assert snapshot(ns=ns.name, pin_roots=[ns.pin_root]) == before
    finally:
        ns.close()


def test_a_failure_after_the_attach_rolls_back(env, tmp_path):
    """The VIP step fails once the program is attached (a ring size the object was not built with):
    the program is detached again and the maps this run pinned are removed; exit 1 says so."""
    ns = BalancerNS()
    try:
        state = {"version": 1, "object": BALANCER_O, "interface": "lb0", "pin_root": ns.pin_root,
                 "config": {"gateway_mac": "02:00:00:00:00:fe", "source_v4": "10.9.0.1", "source_v6": "fd00:9::1"},
                 "ring_size": 65521, "vips": [{"address": "10.99.0.10", "port": 80, "reals": ["10.1.0.1"]}]}
        before = snapshot(ns=ns.name, pin_roots=[ns.pin_root])
        done, _path = _fresh_cli(env, ns, state, tmp_path, "rollback.json")
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "rolled back: program detached (there was none before)" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert snapshot(ns=ns.name, pin_roots=[ns.pin_root]) == before
        # With another program attached first, that program is attached again.
        prog = ns.run(program.ensure, PASS_O, "lb0", pin_root=ns.pin_root)
        done, _path = _fresh_cli(env, ns, state, tmp_path, "rollback.json")
        assert done.returncode == 1 and "attached again" in done.stderr, done.stderr
        assert ns.run(program.attached, ns.run(program.ifindex, "lb0"))["prog_id"] == prog["prog_id"]
    finally:
        ns.close()
