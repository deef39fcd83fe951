# SPDX-License-Identifier: GPL-3.0-or-later
"""Wall time of playbooks/site.yml over SSH (become, /usr/bin/python3) and over the netns connection.

The same lab (1 balancer, 2 backends), the same service (extensions/molecule/ssh/ssh-vars.yml: 2 VIPs x TCP/UDP,
both backends reals) and the same playbook, reached two ways: the lab's netns connection (modules
run by the controller's Python, packages off) and SSH hosts (lab_ssh: sshd in each namespace, user
deploy with sudo, Debian's Python; from empty includes installing python3-pyroute2 and python3-apt
from the image's local repository, as on a fresh host). Each repeat builds both labs afresh, one
after the other, and runs site.yml from empty, then with nothing to change. Medians of --repeat.

Usage: sudo .venv/bin/python bench/site_connection_bench.py [--repeat 3] [--json FILE]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_report import machine, report  # noqa: E402

SERVICE = os.path.join(REPO, "extensions", "molecule", "ssh", "ssh-vars.yml")
LABS = {
    "netns": {"lab_prefix": "xkc-", "lab_ssh": False, "lab_state_root": "/run/xdplb-bench-netns",
              "lab_pin_root": "/sys/fs/bpf/xdplb-bench-netns", "lab_routing": "static"},
    "ssh": {"lab_prefix": "xkd-", "lab_ssh": True, "lab_state_root": "/run/xdplb-bench-ssh",
            "lab_pin_root": "/sys/fs/bpf/xdplb-bench-ssh", "lab_routing": "static"},
}
LAB = [{"hosts": "localhost", "connection": "local", "gather_facts": False, "roles": [{"role": "xdplb.katran.lab"}]}]
RESPONDERS = [{"hosts": "backends", "gather_facts": False, "tasks": [{
    "name": "responder", "xdplb.katran.lab_responder": {
        "name": "{{ inventory_hostname }}", "port": "{{ ssh_port }}", "pidfile": "{{ lab_host_dir }}/responder.pid",
        "lifetime": 900}}]}]


def playbook(tmp, kind, play, *args, **env_extra):
    """ansible-playbook PLAY with the service's and the lab's variables; returns its wall time."""
    labvars = os.path.join(tmp, kind + ".json")
    with open(labvars, "w") as handle:
        json.dump(LABS[kind], handle)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"), LANG="C.UTF-8", LC_ALL="C.UTF-8",
               **env_extra)
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), play,
           "-e", "@" + SERVICE, "-e", "@" + labvars] + list(args)
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit("%s failed (%d):\n%s\n%s" % (" ".join(cmd), done.returncode, done.stdout[-3000:], done.stderr[-2000:]))
    return wall


def one_repeat(tmp, kind):
    inventory = LABS[kind]["lab_state_root"] + "/inventory.yml"
    lab, responders = os.path.join(tmp, "lab.json"), os.path.join(tmp, "responders.json")
    for path, play in ((lab, LAB), (responders, RESPONDERS)):
        with open(path, "w") as handle:
            json.dump(play, handle)
    site = os.path.join(REPO, "playbooks", "site.yml")
    # Not an extra var: it would outrank, and end up in, the SSH hosts' own interpreter in the inventory.
    local = {"ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    playbook(tmp, kind, lab, "-i", "localhost,", **local)
    try:
        playbook(tmp, kind, responders, "-i", inventory)
        return {"from_empty": playbook(tmp, kind, site, "-i", inventory),
                "no_change": playbook(tmp, kind, site, "-i", inventory)}
    finally:
        playbook(tmp, kind, lab, "-i", "localhost,", "-e", "lab_state=absent", **local)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, BPF, sshd in the lab)")
    results = {"machine": machine()}
    tmp = tempfile.mkdtemp(prefix="xdplb-site-bench-")
    runs = {kind: [] for kind in LABS}
    try:
        for _run in range(args.repeat):
            for kind in LABS:
                runs[kind].append(one_repeat(tmp, kind))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for kind, kind_runs in runs.items():
        results[kind] = {step: {"median": round(statistics.median(r[step] for r in kind_runs), 1),
                                "runs": [round(r[step], 1) for r in kind_runs]} for step in ("from_empty", "no_change")}
    results["ssh_over_netns"] = {step: round(results["ssh"][step]["median"] / results["netns"][step]["median"], 2)
                                 for step in ("from_empty", "no_change")}
    report(results, args.json)


if __name__ == "__main__":
    main()
