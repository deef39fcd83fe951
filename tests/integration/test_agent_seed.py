"""The seed's failure caught by the agent (issue 15): rp_filter=1 on a backend's arrival device.

A lab of five network namespaces (names xks-PID-*, addresses only inside them):

    client 10.202.1.2 --+            +-- be1 10.202.11.2  VIP on lo, tunl0 (kernel decap), TCP :80
                        +-- router --+-- be2 10.202.12.2  the same
    lb     10.202.2.2 --+            (VIP 10.202.100.1/32 routed to lb)

lb runs this collection's XDP balancer (balancer.o, generic mode, pins under a private bpffs
directory) with one VIP 10.202.100.1:80/tcp over both backends, and the real agent
(`python -m engine agent STATE_FILE --health-state F --hc-object hc_encap.o`, under
`nsenter --net`, checks every 0.2 s, fall 2, rise 2). Then:

1. both reals up, weight 1 each in the kernel's record;
2. rp_filter=1 on be1's tunl0 and `all` (the seed's misconfiguration): a plain TCP check of be1's
   own address from lb still passes, while the agent's check (encapsulated to be1, inner
   destination the VIP) times out, the agent logs be1 down and its weight becomes 0 within
   fall x interval + 1 s (the ring swap: see TCG_FACTOR); be2 keeps weight 1 and new client connections all reach be2;
3. the backend role's fix (its net_conf step for the tunnel devices: effective rp_filter 0 on
   tunl0, netconf.ensure) brings be1 back within rise x interval + 1 s.

Needs the ipip module for tunl0: the CI host's kernel has none, so this runs in the kernel tier
(tests/kernel/test_kernel_tier.py collects it by its needs_ipip marker). Under QEMU TCG every
process is slow, so the waits for the agent to start are generous and the two timed bounds are
split: the state change is held to the issue's bound everywhere, the ring swap after it to the
bound x TCG_FACTOR in the guest (see below); the measured seconds are printed either way.
"""
import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

from backend_markers import needs_ipip
from backend_netns import run_in_ns

from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import netconf
from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer, vips, vipspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import program
from ansible_collections.xdplb.katran.plugins.module_utils.engine.health.monitor import Monitor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE_UTILS = os.path.join(REPO, "plugins", "module_utils")
BALANCER_O = os.path.join(REPO, "files", "bpf", "balancer.o")
HC_O = os.path.join(REPO, "files", "bpf", "hc_encap.o")

VIP, PORT = "10.202.100.1", 80
KEY = "%s:%d/tcp" % (VIP, PORT)
LB, LB_GW, LB_MAC, LB_GW_MAC = "10.202.2.2", "10.202.2.1", "02:58:4b:22:02:02", "02:58:4b:22:02:01"
CLIENT, CLIENT_GW = "10.202.1.2", "10.202.1.1"
BE1, BE2 = "10.202.11.2", "10.202.12.2"
HEALTH = {"kind": "tcp", "interval": 0.2, "rise": 2, "fall": 2}   # timeout: the interval
DOWN_BOUND = HEALTH["fall"] * HEALTH["interval"] + 1.0            # the bounds
UP_BOUND = HEALTH["rise"] * HEALTH["interval"] + 1.0
# The state change (the agent's own record of when the real fell or rose) must meet the issue's
# bound everywhere: check timers are the wall clock. The ring swap that follows is Python reading
# and writing the maps: about 0.05 s on hardware, but in the kernel tier's guest (QEMU TCG, no
# KVM: every instruction translated, tests/kernel/README.md "Python speed") each took 9.7-10.4 s
# (two runs, 2026-12-07; the state changes 0.2-0.5 s). So there, and only there, the time to the
# ring swap is held to the bound x TCG_FACTOR; the printed seconds are the real ones.
IN_TCG_GUEST = bool(os.environ.get("KTIER_OUT"))
TCG_FACTOR = 15.0
SCALE = TCG_FACTOR if IN_TCG_GUEST else 1.0
AGENT_START = 300.0   # python + engine + pyroute2 imports: tens of seconds under TCG
WAIT = 60.0           # anything else that should happen, before giving up

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class Inside:
    """This thread in netns NAME for the block (sockets made there stay there)."""

    def __init__(self, name):
        self.name = name
        self.home = None

    def __enter__(self):
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        _setns("/run/netns/" + self.name)
        return self

    def __exit__(self, *exc):
        try:
            if _libc.setns(self.home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(self.home)


def _setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns %s: %s" % (path, os.strerror(err)))
    finally:
        os.close(fd)


def ip_batch(lines, ns=None):
    """Several `ip` commands in one process (a process start costs seconds under TCG)."""
    cmd = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
    done = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, check=False)
    assert done.returncode == 0, (cmd, lines, done.stderr)


