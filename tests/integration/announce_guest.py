"""Runs inside a network namespace of its own (test_announce.py): the agent's announcements as
BIRD sees them. Prints one JSON document."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, sys.argv[1])
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bgp import bird  # noqa: E402
from ansible_collections.xdplb.katran.plugins.module_utils.engine.health.announce import Announcer  # noqa: E402

TABLE = 4242
BIRD_CONF = """
router id 10.0.0.1;
protocol device { }
protocol kernel xdplb_vips4 { kernel table %d; learn; scan time 1; ipv4 { import all; export none; }; }
protocol kernel xdplb_vips6 { kernel table %d; learn; scan time 1; ipv6 { import all; export none; }; }
protocol bgp router_a { local as 65010; neighbor 10.0.0.2 as 65000; ipv4 { import none; export none; }; }
""" % (TABLE, TABLE)


def kernel_routes():
    out = []
    for flag in ("-4", "-6"):
        out += json.loads(subprocess.run(["ip", "-j", flag, "route", "show", "table", str(TABLE)],
                                         capture_output=True, text=True, check=True).stdout or "[]")
    return sorted(r["dst"] for r in out)


def bird_routes(sock):
    text = subprocess.run(["birdc", "-s", sock, "show", "route"], capture_output=True, text=True, check=False).stdout
    return sorted(line.split()[0] for line in text.splitlines() if "unicast" in line)


def wait(what, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def main():
    out = {}
    tmp = tempfile.mkdtemp(prefix="xdplb-announce-")
    conf, sock, pid = (os.path.join(tmp, n) for n in ("bird.conf", "bird.ctl", "bird.pid"))
    with open(conf, "w") as handle:
        handle.write(BIRD_CONF)
    subprocess.run(["bird", "-c", conf, "-s", sock, "-P", pid], check=True)
    try:
        # sync: routes added and removed, BIRD follows
        ann = Announcer(TABLE)
        ann.open()
        out["added"] = ann.sync(["10.99.0.20", "fd00:99::20", "10.99.0.21"])
        out["kernel"] = kernel_routes()
        out["bird"] = wait(lambda: bird_routes(sock), ["10.99.0.20/32", "10.99.0.21/32", "fd00:99::20/128"])
        out["removed"] = ann.sync(["10.99.0.20", "fd00:99::20"])
        out["bird_after_remove"] = wait(lambda: bird_routes(sock), ["10.99.0.20/32", "fd00:99::20/128"])
        out["again"] = ann.sync(["fd00:99::20", "10.99.0.20"])
        try:
            Announcer(TABLE).open()
            out["second_agent"] = "opened"
        except Exception as exc:  # pylint: disable=broad-except
            out["second_agent"] = str(exc)
        ann.close()
        out["bird_after_close"] = wait(lambda: bird_routes(sock), [])
        # an agent killed with SIGKILL: its routes go with its process
        child = subprocess.Popen([sys.executable, "-c", (
            "import sys, time; sys.path.insert(0, %r)\n"
            "from ansible_collections.xdplb.katran.plugins.module_utils.engine.health.announce import Announcer\n"
            "a = Announcer(%d); a.open(); a.sync(['10.99.0.30', 'fd00:99::30']); print('ready', flush=True); time.sleep(60)"
        ) % (sys.path[0], TABLE)], stdout=subprocess.PIPE, text=True)
        out["child"] = child.stdout.readline().strip()
        out["bird_with_child"] = wait(lambda: bird_routes(sock), ["10.99.0.30/32", "fd00:99::30/128"])
        killed = time.monotonic()
        child.send_signal(signal.SIGKILL)
        child.wait()
        out["bird_after_kill"] = wait(lambda: bird_routes(sock), [])
        out["withdrawn_in"] = time.monotonic() - killed
        out["kernel_after_kill"] = kernel_routes()
        # The sessions the agent's metrics report (xdplb_bgp_session_up): a peer nobody answers for.
        out["sessions"] = [{k: row[k] for k in ("name", "proto", "neighbor")} | {"established": row["info"].startswith(
            "Established")} for row in bird.show_protocols_all(sock) if row["proto"] == "BGP"]
    finally:
        with open(pid) as handle:
            os.kill(int(handle.read()), signal.SIGTERM)
    print(json.dumps(out))


main()
