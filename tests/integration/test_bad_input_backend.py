"""Bad input on the backend side, given the way a user gives it, and the restore putting back
everything the role set.

One network namespace is made a backend by the backend role (BPF decap: this kernel has no ipip
module; VIPs on lo, rp_filter, arp_ignore, arp_announce, advmss) run by ansible-playbook. Then:
- state files handed to ``python -m xdplb_engine backend-restore`` with the engine the role
  installed and the interpreter its boot unit names, as the unit runs it: an invalid one exits 2
  with a message naming the field and the value, and nothing on the host moves (host_snapshot);
- role variables and module arguments through ansible-playbook: refused by name, nothing moves;
- a restore after someone reset the sysctls, removed a VIP and the advmss by hand puts each back and
  says so; ``"vips": []`` reports each VIP it removes.
Everything runs under nsenter --net, which keeps the host's bpffs (the pins) in view.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from backend_ansible import COLLECTIONS, REPO, ansible_playbook
from backend_netns import NetNS
from host_snapshot import snapshot

VIPS = ["10.77.9.10", "10.77.9.11"]
GATEWAY = "10.77.0.1"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and BPF: run as root")


def _nsenter(ns):
    return ["nsenter", "--net=/run/netns/%s" % ns]


def run_play(be, tasks, variables=None, check=False):
    """tasks on localhost inside the backend namespace; returns (rc, {tasks, stats})."""
    play = [{"hosts": "localhost", "gather_facts": False, "vars": variables or {}, "tasks": tasks}]
    path = be["tmp"] / ("play-%d.json" % len(list(be["tmp"].glob("play-*.json"))))
    path.write_text(json.dumps(play))
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
               ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
               ANSIBLE_CALLBACK_PLUGINS=os.path.join(REPO, "tests", "callbacks"),
               ANSIBLE_STDOUT_CALLBACK="xdplb_test_results", ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0", ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="1",
               ANSIBLE_LOCAL_TEMP=str(be["tmp"] / "ansible-local"), ANSIBLE_REMOTE_TEMP=str(be["tmp"] / "ansible-remote"))
    cmd = _nsenter(be["ns"].name) + [ansible_playbook(), "-i", "localhost,", "-c", "local",
                                     "-e", "ansible_python_interpreter=%s" % sys.executable, str(path)]
    done = subprocess.run(cmd + (["--check"] if check else []), capture_output=True, text=True, env=env,
                          timeout=900, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, "no results from ansible-playbook (rc %d)\n%s\n%s" % (done.returncode, done.stdout, done.stderr)
    return done.returncode, json.loads(lines[-1])


def role_task(be, **overrides):
    return {"name": "Backend role", "ansible.builtin.include_role": {"name": "xdplb.katran.backend"},
            "vars": dict(be["vars"], **overrides)}


def restore(be, path, *args):
    """The boot unit's command line (its interpreter, PYTHONPATH) on another state file."""
    cmd = _nsenter(be["ns"].name) + [be["python"], "-m", "xdplb_engine", "backend-restore", str(path)] + list(args)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                          env=dict(clean, LANG="C", PYTHONPATH=be["vars"]["backend_lib_dir"]))


def host(be):
    return snapshot(ns=be["ns"].name, pin_roots=[be["pin_root"]],
                    files=[be["state"], be["vars"]["backend_sysctl_file"], be["unit"]])


