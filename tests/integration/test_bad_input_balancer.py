"""Bad input on the balancer side, each case run the way a user runs it, on a balancer that already
has VIPs in service: a state file given to `python3 -m xdplb_engine restore` (the engine copied and
run with Debian's python3, as the boot unit does), and module arguments through ansible-playbook for
lb_vip, lb_config and xdp_program.

Every case asserts the exit status (2 for an invalid state file, 1 for a host that cannot take it;
the task failed), a message naming the user's own field and the value (cut: never more than a few
hundred characters, whatever the value's length), no traceback, and that nothing changed: every
pinned map, the XDP program on the NIC, the addresses and sysctls of the namespace and the state
file, before and after.
"""
import copy
import json
import os
import shutil
import subprocess

import pytest

from balancer_env import BALANCER_O, BalancerNS, build_objects, playbook
from host_snapshot import snapshot

ENGINE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "plugins", "module_utils", "engine")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
LONG = "x" * 65537

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: run as root")


def _good(pin_root):
    return {"version": 1, "object": BALANCER_O, "interface": "lb0", "mode": "auto", "pin_root": pin_root,
            "config": {"gateway_mac": "02:00:00:00:00:fe", "source_v4": "10.9.0.1", "source_v6": "fd00:9::1"},
            "purge": True,
            "vips": [{"address": "10.99.0.10", "port": 80, "reals": [{"address": "10.1.0.1", "weight": 2},
                                                                     {"address": "10.1.0.2", "weight": 1}]},
                     {"address": "fd00:99::10", "port": 53, "protocol": "udp", "reals": ["fd00:1::1"]}]}


