"""The agent's announcements (engine/health/announce.py) with a real BIRD, inside a network
namespace of its own (unshare -n): the routes BIRD learns follow sync(), and an agent that dies,
even by SIGKILL, takes its routes with it."""
import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTIONS = (os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep)[0]
               or os.path.join(os.path.dirname(os.path.dirname(HERE)), ".build", "collections"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root and unshare for a network namespace of its own")


@pytest.fixture(scope="module")
def seen():
    assert shutil.which("bird") and shutil.which("birdc"), "BIRD 2 is missing: scripts/bootstrap.sh installs bird2"
    guest = os.path.join(HERE, "announce_guest.py")
    script = "ip link set lo up && exec %s %s %s" % (sys.executable, guest, COLLECTIONS)
    out = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_bird_learns_what_sync_says(seen):
    assert seen["added"] == [["10.99.0.20", "10.99.0.21", "fd00:99::20"], []]
    assert seen["kernel"] == ["10.99.0.20", "10.99.0.21", "fd00:99::20"]
    assert seen["bird"] == ["10.99.0.20/32", "10.99.0.21/32", "fd00:99::20/128"]


def test_a_removed_address_leaves_bird(seen):
    assert seen["removed"] == [[], ["10.99.0.21"]]
    assert seen["bird_after_remove"] == ["10.99.0.20/32", "fd00:99::20/128"]
    assert seen["again"] == [[], []]


def test_one_agent_at_a_time(seen):
    assert "is another agent running?" in seen["second_agent"]


def test_close_withdraws_everything(seen):
    assert seen["bird_after_close"] == []


def test_sigkill_withdraws_everything(seen):
    assert seen["child"] == "ready"
    assert seen["bird_with_child"] == ["10.99.0.30/32", "fd00:99::30/128"]
    assert seen["bird_after_kill"] == [] and seen["kernel_after_kill"] == []
    assert seen["withdrawn_in"] < 5, seen


def test_the_sessions_of_bird_for_the_metrics(seen):
    # What xdplb_bgp_session_up{peer, session} is made of: BIRD's own listing, the neighbor from its details.
    assert seen["sessions"] == [{"name": "router_a", "proto": "BGP", "neighbor": "10.0.0.2", "established": False}]
