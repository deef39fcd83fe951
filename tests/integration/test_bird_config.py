"""bird_config against a real BIRD 2 in a network namespace, with a second BIRD as the router.

Namespaces xkq-bird1 (the balancer, BIRD started as the role's process mode does) and xkq-bird1r
(the router: AS 65000, imports whatever the balancer announces). The balancer's "agent" is played
by the test: it puts host routes in kernel table 4242 with proto 200, as the agent does.

Shown: check mode writes nothing and gives a diff (passwords masked); the file is written and BIRD
started on it announces the VIP routes with the communities asked for; a community change reloads
BIRD without restarting its BGP sessions (state and 'since' stay) and the router sees the new
community; a rerun changes nothing; a request the engine refuses, and one BIRD itself refuses
(`bird -p`), fail with the message and leave the file and BIRD's running configuration unchanged.
Run under `flock /tmp/xdplb-lab.lock` (it builds namespaces).
"""
import os
import shutil
import subprocess
import time

import pytest

from balancer_env import kill_pidfile, playbook

NS, ROUTER = "xkq-bird1", "xkq-bird1r"
ROLE_CHECK = "Check the request with the engine's own checks (on the controller, before the host is touched)"
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="builds network namespaces: run as root"),
              pytest.mark.skipif(not shutil.which("bird"), reason="needs BIRD 2 (bird2)")]

ROUTER_CONF = """\
router id 10.20.1.1;
protocol device {}
protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }
protocol bgp lb4 { local as 65000; neighbor 10.20.1.2 as 65010; bfd on; connect retry time 2;
  ipv4 { import all; export none; }; }
protocol bgp lb6 { local as 65000; neighbor fd00:20:1::2 as 65010; bfd on; connect retry time 2;
  ipv6 { import all; export none; }; }
"""


def sh(*argv, ns=None, check=True):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert done.returncode == 0, (cmd, done.stdout, done.stderr)
    return done.stdout


def birdc(socket, *args):
    return sh("birdc", "-s", socket, *args)


def protocols(socket):
    rows = {}
    for line in birdc(socket, "show", "protocols").splitlines()[2:]:
        words = line.split()
        rows[words[0]] = {"state": words[3], "since": words[4], "info": " ".join(words[5:])}
    return rows


def wait(what, test, timeout=30):
    end = time.monotonic() + timeout
    while True:
        value = test()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.2)


@pytest.fixture()
def lab(tmp_path):
    for ns in (NS, ROUTER):
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
    sh("ip", "netns", "add", NS)
    sh("ip", "netns", "add", ROUTER)
    env = {"tmp": tmp_path, "conf": str(tmp_path / "lb" / "bird.conf"), "socket": str(tmp_path / "lb.ctl"),
           "pid": str(tmp_path / "lb.pid"), "rsocket": str(tmp_path / "r.ctl"), "rpid": str(tmp_path / "r.pid")}
    try:
        sh("ip", "link", "add", "lb0", "netns", NS, "type", "veth", "peer", "name", "to-lb1", "netns", ROUTER)
        for ns, dev, v4, v6 in ((NS, "lb0", "10.20.1.2/24", "fd00:20:1::2/64"), (ROUTER, "to-lb1", "10.20.1.1/24", "fd00:20:1::1/64")):
            sh("ip", "link", "set", "lo", "up", ns=ns)
            sh("ip", "addr", "add", v4, "dev", dev, ns=ns)
            sh("ip", "addr", "add", v6, "dev", dev, "nodad", ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
        (tmp_path / "router.conf").write_text(ROUTER_CONF)
        sh("bird", "-c", str(tmp_path / "router.conf"), "-s", env["rsocket"], "-P", env["rpid"], ns=ROUTER)
        yield env
    finally:
        kill_pidfile(env["pid"])
        kill_pidfile(env["rpid"])
        for ns in (NS, ROUTER):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)


