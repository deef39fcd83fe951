"""Run ansible-playbook against the checkout the way a user does, and read the results as JSON."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def ansible_env(**extra):
    env = dict(os.environ,
               ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".build", "collections"),
               ANSIBLE_CALLBACK_PLUGINS=os.path.join(REPO, "tests", "callbacks"),
               ANSIBLE_STDOUT_CALLBACK="xdplb_test_results",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    env.update(extra)
    return env


def playbook(path, *args, check=True, netns=None, env=None):
    """ansible-playbook PATH ARGS; returns (returncode, {"tasks": [...], "stats": {...}}).

    `netns`: the controller itself runs in that network namespace (`nsenter --net`, which keeps the
    host's mount namespace and bpffs); `env`: more environment variables."""
    cmd = [os.path.join(BIN, "ansible-playbook"), str(path)] + list(args)
    if netns is not None:
        cmd = ["nsenter", "--net=/run/netns/%s" % netns] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ansible_env(**(env or {})), cwd=REPO,
                          timeout=600, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    data = json.loads(lines[-1]) if lines else None
    if check and (proc.returncode != 0 or data is None):
        raise AssertionError(f"ansible-playbook {path} {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return proc.returncode, data


def changed_total(data):
    return sum(stats.get("changed", 0) for stats in data["stats"].values())


def task_results(data, name):
    """{host: result} of the task called ``name``."""
    return {t["host"]: t["result"] for t in data["tasks"] if t["task"] == name}


def adhoc(inventory, pattern, module, args=""):
    """One module on the hosts matching ``pattern``, as a one-task playbook; returns {host: result}."""
    play = [{"hosts": pattern, "gather_facts": False, "tasks": [{"name": "adhoc", module: args or None}]}]
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"xdplb-adhoc-{os.getpid()}.json")
    with open(path, "w") as handle:
        json.dump(play, handle)
    try:
        _rc, data = playbook(path, "-i", inventory, check=False)
    finally:
        os.unlink(path)
    return task_results(data, "adhoc")
