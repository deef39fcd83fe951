"""ansible-playbook run inside one network namespace with the local connection.

The controller itself runs under `nsenter --net`, which keeps the host's mount namespace and bpffs
(unlike `ip netns exec`): the roles then act on the namespace as on a host of their own, without a
lab and without the netns connection's mount namespace per task (~1.5 s a task).
"""
from lab_playbook import playbook as _playbook


def playbook(ns_name, inventory, path, *args, check=True):
    """(returncode, {"tasks": [...], "stats": {...}}) of ansible-playbook -i INVENTORY PATH ARGS."""
    rc, data = _playbook(path, "-i", str(inventory), *args, check=check, netns=ns_name,
                         env={"ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_PIPELINING": "1"})
    if data is None:
        raise AssertionError("%s: no results from ansible-playbook (rc %d)" % (path, rc))
    return rc, data


def result(data, task, host):
    """The result of `task` on `host` (a role's tasks are named "role : task"); exactly one."""
    found = [t["result"] for t in data["tasks"] if t["task"].split(" : ")[-1] == task and t["host"] == host]
    assert len(found) == 1, [t["task"] for t in data["tasks"]]
    return found[0]
