"""The balancer modules run for real by ansible-playbook inside a throw-away namespace, then real
traffic: a SYN to the VIP sent from the peer namespace comes back IPIP-encapsulated to a real.

Namespaces: the balancer's (lb0, 10.9.0.1) and a peer one (peer0, 10.9.0.254, the default
gateway, with pass.o attached so XDP_TX frames from lb0 are delivered).
"""
import json
import os
import socket
import stat

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from ansible.release import __version__ as _core_version
from backend_netns import NetNS
from balancer_env import BALANCER_O, PASS_O, BalancerNS, build_objects, dump, playbook

from ansible_collections.xdplb.katran.plugins.module_utils.engine import hostnet
from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import abi, program

ANSIBLE_CORE = tuple(int(part) for part in _core_version.split(".")[:2])

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: run as root")

VIPS = [
    {"address": "10.99.0.10", "port": 80,
     "reals": [{"address": "10.1.0.1", "weight": 1}, {"address": "10.1.0.2", "weight": 1},
               {"address": "fd00:1::3", "weight": 1}]},
    {"address": "10.99.0.10", "port": 53, "protocol": "udp", "flags": ["no_conn_table"],
     "reals": ["10.1.0.1", "10.1.0.2"]},
    {"address": "fd00:99::10", "port": 443, "reals": ["fd00:1::1", "fd00:1::2"]},
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    build_objects()
    lb = BalancerNS()
    peer = NetNS()
    try:
        lb.ip("link", "set", "peer0", "netns", peer.name)
        lb.ip("addr", "add", "10.9.0.1/24", "dev", "lb0")
        lb.ip("addr", "add", "fd00:9::1/64", "dev", "lb0", "nodad")
        peer.ip("addr", "add", "10.9.0.254/24", "dev", "peer0")
        peer.ip("link", "set", "peer0", "up")
        lb.ip("route", "add", "default", "via", "10.9.0.254", "dev", "lb0")
        peer.run(program.ensure, PASS_O, "peer0", pin_root=lb.pin_root + "-peer")
        lab = {"lb": lb, "peer": peer, "pin": lb.pin_root, "tmp": tmp_path_factory.mktemp("modules"),
               "lb_mac": lb.run(hostnet.interface_mac, "lb0"), "gw_mac": peer.run(hostnet.interface_mac, "peer0")}
        lab["first"] = playbook(lb.name, _converge(lab["pin"]), lab["tmp"])
        yield lab
    finally:
        peer.delete()
        lb.close()
        if os.path.isdir(lb.pin_root + "-peer"):
            os.rmdir(lb.pin_root + "-peer")


def _converge(pin):
    vip_task = {"xdplb.katran.lb_vip": {"vips": VIPS, "purge": True, "pin_root": pin}}
    prog = {"object": BALANCER_O, "interface": "lb0", "mode": "native", "pin_root": pin}
    return [
        {"name": "attach check", "xdplb.katran.xdp_program": prog, "check_mode": True},
        {"name": "no pins in check mode", "ansible.builtin.stat": {"path": pin}},
        {"name": "attach", "xdplb.katran.xdp_program": prog},
        {"name": "attach again", "xdplb.katran.xdp_program": prog},
        {"name": "config", "xdplb.katran.lb_config": {"interface": "lb0", "pin_root": pin}, "diff": True},
        {"name": "config again", "xdplb.katran.lb_config": {"interface": "lb0", "pin_root": pin}},
        dict(vip_task, name="vips check", check_mode=True, diff=True),
        dict(vip_task, name="vips"),
        dict(vip_task, name="vips again"),
        {"name": "info", "xdplb.katran.lb_info": {"pin_root": pin, "interface": "lb0"}},
    ]


def test_converge_check_mode_then_idempotent(lab):
    r = lab["first"]
    assert r["attach check"]["result"]["changed"] and r["attach check"]["result"]["prog_id"] is None
    assert not r["no pins in check mode"]["result"]["stat"]["exists"]
    att = r["attach"]["result"]
    assert att["changed"] and att["action"] == "attached" and att["mode"] == "native"
    again = r["attach again"]["result"]
    assert not again["changed"] and again["prog_id"] == att["prog_id"] and again["tag"] == att["tag"]
    assert oct(os.stat(lab["pin"]).st_mode & 0o777) == "0o700"

    cfg = r["config"]["result"]
    assert cfg["changed"] and cfg["gateway_mac_from"] == "default route"
    assert cfg["config"] == {"if_mac": lab["lb_mac"], "gateway_mac": lab["gw_mac"], "source_mode": "balancer",
                             "source_v4": "10.9.0.1", "source_v6": "fd00:9::1", "max_packet_size": 0}
    assert "00:00:00:00:00:00" in cfg["diff"]["before"] and lab["gw_mac"] in cfg["diff"]["after"]
    assert not r["config again"]["result"]["changed"]

    check = r["vips check"]["result"]
    assert check["changed"] and check["summary"]["added"] == 3
    assert "[fd00:99::10]:443/tcp: real fd00:1::2 weight 1" in check["diff"]["after"]
    assert check["diff"]["before"].count(": absent\n") == 3
    vip = r["vips"]["result"]
    assert vip["changed"] and vip["summary"] == dict(check["summary"])
    assert all(v["ring_slots_changed"] == abi.RING_SIZE for v in vip["vips"])
    assert not r["vips again"]["result"]["changed"]
    assert r["vips again"]["result"]["summary"]["unchanged"] == 3


def test_info_reads_well(lab):
    info = lab["first"]["info"]["result"]
    assert not info["changed"] and info["loaded"]
    assert info["program"]["mode"] == "native" and info["program"]["name"] == "xdp_balancer"
    port80 = [r["address"] for v in info["vips"] if v["port"] == 80 for r in v["reals"]]
    assert port80 == ["10.1.0.1", "10.1.0.2", "fd00:1::3"]
    udp = [v for v in info["vips"] if v["protocol"] == "udp"][0]
    assert udp["flags"] == ["no_conn_table"] and udp["ring"] == {"present": True, "consistent": True}
    assert set(info["global"]) >= {"pass", "tx", "drop", "conn_miss"}
    assert info["limits"]["vips"] == 3 and info["limits"]["reals"] == 5


def _send_and_capture(frame, want_proto):
    """Send frame on peer0; return the first frame that comes back carrying IP protocol want_proto."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        s.bind(("peer0", 0))
        s.settimeout(5)
        s.send(frame)
        while True:
            data, addr = s.recvfrom(65535)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            pkt = Ether(data)
            if (IP in pkt and pkt[IP].proto == want_proto) or (IPv6 in pkt and pkt[IPv6].nh == want_proto):
                return data
    finally:
        s.close()


def test_real_traffic_is_encapsulated_to_a_real(lab):
    syn = Ether(src=lab["gw_mac"], dst=lab["lb_mac"]) / IP(src="198.51.100.7", dst="10.99.0.10") / \
        TCP(sport=40000, dport=80, flags="S", seq=1)
    got = Ether(lab["peer"].run(_send_and_capture, bytes(syn), 4))  # IPPROTO_IPIP
    assert got.src == lab["lb_mac"] and got.dst == lab["gw_mac"]
    assert got[IP].src == "10.9.0.1" and got[IP].dst in ("10.1.0.1", "10.1.0.2")
    inner = got[IP].payload
    assert bytes(inner) == bytes(syn[IP])

    syn6 = Ether(src=lab["gw_mac"], dst=lab["lb_mac"]) / IPv6(src="2001:db8:7::7", dst="fd00:99::10") / \
        TCP(sport=40001, dport=443, flags="S", seq=1)
    got6 = Ether(lab["peer"].run(_send_and_capture, bytes(syn6), 41))  # IPPROTO_IPV6
    assert got6[IPv6].src == "fd00:9::1" and got6[IPv6].dst in ("fd00:1::1", "fd00:1::2")
    assert bytes(got6[IPv6].payload) == bytes(syn6[IPv6])
    stats = {v["key"]: v["stats"]["packets"] for v in balancer.info(lab["pin"])["vips"]}
    assert stats["10.99.0.10:80/tcp"] >= 1 and stats["[fd00:99::10]:443/tcp"] >= 1


def test_bad_input_fails_naming_the_field_and_changes_nothing(lab):
    pin = lab["pin"]

    def vip_task(name, **kw):
        args = {"vips": [dict(VIPS[0], **kw)], "purge": True, "pin_root": pin}
        return {"name": name, "xdplb.katran.lb_vip": args, "ignore_errors": True}

    tasks = [
        vip_task("negative weight", reals=[{"address": "10.1.0.1", "weight": 1}, {"address": "10.1.0.2", "weight": -1}]),
        vip_task("6in4", address="fd00:99::11", reals=["fd00:1::1", "10.1.0.1"]),
        {"name": "no pins", "xdplb.katran.lb_vip": {"vips": VIPS, "pin_root": pin + "-none"}, "ignore_errors": True},
        {"name": "no object", "xdplb.katran.xdp_program": {"object": "/nonexistent.o", "interface": "lb0",
                                                           "pin_root": pin}, "ignore_errors": True},
        {"name": "bad mac", "xdplb.katran.lb_config": {"interface": "lb0", "gateway_mac": "02:00:zz:00:00:01",
                                                       "pin_root": pin}, "ignore_errors": True},
        {"name": "bad btf field", "xdplb.katran.bpf_map": {"path": pin + "/lb_vip_addrs",
                                                           "key": {"adr": "10.99.0.10", "family": 4},
                                                           "value": {"flags": 1}}, "ignore_errors": True},
    ]
    # The other errors are covered without Ansible: tests/unit/test_vipspec.py (every field of a
    # request) and test_balancer_engine.py (ring size, interface, object, pin root).
    before = dump(pin)
    r = playbook(lab["lb"].name, tasks, lab["tmp"])
    assert dump(pin) == before
    expect = {
        "negative weight": ("vips[0].reals[1].weight", "-1 must be >= 0"),
        "6in4": ("vips[0].reals[1].address", "'10.1.0.1' is IPv4 but the VIP fd00:99::11 is IPv6"),
        "no pins": ("pin_root", "no pinned balancer maps"),
        "no object": ("object", "/nonexistent.o"),
        "bad mac": ("gateway_mac", "not a MAC address"),
        "bad btf field": ("key.adr", "not a field of lb_addr"),
    }
    for name, (field, words) in expect.items():
        res = r[name]["result"]
        assert r[name]["status"] == "failed", name
        assert res["field"] == field and res["msg"].startswith(field) and words in res["msg"], (name, res["msg"])


def test_changes_report_what_moved(lab):
    pin = lab["pin"]
    changed = [dict(VIPS[0], reals=[{"address": "10.1.0.1", "weight": 1}, {"address": "10.1.0.2", "weight": 3},
                                    {"address": "fd00:1::3", "weight": 1}])] + VIPS[1:]
    tasks = [
        {"name": "weight", "xdplb.katran.lb_vip": {"vips": changed, "purge": True, "pin_root": pin}, "diff": True},
        {"name": "add one", "xdplb.katran.lb_vip": {"address": "10.99.0.20", "port": 8080, "pin_root": pin,
                                                    "reals": [{"address": "10.1.0.9", "weight": 2}]}},
        {"name": "add one again", "xdplb.katran.lb_vip": {"address": "10.99.0.20", "port": 8080, "pin_root": pin,
                                                          "reals": [{"address": "10.1.0.9", "weight": 2}]}},
        {"name": "remove one", "xdplb.katran.lb_vip": {"address": "10.99.0.20", "port": 8080, "state": "absent",
                                                       "pin_root": pin}},
        {"name": "purge", "xdplb.katran.lb_vip": {"vips": changed[:1], "purge": True, "pin_root": pin}},
        {"name": "map entry", "xdplb.katran.bpf_map": {"path": pin + "/lb_vip_addrs", "key": {"addr": "10.99.0.10",
                                                       "family": 4}, "value": {"flags": 1}}, "diff": True},
        {"name": "map read", "xdplb.katran.bpf_map": {"path": pin + "/lb_config"}},
        {"name": "reload", "xdplb.katran.xdp_program": {"object": BALANCER_O, "interface": "lb0", "force": True,
                                                        "pin_root": pin}},
        {"name": "rollback", "xdplb.katran.xdp_program": {"interface": "lb0", "rollback": True, "pin_root": pin}},
        {"name": "info", "xdplb.katran.lb_info": {"pin_root": pin, "ring_slots": True, "stats": False}},
    ]
    r = playbook(lab["lb"].name, tasks, lab["tmp"], check=True)
    w = r["weight"]["result"]
    moved = [v for v in w["vips"] if v["action"] != "unchanged"]
    assert w["summary"]["rings_written"] == 1 and [v["key"] for v in moved] == ["10.99.0.10:80/tcp"]
    assert moved[0]["weights_changed"] == [{"address": "10.1.0.2", "before": 1, "after": 3}]
    assert 0 < moved[0]["ring_slots_changed"] < abi.RING_SIZE
    # Both VIPs of 10.99.0.10 have the real 10.1.0.2: every diff line names the VIP it belongs to.
    assert "10.99.0.10:80/tcp: real 10.1.0.2 weight 1\n" in w["diff"]["before"]
    assert "10.99.0.10:80/tcp: real 10.1.0.2 weight 3\n" in w["diff"]["after"]
    assert "10.99.0.10:53/udp" not in w["diff"]["before"] + w["diff"]["after"]
    assert r["add one"]["result"]["changed"] and not r["add one again"]["result"]["changed"]
    assert r["remove one"]["result"]["vips"][0]["action"] == "removed"
    purged = r["purge"]["result"]
    assert sorted(v["key"] for v in purged["vips"] if v["action"] == "removed") == \
        ["10.99.0.10:53/udp", "[fd00:99::10]:443/tcp"]
    assert r["map entry"]["result"]["changed"]
    assert r["map entry"]["result"]["entries"][0]["before"] == {"flags": 0}
    assert r["map read"]["result"]["entries"][0]["value"]["gw_mac"] == lab["gw_mac"].replace(":", "")
    reload = r["reload"]["result"]
    assert reload["action"] == "replaced" and all(m["reused"] for m in reload["maps"].values())
    rollback = r["rollback"]["result"]
    assert rollback["action"] == "rolled back" and rollback["prog_id"] == reload["previous"]["prog_id"]
    info = r["info"]["result"]
    slots = {x["address"]: x["ring_slots"] for x in info["vips"][0]["reals"]}
    assert slots["10.1.0.2"] > 2 * slots["10.1.0.1"]
    assert [x["address"] for x in info["reals"]] == ["10.1.0.1", "10.1.0.2", "fd00:1::3"]


def test_content_applies_a_state_document_and_keeps_it_only_once_in_service(lab):
    pin, tmp = lab["pin"], lab["tmp"]
    kept = str(tmp / "balancer.json")
    document = json.dumps({"version": 1, "object": BALANCER_O, "interface": "lb0", "vips": VIPS})
    bad = json.dumps({"version": 1, "object": BALANCER_O, "interface": "lb0", "vips": [dict(VIPS[0], port=70000)]})
    bad_mode = json.dumps({"version": 1, "object": BALANCER_O, "interface": "lb0", "mode": "fast", "vips": VIPS})

    def task(name, content, **kw):
        args = {"content": content, "keep_as": kept, "purge": True, "pin_root": pin}
        return dict({"name": name, "xdplb.katran.lb_vip": args}, **kw)

    # ansible-core up to 2.20 adds the arguments to every result as `invocation`; 2.21 only when
    # INJECT_INVOCATION is on (here through its variable). Either way a user who registers the
    # result or runs -vvv must get the size of the request, not the request (51,200 reals).
    inject = {"ansible_inject_invocation": True}
    bad_list = {"vips": [dict(VIPS[0], port=70000)], "pin_root": pin}
    before = dump(pin)
    r = playbook(lab["lb"].name, [task("check", document, check_mode=True),
                                  task("check, invocation asked for", document, check_mode=True, vars=inject),
                                  task("refused", bad, ignore_errors=True, vars=inject),
                                  {"name": "refused list", "xdplb.katran.lb_vip": bad_list, "ignore_errors": True,
                                   "vars": inject},
                                  task("not json", "{", ignore_errors=True),
                                  task("restore would refuse it", bad_mode, ignore_errors=True)], tmp)
    assert dump(pin) == before and not os.path.exists(kept)
    check = r["check"]["result"]
    assert not check["kept"] and check["keep_pending"] and check["changed"], "check mode writes nothing"
    assert r["refused"]["status"] == "failed" and r["refused"]["result"]["field"] == "content.vips[0].port"
    assert r["not json"]["status"] == "failed" and r["not json"]["result"]["field"] == "content"
    refused = r["restore would refuse it"]
    assert refused["status"] == "failed" and refused["result"]["field"] == "content.mode", refused
    summary = "(%d characters of JSON)" % len(document)
    assert check.get("invocation", {"module_args": {"content": summary}})["module_args"]["content"] == summary
    assert ("invocation" in check) == (ANSIBLE_CORE < (2, 21)), "2.21 injects no invocation by default"
    asked = r["check, invocation asked for"]["result"]["invocation"]["module_args"]
    assert asked["content"] == summary and asked["keep_as"] == kept
    assert r["refused"]["result"]["invocation"]["module_args"]["content"] == "(%d characters of JSON)" % len(bad)
    refused_list = r["refused list"]
    assert refused_list["status"] == "failed" and refused_list["result"]["field"] == "vips[0].port", refused_list
    assert refused_list["result"]["invocation"]["module_args"]["vips"] == "(1 VIPs)"
    r = playbook(lab["lb"].name, [task("apply", document), task("again", document)], tmp)
    assert r["apply"]["result"]["kept"] and r["apply"]["result"]["changed"] and not r["apply"]["result"]["keep_pending"]
    assert not r["again"]["result"]["kept"] and not r["again"]["result"]["changed"]
    assert "diff" not in r["again"]["result"], "the VIP diff is only computed in diff mode"
    with open(kept) as handle:
        assert handle.read() == document
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
