"""pyroute2 is imported when the engine first talks netlink, not when a module imports the engine.

Importing it costs 0.25-0.4 s per module run, and most modules (engine_install, lb_vip, ...) reach
netlink.py through hostnet or install without ever opening a netlink socket.
"""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, ".build", "collections")
ENGINE = os.path.join(REPO, "plugins", "module_utils", "engine")
MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "plugins", "modules")) if f.endswith(".py"))
SYSTEM_PYTHON = "/usr/bin/python3"


def _python(code, python=sys.executable, cwd=None):
    """Run ``code`` in a fresh interpreter (this one's sys.modules already holds whatever earlier
    tests imported); returns its stdout lines."""
    done = subprocess.run([python, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, PYTHONPATH=cwd or COLLECTIONS))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_no_module_imports_pyroute2_when_it_is_imported():
    code = ("import importlib, sys\n"
            "for name in %r:\n"
            "    importlib.import_module('ansible_collections.xdplb.katran.plugins.modules.' + name)\n"
            "    if 'pyroute2' in sys.modules:\n"
            "        print(name)\n"
            "        break\n" % (MODULES,))
    assert _python(code) == [], "this module (or one imported before it) imports pyroute2 eagerly"


def test_pyroute2_is_imported_on_first_use():
    code = ("import sys\n"
            "from ansible_collections.xdplb.katran.plugins.module_utils.engine import netlink\n"
            "print('pyroute2' in sys.modules, netlink.HAS_PYROUTE2, 'pyroute2' in sys.modules)\n"
            "from pyroute2.netlink.exceptions import NetlinkError\n"
            "print(netlink.NetlinkError is NetlinkError)\n"
            "with netlink.open_iproute() as ipr:\n"
            "    print(netlink.link(ipr, 'lo')['name'], netlink.link(ipr, 'xdplb-none') is None)\n")
    assert _python(code) == ["False", "True", "True", "True", "lo", "True"]


@pytest.fixture
def bare_host(tmp_path):
    """The engine as the boot unit runs it, with a python that has no pyroute2 (Debian's own)."""
    if not os.path.exists(SYSTEM_PYTHON) or subprocess.run([SYSTEM_PYTHON, "-c", "import pyroute2"],
                                                           capture_output=True, check=False).returncode == 0:
        pytest.skip("needs a python without pyroute2 (Debian's /usr/bin/python3 without python3-pyroute2)")
    shutil.copytree(ENGINE, str(tmp_path / "xdplb_engine"), ignore=shutil.ignore_patterns("__pycache__"))
    return str(tmp_path)


def test_without_pyroute2_open_iproute_says_what_to_install_and_nothing_else_breaks(bare_host):
    code = ("from xdplb_engine import errors, hostnet, install, netlink\n"
            "print(netlink.HAS_PYROUTE2, netlink.IPRoute)\n"
            "try:\n"
            "    netlink.open_iproute()\n"
            "except errors.EngineError as exc:\n"
            "    print('install' in exc.msg and 'python3-pyroute2' in exc.msg)\n"
            "try:\n"
            "    raise OSError('not a netlink error')\n"
            "except netlink.NetlinkError:\n"
            "    print('caught')\n"
            "except OSError:\n"
            "    print('passed')\n"
            "print(sorted(install.host_facts()))\n")
    assert _python(code, python=SYSTEM_PYTHON, cwd=bare_host) == [
        "False", "None", "True", "passed", "['default_interface',", "'interfaces',", "'python',", "'systemd']"]
