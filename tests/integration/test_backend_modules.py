"""Backend modules against a real kernel: engine calls and Ansible runs inside throw-away netns.

veth stands in for every device here (no dummy module on the CI kernel); the ipip/ip6tnl tests
carry needs_ipip and run in the kernel tier (make kernel, tests/kernel/test_kernel_tier.py).
"""
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from backend_ansible import run_module, run_tasks
from backend_markers import lacks, needs_ip6tnl, needs_ipip
from backend_netns import ChildError, NetNS

from ansible_collections.xdplb.katran.plugins.module_utils.engine import netlink
from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import addresses, netconf, tunnel

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture
def ns():
    space = NetNS()
    try:
        yield space
    finally:
        space.delete()


def all_rp_filter(space):
    """{target: own value} of rp_filter in the namespace, as a cheap 'did anything change'."""
    def read():
        root = "/proc/sys/net/ipv4/conf"
        return {name: open(os.path.join(root, name, "rp_filter")).read().strip()
                for name in sorted(os.listdir(root))}
    return space.run(read)


def device_addrs(space, name):
    def read():
        with netlink.open_iproute() as ipr:
            return netlink.addrs(ipr, netlink.link(ipr, name)["index"])
    return space.run(read)


# ---------------------------------------------------------------- net_conf engine

def test_lowering_all_keeps_every_other_device(ns, tmp_path):
    ns.veth("va", "vb")
    ns.veth("vc", "vd")
    ns.set_proc("ipv4", "all", "rp_filter", 1)
    ns.set_proc("ipv4", "vc", "rp_filter", 2)
    conf = str(tmp_path / "60-test.conf")

    result = ns.run(netconf.ensure, ipv4={"rp_filter": 0}, devices=["va"], sysctl_file=conf)

    assert result["changed"]
    assert result["effective"]["before"]["ipv4"]["rp_filter"] == {
        "lo": 1, "va": 1, "vb": 1, "vc": 2, "vd": 1, "default": 1}
    assert result["effective"]["after"]["ipv4"]["rp_filter"] == {
        "lo": 1, "va": 0, "vb": 1, "vc": 2, "vd": 1, "default": 1}
    assert ns.proc("ipv4", "all", "rp_filter") == 0
    assert ns.proc("ipv4", "va", "rp_filter") == 0
    # pinned before `all` went down, so their effective value never dipped
    assert [ns.proc("ipv4", d, "rp_filter") for d in ("lo", "vb", "vc", "vd")] == [1, 1, 2, 1]
    order = [w["target"] for w in result["writes"]]
    assert order.index("all") == len(order) - 1, "conf.all must be lowered last"
    # a device created later is as strict as before
    ns.veth("ve", "vf")
    assert max(ns.proc("ipv4", "all", "rp_filter"), ns.proc("ipv4", "ve", "rp_filter")) == 1

    text = open(conf).read()
    assert "-net.ipv4.conf.va.rp_filter = 0\n" in text
    assert "net.ipv4.conf.all.rp_filter = 0\n" in text
    assert "-net.ipv4.conf.vb.rp_filter = 1\n" in text
    assert oct(os.stat(conf).st_mode & 0o777) == "0o644"

    again = ns.run(netconf.ensure, ipv4={"rp_filter": 0}, devices=["va"], sysctl_file=conf)
    assert not again["changed"] and again["writes"] == []
    assert open(conf).read() == text


def test_kernel_copies_default_into_unwritten_devices_and_we_prevent_it(ns, tmp_path):
    # The fact the plan relies on: a new conf.default reaches devices never written.
    ns.veth("vx", "vy")
    ns.set_proc("ipv4", "default", "rp_filter", 1)
    assert ns.proc("ipv4", "vx", "rp_filter") == 1
    ns.set_proc("ipv4", "default", "rp_filter", 0)

    ns.veth("va", "vb")  # never written: both 0, like default now
    ns.set_proc("ipv4", "vx", "rp_filter", 0)  # explicitly written from here on
    result = ns.run(netconf.ensure, ipv4={"rp_filter": 2}, devices=["va"], include_default=True,
                    sysctl_file=str(tmp_path / "f.conf"))
    assert ns.proc("ipv4", "default", "rp_filter") == 2
    assert ns.proc("ipv4", "va", "rp_filter") == 2
    assert ns.proc("ipv4", "vb", "rp_filter") == 0, "vb must not inherit the new default"
    assert result["effective"]["after"]["ipv4"]["rp_filter"]["default"] == 2
    assert "net.ipv4.conf.default.rp_filter = 2" in open(tmp_path / "f.conf").read()