def sysctl(ns, values):
    with Inside(ns):
        for key, value in values.items():
            with open("/proc/sys/net/ipv4/" + key.replace(".", "/"), "w") as handle:
                handle.write("%s\n" % value)


class Lab:
    def __init__(self, tmp):
        tag = "xks-%d-" % os.getpid()
        self.ns = {name: tag + name for name in ("router", "client", "lb", "be1", "be2")}
        self.pin_root = "/sys/fs/bpf/xks-%d" % os.getpid()
        self.tmp = tmp
        self.listeners = []
        self.agent = None
        self.log_path = os.path.join(tmp, "agent.log")
        self.health_path = os.path.join(tmp, "health.json")
        self.state_path = os.path.join(tmp, "balancer.json")

    # ---------------------------------------------------------------- set-up
    def build(self):
        ns = self.ns
        ip_batch(["netns add %s" % n for n in ns.values()])
        ip_batch([
            "link add to-client netns {router} type veth peer name eth0 netns {client}".format(**ns),
            "link add to-lb netns {router} address {gw_mac} mtu 1600 type veth peer name eth0 netns {lb} "
            "address {mac} mtu 1600".format(gw_mac=LB_GW_MAC, mac=LB_MAC, **ns),
            "link add to-be1 netns {router} mtu 1600 type veth peer name eth0 netns {be1} mtu 1600".format(**ns),
            "link add to-be2 netns {router} mtu 1600 type veth peer name eth0 netns {be2} mtu 1600".format(**ns),
        ])
        router = ["link set lo up"]
        for port, addr in (("to-client", CLIENT_GW), ("to-lb", LB_GW), ("to-be1", "10.202.11.1"),
                           ("to-be2", "10.202.12.1")):
            router += ["addr add %s/24 dev %s" % (addr, port), "link set %s up" % port]
        router.append("route add %s/32 via %s" % (VIP, LB))
        ip_batch(router, ns["router"])
        for host, addr, gw in (("client", CLIENT, CLIENT_GW), ("lb", LB, LB_GW),
                               ("be1", BE1, "10.202.11.1"), ("be2", BE2, "10.202.12.1")):
            lines = ["link set lo up", "addr add %s/24 dev eth0" % addr, "link set eth0 up",
                     "route add default via %s" % gw]
            if host.startswith("be"):
                lines += ["addr add %s/32 dev lo" % VIP] + self.decap_lines()
            ip_batch(lines, ns[host])
        # Replies from the VIP reach the router from the backends while it routes the VIP to lb.
        sysctl(ns["router"], {"ip_forward": 1, "conf.all.rp_filter": 0, "conf.default.rp_filter": 0,
                              "conf.to-client.rp_filter": 0, "conf.to-lb.rp_filter": 0,
                              "conf.to-be1.rp_filter": 0, "conf.to-be2.rp_filter": 0})
        # Neither the balancer nor a backend routes (new namespaces inherit the host's ip_forward):
        # a packet a backend does not take must not come back to the VIP through another one.
        sysctl(ns["lb"], {"ip_forward": 0})
        for host in ("be1", "be2"):
            # A good backend, as the role leaves it (no strict rp_filter anywhere to begin with).
            sysctl(ns[host], {"ip_forward": 0, "conf.all.rp_filter": 0, "conf.eth0.rp_filter": 0,
                              "conf.default.rp_filter": 0, "conf.%s.rp_filter" % self.arrival: 0})
            self.listen(host)

    arrival = "tunl0"

    def decap_lines(self):
        # The fallback device the ipip module creates in every namespace (the seed scenario's).
        return ["link set tunl0 up"]

    def listen(self, host):
        """TCP on 0.0.0.0:80 in the backend: the VIP (through the tunnel) and its own address."""
        with Inside(self.ns[host]):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", PORT))
            sock.listen(128)
        self.listeners.append(sock)

        def serve():
            while True:
                try:
                    conn, _peer = sock.accept()
                except OSError:
                    return
                try:
                    conn.sendall(host.encode() + b"\n")
                except OSError:
                    pass
                conn.close()
        threading.Thread(target=serve, daemon=True).start()

    def load_balancer(self):
        cfg = {"gateway_mac": LB_GW_MAC, "source_v4": LB, "source_v6": "fd00:202:2::2"}
        raw_vips = [{"address": VIP, "port": PORT, "protocol": "tcp", "reals": [BE1, BE2]}]

        def load():
            program.ensure(BALANCER_O, "eth0", mode="generic", pin_root=self.pin_root)
            balancer.ensure_config(self.pin_root, balancer.config_request("eth0", **cfg))
            vips.ensure(self.pin_root, vipspec.parse_vips(raw_vips), purge=True)
        run_in_ns(self.ns["lb"], load)
        state = {"version": 1, "object": BALANCER_O, "interface": "eth0", "mode": "generic",
                 "pin_root": self.pin_root, "config": cfg, "vips": raw_vips, "health": HEALTH}
        with open(self.state_path, "w") as handle:
            json.dump(state, handle)

    def start_agent(self):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JOURNAL_STREAM")}
        with open(self.log_path, "wb") as log:
            self.agent = subprocess.Popen(  # pylint: disable=consider-using-with  # stopped in close()
                ["nsenter", "--net=/run/netns/%s" % self.ns["lb"], sys.executable, "-m", "engine", "agent",
                 self.state_path, "--health-state", self.health_path, "--hc-object", HC_O],
                cwd=MODULE_UTILS, stdout=log, stderr=subprocess.STDOUT, env=env)

    # ---------------------------------------------------------------- reading
    def log(self):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def weights(self):
        """{real: weight} of the VIP as the kernel holds it (what the rings were built from)."""
        data = balancer.info(self.pin_root, stats=False)
        return {r["address"]: r["weight"] for r in data["vips"][0]["reals"]}

    def health(self):
        try:
            with open(self.health_path) as handle:
                return json.load(handle)["reals"].get(KEY, {})
        except (OSError, ValueError):
            return {}

    def wait(self, what, predicate, timeout):
        """(seconds it took, last value) once predicate(value) holds; AssertionError at timeout."""
        start = time.monotonic()
        value = None
        while time.monotonic() - start < timeout:
            if self.agent.poll() is not None:
                raise AssertionError("the agent exited (%s) while waiting for %s:\n%s"
                                     % (self.agent.returncode, what, self.log()))
            value = predicate()
            if value:
                return time.monotonic() - start, value
            time.sleep(0.05)
        raise AssertionError("no %s after %.0f s (last %r); agent log:\n%s" % (what, timeout, value, self.log()))

    def client_connects(self, count):
        """Which backend answered each of `count` new connections to the VIP (None: failed)."""
        out = []
        with Inside(self.ns["client"]):
            for _n in range(count):
                try:
                    with socket.create_connection((VIP, PORT), timeout=10) as conn:
                        out.append(conn.recv(16).decode().strip() or None)
                except OSError:
                    out.append(None)
        return out

    # ---------------------------------------------------------------- tear-down
    def close(self):
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        for sock in self.listeners:
            sock.close()
        subprocess.run(["ip", "-batch", "-"], input="".join("netns del %s\n" % n for n in self.ns.values()),
                       capture_output=True, text=True, check=False)
        if os.path.isdir(self.pin_root):
            shutil.rmtree(self.pin_root, ignore_errors=True)