def _cli(env, *args):
    cmd = ["nsenter", "--net=/run/netns/%s" % env["ns"].name, PYTHON, "-E", "-s", "-m", "xdplb_engine"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run(cmd + list(args), cwd=env["lib"], capture_output=True, text=True,
                          env=dict(clean, LANG="C"), timeout=120, check=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One balancer with VIPs in service, restored from a good state file, shared by every case."""
    build_objects()
    tmp = tmp_path_factory.mktemp("badinput")
    shutil.copytree(ENGINE, str(tmp / "lib" / "xdplb_engine"), ignore=shutil.ignore_patterns("__pycache__"))
    ns = BalancerNS()
    ns.ip("addr", "add", "10.9.0.1/24", "dev", "lb0")
    state = tmp / "etc" / "balancer.json"
    state.parent.mkdir(mode=0o700)
    state.write_text(json.dumps(_good(ns.pin_root)))
    os.chmod(str(state), 0o600)
    env = {"ns": ns, "lib": str(tmp / "lib"), "tmp": tmp, "state": str(state), "pin": ns.pin_root}
    try:
        done = _cli(env, "restore", str(state))
        assert done.returncode == 0 and "2 added" in done.stdout, done.stderr
        env["snap"] = lambda: snapshot(ns=ns.name, pin_roots=[ns.pin_root], files=[str(state)])
        env["before"] = env["snap"]()
        assert env["before"]["pins"][ns.pin_root]["lb_vip_table"], "the VIPs are in service"
        yield env
    finally:
        ns.close()


def _sparse(path, size):
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def _mutate(**changes):
    """A state document from the good one: dotted paths set (None deletes the key)."""
    def build(good):
        doc = copy.deepcopy(good)
        for path, value in changes.items():
            *parents, last = path.split("__")
            target = doc
            for p in parents:
                target = target[int(p)] if p.isdigit() else target[p]
            if value is _DELETE:
                del target[last]
            elif last.isdigit():
                target[int(last)] = value
            else:
                target[last] = value
        return json.dumps(doc)
    return build


_DELETE = object()

# id: (document builder or "file kind", exit status, words the message must hold)
CLI_CASES = {
    "no vips key": (_mutate(vips=_DELETE), 2, ["vips: is required", "never read as no VIPs"]),
    "vips null": (_mutate(vips=None), 2, ["vips: must be the list of every VIP", "(got None)"]),
    "vips empty without purge": (_mutate(vips=[], purge=_DELETE), 2, ["vips: [] removes every VIP", '"purge": true']),
    "vips not a list": (_mutate(vips={"address": "10.99.0.10"}), 2, ["vips: must be a list of VIPs"]),
    "real of a wrong type": (_mutate(vips__0__reals__1=5), 2, ["vips[0].reals[1]: 5 must be a mapping"]),
    "weight of a wrong type": (_mutate(vips__0__reals__0__weight="heavy"), 2,
                               ["vips[0].reals[0].weight: 'heavy' must be an integer"]),
    "flags of a wrong type": (_mutate(vips__0__flags=7), 2, ["vips[0].flags: 7 must be a list of flag names"]),
    "unknown top-level key": (_mutate(vip=[]), 2, ["vip: is not a known key", "(got [])"]),
    "unknown config key": (_mutate(config__gateway_ip="10.9.0.254"), 2,
                           ["config.gateway_ip: is not a known key", "'10.9.0.254'"]),
    "unknown VIP key": (_mutate(vips__0__prot="tcp"), 2, ["vips[0].prot: 'tcp' is not a known field"]),
    "unknown real key": (_mutate(vips__0__reals__0={"address": "10.1.0.1", "wieght": 2}), 2,
                         ["vips[0].reals[0].wieght: 2 is not a known field"]),
    "config not an object": (_mutate(config="02:00:00:00:00:fe"), 2, ["config: must be an object"]),
    "config max_packet_size text": (_mutate(config__max_packet_size="big"), 2,
                                    ["config.max_packet_size: must be an integer", "'big'"]),
    "config bad gateway_mac": (_mutate(config__gateway_mac="02:00:zz:00:00:01"), 2,
                               ["config.gateway_mac:", "'02:00:zz:00:00:01' is not a MAC address"]),
    "object missing": (_mutate(object=None), 2, ["object: is required", "(got None)"]),
    "bad version": (_mutate(version=2), 2, ["version: is not supported", "(got 2)"]),
    "version true": (_mutate(version=True), 2, ["version: is not supported", "(got True)"]),
    "bad mode": (_mutate(mode="fast"), 2, ["mode: must be one of auto, native, generic", "'fast'"]),
    "bad interface name": (_mutate(interface="eth0/1"), 2, ["interface: device names cannot contain", "'eth0/1'"]),
    "65537-character interface": (_mutate(interface=LONG), 2, ["interface: device names are at most 15",
                                                               "(65539 characters)"]),
    "65537-character address": (_mutate(vips__0__address=LONG), 2,
                                ["vips[0].address: 'xxxx", "(65539 characters) is not a valid IPv4 or IPv6"]),
    "port 70000": (_mutate(vips__0__port=70000), 2, ["vips[0].port: 70000 must be <= 65535"]),
    "duplicate real": (_mutate(vips__0__reals__1={"address": "10.1.0.1", "weight": 1}), 2,
                       ["vips[0].reals[1].address: '10.1.0.1' is listed twice (also vips[0].reals[0])"]),
    "duplicate VIP": (_mutate(vips__1={"address": "10.99.0.10", "port": 80, "reals": ["10.1.0.3"]}), 2,
                      ["vips[1]: '10.99.0.10:80/tcp' is listed twice (also vips[0])"]),
    "IPv4 real for an IPv6 VIP": (_mutate(vips__1__reals=["10.1.0.1"]), 2,
                                  ["vips[1].reals[0].address: '10.1.0.1' is IPv4 but the VIP fd00:99::10 is IPv6"]),
    "negative weight": (_mutate(vips__0__reals__1__weight=-1), 2, ["vips[0].reals[1].weight: -1 must be >= 0"]),
    "not an object": (lambda good: json.dumps(good["vips"]), 2, ["state file: must be a JSON object", "[{"]),
    "truncated file": (lambda good: json.dumps(good)[:150], 2, ["not valid JSON", "ends early (truncated?)"]),
    "empty file": (lambda good: "", 2, ["is empty"]),
    "deeply nested": (lambda good: '{"vips": ' + "[" * 100000 + "]" * 100000 + "}", 2, ["is nested too deeply"]),
    "NaN weight": (lambda good: json.dumps(good).replace('"weight": 2', '"weight": NaN'), 2,
                   ["not valid JSON", "NaN is not a JSON number"]),
    "binary file": ("binary", 2, ["is not UTF-8 text (a binary file?)"]),
    "a directory": ("directory", 2, ["is a directory, not a state file"]),
    "huge file": ("huge", 2, ["more than the 64 MiB a state file may have"]),
    "missing file": ("missing", 2, ["cannot read the file: No such file or directory"]),
    "non-existent interface": (_mutate(interface="nope0"), 1, ["interface: 'nope0' does not exist",
                                                               "nothing was changed"]),
    "object not readable": (_mutate(object="/nonexistent/balancer.o"), 1,
                            ["object: cannot read '/nonexistent/balancer.o'", "nothing was changed"]),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_restore_refuses_a_bad_state_file(env, case, tmp_path):
    build, status, words = CLI_CASES[case]
    path = tmp_path / "balancer.json"
    if build == "binary":
        shutil.copy(BALANCER_O, str(path))
    elif build == "directory":
        path.mkdir()
    elif build == "huge":
        _sparse(str(path), (64 << 20) + 1)
    elif build == "missing":
        pass
    else:
        path.write_text(build(_good(env["pin"])))
    done = _cli(env, "restore", str(path))
    msg = done.stderr
    assert done.returncode == status, (case, done.returncode, msg)
    # An invalid file is named first; a host that cannot take a valid one names the field.
    assert msg.startswith("xdplb_engine: error: %s: " % path if status == 2 else "xdplb_engine: error: "), msg[:500]
    for w in words:
        assert w in msg, (case, w, msg[:1000])
    assert "Traceback" not in msg and len(msg) < 1000, msg[:1000]
    assert done.stdout == "", "nothing was done, so nothing is reported done"
    assert env["snap"]() == env["before"]


def _vip_task(name, pin, **args):
    return {"name": name, "xdplb.katran.lb_vip": dict({"pin_root": pin, "purge": True}, **args),
            "ignore_errors": True}


def _module_cases(env):
    """{task name: (task, field, words)}: lb_vip, lb_config and xdp_program given bad arguments."""
    pin, tmp = env["pin"], env["tmp"]
    good = _good(pin)
    files = tmp / "files"
    files.mkdir(exist_ok=True)
    no_vips = dict(good)
    del no_vips["vips"]
    (files / "no-vips.json").write_text(json.dumps(no_vips))
    shutil.copy(BALANCER_O, str(files / "binary.json"))
    _sparse(str(files / "huge.json"), (64 << 20) + 1)
    (files / "adir").mkdir(exist_ok=True)
    port = copy.deepcopy(good)
    port["vips"][0]["port"] = 70000
    bad_real = copy.deepcopy(good["vips"])
    bad_real[1]["reals"] = ["fd00:1::1", "10.1.0.1"]
    keep = str(tmp / "kept.json")
    cases = {
        "content without vips": (_vip_task("content without vips", pin, content=json.dumps(no_vips)),
                                 "content.vips", ["content.vips: is required"]),
        "content vips null": (_vip_task("content vips null", pin, content=json.dumps(dict(good, vips=None))),
                              "content.vips", ["content.vips: must be the list", "(got None)"]),
        "src without vips": (_vip_task("src without vips", pin, src=str(files / "no-vips.json")),
                             "src.vips", ["src.vips: is required"]),
        "src is a directory": (_vip_task("src is a directory", pin, src=str(files / "adir")),
                               "src", ["is a directory"]),
        "src binary": (_vip_task("src binary", pin, src=str(files / "binary.json")), "src", ["not UTF-8 text"]),
        "src huge": (_vip_task("src huge", pin, src=str(files / "huge.json")), "src", ["more than the 64 MiB"]),
        "content truncated": (_vip_task("content truncated", pin, content=json.dumps(good)[:120]),
                              "content", ["content: not valid JSON", "truncated"]),
        "content unknown key": (_vip_task("content unknown key", pin, content=json.dumps(dict(good, purge_all=True))),
                                "content.purge_all", ["content.purge_all: is not a known key"]),
        "content port 70000": (_vip_task("content port 70000", pin, content=json.dumps(port)),
                               "content.vips[0].port", ["content.vips[0].port: 70000 must be <= 65535"]),
        "content 6in4": (_vip_task("content 6in4", pin, content=json.dumps(bad_real)),
                         "content[1].reals[1].address", ["'10.1.0.1' is IPv4 but the VIP fd00:99::10 is IPv6"]),
        "keep_as a plain list": (_vip_task("keep_as a plain list", pin, content=json.dumps(good["vips"]), keep_as=keep),
                                 "keep_as", ["keep_as: the boot-time restore reads a state document"]),
        "keep_as empty vips": (_vip_task("keep_as empty vips", pin, keep_as=keep,
                                         content=json.dumps(dict(no_vips, vips=[], purge=None))),
                               "content.vips", ["content.vips: [] removes every VIP", "keep_as keeps"]),
        "long address": (_vip_task("long address", pin, vips=[{"address": LONG, "port": 80, "reals": ["10.1.0.1"]}]),
                         "vips[0].address", ["(65539 characters) is not a valid IPv4 or IPv6 address"]),
        "duplicate VIP": (_vip_task("duplicate VIP", pin, vips=[good["vips"][0], good["vips"][0]]),
                          "vips[1]", ["'10.99.0.10:80/tcp' is listed twice"]),
        "weight text": (_vip_task("weight text", pin, vips=[dict(good["vips"][0], reals=[{"address": "10.1.0.1",
                                                                                          "weight": "heavy"}])]),
                        "vips[0].reals[0].weight", ["'heavy' must be an integer"]),
        "config long gateway_mac": ({"name": "config long gateway_mac", "ignore_errors": True,
                                     "xdplb.katran.lb_config": {"interface": "lb0", "pin_root": pin, "gateway_mac": LONG}},
                                    "gateway_mac", ["(65539 characters)"]),
        "config no such interface": ({"name": "config no such interface", "ignore_errors": True,
                                      "xdplb.katran.lb_config": {"interface": "nope0", "pin_root": pin}},
                                     "interface", ["'nope0' does not exist"]),
        "config bad source_v4": ({"name": "config bad source_v4", "ignore_errors": True,
                                  "xdplb.katran.lb_config": {"interface": "lb0", "pin_root": pin,
                                                             "gateway_mac": "02:00:00:00:00:fe",
                                                             "source_v4": "10.9.0.300"}},
                                 "source_v4", ["not a valid IPv4 or IPv6 address", "'10.9.0.300'"]),
        "program bad interface name": ({"name": "program bad interface name", "ignore_errors": True,
                                        "xdplb.katran.xdp_program": {"interface": "eth0/1", "object": BALANCER_O,
                                                                     "pin_root": pin}},
                                       "interface", ["device names cannot contain", "'eth0/1'"]),
        "program no such interface": ({"name": "program no such interface", "ignore_errors": True,
                                       "xdplb.katran.xdp_program": {"interface": "nope0", "object": BALANCER_O,
                                                                    "pin_root": pin}},
                                      "interface", ["'nope0' does not exist"]),
        "program object is a directory": ({"name": "program object is a directory", "ignore_errors": True,
                                           "xdplb.katran.xdp_program": {"interface": "lb0", "object": str(files / "adir"),
                                                                        "pin_root": pin}},
                                          "object", ["cannot read", "Is a directory"]),
        "program long object path": ({"name": "program long object path", "ignore_errors": True,
                                      "xdplb.katran.xdp_program": {"interface": "lb0", "object": "/" + LONG,
                                                                   "pin_root": pin}},
                                     "object", ["cannot read", "(65540 characters)"]),
    }
    return cases


@pytest.fixture(scope="module")
def module_runs(env):
    """Every bad module task in one ansible-playbook run (each one fails on its own: ignore_errors)."""
    cases = _module_cases(env)
    results = playbook(env["ns"].name, [task for task, _f, _w in cases.values()], env["tmp"])
    return cases, results, env["snap"]()


MODULE_CASES = ["content without vips", "content vips null", "src without vips", "src is a directory", "src binary",
                "src huge", "content truncated", "content unknown key", "content port 70000", "content 6in4",
                "keep_as a plain list", "keep_as empty vips", "long address", "duplicate VIP", "weight text",
                "config long gateway_mac", "config no such interface", "config bad source_v4",
                "program bad interface name", "program no such interface", "program object is a directory",
                "program long object path"]


@pytest.mark.parametrize("name", MODULE_CASES)
def test_module_refuses_bad_arguments(env, module_runs, name):
    cases, results, after = module_runs
    _task, field, words = cases[name]
    r = results[name]
    res = r["result"]
    assert r["status"] == "failed", (name, res)
    assert res.get("field") == field, (name, res.get("field"), res.get("msg", "")[:500])
    msg = res["msg"]
    assert msg.startswith(field), (name, msg[:500])
    for w in words:
        assert w in msg, (name, w, msg[:1000])
    # ansible-core 2.19 adds exception: "(traceback unavailable)" to every failure; a crash has a traceback.
    assert len(msg) < 1000 and "Traceback" not in msg + str(res.get("exception")), (name, msg[:1000])
    assert "module_stderr" not in res, res["module_stderr"][-1000:]
    assert not os.path.exists(str(env["tmp"] / "kept.json"))
    assert after == env["before"], "a refused task changed the host"


def test_cases_cover_the_module_runs(module_runs):
    assert sorted(MODULE_CASES) == sorted(module_runs[0])
