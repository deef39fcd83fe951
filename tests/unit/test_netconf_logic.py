"""The effective-value rules of net_conf, against a small model of the kernel.

The model applies the plan's writes one by one the way devinet does: conf.all combines with the
device value (max / min / device only), and a write to IPv4 conf.default is copied into every
device whose own value was never written. Random snapshots then check the promises: the named
devices get the value, no other device's effective value changes - not even for a moment in
between - no own value changes except by a planned write, and a second plan is empty.
"""
import os
import random

import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import netconf
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


class Kernel:
    def __init__(self, family, key, values, explicit):
        self.family, self.key = family, key
        self.rule = netconf.KEYS[family][key][0]
        self.values = dict(values)
        self.explicit = set(explicit)

    def write(self, target, value):
        self.values[target] = value
        if target == "default" and self.family in netconf.COPIES_DEFAULT:
            for name in self.devices():
                if name not in self.explicit:
                    self.values[name] = value
        self.explicit.add(target)

    def devices(self):
        return [n for n in self.values if n not in netconf.SPECIAL]

    def effective(self):
        out = {n: netconf.combine(self.rule, self.values["all"], self.values[n])
               for n in self.devices()}
        out["default"] = netconf.combine(self.rule, self.values["all"], self.values["default"])
        return out


def request(family, key, wanted, devices, include_default=False):
    return netconf.normalize(**{family: {key: wanted}, "devices": devices,
                                "include_default": include_default})


def run(kernel, req):
    snapshot = {kernel.family: {kernel.key: dict(kernel.values)}}
    return netconf.plan(snapshot, req)


def test_lowering_all_pins_first_and_raises_default():
    kernel = Kernel("ipv4", "rp_filter",
                    {"all": 1, "default": 0, "lo": 0, "eth0": 0, "eth1": 2, "tunl0": 0}, ())
    the_plan = run(kernel, request("ipv4", "rp_filter", 0, ["tunl0"]))
    writes = [(w["target"], w["after"]) for w in the_plan["writes"]]
    # eth1 (2 on its own) is unaffected by `all`, but the raised default would overwrite it and
    # tunl0 if they were never written: both are written explicitly before default
    assert writes == [("eth0", 1), ("lo", 1), ("eth1", 2), ("tunl0", 0), ("default", 1),
                      ("all", 0)]
    after = the_plan["effective_after"]["ipv4"]["rp_filter"]
    assert after == {"lo": 1, "eth0": 1, "eth1": 2, "tunl0": 0, "default": 1}
    persist = {(t, v) for _f, t, _k, v in the_plan["persist"]}
    assert persist == {("tunl0", 0), ("eth0", 1), ("lo", 1), ("eth1", 2), ("default", 1),
                       ("all", 0)}


def test_no_write_to_all_when_it_is_already_low_enough():
    kernel = Kernel("ipv4", "rp_filter", {"all": 0, "default": 1, "eth0": 1, "tunl0": 1}, ())
    the_plan = run(kernel, request("ipv4", "rp_filter", 0, ["tunl0"]))
    assert [(w["target"], w["after"]) for w in the_plan["writes"]] == [("tunl0", 0)]


def test_raising_is_done_on_the_device_alone():
    kernel = Kernel("ipv4", "arp_ignore", {"all": 0, "default": 0, "eth0": 0, "lo": 0}, ())
    the_plan = run(kernel, request("ipv4", "arp_ignore", 1, ["eth0"]))
    assert [(w["target"], w["after"]) for w in the_plan["writes"]] == [("eth0", 1)]
    # all matters for eth0's effective value, so it is persisted as it is
    assert ("ipv4", "all", "arp_ignore", 0) in the_plan["persist"]


def test_the_top_value_does_not_depend_on_all():
    kernel = Kernel("ipv4", "arp_announce", {"all": 0, "default": 0, "lo": 0}, ())
    the_plan = run(kernel, request("ipv4", "arp_announce", 2, ["lo"]))
    assert [t for _f, t, _k, _v in the_plan["persist"]] == ["lo"]


