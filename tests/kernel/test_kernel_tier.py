"""Kernel tier (DESIGN.md "Test tiers", tier 5): Debian 12's stock 6.1 kernel under
virtme-ng/TCG, with the ipip module the CI host kernel lacks.

One boot runs the guest smoke (tests/kernel/guest_smoke.sh), then one python process
(tests/kernel/seed_role.py) runs the fixture-only seed scenario (seed_scenario.py) and the
seed scenario driven by the backend role and backend_check. The Ansible controller for those
runs here on the host, their module runs go into the guest (see seed_role.py). Last, one
pytest in the guest runs the integration tests marked needs_ipip / needs_ip6tnl, which the CI
host's kernel skips. The tests below read what each part left in the shared directory.
Opt-in, because it installs Debian packages and boots a VM (minutes):

    XDPLB_KERNEL_TIER=1 python -m pytest -q tests/kernel

See tests/kernel/README.md for timings and knobs (VENV, KTIER_TIMEOUT,
XDPLB_KTIER_ROLE_STEPS, ...).
"""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import seed_role

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RUN_IN_VM = os.path.join(HERE, "run_in_vm.sh")

pytestmark = pytest.mark.skipif(
    os.environ.get("XDPLB_KERNEL_TIER") != "1",
    reason="kernel tier is opt-in: set XDPLB_KERNEL_TIER=1 (needs root; installs "
    "qemu-system-x86 + linux-image-amd64, boots Debian's 6.1 kernel with virtme-ng "
    "under TCG, a few minutes)",
)

VIP = "10.201.100.1"

# Runs inside the guest, from the repo root. Each part records its own exit status, so
# one failing does not hide the other. seed_role.py runs the fixture-only seed scenario
# first, in its own process (one python start and scapy import for both).
GUEST_SCRIPT = r"""
bash tests/kernel/guest_smoke.sh; echo $? > "$KTIER_OUT/smoke.rc"
python tests/kernel/seed_role.py --seed-json "$KTIER_OUT/seed.json" --seed-rc "$KTIER_OUT/seed.rc" \
    --relay "$KTIER_OUT/relay" --json "$KTIER_OUT/role.json" \
    ${XDPLB_KTIER_ROLE_STEPS:+--steps "$XDPLB_KTIER_ROLE_STEPS"}
echo $? > "$KTIER_OUT/role.rc"
mapfile -t ipip_tests < "$KTIER_OUT/ipip-tests.txt"
python -m pytest -q -p no:cacheprovider --junitxml "$KTIER_OUT/ipip.xml" "${ipip_tests[@]}"
echo $? > "$KTIER_OUT/ipip.rc"
"""
# The integration tests that need the tunnel modules (tests/integration/backend_markers.py): the
# CI host skips them ("runs in the kernel tier"), the guest runs them by node id.
IPIP_MARKERS = "needs_ipip or needs_ip6tnl"
# Guard for boot + guest script (run_in_vm.sh's KTIER_TIMEOUT) unless the caller sets one.
# The budget is 10 minutes of CI on a quiet machine; this only has to catch a hung guest.
DEFAULT_VM_TIMEOUT = 1800

