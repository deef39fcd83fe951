"""The collection as users install it: `ansible-galaxy collection build` of the checkout, installed
into a collections path of its own, used from a directory outside the checkout with nothing but that
path configured (no ansible.cfg of ours, no .build/collections link).

The tarball must hold every module, plugin, role and playbook, the BPF objects the roles copy to
hosts (with their sources) and no development file; ansible-doc must render every module, role and
the connection plugin from the installed copy; a module and a playbook must run from it, so their
imports of the installed module_utils are exercised (AnsiballZ packs them for the module; the
validate_request action plugin imports them on the controller).
"""
import ast
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "modules"))
                 if f.endswith(".py") and not f.startswith("_"))
ROLES = sorted(d for d in os.listdir(os.path.join(REPO, "roles")) if not d.startswith("."))
# What users get (galaxy.yml's build_ignore keeps everything else out).
SHIPPED_DIRS = ("plugins", "roles", "playbooks", "meta", "files", "docs")
SHIPPED_FILES = {"README.md", "requirements.txt", "bindep.txt", "MANIFEST.json", "FILES.json",
                 "changelogs/changelog.yaml", "changelogs/config.yaml"}
DEVELOPMENT = (".venv", ".venv312", ".build", ".ci", ".git", ".gitignore", ".ansible-lint",
               ".pytest_cache", "tests", "extensions", "bench", "scripts", "Makefile", "pytest.ini",
               "ansible.cfg", "requirements-dev.txt", "execution-environment.yml", "changelogs/fragments")
EM_BPF = 247


def _is_junk(path):
    name = os.path.basename(path)
    return "__pycache__" in path.split("/") or name.endswith((".pyc", ".o.tmp", ".swp", "~"))