def own_address_check(lab, address):
    """The check an agent without the data path would run: TCP to the backend's own address,
    same check code, no mark (no encapsulation). Returns its last result."""
    spec = {"kind": "tcp", "address": address, "port": PORT, "interval": 0.2, "timeout": 5.0,
            "rise": 1, "fall": 1, "source": LB, "device": "eth0"}
    with Inside(lab.ns["lb"]):
        mon = Monitor({"own": spec})
        try:
            deadline = time.monotonic() + WAIT
            while mon.completed < 2 and time.monotonic() < deadline:
                mon.step(0.2)
            return mon.snapshot()["own"]["last"]
        finally:
            mon.close()


def _line(log, start):
    """The rest of the last log line with `start` in it, or None."""
    found = [line.split(start, 1)[1] for line in log.splitlines() if start in line]
    return found[-1] if found else None


def _swapped_after(log, event):
    """Whether the agent logged `event` and, after it, the ring swap of the VIP."""
    at = log.find(event)
    return at >= 0 and ("rings: 1 VIPs rewritten (%s)" % KEY) in log[at:]


@needs_ipip
def test_rp_filter_on_the_arrival_device_takes_the_backend_out_and_the_role_fix_brings_it_back(tmp_path):
    lab = Lab(str(tmp_path))
    try:
        lab.build()
        lab.load_balancer()
        lab.start_agent()
        lab.wait("'agent started' in the log", lambda: "agent started" in lab.log(), AGENT_START)

        # 1. both reals checked through the data path, up, in the ring
        def both_ok():
            h = lab.health()
            ok = [r for r in (BE1, BE2) if h.get(r, {}).get("state") == "up" and (h[r].get("last") or {}).get("ok")]
            return h if len(ok) == 2 else None
        _t, health = lab.wait("a passing check of both reals", both_ok, WAIT)
        assert health[BE1]["check"] == "tcp:%s:%d@%s" % (BE1, PORT, VIP), health
        assert lab.weights() == {BE1: 1, BE2: 1}

        # 2. the seed's misconfiguration on be1: strict rp_filter on its arrival device (and all)
        t0, wall0 = time.monotonic(), time.time()
        sysctl(lab.ns["be1"], {"conf.all.rp_filter": 1, "conf.%s.rp_filter" % lab.arrival: 1})
        # Waiting on the agent's log (cheap) rather than polling the maps: under TCG a map read
        # costs the agent CPU time. The ring swap is done when the agent logs it.
        lab.wait("%s down and a ring swap" % BE1, lambda: _swapped_after(lab.log(), "real %s down" % BE1), WAIT)
        down_s = time.monotonic() - t0
        assert lab.weights() == {BE1: 0, BE2: 1}
        log = lab.log()
        line = _line(log, "real %s down for %s: " % (BE1, KEY))
        assert line and "tcp:%s:%d@%s no handshake in 0.2 s" % (BE1, PORT, VIP) in line, log
        assert _line(log, "real %s down" % BE2) is None, log
        held = lab.health()[BE1]
        assert held["state"] == "down" and held["reason"].startswith("no handshake"), held
        detect_s = held["since"] - wall0
        # ... while the backend's own address answers the same check, unwrapped: it would pass
        own = own_address_check(lab, BE1)
        assert own["ok"] and own["reason"].startswith("connected in"), own
        # new connections from the client: every one reaches be2 (none is lost to be1's drop)
        assert lab.client_connects(4) == ["be2"] * 4
        print("\n[agent seed] rp_filter=1 on %s's %s: down after %.2f s, out of the ring after %.2f s (bound %.1f s x %g);"
              " agent: %s; own-address check: %s" % (BE1, lab.arrival, detect_s, down_s, DOWN_BOUND, SCALE, line,
                                                     own["reason"]))
        assert detect_s <= DOWN_BOUND and down_s <= DOWN_BOUND * SCALE, (detect_s, down_s, log)

        # 3. the backend role's fix: its net_conf step on the tunnel devices (effective rp_filter 0
        # there; netconf keeps eth0 at its effective 1 while lowering `all`)
        t1, wall1 = time.monotonic(), time.time()
        with Inside(lab.ns["be1"]):
            fixed = netconf.ensure(ipv4={"rp_filter": 0}, devices=[lab.arrival], persist=False)
        effective = fixed["effective"]["after"]["ipv4"]["rp_filter"]
        assert fixed["changed"] and effective[lab.arrival] == 0 and effective["eth0"] == 1, fixed
        lab.wait("%s up and a ring swap" % BE1, lambda: _swapped_after(lab.log(), "real %s up" % BE1), WAIT)
        up_s = time.monotonic() - t1
        assert lab.weights() == {BE1: 1, BE2: 1}
        held = lab.health()[BE1]
        assert held["state"] == "up" and held["reason"].startswith("connected in"), held
        rise_s = held["since"] - wall1
        print("[agent seed] the role's fix: up after %.2f s, back in the ring after %.2f s (bound %.1f s x %g); agent: %s"
              % (rise_s, up_s, UP_BOUND, SCALE, _line(lab.log(), "real %s up for %s: " % (BE1, KEY))))
        assert rise_s <= UP_BOUND and up_s <= UP_BOUND * SCALE, (rise_s, up_s, lab.log())
    finally:
        lab.close()
