"""site.yml, drain.yml and undrain.yml as an AWX job runs them: through ansible-runner.

Each job gets a private data directory laid out as AWX lays it out (docs/awx.md shows it):
  inventory/hosts.yml  the inventory (here the lab's)
  project/             the job template's project: playbooks that import the collection's
  env/envvars          ANSIBLE_COLLECTIONS_PATH, where the collection is installed
  env/extravars        the template's extra vars and the survey answers, merged, with the types AWX
                       gives them: text and multiple choice answers are strings, integers are ints
The job runs with no ANSIBLE_* variable of the test's environment (no ansible.cfg of the checkout),
as in AWX. One lab is built; site.yml runs once, drain and undrain once; each bad survey answer is a
job that must fail in its first play, on localhost, naming the variable, with no lab host changed.
"""
import collections
import os

import pytest
import yaml

from lab_fleet import built_lab
from lab_playbook import BIN, REPO

ansible_runner = pytest.importorskip("ansible_runner")

PREFIX = "xka-"  # lab_fleet.py lists the prefixes in use
STATE_ROOT = "/run/xdplb-awxrunner"
PIN_ROOT = "/sys/fs/bpf/xdplb-awxrunner"
COLLECTIONS = os.path.join(REPO, ".build", "collections")
# A user's AWX project: one playbook per job template, importing the collection's.
PROJECT = {name: f"---\n- name: {name}\n  ansible.builtin.import_playbook: xdplb.katran.{name[:-4]}\n"
           for name in ("site.yml", "drain.yml", "undrain.yml")}
FIRST_PLAY = "Validate the inputs (specs/site.yml) before any host is touched"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)")


def _private_data_dir(path, inventory, extravars):
    for sub in ("inventory", "project", "env"):
        (path / sub).mkdir(parents=True)
    (path / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory))
    for name, text in PROJECT.items():
        (path / "project" / name).write_text(text)
    # AWX writes both files as YAML; these are the variables it sets that matter here.
    (path / "env" / "envvars").write_text(yaml.safe_dump({
        "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS,
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),
    }))
    (path / "env" / "extravars").write_text(yaml.safe_dump(extravars))


class Job:
    def __init__(self, name, runner):
        self.name, self.status, self.rc = name, runner.status, runner.rc
        self.events = list(runner.events)
        self.counts = collections.Counter(e["event"] for e in self.events)
        # AWX shows a task result as "changed" from runner_on_ok's event data.
        self.counts["changed"] = sum(1 for e in self.events if e["event"] == "runner_on_ok"
                                     and e.get("event_data", {}).get("res", {}).get("changed"))
        self.stats = runner.stats or {}
        self.stdout = runner.stdout.read()

    def host_events(self):
        return [e for e in self.events if e["event"].startswith("runner_on_")]

    def failed(self):
        return [e["event_data"] for e in self.events if e["event"] == "runner_on_failed"]

    def summary(self):
        keys = ("playbook_on_play_start", "playbook_on_task_start", "runner_on_ok", "changed",
                "runner_on_skipped", "runner_on_failed", "runner_on_unreachable")
        return f"{self.name}: status={self.status} rc={self.rc} " + " ".join(f"{k}={self.counts[k]}" for k in keys)


def run_job(tmp, name, playbook, inventory, extravars):
    """One job in a fresh private data directory, as AWX runs each job."""
    pdd = tmp / name
    _private_data_dir(pdd, inventory, extravars)
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("ANSIBLE_")]:
            patch.delenv(key)
        runner = ansible_runner.run(private_data_dir=str(pdd), playbook=playbook, quiet=True,
                                    ident=name, timeout=600)
    return Job(name, runner)