def _on_disk():
    """The files of the shipped parts of the checkout, as the tarball should list them."""
    found = set()
    for top in SHIPPED_DIRS:
        for root, dirs, files in os.walk(os.path.join(REPO, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), REPO)
                if not _is_junk(rel):
                    found.add(rel)
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collection")
    work = tmp / "work"  # the user's directory: outside the checkout
    work.mkdir()
    (work / "ansible.cfg").write_text("[defaults]\n")
    collections = tmp / "collections"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
    env.update(PATH=BIN + os.pathsep + env.get("PATH", ""), LANG="C.UTF-8", ANSIBLE_HOME=str(tmp / "home"),
               ANSIBLE_CONFIG=str(work / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(collections),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")

    def run(*cmd, check=True):
        done = subprocess.run(list(cmd), cwd=str(work), env=env, capture_output=True, text=True, timeout=300, check=False)
        if check and done.returncode != 0:
            pytest.fail("%s failed (%d):\n%s\n%s" % (" ".join(cmd), done.returncode, done.stdout, done.stderr))
        return done

    run("ansible-galaxy", "collection", "build", "--output-path", str(tmp / "dist"), REPO)
    (tarball,) = list((tmp / "dist").glob("xdplb-katran-*.tar.gz"))
    run("ansible-galaxy", "collection", "install", str(tarball), "-p", str(collections))
    return {"tarball": str(tarball), "run": run, "work": work,
            "root": str(collections / "ansible_collections" / "xdplb" / "katran")}


def _members(tarball):
    with tarfile.open(tarball) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_tarball_has_no_development_files(installed):
    names = set(_members(installed["tarball"]))
    dev = sorted(n for n in names if any(n == d or n.startswith(d + "/") for d in DEVELOPMENT) or _is_junk(n))
    assert not dev, "development files in the tarball: %s" % dev
    tops = {n.split("/")[0] for n in names}
    assert tops <= set(SHIPPED_DIRS) | {f.split("/")[0] for f in SHIPPED_FILES}, sorted(tops)


def test_tarball_ships_every_module_role_playbook_and_bpf_object(installed):
    members = _members(installed["tarball"])
    files = {n for n, m in members.items() if m.isfile()}
    missing = sorted(_on_disk() - files)
    assert not missing, "shipped parts missing from the tarball: %s" % missing
    assert SHIPPED_FILES <= files, sorted(SHIPPED_FILES - files)
    for module in MODULES:
        assert "plugins/modules/%s.py" % module in files
    for role in ROLES:
        assert "roles/%s/meta/argument_specs.yml" % role in files and "roles/%s/tasks/main.yml" % role in files
    # The roles copy these objects to hosts: built BPF ELF files, next to the sources they came from.
    with tarfile.open(installed["tarball"]) as tar:
        for obj in ("balancer", "decap", "pass"):
            head = tar.extractfile("files/bpf/%s.o" % obj).read(20)
            assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == EM_BPF, obj
            assert "files/bpf/%s.c" % obj in files
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert {"files/bpf/lb_abi.h", "files/bpf/Makefile"} <= files
    # The alerting rules users load into their Prometheus (rule_files:) and the dashboard.
    assert {"files/prometheus/xdplb.rules.yml", "files/grafana/xdplb-dashboard.json"} <= files
    assert (manifest["collection_info"]["namespace"], manifest["collection_info"]["name"]) == ("xdplb", "katran")


def test_only_the_installed_copy_is_visible(installed):
    listed = json.loads(installed["run"]("ansible-galaxy", "collection", "list", "xdplb.katran",
                                         "--format", "json").stdout)
    assert list(listed) == [os.path.dirname(os.path.dirname(os.path.dirname(installed["root"])))
                            + "/ansible_collections"]


def test_ansible_doc_renders_every_module_role_and_the_connection(installed):
    run = installed["run"]
    listed = json.loads(run("ansible-doc", "-l", "xdplb.katran", "--json").stdout)
    assert sorted(listed) == ["xdplb.katran." + m for m in MODULES]
    done = run("ansible-doc", "--json", *["xdplb.katran." + m for m in MODULES])
    docs = json.loads(done.stdout)
    assert "WARNING" not in done.stderr and "ERROR" not in done.stderr, done.stderr
    for module in MODULES:
        doc = docs["xdplb.katran." + module]["doc"]
        assert doc["short_description"] and doc["filename"].startswith(installed["root"] + "/"), module
    # The text a user reads: one page per module, each naming the installed file.
    text = run("ansible-doc", *["xdplb.katran." + m for m in MODULES]).stdout
    for module in MODULES:
        assert "> MODULE xdplb.katran.%s (%s/plugins/modules/%s.py)" % (module, installed["root"], module) in text
    roles = json.loads(run("ansible-doc", "-t", "role", "--json", *["xdplb.katran." + r for r in ROLES]).stdout)
    for role in ROLES:
        main = roles["xdplb.katran." + role]["entry_points"]["main"]
        assert main["short_description"] and main["options"], role
    assert "balancer_vips" in roles["xdplb.katran.balancer"]["entry_points"]["main"]["options"]
    text = run("ansible-doc", "-t", "connection", "xdplb.katran.netns").stdout
    assert "xdplb.katran.netns" in text


def test_a_module_runs_from_the_installed_copy(installed):
    """backend_check imports the engine (doctor, backend_restore, netlink) from module_utils."""
    run = installed["run"]
    base = ("ansible", "localhost", "-c", "local", "-e", "ansible_python_interpreter=" + sys.executable,
            "-m", "xdplb.katran.backend_check")
    ok = run(*base, "-a", json.dumps({"state_file": str(installed["work"] / "none.json")}))
    assert "no state file at" in ok.stdout and "the backend role never ran here" in ok.stdout, ok.stdout
    bad = run(*base, "-a", json.dumps({"vips": ["10.99.0.300"]}), check=False)
    assert bad.returncode == 2 and "10.99.0.300" in bad.stdout and "FAILED" in bad.stdout, bad.stdout + bad.stderr


def test_a_playbook_of_the_installed_copy_refuses_a_bad_request_before_any_host(installed):
    """xdplb.katran.site by its collection name: specs, roles' argument specs and the engine's checks
    are all read from the installed copy (playbook_dir is the installed playbooks directory)."""
    work = installed["work"]
    (work / "inventory.yml").write_text(json.dumps({"all": {"children": {
        "balancers": {"hosts": {"lb1": {"ansible_connection": "local"}}},
        "backends": {"hosts": {"be1": {"ansible_connection": "local"}}}}}}))
    vips = [{"address": "10.99.0.10", "port": 70000, "reals": ["10.30.1.2"]}]
    done = installed["run"]("ansible-playbook", "-i", "inventory.yml", "xdplb.katran.site",
                            "-e", json.dumps({"balancer_vips": vips}), check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "balancer_vips[0].port: 70000 must be <= 65535" in out, out
    assert "PLAY [Backends]" not in out, out


def test_readme_lists_every_module_with_its_short_description():
    """README.md's "Modules" table: one row per module of plugins/modules, its short_description."""
    with open(os.path.join(REPO, "README.md")) as handle:
        section = handle.read().split("\n## Modules\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", section, re.M)
    want = []
    for module in MODULES:
        with open(os.path.join(REPO, "plugins", "modules", module + ".py")) as handle:
            tree = ast.parse(handle.read())
        doc = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                   and getattr(node.targets[0], "id", None) == "DOCUMENTATION")
        want.append((module, yaml.safe_load(doc)["short_description"]))
    assert rows == want