def request(**changes):
    config = {"local_as": 65010, "router_id": "10.20.1.2", "communities": ["65010:1"],
              "peers": [{"address": "10.20.1.1", "as": 65000}, {"address": "fd00:20:1::1", "as": 65000, "name": "up6"}],
              "vip_attributes": {"fd00:99::1": {"med": 20}}}
    config.update(changes)
    return config


def run(env, config, check=False, diff=False, name="bird"):
    args = {"path": env["conf"], "socket": env["socket"], "pidfile": env["pid"], "config": config}
    task = {"name": name, "xdplb.katran.bird_config": args,
            "check_mode": check, "diff": diff, "ignore_errors": True}
    done = playbook(NS, [task], env["tmp"])[name]
    return dict(done["result"], failed=done["status"] == "failed")


def read(path):
    with open(path) as handle:
        return handle.read()


def test_bird_config_in_a_namespace(lab):
    conf = lab["conf"]
    # Check mode: nothing written, the diff shows the text with its password masked.
    res = run(lab, request(password="hunter2"), check=True, diff=True)
    assert res["changed"] and not res.get("failed"), res
    assert not os.path.exists(conf)
    after = res["diff"]["after"]
    assert 'password "********";' in after and "hunter2" not in str(res), after
    assert res["diff"]["before"] == "" and res["running"] is False

    # Written (no BIRD yet: nothing to reload), validated, mode 0640 group bird (or 0600).
    res = run(lab, request())
    assert res["changed"] and res["reloaded"] is False and res["running"] is False, res
    assert res["protocols"] == ["device1", "xdplb_bfd", "xdplb_vips4", "xdplb_vips6", "peer_10_20_1_1", "up6"]
    assert oct(os.stat(conf).st_mode & 0o777) in ("0o640", "0o600")
    assert "bgp_community.add((65010, 1));" in read(conf)

    # BIRD started on it (as the role's process mode does); the "agent's" routes in table 4242.
    sh("bird", "-c", conf, "-s", lab["socket"], "-P", lab["pid"], ns=NS)
    sh("ip", "route", "add", "10.99.0.1/32", "dev", "lb0", "table", "4242", "proto", "200", ns=NS)
    sh("ip", "route", "add", "fd00:99::1/128", "dev", "lb0", "table", "4242", "proto", "200", ns=NS)
    # Not announced: not a host route, and not in the agent's table.
    sh("ip", "route", "add", "10.98.0.0/24", "dev", "lb0", "table", "4242", "proto", "200", ns=NS)
    sh("ip", "route", "add", "10.97.0.1/32", "dev", "lb0", "proto", "200", ns=NS)

    def established():
        rows = protocols(lab["socket"])
        return all(rows[p]["info"].startswith("Established") for p in ("peer_10_20_1_1", "up6")) and rows
    before = wait("both sessions established", established)
    route4 = wait("the router learns 10.99.0.1/32 with (65010,1)",
                  lambda: "(65010,1)" in birdc(lab["rsocket"], "show", "route", "10.99.0.1/32", "all")
                  and birdc(lab["rsocket"], "show", "route", "all"))
    assert "10.98.0.0/24" not in route4 and "10.97.0.1" not in route4, route4
    route6 = wait("the router learns fd00:99::1/128 with MED 20",
                  lambda: "BGP.med: 20" in birdc(lab["rsocket"], "show", "route", "fd00:99::1/128", "all")
                  and birdc(lab["rsocket"], "show", "route", "fd00:99::1/128", "all"))
    assert "(65010,1)" in route6, route6
    time.sleep(1.1)  # 'since' has a resolution of a second or better: a restart would show

    # A community changed: reloaded, the sessions stay up (not restarted), the router sees the new one.
    res = run(lab, request(communities=["65010:2"]), diff=True)
    assert res["changed"] and res["reloaded"] and res["running"], res
    assert "(65010, 1)" in res["diff"]["before"] and "(65010, 2)" in res["diff"]["after"], res["diff"]
    wait("the router sees (65010,2)", lambda: "(65010,2)" in birdc(lab["rsocket"], "show", "route", "10.99.0.1/32", "all"))
    assert "(65010,1)" not in birdc(lab["rsocket"], "show", "route", "10.99.0.1/32", "all")
    now = protocols(lab["socket"])
    for name in ("peer_10_20_1_1", "up6"):
        assert now[name]["since"] == before[name]["since"] and now[name]["info"].startswith("Established"), (before, now)

    # The same again: nothing to do.
    res = run(lab, request(communities=["65010:2"]))
    assert not res["changed"] and not res["reloaded"], res

    good_text, good_status = read(conf), protocols(lab["socket"])
    # Refused by the engine: the field named, nothing touched.
    res = run(lab, request(local_as=4294967296))
    assert res["failed"] and res["field"] == "local_as" and "local_as: 4294967296 is out of range" in res["msg"], res
    res = run(lab, request(peers=[{"address": "fd00::1", "as": 1}], families=["ipv4"]))
    assert res["failed"] and "IPv6 peer on an IPv4-only session" in res["msg"], res
    # Refused by BIRD itself (a link-local neighbour needs an interface): BIRD's message, nothing touched.
    res = run(lab, request(peers=[{"address": "fe80::1", "as": 65000}]))
    assert res["failed"] and res["msg"].startswith("BIRD refuses the configuration: "), res
    assert read(conf) == good_text
    assert [f for f in os.listdir(os.path.dirname(conf)) if f != "bird.conf"] == [], "no temporary file left"
    assert protocols(lab["socket"]).keys() == good_status.keys()
    for name in ("peer_10_20_1_1", "up6"):
        assert protocols(lab["socket"])[name]["since"] == before[name]["since"]
    assert "(65010,2)" in birdc(lab["rsocket"], "show", "route", "10.99.0.1/32", "all")

    # The balancer role with bad BGP variables: refused by its first task (validate_request, on the
    # controller) naming the role's variable and the value; BIRD's file and running configuration unchanged.
    good_role = {"balancer_vips": [{"address": "10.99.0.1", "port": 80, "reals": ["10.30.0.1"]}],
                 "balancer_bgp_enabled": True, "balancer_bgp_local_as": 65010,
                 "balancer_bgp_peers": [{"address": "10.20.1.1", "as": 65000}],
                 "balancer_bgp_config_file": conf, "balancer_bgp_socket": lab["socket"],
                 "balancer_bgp_mode": "process", "balancer_bgp_pidfile": lab["pid"], "balancer_bgp_packages": []}
    for values, text in (
            ({"balancer_bgp_local_as": 4294967296},
             "balancer_bgp_local_as: 4294967296 is out of range: an AS number must be between 1 and 4294967295"),
            ({"balancer_bgp_peers": [{"address": "10.20.1.1", "as": 65000}, {"address": "router1", "as": 65000}]},
             "balancer_bgp_peers[1].address: 'router1' is not an address"),
            ({"balancer_bgp_peers": [], "balancer_bgp_password": "hunter2"},
             "balancer_bgp_password: is set but balancer_bgp_peers is empty (a password without a peer)"),
            ({"balancer_bgp_families": ["ipv4"], "balancer_bgp_peers": [{"address": "fd00::1", "as": 65000}]},
             "balancer_bgp_peers[0].address: 'fd00::1' is an IPv6 peer on an IPv4-only session")):
        task = {"name": "role", "ansible.builtin.include_role": {"name": "xdplb.katran.balancer"},
                "vars": dict(good_role, **values)}
        results = playbook(NS, [task], lab["tmp"])
        failed = [r for r in results.values() if r["status"] == "failed"]
        assert len(failed) == 1 and failed[0]["task"].endswith(ROLE_CHECK), results
        msg = failed[0]["result"]["msg"]
        assert msg.startswith("the request is refused: ") and text in msg and "hunter2" not in msg, msg
        assert not any(r["result"].get("changed") for r in results.values()), results
        assert read(conf) == good_text
        assert protocols(lab["socket"]) == good_status