def survey_site(lab):
    """The LB site template: balancer_vips in its extra vars (YAML, so a list), survey answers as AWX
    passes them, and the variables AWX adds to every job."""
    return dict(lab.good_request(),
                balancer_xdp_mode="auto",            # multiple choice: a string
                balancer_source_mode="balancer",     # multiple choice
                backend_advmss=0,                    # integer
                xdplb_check_backends="true",         # multiple choice true/false: the string "true"
                xdplb_check_flows=5,                 # integer
                xdplb_check_timeout="3",             # text: a string
                awx_job_id=7, awx_job_template_name="LB site", tower_job_id=7)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("awx")
    with built_lab(PREFIX, STATE_ROOT, PIN_ROOT) as lab:
        lab.start_responders(8080)
        inventory = lab.load_inventory()
        site = survey_site(lab)
        out = {"site": run_job(tmp, "site", "site.yml", inventory, site)}
        before = lab.fleet()
        vips = site["balancer_vips"]
        bad = {
            # A text field AWX does not check.
            "bad_timeout": (dict(site, xdplb_check_timeout="soon"), "xdplb_check_timeout", "'soon'"),
            # The template's extra vars, wrong.
            "bad_port": (dict(site, balancer_vips=[dict(vips[0], port=70000), vips[1]]),
                         "balancer_vips[0].port", "70000 must be <= 65535"),
            # balancer_vips typed into a survey textarea: a string, which docs/awx.md says not to do.
            "vips_textarea": (dict(site, balancer_vips=yaml.safe_dump(vips)), "balancer_vips", "is of type str"),
        }
        for name, (extravars, _var, _text) in bad.items():
            out[name] = run_job(tmp, name, "site.yml", inventory, extravars)
        out["after_bad"], out["before_bad"], out["bad"] = lab.fleet(), before, bad
        drain = {"drain_backend": lab.backends[0], "drain_timeout": 10, "awx_job_id": 8}
        out["drain"] = run_job(tmp, "drain", "drain.yml", inventory, drain)
        out["undrain"] = run_job(tmp, "undrain", "undrain.yml", inventory, {"drain_backend": lab.backends[0]})
        out["lab"] = lab
        yield out


def _show(capsys, *jobs):
    with capsys.disabled():
        for job in jobs:
            print("\n  ansible-runner job " + job.summary(), end="")
        print()


def test_site_job_is_successful_and_reports_its_events(jobs, capsys):
    job = jobs["site"]
    _show(capsys, job)
    assert job.status == "successful" and job.rc == 0, job.stdout[-3000:]
    assert job.counts["playbook_on_start"] == 1 and job.counts["playbook_on_stats"] == 1
    assert job.counts["playbook_on_play_start"] == 4  # validate, backends, balancers, every VIP answers
    assert job.counts["runner_on_failed"] == job.counts["runner_on_unreachable"] == 0
    assert job.counts["changed"] > 0 and job.counts["runner_on_ok"] > job.counts["changed"]
    lab = jobs["lab"]
    assert set(job.stats["changed"]) >= {lab.lb, *lab.backends}, job.stats
    assert not job.stats.get("failures"), job.stats
    # The table a user reads at the end of the job: both VIPs answer through the balancer.
    assert "10.99.0.10:8080/tcp" in job.stdout and "[fd00:99::10]:8080/tcp" in job.stdout, job.stdout[-3000:]
    assert "FAIL" not in job.stdout.split("The fleet's VIPs")[-1].split("TASK")[0]


def test_a_bad_survey_answer_fails_the_first_play_naming_the_variable_and_touches_no_host(jobs, capsys):
    _show(capsys, *(jobs[name] for name in jobs["bad"]))
    for name, (_extravars, variable, text) in jobs["bad"].items():
        job = jobs[name]
        assert job.status == "failed" and job.rc != 0, name
        assert job.counts["playbook_on_play_start"] == 1, (name, job.counts)
        assert {e["event_data"]["host"] for e in job.host_events()} == {"localhost"}, name
        failed = job.failed()
        assert len(failed) == 1 and failed[0]["play"] == FIRST_PLAY, (name, failed)
        # A looped task (the roles' specs) fails with one message per item, as AWX shows it.
        res = failed[0]["res"]
        message = " ".join([res["msg"]] + [str(item.get("msg", "")) for item in res.get("results", [])])
        assert variable in message and text in message, (name, message)
    assert jobs["after_bad"] == jobs["before_bad"]


def test_drain_and_undrain_jobs_are_successful(jobs, capsys):
    _show(capsys, jobs["drain"], jobs["undrain"])
    lab = jobs["lab"]
    for name in ("drain", "undrain"):
        job = jobs[name]
        assert job.status == "successful" and job.rc == 0, (name, job.stdout[-3000:])
        assert job.counts["runner_on_failed"] == 0, name
        assert job.stats["changed"].get(lab.lb, 0) > 0, (name, job.stats)
    # What drain.yml set on the balancer: weight 0 for the backend's reals, on both VIPs.
    weights = [e["event_data"]["res"]["ansible_facts"]["drain_changes"] for e in jobs["drain"].events
               if e["event"] == "runner_on_ok" and e["event_data"].get("task") == "Work out the new weights"]
    assert weights and len(weights[0]) == 2, weights
