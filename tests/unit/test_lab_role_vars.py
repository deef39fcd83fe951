"""The lab inventory file keeps every host variable the lab role sets, and nothing else."""
import os

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(REPO, "roles", "lab")


def _tasks(tasks):
    for task in tasks:
        yield task
        yield from _tasks(task.get("block", []) + task.get("rescue", []) + task.get("always", []))


def test_inventory_names_match_the_add_host_task():
    with open(os.path.join(ROLE, "tasks", "main.yml")) as handle:
        tasks = list(_tasks(yaml.safe_load(handle)))
    add_host = [t for t in tasks if t.get("name") == "Add the lab hosts to the inventory of this run"]
    assert len(add_host) == 1
    set_there = {k for k in add_host[0]["ansible.builtin.add_host"] if k not in ("name", "groups")
                 and not k.startswith("ansible_")}
    with open(os.path.join(ROLE, "vars", "main.yml")) as handle:
        kept = yaml.safe_load(handle)["lab_host_var_names"]
    assert set_there == set(kept) and len(kept) == len(set(kept))
