"""ansible-playbook run inside one network namespace with the local connection.

The controller itself runs under `nsenter --net`, which keeps the host's mount namespace and bpffs
(unlike `ip netns exec`): the roles then act on the namespace as on a host of their own, without a
lab and without the netns connection's mount namespace per task (~1.5 s a task).
"""
import json
import os
import subprocess

from lab_playbook import BIN, REPO, ansible_env


def playbook(ns_name, inventory, path, *args, check=True):
    """(returncode, {"tasks": [...], "stats": {...}}) of ansible-playbook -i INVENTORY PATH ARGS."""
    cmd = ["nsenter", "--net=/run/netns/%s" % ns_name, os.path.join(BIN, "ansible-playbook"),
           "-i", str(inventory), str(path)] + list(args)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, check=False,
                          env=ansible_env(ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_PIPELINING="1"))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    data = json.loads(lines[-1]) if lines else None
    if data is None or (check and done.returncode != 0):
        raise AssertionError("%s failed (%d):\n%s\n%s" % (path, done.returncode, done.stdout[-4000:], done.stderr[-2000:]))
    return done.returncode, data


def result(data, task, host):
    """The result of `task` on `host` (a role's tasks are named "role : task"); exactly one."""
    found = [t["result"] for t in data["tasks"] if t["task"].split(" : ")[-1] == task and t["host"] == host]
    assert len(found) == 1, [t["task"] for t in data["tasks"]]
    return found[0]