SEED_CASES = [
    # (case, expect SYN-ACK at the client)
    ("1 strict", False),
    ("1b strict via all", False),
    ("1c strict via dev", False),
    ("2 fixed", True),
    ("3a loose, no addr", False),
    ("3b loose, addr", True),
]


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def ipip_test_ids():
    """Node ids of the integration tests marked needs_ipip / needs_ip6tnl, collected on the host."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", IPIP_MARKERS, "tests/integration"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    ids = [line.strip() for line in done.stdout.splitlines() if "::" in line]
    assert done.returncode == 0 and ids, done.stdout[-3000:] + done.stderr[-2000:]
    return ids


@pytest.fixture(scope="module")
def vm_run(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("ktier")
    ipip_tests = ipip_test_ids()
    (outdir / "ipip-tests.txt").write_text("".join(test + "\n" for test in ipip_tests))
    env = dict(os.environ, KTIER_OUTDIR=str(outdir))
    env.setdefault("KTIER_TIMEOUT", str(DEFAULT_VM_TIMEOUT))
    vm_timeout = int(env["KTIER_TIMEOUT"])
    # run_in_vm.sh, while this process serves the guest's playbook runs (Ansible controller);
    # the guard inside run_in_vm.sh covers boot + run, this one adds the installs
    run = seed_role.run_with_controller(["bash", "-c", GUEST_SCRIPT], outdir, env=env,
                                        timeout=vm_timeout + 600)
    (outdir / "run_in_vm.log").write_text(run["output"])
    print("\n[kernel tier] run_in_vm.sh exit %s after %.0f s; playbooks on the host: %s; log: %s"
          % (run["rc"], run["seconds"], json.dumps(run["playbooks"]), outdir / "run_in_vm.log"))
    return {"rc": run["rc"], "output": run["output"], "outdir": str(outdir),
            "seconds": run["seconds"], "ipip_tests": ipip_tests}


def _tail(run, n=60):
    return "\n".join(run["output"].splitlines()[-n:])


def test_guest_boots_debian_61(vm_run):
    assert vm_run["rc"] not in (124, 125, 126), (
        "the VM did not boot/run (run_in_vm.sh exit %d):\n%s" % (vm_run["rc"], _tail(vm_run)))
    assert "[guest] 6.1." in vm_run["output"], _tail(vm_run)


def test_guest_smoke(vm_run):
    rc = _read(os.path.join(vm_run["outdir"], "smoke.rc"))
    assert rc == "0", "guest smoke exit %s:\n%s" % (rc, _tail(vm_run))


@pytest.fixture(scope="module")
def seed_rows(vm_run):
    rc = _read(os.path.join(vm_run["outdir"], "seed.rc"))
    path = os.path.join(vm_run["outdir"], "seed.json")
    if not os.path.exists(path):
        pytest.fail("seed scenario wrote no results (exit %s):\n%s" % (rc, _tail(vm_run)))
    with open(path) as f:
        data = json.load(f)
    return {(r["decap_dev"], r["case"]): r for r in data["rows"]}


@pytest.mark.parametrize("dev", ["tunl0", "ipip0"])
@pytest.mark.parametrize("case,expect_synack", SEED_CASES)
def test_seed_scenario(seed_rows, dev, case, expect_synack):
    row = seed_rows.get((dev, case))
    assert row is not None, "no result for %s on %s" % (case, dev)
    # the encapsulated SYN reached the backend and was decapsulated every time
    assert row["tunnel_rx_delta"] >= 1, row
    if expect_synack:
        assert row["synack_left_backend"] and row["synack_at_client"], row
        assert row["synack_src"] == VIP, row
        assert row["rpfilter_drops_delta"] == 0, row
    else:
        assert not row["synack_left_backend"] and not row["synack_at_client"], row
        assert row["rpfilter_drops_delta"] >= 1, row


def test_integration_tests_that_need_ipip_pass_in_the_guest(vm_run):
    """Every test the CI host skips for want of ipip / ip6_tunnel ran in the guest and passed."""
    rc = _read(os.path.join(vm_run["outdir"], "ipip.rc"))
    path = os.path.join(vm_run["outdir"], "ipip.xml")
    if not os.path.exists(path):
        pytest.fail("the guest's pytest wrote no report (exit %s):\n%s" % (rc, _tail(vm_run)))
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        node = case.get("classname").replace(".", "/") + ".py::" + case.get("name")
        outcomes[node] = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
    print("\n[kernel tier] needs_ipip tests in the guest: %d, exit %s" % (len(outcomes), rc))
    assert sorted(outcomes) == sorted(vm_run["ipip_tests"]), (sorted(outcomes), vm_run["ipip_tests"])
    assert {node: tags for node, tags in outcomes.items() if tags} == {}, _tail(vm_run)
    assert rc == "0", _tail(vm_run)


# ---------------------------------------------------------------- the role-driven seed scenario

@pytest.fixture(scope="module")
def role_run(vm_run):
    path = os.path.join(vm_run["outdir"], "role.json")
    rc = _read(os.path.join(vm_run["outdir"], "role.rc"))
    if not os.path.exists(path):
        if rc == "0":
            pytest.skip("no role steps requested (XDPLB_KTIER_ROLE_STEPS)")
        pytest.fail("seed_role.py wrote no results (exit %s):\n%s" % (rc, _tail(vm_run)))
    with open(path) as f:
        data = json.load(f)
    print("\n[kernel tier] role steps: timings %s; playbooks %s"
          % (json.dumps(data["timings"]), json.dumps(
              [{k: p[k] for k in ("playbook", "rc", "seconds", "module_runs", "module_seconds")}
               for p in data["playbooks"]])))
    return data


def _step(role_run, name):
    if role_run.get("fatal"):
        pytest.fail("the lab could not be built: %s" % role_run["fatal"])
    step = role_run["steps"].get(name)
    if step is None:
        requested = os.environ.get("XDPLB_KTIER_ROLE_STEPS")
        if requested and name not in requested.split(","):
            pytest.skip("step %s not requested (XDPLB_KTIER_ROLE_STEPS=%s)" % (name, requested))
        pytest.fail("no result for step %s (have %s)" % (name, sorted(role_run["steps"])))
    return step


def _assert_answers(probe, where):
    assert probe["tunnel_rx_delta"] >= 1, (where, probe)
    assert probe["synack_left_backend"] and probe["synack_at_client"], (where, probe)
    assert probe["synack_src"] == VIP, (where, probe)
    assert probe["rpfilter_drops_delta"] == 0, (where, probe)


def _assert_drops(probe, where):
    assert probe["tunnel_rx_delta"] >= 1, (where, probe)
    assert not probe["synack_left_backend"] and not probe["synack_at_client"], (where, probe)
    assert probe["rpfilter_drops_delta"] >= 1, (where, probe)


def _assert_role_fixed_it(step, want_rp):
    role, after = step["role"], step["after"]
    assert role["rc"] == 0, (role["failed_tasks"], role["output_tail"])
    assert role["decap"] == "kernel", role
    final = role["final_check"]
    assert final and final["task_status"] == "ok", final
    assert [f for f in final["findings"] if f["severity"] == "critical"] == [], final
    assert after["tunnels"].get("ipip0", {}).get("external"), after["tunnels"]
    _assert_answers(after["probe"], "after the role")
    assert after["probe"]["decap_dev"] == "ipip0", after["probe"]
    assert after["tcp"]["connected"] and after["tcp"]["echo"] == "ping/pong", after["tcp"]
    assert after["effective_rp_filter"]["ipip0"] == want_rp, after["effective_rp_filter"]
    assert step["problems"] == [], step["problems"]


def test_role_step1_strict_rp_filter_drops_and_the_doctor_names_it(role_run):
    """rp_filter=1 on all and tunl0: decapsulated, dropped; backend_check names the cause."""
    step = _step(role_run, "1")
    _assert_drops(step["probe"], "rp_filter=1")
    assert step["probe"]["decap_dev"] == "tunl0", step["probe"]
    critical = [f for f in step["findings"] if f["severity"] == "critical"]
    assert [(f["check"], f["device"]) for f in critical] == [("rp_filter", "tunl0")], \
        step["findings"]
    assert "net.ipv4.conf.tunl0.rp_filter=0" in critical[0]["fix"], critical[0]
    assert step["check_status"] == "critical"
    assert step["problems"] == [], step["problems"]


def test_role_step2_backend_role_makes_the_backend_answer(role_run):
    """The role on step 1's backend: SYN-ACK from the VIP to the client, TCP completes."""
    _assert_role_fixed_it(_step(role_run, "2"), want_rp=0)
    assert _step(role_run, "2")["after"]["effective_rp_filter"]["b0"] == 1  # not weakened