def test_min_rule_raises_all_and_pins_the_zeros():
    kernel = Kernel("ipv4", "accept_source_route",
                    {"all": 0, "default": 1, "eth0": 1, "eth1": 0, "tun": 0}, ())
    the_plan = run(kernel, request("ipv4", "accept_source_route", 1, ["tun"]))
    writes = [(w["target"], w["after"]) for w in the_plan["writes"]]
    assert writes[0] == ("eth0", 0) and writes[-1] == ("all", 1)
    assert the_plan["effective_after"]["ipv4"]["accept_source_route"]["eth0"] == 0


def test_device_only_keys_never_write_all():
    kernel = Kernel("ipv4", "forwarding", {"all": 1, "default": 1, "eth0": 1}, ())
    the_plan = run(kernel, request("ipv4", "forwarding", 0, ["eth0"]))
    assert [w["target"] for w in the_plan["writes"]] == ["eth0"]
    assert [t for _f, t, _k, _v in the_plan["persist"]] == ["eth0"]


def test_include_default_protects_devices_never_written():
    kernel = Kernel("ipv4", "rp_filter", {"all": 0, "default": 0, "eth0": 0, "eth1": 1}, ())
    the_plan = run(kernel, request("ipv4", "rp_filter", 2, ["eth1"], include_default=True))
    writes = [(w["target"], w["after"], w["reason"]) for w in the_plan["writes"]]
    assert writes[0][:2] == ("eth1", 2)
    assert ("eth0", 0) == writes[1][:2] and "conf.default" in writes[1][2]
    assert writes[-1][:2] == ("default", 2)


# ---------------------------------------------------------------- the promises, at random

def _random_case(rng):
    family = rng.choice(netconf.FAMILIES)
    key = rng.choice(sorted(netconf.KEYS[family]))
    _rule, low, high = netconf.KEYS[family][key]
    names = ["lo", "eth0", "eth0.100", "tunl0", "ipip0", "veth1"][:rng.randint(1, 6)]
    values = {n: rng.randint(low, high) for n in names + ["all", "default"]}
    explicit = [n for n in names if rng.random() < 0.5]
    named = rng.sample(names, rng.randint(0 if rng.random() < 0.2 else 1, len(names)))
    include_default = rng.random() < 0.4 or not named
    return family, key, rng.randint(low, high), values, explicit, named, include_default


@pytest.mark.parametrize("seed", range(400))
def test_promises_hold_for_random_snapshots(seed):
    family, key, wanted, values, explicit, named, include_default = _random_case(
        random.Random(seed))
    kernel = Kernel(family, key, values, explicit)
    before_eff = kernel.effective()
    before_own = dict(kernel.values)
    req = request(family, key, wanted, named, include_default)
    the_plan = run(kernel, req)
    assert the_plan["effective_before"][family][key] == before_eff

    for w in the_plan["writes"]:
        kernel.write(w["target"], w["after"])
        now = kernel.effective()
        for name in kernel.devices():
            if name not in named:  # never different, not even between two writes
                assert now[name] == before_eff[name], (name, w, kernel.values)

    final = kernel.effective()
    assert final == the_plan["effective_after"][family][key]
    for name in named:
        assert final[name] == wanted
    planned = {w["target"]: w["after"] for w in the_plan["writes"]}
    for name in kernel.devices():  # no value changes behind the plan's back (default copies)
        assert kernel.values[name] == planned.get(name, before_own[name]), name
    if include_default:
        assert final["default"] == wanted
    else:
        assert final["default"] == before_eff["default"]
    assert run(kernel, req)["writes"] == [], "a second run must change nothing"

    # a reboot: whatever the distribution set, replaying the persisted entries is enough
    rng = random.Random(seed + 10000)
    _rule, low, high = netconf.KEYS[family][key]
    boot = Kernel(family, key, {n: rng.randint(low, high) for n in values}, ())
    for _f, target, _k, value in the_plan["persist"]:
        boot.write(target, value)
    for name in named:
        assert boot.effective()[name] == wanted, ("after reboot", name)
    if include_default:
        assert boot.effective()["default"] == wanted