def test_vlan_style_name_and_arp_keys(ns, tmp_path):
    ns.veth("xv.100", "xw")
    ns.set_proc("ipv4", "all", "arp_ignore", 0)
    conf = str(tmp_path / "arp.conf")
    result = ns.run(netconf.ensure, ipv4={"arp_ignore": 1, "arp_announce": 2},
                    devices=["xv.100"], sysctl_file=conf)
    assert result["effective"]["after"]["ipv4"]["arp_ignore"]["xv.100"] == 1
    assert ns.proc("ipv4", "xv.100", "arp_announce") == 2
    text = open(conf).read()
    assert "-net/ipv4/conf/xv.100/arp_ignore = 1\n" in text
    assert "-net/ipv4/conf/xv.100/arp_announce = 2\n" in text


@pytest.mark.parametrize("kwargs, field, value", [
    ({"ipv4": {"rp_filter": 0}, "devices": ["nosuch0"]}, "devices", "nosuch0"),
    ({"ipv4": {"rp_filter": 0, "rp_filterr": 1}, "devices": ["va"]}, "ipv4", "rp_filterr"),
    ({"ipv4": {"rp_filter": 0, "arp_ignore": 9}, "devices": ["va"]}, "ipv4.arp_ignore", 9),
    ({"ipv4": {"rp_filter": 3}, "devices": ["va"]}, "ipv4.rp_filter", 3),
    ({"ipv4": {"rp_filter": 0}, "devices": ["va", "all"]}, "devices", "all"),
])
def test_net_conf_bad_input_changes_nothing(ns, tmp_path, kwargs, field, value):
    ns.veth("va", "vb")
    ns.set_proc("ipv4", "all", "rp_filter", 1)
    before = all_rp_filter(ns)
    conf = tmp_path / "never.conf"
    with pytest.raises(ChildError) as info:
        ns.run(netconf.ensure, sysctl_file=str(conf), **kwargs)
    assert info.value.type_name == "EngineError"
    assert (info.value.field, info.value.value) == (field, value)
    assert field in info.value.message and str(value) in info.value.message
    assert all_rp_filter(ns) == before
    assert not conf.exists()


# ---------------------------------------------------------------- addresses engine

def test_vips_on_lo_and_nodad_on_a_real_link(ns):
    ns.veth("va", "vb")
    result = ns.run(addresses.ensure, "lo", ["192.0.2.10", "2001:db8::10"])
    assert result["added"] == ["192.0.2.10/32", "2001:db8::10/128"]
    assert "192.0.2.10/32" in result["after"] and "127.0.0.1/8" in result["after"]

    ns.run(addresses.ensure, "va", ["2001:db8:1::1/64"])
    (v6,) = [a for a in device_addrs(ns, "va") if a["address"] == "2001:db8:1::1"]
    assert v6["flags"] & netlink.IFA_F_NODAD
    assert not v6["flags"] & netlink.IFA_F_TENTATIVE, "usable at once, no DAD wait"

    again = ns.run(addresses.ensure, "lo", ["192.0.2.10", "2001:db8::10"])
    assert not again["changed"]
    gone = ns.run(addresses.ensure, "lo", ["192.0.2.10"], state="absent")
    assert gone["removed"] == ["192.0.2.10/32"]
    assert "192.0.2.10/32" not in ns.run(addresses.ensure, "lo", ["2001:db8::10"])["after"]


def test_exclusive_touches_only_the_managed_set(ns):
    ns.veth("va", "vb")
    ns.ip("addr", "add", "10.0.0.1/24", "dev", "va")
    for addr in ("192.0.2.1/32", "192.0.2.2/32", "198.51.100.1/32"):
        ns.ip("addr", "add", addr, "dev", "va")
    ns.ip("addr", "add", "2001:db8::5/128", "dev", "va", "valid_lft", "300",
          "preferred_lft", "300", "nodad")

    narrow = ns.run(addresses.ensure, "va", ["192.0.2.1"], exclusive=True,
                    managed_networks=["192.0.2.0/24"])
    assert narrow["removed"] == ["192.0.2.2/32"]

    wide = ns.run(addresses.ensure, "va", ["192.0.2.1"], exclusive=True)
    assert wide["removed"] == ["198.51.100.1/32"]
    left = {a["cidr"] for a in device_addrs(ns, "va")}
    assert {"10.0.0.1/24", "192.0.2.1/32", "2001:db8::5/128"} <= left, \
        "a /24, a dynamic address and link-local are never managed"
    lo = ns.run(addresses.ensure, "lo", [], exclusive=True)
    assert not lo["changed"] and "127.0.0.1/8" in lo["after"] and "::1/128" in lo["after"]


