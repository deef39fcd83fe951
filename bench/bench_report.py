# SPDX-License-Identifier: GPL-3.0-or-later
"""What every control-plane bench prints: the machine it ran on, and the results as JSON."""
import json
import os
import platform


def machine():
    return "%s, %d CPUs, %s, Python %s, load %.2f at start" % (
        platform.node(), os.cpu_count(), platform.release(), platform.python_version(), os.getloadavg()[0])


def report(results, path=None):
    """Adds the load at the end, prints the results, and also writes them to ``path`` if given."""
    results["load_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))
    if path:
        with open(path, "w") as handle:
            json.dump(results, handle, indent=2)
