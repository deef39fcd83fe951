"""The execution environment's build context, as `ansible-builder create` writes it from
execution-environment.yml, and the two steps of the image build that concern us run here without a
container engine (none can pull the base image on this machine: docs/awx.md, "Execution environment"):
- the galaxy stage: `ansible-galaxy collection install -r requirements.yml` in the context's _build,
  as the Containerfile runs it; it must install exactly the files of `ansible-galaxy collection build`;
- the builder stage's introspection of the installed collection, which decides the image's Python and
  system packages; it must find ours (meta/execution-environment.yml).
"""
import hashlib
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def _built_from_requirements_dev():
    """Whether scripts/bootstrap.sh built this venv from requirements-dev.txt (its stamp says so)."""
    try:
        with open(os.path.join(os.path.dirname(BIN), ".requirements.sha256")) as handle:
            stamp = handle.read()
        with open(os.path.join(REPO, "requirements-dev.txt"), "rb") as handle:
            return stamp.startswith(hashlib.sha256(handle.read()).hexdigest() + "-")
    except OSError:
        return False


def _requirements(path):
    with open(path) as handle:
        return [line.split("#")[0].strip() for line in handle if line.split("#")[0].strip()]


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    if not os.path.exists(os.path.join(BIN, "ansible-builder")):
        if _built_from_requirements_dev():
            pytest.fail("ansible-builder is not installed in %s although requirements-dev.txt lists it" % BIN)
        # e.g. the oldest-ansible-core venv (requirements-oldest.txt): only the tests' own imports.
        pytest.skip("ansible-builder is not in this venv (requirements-dev.txt installs it)")
    tmp = tmp_path_factory.mktemp("ee")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
    env.update(PATH=BIN + os.pathsep + env.get("PATH", ""), LANG="C.UTF-8", ANSIBLE_HOME=str(tmp / "home"),
               ANSIBLE_CONFIG=str(tmp / "none.cfg"), ANSIBLE_NOCOLOR="1")

    def run(*cmd, cwd):
        done = subprocess.run(list(cmd), cwd=str(cwd), env=env, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            pytest.fail("%s failed (%d):\n%s\n%s" % (" ".join(cmd), done.returncode, done.stdout, done.stderr))
        return done

    ctx = tmp / "context"
    run("ansible-builder", "create", "-f", os.path.join(REPO, "execution-environment.yml"), "-c", str(ctx),
        "--output-filename", "Containerfile", cwd=tmp)
    return {"ctx": ctx, "tmp": tmp, "run": run, "env": env}


def test_create_writes_a_containerfile_for_our_base_and_ansible(context):
    ctx = context["ctx"]
    containerfile = (ctx / "Containerfile").read_text()
    with open(os.path.join(REPO, "execution-environment.yml")) as handle:
        definition = yaml.safe_load(handle)
    assert 'ARG EE_BASE_IMAGE="%s"' % definition["images"]["base_image"]["name"] in containerfile
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core>=2.17 ansible-runner"' in containerfile
    assert "ansible-galaxy collection install" in containerfile and "introspect.py introspect" in containerfile
    for script in ("assemble", "install-from-bindep", "introspect.py", "entrypoint"):
        assert (ctx / "_build" / "scripts" / script).is_file(), script
    with open(ctx / "_build" / "requirements.yml") as handle:
        assert yaml.safe_load(handle) == {"collections": [{"name": "xdplb.katran", "type": "dir",
                                                          "source": "xdplb.katran"}]}
    # Only the collection's sources go into the context, not the checkout's virtualenvs or tests.
    copied = {p.name for p in (ctx / "_build" / "xdplb.katran").iterdir()}
    assert {"galaxy.yml", "plugins", "roles", "playbooks", "meta", "files"} <= copied
    assert not copied & {".venv", ".venv312", ".build", "tests", "extensions", ".git"}, sorted(copied)


@pytest.fixture(scope="module")
def image_collections(context):
    """/usr/share/ansible/collections of the image: the galaxy stage's command, run in _build."""
    installed = context["tmp"] / "usr-share-ansible-collections"
    context["run"]("ansible-galaxy", "collection", "install", "-r", "requirements.yml",
                   "--collections-path", str(installed), cwd=context["ctx"] / "_build")
    return installed


def test_the_galaxy_stage_installs_what_the_tarball_ships(context, image_collections):
    tmp, run = context["tmp"], context["run"]
    root = image_collections / "ansible_collections" / "xdplb" / "katran"
    in_image = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    run("ansible-galaxy", "collection", "build", "--output-path", str(tmp / "dist"), REPO, cwd=tmp)
    (tarball,) = list((tmp / "dist").glob("xdplb-katran-*.tar.gz"))
    with tarfile.open(tarball) as tar:
        shipped = {m.name for m in tar.getmembers() if m.isfile()}
    assert in_image == shipped, "EE copy vs tarball: only in EE %s, only in tarball %s" % (
        sorted(in_image - shipped), sorted(shipped - in_image))


def test_the_introspection_finds_our_python_and_system_packages(context, image_collections):
    tmp = context["tmp"]
    pip, bindep = tmp / "pip.txt", tmp / "bindep.txt"
    script = context["ctx"] / "_build" / "scripts" / "introspect.py"
    context["run"](sys.executable, str(script), "introspect", "--write-pip", str(pip), "--write-bindep", str(bindep),
                   str(image_collections), cwd=tmp)
    assert _requirements(pip) == _requirements(os.path.join(REPO, "requirements.txt"))
    assert _requirements(bindep) == _requirements(os.path.join(REPO, "bindep.txt"))
    assert "libbpf [platform:rpm]" in _requirements(bindep) and "pyroute2>=0.7.2" in _requirements(pip)