# ---------------------------------------------------------------- the sysctl.d file

def test_keys_with_dots_use_the_slash_form():
    assert netconf.sysctl_key("ipv4", "eth0.100", "rp_filter") == \
        "net/ipv4/conf/eth0.100/rp_filter"
    assert netconf.sysctl_key("ipv6", "lo", "accept_dad") == "net.ipv6.conf.lo.accept_dad"
    assert netconf.canonical_key("-net/ipv4/conf/eth0.100/rp_filter") == \
        netconf.canonical_key("net/ipv4/conf/eth0.100/rp_filter")
    assert netconf.canonical_key("net.ipv4.conf.all.rp_filter") == "net/ipv4/conf/all/rp_filter"


def test_render_merges_replaces_and_prefixes_devices():
    old = netconf.render_sysctl_text(
        None, [("ipv4", "eth0", "arp_ignore", 1), ("ipv4", "all", "arp_ignore", 0)])
    new = netconf.render_sysctl_text(old, [("ipv4", "eth0", "arp_ignore", 2),
                                           ("ipv4", "eth0.100", "rp_filter", 0)])
    body = [line for line in new.splitlines() if not line.startswith("#")]
    assert body == ["-net.ipv4.conf.eth0.arp_ignore = 2", "net.ipv4.conf.all.arp_ignore = 0",
                    "-net/ipv4/conf/eth0.100/rp_filter = 0"]
    assert netconf.render_sysctl_text(new, []) == new


def test_later_files_that_override_are_reported(tmp_path):
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (lib / "50-default.conf").write_text("net.ipv4.conf.all.rp_filter = 2\n")
    (lib / "99-hardening.conf").write_text("net.ipv4.conf.*.rp_filter = 1\n")
    (etc / "70-local.conf").write_text("# nothing\nnet.ipv4.conf.all.rp_filter=1\n")
    ours = str(etc / "60-xdplb-katran.conf")
    found = netconf.later_overrides(ours, [("ipv4", "all", "rp_filter", 0)],
                                    dirs=(str(etc), str(lib)),
                                    sysctl_conf=str(tmp_path / "none.conf"))
    assert len(found) == 2
    assert "70-local.conf" in found[0] and "99-hardening.conf" in found[1]


# ---------------------------------------------------------------- ensure() on a fake /proc

def _fake_proc(root, family, key, values):
    for target, value in values.items():
        directory = root / family / "conf" / target
        directory.mkdir(parents=True, exist_ok=True)
        (directory / key).write_text("%d\n" % value)


def test_ensure_on_a_fake_proc_tree(tmp_path):
    proc = tmp_path / "proc"
    _fake_proc(proc, "ipv4", "rp_filter", {"all": 1, "default": 1, "lo": 0, "eth0.100": 0})
    conf = str(tmp_path / "etc" / "60.conf")
    kwargs = dict(ipv4={"rp_filter": 0}, devices=["eth0.100"], sysctl_file=conf,
                  proc_root=str(proc))

    dry = netconf.ensure(check_mode=True, **kwargs)
    assert dry["changed"] and (proc / "ipv4/conf/all/rp_filter").read_text() == "1\n"
    assert not os.path.exists(conf)

    done = netconf.ensure(**kwargs)
    assert done["writes"] == dry["writes"]
    assert (proc / "ipv4/conf/all/rp_filter").read_text() == "0\n"
    assert (proc / "ipv4/conf/lo/rp_filter").read_text() == "1\n"
    assert "-net/ipv4/conf/eth0.100/rp_filter = 0\n" in open(conf).read()
    assert not netconf.ensure(**kwargs)["changed"]


def test_a_key_the_kernel_lacks(tmp_path):
    proc = tmp_path / "proc"
    _fake_proc(proc, "ipv4", "rp_filter", {"all": 0, "default": 0, "lo": 0})
    with pytest.raises(EngineError) as info:
        netconf.ensure(ipv4={"arp_ignore": 1}, devices=["lo"], persist=False,
                       proc_root=str(proc))
    assert (info.value.field, info.value.value) == ("ipv4", "arp_ignore")
