"""Data-plane fixtures: build the BPF objects once, load a fresh balancer per test.

Objects are loaded without pinning (every test gets private maps); the one test that
exercises pinning mounts bpffs if needed and pins under a temporary directory.
"""
import os
import subprocess

import pytest

from lbtest import BPF_DIR, Balancer  # tests/dataplane is on sys.path (rootdir conftest)

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import libbpf


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="data-plane tests load BPF programs: run them as root")
        for item in items:
            if "tests/dataplane" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def bpf_objects():
    """Build every object with the shipped Makefile (a no-op when up to date)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    subprocess.run(["make", "-s", "-C", BPF_DIR], check=True)
    return BPF_DIR


@pytest.fixture
def lb(bpf_objects):
    b = Balancer(os.path.join(bpf_objects, "balancer.o"))
    yield b
    b.close()


@pytest.fixture(scope="session")
def pass_prog(bpf_objects):
    obj = libbpf.BpfObject(os.path.join(bpf_objects, "pass.o"), pin_maps=False).load()
    yield obj.program_fd("xdp_pass")
    obj.close()


@pytest.fixture
def bpffs_dir(tmp_path_factory):
    """A fresh directory inside a bpffs (mounting /sys/fs/bpf when absent, as on a fresh machine)."""
    root = "/sys/fs/bpf"
    if not os.path.ismount(root):
        subprocess.run(["mount", "-t", "bpf", "bpf", root], check=True)
    d = os.path.join(root, "xdplb-test-%d" % os.getpid())
    os.makedirs(d, exist_ok=True)
    yield d
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)