def test_ipv6_with_another_prefix_is_replaced(ns):
    ns.veth("va", "vb")
    ns.ip("addr", "add", "2001:db8::7/64", "dev", "va", "nodad")
    result = ns.run(addresses.ensure, "va", ["2001:db8::7"])
    assert result["removed"] == ["2001:db8::7/64"] and result["added"] == ["2001:db8::7/128"]
    assert "2001:db8::7/128" in {a["cidr"] for a in device_addrs(ns, "va")}


@pytest.mark.parametrize("device, addrs, field, value", [
    ("nosuch0", ["192.0.2.1"], "device", "nosuch0"),
    ("va", ["192.0.2.1", "192.0.2.300"], "addresses", "192.0.2.300"),
    ("va", ["192.0.2.1/33"], "addresses", "192.0.2.1/33"),
    ("va", ["192.0.2.1", "2001:db8::1"], "addresses", "2001:db8::1/128"),  # IPv6 disabled on va
])
def test_address_bad_input_changes_nothing(ns, device, addrs, field, value):
    ns.veth("va", "vb")
    ns.set_proc("ipv6", "va", "disable_ipv6", 1)
    with pytest.raises(ChildError) as info:
        ns.run(addresses.ensure, device, addrs)
    assert (info.value.field, info.value.value) == (field, value)
    assert field in info.value.message
    assert "192.0.2.1" not in ns.ip("addr", "show", "dev", "va").stdout


# ---------------------------------------------------------------- tunnel engine, any kernel

def test_tunnel_name_taken_by_another_kind(ns):
    ns.veth("ipip0", "peer0")
    with pytest.raises(ChildError) as info:
        ns.run(tunnel.ensure, "ipip0")
    assert info.value.field == "name" and "veth" in info.value.message
    assert ns.ip("link", "show", "ipip0").returncode == 0


@pytest.mark.parametrize("kind, module", [
    pytest.param("ipip", "ipip", marks=lacks("ipip")),
    pytest.param("ip6tnl", "ip6_tunnel", marks=lacks("ip6tnl")),
])
def test_missing_tunnel_module_is_a_clear_error(ns, kind, module):
    with pytest.raises(ChildError) as info:
        ns.run(tunnel.ensure, "tun0", kind=kind)
    assert info.value.type_name == "EngineError" and info.value.field == "kind"
    assert "%s kernel module" % module in info.value.message
    assert "bpf" in info.value.message
    assert "tun0" not in ns.ip("link", "show").stdout
    check = ns.run(tunnel.ensure, "tun0", kind=kind, check_mode=True)
    assert check["changed"] and check["created"]


# ---------------------------------------------------------------- tunnel engine, kernel tier

@needs_ipip
def test_external_ipip_is_idempotent_and_fallback_reported(ns):
    first = ns.run(tunnel.ensure, "ipip0", addresses=["10.255.0.1/32"], mtu=1480)
    assert first["changed"] and first["created"]
    assert first["after"]["external"] and first["after"]["up"]
    assert first["after"]["addresses"] == ["10.255.0.1/32"]
    assert first["fallback"]["name"] == "tunl0" and first["fallback"]["present"]
    second = ns.run(tunnel.ensure, "ipip0", addresses=["10.255.0.1/32"], mtu=1480)
    assert not second["changed"] and second["before"] == second["after"]
    assert "external" in ns.ip("-d", "link", "show", "ipip0").stdout

    # the seed scenario's fix: decapsulated packets arrive on ipip0 (or tunl0 when it is used)
    ns.set_proc("ipv4", "all", "rp_filter", 1)
    conf = ns.run(netconf.ensure, ipv4={"rp_filter": 0}, devices=["ipip0", "tunl0"],
                  persist=False)
    assert conf["effective"]["after"]["ipv4"]["rp_filter"]["ipip0"] == 0
    assert conf["effective"]["after"]["ipv4"]["rp_filter"]["lo"] == 1


