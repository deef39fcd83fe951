"""Every check kind against real listeners, inside a network namespace of its own
(unshare -n: only lo, nothing of the host is reached)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# The Makefile's collections path, or this checkout's when pytest runs without it.
COLLECTIONS = (os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep)[0]
               or os.path.join(os.path.dirname(os.path.dirname(HERE)), ".build", "collections"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root and unshare for a network namespace of its own")


@pytest.fixture(scope="module")
def results():
    guest = os.path.join(HERE, "health_checks_guest.py")
    script = "ip link set lo up && exec %s %s %s" % (sys.executable, guest, COLLECTIONS)
    out = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("cid,ok,reason", [
    ("tcp-ok", True, "connected in"),
    ("tcp6-ok", True, "connected in"),
    ("tcp-refused", False, "connection refused"),
    ("http-ok", True, "HTTP 200"),
    ("http-expect", True, "HTTP 200 with 'backend'"),
    ("http-expect-missing", False, "without 'nope'"),
    ("http-503", False, "HTTP 503 (expected 200)"),
    ("udp-ok", True, "replied in"),
    ("udp-refused", False, "port unreachable"),
    ("udp-silent", False, "no reply in 0.3 s"),
])
def test_check_kinds(results, cid, ok, reason):
    got_ok, got_reason, state = results[cid]
    assert got_ok is ok, results[cid]
    assert reason in got_reason, results[cid]
    assert state == ("up" if ok else "down")


def test_checks_repeat_on_their_interval(results):
    # 10 checks every 0.2 s for 1 s: about 50 runs (the silent one takes its 0.3 s timeout).
    assert 30 <= results["completed"] <= 70, results["completed"]