def test_role_step3a_loose_rp_filter_without_address(role_run):
    """rp_filter=2 on all, no address on the tunnel: dropped before, answered after the role."""
    step = _step(role_run, "3a")
    _assert_drops(step["before"], "rp_filter=2, no address")
    _assert_role_fixed_it(step, want_rp=0)
    assert step["after"]["effective_rp_filter"]["b0"] == 2, step["after"]  # not weakened


def test_role_step3b_loose_rp_filter_with_tunnel_address(role_run):
    """backend_rp_filter: 2 + backend_tunnel_address: loose mode kept, and it answers."""
    step = _step(role_run, "3b")
    _assert_drops(step["before"], "rp_filter=2, no address")
    _assert_role_fixed_it(step, want_rp=2)
    assert step["after"]["tunnels"]["ipip0"]["addresses"] == [seed_role.TUNNEL_ADDRESS]


def test_role_step4_second_run_changes_nothing(role_run):
    """The role again on 3b's backend: changed=0 (from the JSON callback's stats)."""
    step = _step(role_run, "4")
    assert step["role"]["rc"] == 0, step["role"]["failed_tasks"]
    assert step["role"]["changed"] == 0, step["role"]["changed_tasks"]
    _assert_answers(step["probe"], "after the second run")
    assert step["problems"] == [], step["problems"]
