"""A lab (a router, a client, a balancer, two backends) of the tests' own, under a prefix of theirs.

The default lab (xkt-, /run/xdplb-lab) belongs to `make demo`, molecule's to its scenarios: a test
that needs a fleet builds one with its own prefix, state root and pin root, so runs in parallel
never share a namespace, a pin or a file. Prefixes in use: xkl- test_lab, xkb- test_backend_role,
xkm- molecule default, xkf- molecule fleet, xki- test_bad_input_site, xka- test_awx_runner,
xkr- bench/balancer_role_bench, xkg- and xkgr- test_lab_bgp, xkt- the default lab (and xkt-test-,
xkt-decap- of backend_netns and test_decap_live).
"""
import contextlib
import os

import yaml

from host_snapshot import snapshot
from lab_playbook import adhoc, playbook, REPO

LAB_ONLY = os.path.join(REPO, "tests", "integration", "playbooks", "lab_only.yml")


class Lab:
    def __init__(self, prefix, state_root, pin_root):
        self.prefix, self.state_root, self.pin_root = prefix, state_root, pin_root
        self.inventory = state_root + "/inventory.yml"
        self.args = ["-e", f"lab_prefix={prefix}", "-e", f"lab_state_root={state_root}", "-e", f"lab_pin_root={pin_root}",
                     "-e", "lab_routing=static"]
        self.hosts = [prefix + n for n in ("be1", "be2", "client", "lb1", "router")]
        self.lb, self.backends = prefix + "lb1", [prefix + "be1", prefix + "be2"]

    def load_inventory(self):
        with open(self.inventory) as handle:
            return yaml.safe_load(handle)

    def good_request(self):
        """A VIP per family on the balancer, both backends as reals, and the lab's gateway."""
        inventory = self.load_inventory()
        backends = inventory["all"]["children"]["backends"]["hosts"]
        reals4 = [backends[b]["lab_ipv4"] for b in self.backends]
        reals6 = [backends[b]["lab_ipv6"] for b in self.backends]
        lb = inventory["all"]["children"]["balancers"]["hosts"][self.lb]
        return {"balancer_vips": [{"address": "10.99.0.10", "port": 8080, "protocol": "tcp", "reals": reals4},
                                  {"address": "fd00:99::10", "port": 8080, "protocol": "tcp", "reals": reals6}],
                "balancer_gateway_mac": lb["lab_gateway_mac"]}

    def start_responders(self, port=8080):
        """A responder on each backend (the lab's demo service), for a check that tries the VIPs;
        the lab's removal stops it."""
        for backend in self.backends:
            result = adhoc(self.inventory, backend, "xdplb.katran.lab_responder",
                           {"name": backend, "port": port, "lifetime": 900,
                            "pidfile": f"{self.state_root}/{backend}/responder.pid"})[backend]
            assert not result.get("failed"), result

    def _files(self, root):
        out = []
        for base, _dirs, names in os.walk(root):
            out += [os.path.join(base, n) for n in names]
        return sorted(out)

    def fleet(self):
        """Every lab namespace: its network, its pins and every file of its per-host directory."""
        return {ns: snapshot(ns=ns, pin_roots=[f"{self.pin_root}/{ns}/balancer", f"{self.pin_root}/{ns}/decap"],
                             files=self._files(f"{self.state_root}/{ns}")) for ns in self.hosts}


@contextlib.contextmanager
def built_lab(prefix, state_root, pin_root):
    """Build the lab, yield it, and remove it whatever the test did."""
    if prefix == "xkt-":
        raise ValueError("xkt- is the default lab (make demo, CI): give the test a prefix of its own")
    lab = Lab(prefix, state_root, pin_root)
    playbook(LAB_ONLY, *lab.args)
    try:
        yield lab
    finally:
        playbook(LAB_ONLY, *lab.args, "-e", "lab_state=absent")