@pytest.fixture(scope="module")
def be(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-backend")
    ns = NetNS()
    pin_root = "/sys/fs/bpf/xkt-bad-backend-%d" % os.getpid()
    try:
        ns.veth("eth0", "peer0")
        ns.ip("addr", "add", "10.77.0.2/24", "dev", "eth0")
        ns.ip("route", "add", "default", "via", GATEWAY, "dev", "eth0")
        variables = {"backend_vips": VIPS, "backend_decap_mode": "bpf", "backend_interface": "eth0",
                     "backend_packages": [], "backend_advmss": 1440, "backend_systemd_enable": False,
                     "backend_sysctl_file": str(tmp / "sysctl.d" / "60-xdplb-katran.conf"),
                     "backend_state_dir": str(tmp / "etc"), "backend_lib_dir": str(tmp / "lib"),
                     "backend_systemd_dir": str(tmp / "systemd"), "backend_pin_root": pin_root}
        env = {"ns": ns, "tmp": tmp, "vars": variables, "pin_root": pin_root,
               "state": str(tmp / "etc" / "backend.json"), "unit": str(tmp / "systemd" / "xdplb-backend.service")}
        rc, data = run_play(env, [role_task(env)])
        assert rc == 0, [t for t in data["tasks"] if t["status"] == "failed"]
        env["role_run"] = data
        with open(env["unit"]) as handle:
            env["python"] = re.search(r"^ExecStart=(\S+) -m xdplb_engine", handle.read(), re.M).group(1)
        with open(env["state"]) as handle:
            env["doc"] = json.load(handle)
        env["after_role"] = host(env)
        yield env
    finally:
        ns.delete()
        subprocess.run(["rm", "-rf", pin_root], check=False)


# ---------------------------------------------------------------- what the role left

def test_role_keeps_a_strict_state_file_and_a_unit_with_ansibles_python(be):
    doc = be["doc"]
    assert oct(os.stat(be["state"]).st_mode & 0o777) == "0o600"
    assert doc["vips"] == VIPS and doc["decap"] == "bpf" and doc["arp_ignore"] == 1 and doc["arp_announce"] == 2
    assert doc["arp_devices"] == ["eth0"] and doc["rp_filter"] == 0 and doc["advmss"] == 1440
    assert doc["bpf"]["addresses"] == ["10.77.0.2"]
    # The interpreter Ansible used on the host, not a hard-coded /usr/bin/python3.
    assert be["python"] == sys.executable
    # backend_systemd_enable: false: the unit file is written, systemd never called.
    enable = [t for t in be["role_run"]["tasks"] if "Enable the restore unit" in t["task"]]
    assert [t["status"] for t in enable] == ["skipped"]
    assert not any("Reload systemd" in t["task"] and t["status"] != "skipped" for t in be["role_run"]["tasks"])


def test_restore_of_the_role_s_own_file_changes_nothing(be):
    done = restore(be, be["state"])
    assert (done.returncode, done.stdout.strip()) == (0, "backend: nothing to change"), done.stderr


# ---------------------------------------------------------------- invalid state files: exit 2, nothing changed

def _doc(be, **changes):
    doc = json.loads(json.dumps(be["doc"]))
    for key, value in changes.items():
        if value is _DROP:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc)


_DROP = object()
_HUGE = 16 * 1024 * 1024 + 1
DEEP = "[" * 100000 + "]" * 100000


def _kernel(be, tunnels):
    return _doc(be, decap="kernel", bpf=None, tunnels=tunnels)


