"""The lab inventory file keeps every host variable the lab role sets, and nothing else."""
import os

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(REPO, "roles", "lab")


def _tasks(tasks):
    for task in tasks:
        yield task
        yield from _tasks(task.get("block", []) + task.get("rescue", []) + task.get("always", []))


def _add_host_keys(path, names):
    with open(os.path.join(ROLE, "tasks", path)) as handle:
        tasks = [t for t in _tasks(yaml.safe_load(handle)) if t.get("name") in names]
    assert len(tasks) == len(names)
    return [k for t in tasks for k in t["ansible.builtin.add_host"] if k not in ("name", "groups")]


def test_inventory_names_match_the_add_host_tasks():
    set_there = _add_host_keys("main.yml", ["Add the lab hosts to the inventory of this run",
                                            "Reach them through the netns connection, every persistent path of the roles per host",
                                            "Add the router to the inventory of this run"])
    over_ssh = _add_host_keys("ssh.yml", ["Reach them over SSH as deploy with sudo, with the roles' own default paths and packages"])
    with open(os.path.join(ROLE, "vars", "main.yml")) as handle:
        names = yaml.safe_load(handle)
    kept, kept_ssh = names["lab_host_var_names"], names["lab_ssh_host_var_names"]
    assert {k for k in set_there if not k.startswith("ansible_")} == set(kept) and len(kept) == len(set(kept))
    # An SSH host keeps its connection variables: the inventory's defaults are the netns connection's.
    assert {k for k in over_ssh if k not in kept} == set(kept_ssh) and len(kept_ssh) == len(set(kept_ssh))
