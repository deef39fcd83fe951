"""Offline stand-in for ansible-test's pip bootstrap script (get-pip.py).

ansible-test downloads get-pip.py from the internet to put pip into the virtual environments it
creates for sanity tests; that host is unreachable here. ansible-test looks for a cached copy
first (~/.ansible/test/cache/get_pip_<version>.py), so `make sanity` installs this file there.
It is run with get-pip's arguments: pip options and pinned packages (e.g. pip==24.2) and
--no-setuptools/--no-wheel. ensurepip brings the pip bundled with Python, which then installs
the pinned packages from the configured package index.
"""
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
# ensurepip sets PIP_CONFIG_FILE=/dev/null in this process; the real install must see the
# machine's pip configuration (index, certificates) again.
os.environ.pop("PIP_CONFIG_FILE", None)
ARGS = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--quiet"] + ARGS))
