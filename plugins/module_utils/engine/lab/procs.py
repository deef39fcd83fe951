"""Processes the lab stops: shared by the lab's teardown (lab.py) and the router's FRR (labrouting.py)."""
import time


def wait_gone(pids, timeout=5.0):
    """Until every pid has exited (or is a zombie: its parent reaps it), or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except OSError:
                break
            time.sleep(0.05)