@needs_ipip
def test_second_external_device_is_named_or_adopted(ns):
    ns.ip("link", "add", "name", "ipip9", "type", "ipip", "external")
    with pytest.raises(ChildError) as info:
        ns.run(tunnel.ensure, "ipip0")
    assert info.value.field == "name" and "ipip9" in info.value.message
    adopted = ns.run(tunnel.ensure, "ipip0", adopt=True)
    assert adopted["adopted"] and adopted["name"] == "ipip9" and adopted["after"]["up"]
    assert ns.ip("link", "show", "ipip0", check=False).returncode != 0


@needs_ipip
def test_point_to_point_recreated_on_new_remote_and_removed(ns):
    made = ns.run(tunnel.ensure, "p2p0", external=False, local="192.0.2.1", remote="192.0.2.2")
    assert made["after"]["remote"] == "192.0.2.2" and not made["after"]["external"]
    moved = ns.run(tunnel.ensure, "p2p0", external=False, local="192.0.2.1", remote="192.0.2.3")
    assert moved["recreated"] and moved["after"]["remote"] == "192.0.2.3"
    gone = ns.run(tunnel.ensure, "p2p0", state="absent")
    assert gone["changed"] and gone["after"] == {}
    assert not ns.run(tunnel.ensure, "p2p0", state="absent")["changed"]


@needs_ipip
def test_fallback_tunl0_is_managed_not_removed(ns):
    ns.run(tunnel.ensure, "ipip0")
    down = ns.run(tunnel.ensure, "tunl0", up=False)
    assert down["after"]["up"] is False
    with pytest.raises(ChildError) as info:
        ns.run(tunnel.ensure, "tunl0", state="absent")
    assert info.value.field == "state"


@needs_ipip
def test_ipv6_vip_on_an_ipip_device_is_refused(ns):
    ns.run(tunnel.ensure, "ipip0")
    with pytest.raises(ChildError) as info:
        ns.run(addresses.ensure, "ipip0", ["2001:db8::1"])
    assert info.value.field == "addresses" and "IPv4" in info.value.message


@needs_ip6tnl
def test_external_ip6tnl_carries_both_families(ns):
    made = ns.run(tunnel.ensure, "ipip60", kind="ip6tnl",
                  addresses=["10.255.0.6/32", "2001:db8:ff::6/128"])
    assert made["after"]["mode"] == "any"
    assert set(made["after"]["addresses"]) >= {"10.255.0.6/32", "2001:db8:ff::6/128"}
    with pytest.raises(ChildError) as info:  # the fallback device is ip6ip6 only
        ns.run(tunnel.ensure, "ip6tnl0", kind="ip6tnl", addresses=["10.255.0.7/32"])
    assert info.value.field == "addresses"


# ---------------------------------------------------------------- the modules, through Ansible

def _failed_with(result, field, value):
    assert result["status"] == "failed", result
    assert result["result"]["field"] == field, result
    assert str(value) in result["result"]["msg"], result


# One playbook per module, all three at once: an ansible-playbook run mostly waits, so running
# them side by side (each in its own namespace) saves most of the start-up cost. Check mode and bad
# input come first in each; the `before` of the first real run then proves they changed nothing.

def _net_conf_tasks(ns, tmp):
    ns.veth("va", "vb")
    ns.set_proc("ipv4", "all", "rp_filter", 1)
    args = {"ipv4": {"rp_filter": 0}, "devices": ["va"], "sysctl_file": str(tmp / "60.conf")}
    return [
        {"xdplb.katran.net_conf": args, "check_mode": True, "diff": True},
        {"xdplb.katran.net_conf": dict(args, ipv4={"rp_filter": 0, "arp_ignore": 9}),
         "ignore_errors": True},
        {"xdplb.katran.net_conf": args, "diff": True},
        {"xdplb.katran.net_conf": args},
    ]


VIPS = ["192.0.2.10", "2001:db8::10"]