CASES = {
    # name: (content (text, bytes, a callable of be, or a marker), words the message must contain)
    "only_kind": ('{"kind": "backend"}', ["vips: is required", '"vips": []']),
    "invalid_json": ('{"kind": "backend", "vips": [', ["not valid JSON"]),
    "missing_vips": (lambda be: _doc(be, vips=_DROP), ["vips: is required"]),
    "null_vips": (lambda be: _doc(be, vips=None), ["vips: is required", "(got None)"]),
    "vip_of_wrong_type": (lambda be: _doc(be, vips=["10.77.9.10", 7]), ["vips[1]:", "(got 7)"]),
    "bad_vip": (lambda be: _doc(be, vips=["10.77.9.10", "10.77.9.300"]), ["vips[1]:", "'10.77.9.300'"]),
    "unknown_key": (lambda be: _doc(be, vip_list=[]), ["vip_list: unknown key"]),
    "unknown_nested_key": (lambda be: _doc(be, bpf=dict(be["doc"]["bpf"], pinroot="/x")),
                           ["bpf.pinroot: unknown key", "'/x'"]),
    "truncated": (lambda be: json.dumps(be["doc"])[:60], ["not valid JSON"]),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00", ["is not UTF-8 text"]),
    "directory": ("DIRECTORY", ["is a directory"]),
    "huge": ("HUGE", ["more than the 16 MiB a state file may have"]),
    "missing_file": ("MISSING", ["cannot read the file", "No such file"]),
    "not_an_object": ("[1, 2]", ["document: expected a JSON object", "[1, 2]"]),
    "balancer_file": ('{"version": 1, "object": "/x.o", "interface": "eth0", "vips": []}', ["kind: is required"]),
    "other_kind": (lambda be: _doc(be, kind="balancer"), ["kind: not a backend state file", "'balancer'"]),
    "strict_rp_filter": (lambda be: _doc(be, rp_filter=1), ["rp_filter: must be one of 0, 2", "(got 1)"]),
    "rp_filter_as_text": (lambda be: _doc(be, rp_filter="0"), ["rp_filter:", "(got '0')"]),
    "arp_ignore_out_of_range": (lambda be: _doc(be, arp_ignore=9), ["arp_ignore: must be between 0 and 8", "(got 9)"]),
    "arp_announce_null": (lambda be: _doc(be, arp_announce=None), ["arp_announce: is required", "(got None)"]),
    "bad_advmss": (lambda be: _doc(be, advmss=100), ["advmss: must be 0", "(got 100)"]),
    "advmss_as_float": (lambda be: _doc(be, advmss=1440.0), ["advmss:", "(got 1440.0)"]),
    "family_as_text": (lambda be: _doc(be, families=[4, "6"]), ["families[1]: must be one of 4, 6", "(got '6')"]),
    "bad_tunnel_kind": (lambda be: _kernel(be, [{"name": "gre0", "kind": "gre", "addresses": []}]),
                        ["tunnels[0].kind: must be one of ipip, ip6tnl", "'gre'"]),
    "tunnel_of_wrong_type": (lambda be: _kernel(be, [["ipip0", "ipip"]]), ["tunnels[0]: expected an object"]),
    "ipv6_on_ipip": (lambda be: _kernel(be, [{"name": "ipip0", "kind": "ipip", "addresses": ["fd00::1/64"]}]),
                     ["tunnels[0].addresses:", "'fd00::1/64'"]),
    "bpf_null_with_bpf_decap": (lambda be: _doc(be, bpf=None), ["bpf: BPF decap", "(got None)"]),
    "tunnels_with_bpf_decap": (lambda be: _doc(be, tunnels=[{"name": "ipip0", "kind": "ipip", "addresses": []}]),
                               ["tunnels: BPF decap"]),
    "long_interface": (lambda be: _doc(be, interface="e" * 65537, arp_devices=["e" * 65537]),
                       ["interface: device names are at most 15 characters", "(65539 characters)"]),
    "nan": (lambda be: json.dumps(be["doc"]).replace('"advmss": 1440', '"advmss": NaN'),
            ["not valid JSON", "NaN"]),
    "deeply_nested": (DEEP, ["nested too deeply"]),
    "legacy_with_half_the_arp_keys": (lambda be: _doc(be, version=_DROP, arp_devices=_DROP), ["arp_devices: is required"]),
    "version_2": (lambda be: _doc(be, version=2), ["version: this engine reads version 1", "(got 2)"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_invalid_state_file_exits_2_names_field_and_value_and_changes_nothing(be, case):
    content, words = CASES[case]
    path = be["tmp"] / ("bad-%s.json" % case)
    if callable(content):
        content = content(be)
    if content == "DIRECTORY":
        path.mkdir(exist_ok=True)
    elif content == "HUGE":
        path.write_bytes(b" " * _HUGE)
    elif content != "MISSING":
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    before = host(be)
    for args in ((), ("--check",)):
        done = restore(be, path, *args)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert done.stdout == "" and "Traceback" not in done.stderr, done.stderr
        assert str(path) in done.stderr
        for word in words:
            assert word in done.stderr, done.stderr
        assert len(done.stderr) < 1000
    assert host(be) == before


# ---------------------------------------------------------------- role variables and module arguments

ROLE_CASES = [
    # (variables, words in the failure)
    ({"backend_advmss": 100}, ["backend_advmss: must be 0", "(got 100)"]),
    ({"backend_arp_ignore": 9}, ["backend_arp_ignore: must be between 0 and 8", "(got 9)"]),
    ({"backend_arp_announce": -1}, ["backend_arp_announce: must be between 0 and 2", "(got -1)"]),
    ({"backend_vips": ["10.77.9.10", "10.77.9.300"]}, ["backend_vips[1]", "10.77.9.300"]),
    ({"backend_interface": "e" * 65537}, ["backend_interface: device names are at most 15", "(65539 characters)"]),
    ({"backend_decap_mode": "kernel", "backend_tunnel_address": "fd00:77::1/64"},
     ["backend_tunnel_address:", "'fd00:77::1/64'"]),
    ({"backend_rp_filter": 1}, ["backend_rp_filter", "0, 2"]),
    ({"backend_bpf_hook": "tcx"}, ["backend_bpf_hook", "tcx"]),
    ({"backend_outer_families": [5]}, ["backend_outer_families", "5"]),
]


def _rescued(name, task):
    """The task inside a block, and its failure recorded by name in the rescue."""
    return {"name": name, "block": [task],
            "rescue": [{"name": "Refused " + name, "ansible.builtin.debug": {"var": "ansible_failed_result"}}]}


def test_bad_role_variables_are_refused_by_name_before_any_change(be):
    tasks = [_rescued("role %d" % i, role_task(be, **variables)) for i, (variables, _w) in enumerate(ROLE_CASES)]
    before = host(be)
    _rc, data = run_play(be, tasks)
    refused = {t["task"][len("Refused "):]: t["result"]["ansible_failed_result"] for t in data["tasks"]
               if t["task"].startswith("Refused ")}
    for i, (variables, words) in enumerate(ROLE_CASES):
        failure = refused.get("role %d" % i)
        assert failure is not None, (variables, "not refused")
        text = failure.get("msg", "") if isinstance(failure.get("msg"), str) else json.dumps(failure.get("msg"))
        for word in words:
            assert word in text, (variables, text[:2000])
        assert len(text) < 2000, (variables, len(text))
    # No task changed anything before the refusal.
    assert not [t["task"] for t in data["tasks"] if t["result"].get("changed")]
    assert host(be) == before


def test_bad_module_arguments_are_refused_by_name_and_change_nothing(be):
    other = str(be["tmp"] / "etc" / "other.json")
    good = be["doc"]
    bad_file = str(be["tmp"] / "doctor-bad.json")
    with open(bad_file, "w") as handle:
        handle.write(_doc(be, vips=["10.77.9.10", "10.77.9.300"]))
    cases = [
        ({"xdplb.katran.backend_state": {"path": other, "document": dict(good, vips=None)}},
         "vips", ["vips: is required", "(got None)"]),
        ({"xdplb.katran.backend_state": {"path": other, "document": dict(good, rp_filter=1),
                                         "names": {"rp_filter": "my_rp_filter"}}},
         "my_rp_filter", ["my_rp_filter: must be one of 0, 2", "(got 1)"]),
        ({"xdplb.katran.backend_state": {"path": other, "document": dict(good, extra=True)}},
         "extra", ["extra: unknown key"]),
        ({"xdplb.katran.backend_state": {"path": other, "document": dict(good, vips=["10.77.9.10", ["x"]])}},
         "vips[1]", ["vips[1]:", "['x']"]),
        ({"xdplb.katran.backend_state": {"path": str(be["tmp"] / "etc"), "document": good}},
         "path", ["is a directory"]),
        ({"xdplb.katran.route_advmss": {"advmss": 100}}, "advmss", ["advmss", "100"]),
        # The doctor's reader of the state file: the same schema as the restore.
        ({"xdplb.katran.backend_check": {"state_file": bad_file}}, "vips[1]", ["vips[1]:", "'10.77.9.300'", bad_file]),
    ]
    tasks = [_rescued("module %d" % i, task) for i, (task, _f, _w) in enumerate(cases)]
    before = host(be)
    _rc, data = run_play(be, tasks)
    refused = {t["task"][len("Refused "):]: t["result"]["ansible_failed_result"] for t in data["tasks"]
               if t["task"].startswith("Refused ")}
    for i, (task, field, words) in enumerate(cases):
        failure = refused["module %d" % i]
        assert failure.get("field") == field, (task, failure)
        for word in words:
            assert word in failure["msg"], (task, failure["msg"])
    assert not os.path.exists(other)
    assert host(be) == before


def test_the_doctor_reads_the_state_file_with_the_same_schema(be):
    tasks = [{"name": "deployed", "xdplb.katran.backend_check": {"state_file": be["state"]}},
             {"name": "never deployed", "xdplb.katran.backend_check": {"state_file": str(be["tmp"] / "none.json")}}]
    rc, data = run_play(be, tasks)
    assert rc == 0
    deployed, never = [t["result"] for t in data["tasks"]]
    # (peer0, the veth's other end in the same namespace, draws an ARP warning: not a backend device.)
    assert deployed["state"] == be["doc"] and deployed["status"] != "critical", deployed["findings"]
    assert {f["vip"] for f in deployed["findings"] if f["check"] == "vip_bound"} == set(VIPS)
    assert never["status"] == "critical" and [f["check"] for f in never["findings"]] == ["deployed"]


# ---------------------------------------------------------------- the restore puts back what was lost

def test_restore_brings_back_what_was_reset_by_hand_and_reports_each(be):
    ns = be["ns"]
    ns.ip("addr", "del", "10.77.9.11/32", "dev", "lo")
    for target in ("all", "default", "eth0"):
        ns.set_proc("ipv4", target, "arp_ignore", 0)
        ns.set_proc("ipv4", target, "arp_announce", 0)
    ns.set_proc("ipv4", "all", "rp_filter", 1)
    ns.ip("route", "replace", "default", "via", GATEWAY, "dev", "eth0")
    changed = host(be)
    done = restore(be, be["state"], "--check")
    assert done.returncode == 0, done.stderr
    assert host(be) == changed
    report = done.stdout
    assert "add address 10.77.9.11/32 to lo" in report
    assert "net.ipv4.conf.eth0.arp_ignore 0 -> 1" in report and "net.ipv4.conf.eth0.arp_announce 0 -> 2" in report
    assert "net.ipv4.conf.all.rp_filter 1 -> 0" in report and "advmss 1440" in report
    done = restore(be, be["state"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == report, (done.stdout, report)
    assert ns.proc("ipv4", "eth0", "arp_ignore") == 1 and ns.proc("ipv4", "eth0", "arp_announce") == 2
    assert max(ns.proc("ipv4", "all", "rp_filter"), ns.proc("ipv4", "eth0", "rp_filter")) == 0
    assert "10.77.9.11/32" in ns.ip("addr", "show", "dev", "lo").stdout
    assert "advmss 1440" in ns.ip("route", "show", "default").stdout
    again = restore(be, be["state"])
    assert (again.returncode, again.stdout.strip()) == (0, "backend: nothing to change"), again.stderr


def test_an_explicit_empty_vip_list_reports_each_removal(be):
    path = be["tmp"] / "no-vips.json"
    path.write_text(_doc(be, vips=[]))
    before = host(be)
    done = restore(be, path, "--check")
    assert done.returncode == 0, done.stderr
    assert "remove address 10.77.9.10/32 from lo" in done.stdout
    assert "remove address 10.77.9.11/32 from lo" in done.stdout
    assert host(be) == before
    try:
        done = restore(be, path)
        assert done.returncode == 0, done.stderr
        assert "remove address 10.77.9.10/32 from lo" in done.stdout and "10.77.9.11/32" in done.stdout
        assert "10.77.9." not in be["ns"].ip("addr", "show", "dev", "lo").stdout
    finally:
        done = restore(be, be["state"])
    assert done.returncode == 0 and "add address 10.77.9.10/32 to lo" in done.stdout, done.stderr


def test_a_state_file_of_an_older_role_still_restores(be):
    """No version, no arp_* keys (the sysctl.d file had them): a rebooted backend keeps its VIPs."""
    path = be["tmp"] / "legacy.json"
    path.write_text(_doc(be, version=_DROP, arp_ignore=_DROP, arp_announce=_DROP, arp_devices=_DROP))
    be["ns"].ip("addr", "del", "10.77.9.10/32", "dev", "lo")
    done = restore(be, path)
    assert (done.returncode, done.stdout.strip()) == (0, "backend: add address 10.77.9.10/32 to lo"), done.stderr


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3") or subprocess.run(
    ["/usr/bin/python3", "-c", "import pyroute2"], capture_output=True, check=False).returncode == 0,
    reason="needs a python without pyroute2 (Debian's /usr/bin/python3 without python3-pyroute2)")
def test_a_unit_python_without_pyroute2_stops_before_the_first_change(be):
    """The restore plans every step before it changes any: no half-restored backend."""
    be["ns"].ip("addr", "del", "10.77.9.11/32", "dev", "lo")
    be["ns"].set_proc("ipv4", "all", "arp_ignore", 0)
    be["ns"].set_proc("ipv4", "eth0", "arp_ignore", 0)
    before = host(be)
    try:
        done = restore(dict(be, python="/usr/bin/python3"), be["state"])
        assert done.returncode == 1 and "pyroute2" in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert host(be) == before
    finally:
        assert restore(be, be["state"]).returncode == 0
