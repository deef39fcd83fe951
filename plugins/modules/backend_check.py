#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backend_check
short_description: Diagnose why a backend would not answer traffic balanced to it
version_added: 0.1.0
description:
  - Inspects a backend for every VIP and reports findings, each with a severity and the exact fix.
  - Decapsulation in place (an C(external) ipip/ip6tnl device or the fallback C(tunl0)/C(ip6tnl0) up,
    or the collection's BPF decap attached to an interface).
  - Effective C(rp_filter) (the kernel applies max(conf.all, conf.<device>)) on the device where
    unwrapped packets arrive; strict mode, and loose mode on a device without an address, drop the
    unwrapped SYN so no SYN-ACK ever leaves. This is the classic failure this collection prevents.
  - VIP bound locally; C(arp_ignore)/C(arp_announce) on the interfaces; room for the tunnel header
    (MTU or advertised MSS); tunnel receive counters.
  - Read-only. For an end-to-end test from another host, see M(xdplb.katran.backend_probe).
author:
  - xdplb.katran developers (@xdplb)
extends_documentation_fragment:
  - xdplb.katran.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  vips:
    description:
      - VIP addresses this backend serves (IPv4 and IPv6; a prefix length is ignored).
      - Defaults to the C(vips) of O(state_file). Give O(vips), O(state_file) or both.
    type: list
    elements: str
  state_file:
    description:
      - The backend state file the backend role keeps (C(/etc/xdplb/backend.json)), read with the same
        schema as C(backend-restore). An invalid one fails the task naming the field and value; a
        missing one is a C(deployed) finding (critical) when O(vips) is not given either.
      - Its C(vips) and C(families) are the defaults of O(vips) and O(outer_families).
    type: path
  outer_families:
    description:
      - Address families of the outer (tunnel) header the balancers send to this backend. C(4) for
        IPIP, C(6) for IP6IP6 and 4in6. Defaults to the C(families) of O(state_file), else to the
        families of O(vips).
    type: list
    elements: int
    choices: [4, 6]
  fail_on:
    description: Fail the task when a finding has this severity or worse; C(never) only reports.
    type: str
    choices: [critical, warning, never]
    default: never
  inspect:
    description:
      - V(false) reports only RV(kernel_tunnels) (RV(findings) is then empty and RV(status) V(ok)). That
        needs no netlink, so no pyroute2 on the host, which is how the backend role decides between
        kernel and BPF decap before it installs pyroute2 (C(backend_packages)).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Check a backend against what the role left in its state file
  xdplb.katran.backend_check:
    state_file: /etc/xdplb/backend.json
    fail_on: critical

- name: Check every backend
  xdplb.katran.backend_check:
    vips: [10.99.0.10, "fd00:99::10"]
  register: doctor

- name: Show what is wrong and how to fix it
  ansible.builtin.debug:
    msg: "{{ doctor.findings | selectattr('severity', 'in', ['critical', 'warning']) | map(attribute='fix') }}"
"""

RETURN = r"""
state:
  description: The document of O(state_file), validated; null when no state file was given or it does not exist.
  returned: always
  type: dict
  sample: {kind: backend, vips: [10.99.0.10], families: [4]}
kernel_tunnels:
  description: Whether the running kernel can provide ipip and ip6tnl devices (loaded, built in, or loadable).
  returned: always
  type: dict
  sample: {"ipip": true, "ip6tnl": true}
status:
  description: The worst severity found (C(critical), C(warning) or C(ok)).
  returned: always
  type: str
  sample: critical
findings:
  description: One entry per check and device or VIP.
  returned: always
  type: list
  elements: dict
  contains:
    check:
      description: C(deployed), C(decap), C(rp_filter), C(vip_bound), C(arp_ignore), C(arp_announce), C(arp), C(headroom), C(tunnel_counters).
      type: str
    severity:
      description: C(critical), C(warning), C(info) or C(ok).
      type: str
    vip:
      description: The VIP concerned, if any.
      type: str
    device:
      description: The device concerned, if any.
      type: str
    message:
      description: What was found.
      type: str
    fix:
      description: The command or setting that removes the cause.
      type: str
  sample:
    - check: rp_filter
      severity: critical
      device: tunl0
      vip: null
      message: "effective rp_filter on tunl0 (kernel tunnel) is 1 (strict, from net.ipv4.conf.all.rp_filter=1): ..."
      fix: "sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.tunl0.rp_filter=0 ..."
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import doctor
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short


def main():
    module = AnsibleModule(
        argument_spec=dict(
            vips=dict(type="list", elements="str"),
            state_file=dict(type="path"),
            outer_families=dict(type="list", elements="int", choices=[4, 6]),
            fail_on=dict(type="str", choices=["critical", "warning", "never"], default="never"),
            inspect=dict(type="bool", default=True),
        ),
        required_one_of=[("vips", "state_file")],
        supports_check_mode=True,
    )
    p = module.params
    try:
        report = doctor.check(p["vips"], p["state_file"], p["outer_families"], p["inspect"])
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field, value=short(exc.value))
    deployed = report.pop("deployed")
    limit = p["fail_on"]
    if deployed and limit != "never" and (report["status"] == "critical" or (limit == "warning" and report["status"] == "warning")):
        problems = [f["message"] + " -> fix: " + f["fix"] for f in report["findings"] if f["severity"] in ("critical", "warning")]
        module.fail_json(msg="backend check found problems: " + "; ".join(problems), **report)
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