def _ip_address_tasks(ns, tmp):
    return [
        {"xdplb.katran.ip_address": {"addresses": VIPS}, "check_mode": True, "diff": True},
        {"xdplb.katran.ip_address": {"addresses": VIPS + ["2001:db8::zz"]},
         "ignore_errors": True},
        {"xdplb.katran.ip_address": {"addresses": VIPS}, "diff": True},
        {"xdplb.katran.ip_address": {"addresses": VIPS}},
        {"xdplb.katran.ip_address": {"addresses": VIPS[:1], "state": "absent"}},
    ]


TUNNEL = {"name": "ipip0", "addresses": ["10.255.0.1/32"]}


def _ip_tunnel_tasks(ns, tmp):
    return [
        {"xdplb.katran.ip_tunnel": dict(TUNNEL, addresses=["2001:db8::1"]),
         "ignore_errors": True},
        {"xdplb.katran.ip_tunnel": TUNNEL, "check_mode": True, "diff": True},
        {"xdplb.katran.ip_tunnel": TUNNEL, "diff": True, "ignore_errors": True},
    ]


@pytest.fixture(scope="module")
def playbooks(request, tmp_path_factory):
    selected = {item.name for item in request.session.items}
    # only what the selected tests read: under TCG (kernel tier) every playbook costs minutes
    every = (("net_conf", _net_conf_tasks), ("ip_address", _ip_address_tasks),
             ("ip_tunnel", _ip_tunnel_tasks))
    scenarios = {name: make for name, make in every
                 if any(test.startswith("test_module_" + name) for test in selected)}
    spaces, runs = [], {}
    try:
        with ThreadPoolExecutor(max_workers=len(scenarios)) as pool:
            for name, make_tasks in scenarios.items():
                space = NetNS()
                spaces.append(space)
                tmp = tmp_path_factory.mktemp(name)
                runs[name] = (space, tmp, pool.submit(run_tasks, space.name,
                                                      make_tasks(space, tmp), tmp))
        yield {name: (space, tmp, future.result) for name, (space, tmp, future) in runs.items()}
    finally:
        for space in spaces:
            space.delete()


def _failed_with(result, field, value):
    assert result["status"] == "failed", result
    assert result["result"]["field"] == field, result
    assert str(value) in result["result"]["msg"], result


def test_module_net_conf(playbooks):
    space, tmp, results = playbooks["net_conf"]
    dry, bad, real, again = results()
    assert dry["status"] == "ok" and dry["result"]["changed"]
    assert dry["result"]["diff"][0]["after"] != dry["result"]["diff"][0]["before"]
    _failed_with(bad, "ipv4.arp_ignore", 9)
    effective = real["result"]["effective"]
    assert effective["before"]["ipv4"]["rp_filter"] == {"lo": 1, "va": 1, "vb": 1, "default": 1}
    assert real["result"]["diff"][1]["before"] == "", "check mode must not write the file"
    assert real["result"]["changed"]
    assert effective["after"]["ipv4"]["rp_filter"]["va"] == 0
    assert not again["result"]["changed"]
    assert space.proc("ipv4", "va", "rp_filter") == 0
    assert space.proc("ipv4", "vb", "rp_filter") == 1
    assert "-net.ipv4.conf.va.rp_filter = 0" in (tmp / "60.conf").read_text()


def test_module_ip_address(playbooks):
    space, _tmp, results = playbooks["ip_address"]
    dry, bad, real, again, gone = results()
    assert dry["result"]["changed"] and "192.0.2.10/32" in dry["result"]["diff"]["after"]
    _failed_with(bad, "addresses", "2001:db8::zz")
    assert real["result"]["before"] == ["127.0.0.1/8", "::1/128"]
    assert real["result"]["added"] == ["192.0.2.10/32", "2001:db8::10/128"]
    assert "192.0.2.10/32" in real["result"]["diff"]["after"]
    assert not again["result"]["changed"]
    assert gone["result"]["removed"] == ["192.0.2.10/32"]
    assert "2001:db8::10/128" in space.ip("addr", "show", "dev", "lo").stdout


@lacks("ipip")
def test_module_ip_tunnel_without_kernel_support(playbooks):
    space, _tmp, results = playbooks["ip_tunnel"]
    bad, dry, real = results()
    _failed_with(bad, "addresses", "2001:db8::1")
    assert dry["result"]["changed"] and dry["result"]["diff"]["before"] == {}
    assert dry["result"]["diff"]["after"]["external"]
    _failed_with(real, "kind", "ipip kernel module")
    assert "bpf" in real["result"]["msg"]
    assert "ipip0" not in space.ip("link", "show").stdout


