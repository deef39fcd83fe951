"""Running the collection's modules for real: ansible-playbook inside a test namespace.

The controller is the ansible-playbook of the venv running pytest and the module interpreter is
that same python, so a run under the pyroute2 0.7.2 venv exercises 0.7.2 inside AnsiballZ.
"""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
COLLECTIONS = os.path.join(REPO, ".build", "collections")


def ansible_playbook():
    path = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if not os.path.exists(path):
        pytest.skip("ansible-playbook is not installed next to %s" % sys.executable)
    return path


def run_tasks(ns, tasks, tmp_path, extra_env=None):
    """Run `tasks` (list of dicts) on localhost inside namespace `ns`; returns the task results.

    Each result is {'task', 'status', 'result'}; tasks that must fail need ignore_errors: true.
    """
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    playbook = tmp_path / ("play-%d.yml" % len(list(tmp_path.glob("play-*.yml"))))
    playbook.write_text(json.dumps(play))
    env = dict(
        os.environ,
        LANG="C.UTF-8", LC_ALL="C.UTF-8",  # ansible insists on UTF-8; C.UTF-8 is still C
        ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
        ANSIBLE_CALLBACK_PLUGINS=os.path.join(REPO, "tests", "callbacks"),
        ANSIBLE_STDOUT_CALLBACK="xdplb_test_results",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PIPELINING="1",  # local connection: skips the temp-dir round trips per task
    )
    env.update(extra_env or {})
    cmd = ["ip", "netns", "exec", ns, ansible_playbook(), "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError("no results from ansible-playbook (rc %d)\nstdout:\n%s\nstderr:\n%s"
                             % (done.returncode, done.stdout, done.stderr))
    results = json.loads(lines[-1])["tasks"]
    assert len(results) == len(tasks), (results, done.stderr)
    return results


def run_module(ns, name, args, tmp_path, check_mode=False, diff=False):
    """One module of the collection run directly (no controller, no AnsiballZ) inside `ns`.

    For the kernel tier: under TCG an ansible-playbook task costs minutes, a bare module run
    seconds. Returns the module's JSON result (with failed/msg when it failed).
    """
    module_args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    args_file = tmp_path / ("args-%d.json" % len(list(tmp_path.glob("args-*.json"))))
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    path = os.path.join(REPO, "plugins", "modules", name + ".py")
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", PYTHONPATH=COLLECTIONS)
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, path, str(args_file)],
                          capture_output=True, text=True, env=env, timeout=900, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError("no result from %s (rc %d)\nstdout:\n%s\nstderr:\n%s"
                             % (name, done.returncode, done.stdout, done.stderr))
    return json.loads(lines[-1])
