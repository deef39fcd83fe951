"""Processes the lab stops: shared by the lab's teardown (lab.py), the router's FRR (labrouting.py) and
its Prometheus (labmonitor.py)."""
import time


def wait_gone(pids, timeout=5.0):
    """Until every pid has exited (or is a zombie: its parent reaps it), or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.05)


def alive(pid):
    """Whether pid runs (a zombie does not: it has exited, its parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def read_text(path):
    """The file's text, or None when it cannot be read (a daemon's config or log not written yet)."""
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None