@needs_ipip
def test_module_ip_tunnel(ns, tmp_path):
    # Runs the module file directly: the kernel tier is TCG, where a playbook task takes minutes.
    def module(args, **kwargs):
        return run_module(ns.name, "ip_tunnel", args, tmp_path, **kwargs)

    # (bad input through the module: the playbook test above, on the CI kernel)
    dry = module(TUNNEL, check_mode=True, diff=True)
    assert dry["changed"] and dry["diff"]["before"] == {}
    real = module(TUNNEL, diff=True)
    assert real["before"] == {}, "check mode created the device"
    assert real["changed"] and real["diff"]["after"]["up"] and real["diff"]["after"]["external"]
    assert real["fallback"]["present"]
    again = module(dict(TUNNEL, mtu=real["after"]["mtu"]))
    assert not again["changed"]
    assert "10.255.0.1/32" in ns.ip("addr", "show", "dev", "ipip0").stdout


def test_check_mode_tells_a_kernel_without_the_module(tmp_path):
    release = tmp_path / "lib" / "6.1.0-test"
    release.mkdir(parents=True)
    dirs = {"sys_module": str(tmp_path / "sys"), "lib_modules": str(tmp_path / "lib")}
    assert tunnel.kernel_support("ipip", release="other", **dirs) is None
    kwargs = dict(dirs, release="6.1.0-test")
    (release / "modules.dep").write_text("kernel/net/ipv4/ip_gre.ko.xz: kernel/net/ipv4/gre.ko\n")
    assert tunnel.kernel_support("ipip", **kwargs) is False
    (release / "modules.dep").write_text("kernel/net/ipv6/ip6_tunnel.ko.xz: kernel/tunnel6.ko\n")
    assert tunnel.kernel_support("ip6tnl", **kwargs) is True
    (release / "modules.builtin").write_text("kernel/net/ipv4/ipip.ko\n")
    assert tunnel.kernel_support("ipip", **kwargs) is True


DECAP_OBJECT = os.path.join(os.path.dirname(__file__), "..", "..", "files", "bpf", "decap.o")


def _decap_without_bpffs(interface, pin_root):
    """In a mount namespace of its own with nothing on /sys/fs/bpf (a fresh host, or a backend's sshd
    namespace): decap.ensure in check mode, then for real, then again. Returns what each reported."""
    import ctypes

    from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import decap
    from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import program

    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private, mnt_detach = 0x00020000, 0x4000, 0x40000, 2
    if libc.unshare(clone_newns) != 0 or libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        raise OSError(ctypes.get_errno(), "unshare/private mounts")
    while program._mount_of(program.BPFFS)[1] == "bpf":  # stacked mounts: take every one off
        if libc.umount2(program.BPFFS.encode(), mnt_detach) != 0:
            raise OSError(ctypes.get_errno(), "umount " + program.BPFFS)
    request = decap.normalize(interface, DECAP_OBJECT, addresses=["10.9.0.2"])
    planned = decap.ensure(request, pin_root, check_mode=True)
    unmounted_after_check = program._mount_of(pin_root)[1] != "bpf"
    applied = decap.ensure(request, pin_root)
    again = decap.ensure(request, pin_root)
    return {"planned": planned["changes"], "unmounted_after_check": unmounted_after_check,
            "applied": applied["changes"], "mounted": program._mount_of(pin_root),
            "again": again["changed"], "after": again["after"]}


def test_bpf_decap_mounts_bpffs_when_the_host_has_none(ns):
    # A backend whose /sys/fs/bpf is not mounted failed with "No such file or directory:
    # '/sys/fs/bpf/...'"; the balancer path mounted it. Both now go through program.check_pin_root.
    ns.veth("eth0", "peer0")
    found = ns.run(_decap_without_bpffs, "eth0", "/sys/fs/bpf/xkt-decap-%d/decap" % os.getpid())
    assert found["planned"][0] == "mounted bpffs on /sys/fs/bpf", found
    assert found["unmounted_after_check"], "check mode mounted bpffs"
    assert found["applied"][0] == "mounted bpffs on /sys/fs/bpf", found
    assert found["mounted"] == ("/sys/fs/bpf", "bpf")
    assert not found["again"], found
    assert found["after"]["programs"]["xdp"]["name"] and found["after"]["addresses"] == ["10.9.0.2"]
