#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backend_decap
short_description: Attach the collection's BPF decapsulation to a backend interface
version_added: 0.1.0
description:
  - Loads C(decap.o) (shipped in the collection's C(files/bpf)) and attaches its XDP program, or its
    tc ingress program, to O(interface). It strips IPIP, IP6IP6 and 4in6 only when the outer
    destination is one of O(addresses); every other packet passes untouched.
  - For backends whose kernel lacks the ipip/ip6_tunnel modules, or where decapsulation before the
    network stack is wanted. Unwrapped packets enter the stack on O(interface) itself.
  - Maps are pinned under O(pin_root) (mode 0700), so a reload keeps the address list and counters.
    Idempotent by program tag; an XDP program is replaced atomically (never a moment without decap).
  - Refuses to replace a program on the interface that is not the decap program.
author:
  - xdplb.katran developers (@xdplb)
extends_documentation_fragment:
  - xdplb.katran.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
requirements:
  - libbpf.so.1 (Debian package libbpf1)
options:
  interface:
    description: Interface the balanced traffic arrives on.
    type: str
    required: true
  object:
    description: Path of C(decap.o) on the managed host. Required with O(state=present).
    type: path
  hook:
    description: Where to attach. C(xdp) is the fastest; C(tc) works on any driver and sees VLAN tags as metadata.
    type: str
    choices: [xdp, tc]
    default: xdp
  xdp_mode:
    description: XDP attach mode; C(auto) tries native, then generic.
    type: str
    choices: [auto, native, generic]
    default: auto
  addresses:
    description: Outer destinations to decapsulate (this host's addresses the balancers send to). Defaults to the global addresses of O(interface).
    type: list
    elements: str
  pin_root:
    description: Directory on bpffs for the pinned maps.
    type: path
    default: /sys/fs/bpf/xdplb/decap
  state:
    description: C(absent) detaches the program and removes the pins.
    type: str
    choices: [present, absent]
    default: present
"""

EXAMPLES = r"""
- name: BPF decap on eth0 for this host's addresses
  xdplb.katran.backend_decap:
    interface: eth0
    object: /usr/local/lib/xdplb/bpf/decap.o
"""

RETURN = r"""
changes:
  description: What was changed (or would be, in check mode).
  returned: always
  type: list
  elements: str
programs:
  description: The decap programs attached after the run, by hook, with id and mode.
  returned: always
  type: dict
addresses:
  description: The outer destinations decapsulated after the run.
  returned: always
  type: list
  elements: str
stats:
  description: Counters summed over CPUs (decap_v4, decap_v6, pass, not_for_us, malformed, unsupported, error), each with packets and bytes.
  returned: when the maps exist
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import decap
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", required=True),
            object=dict(type="path"),
            hook=dict(type="str", choices=list(decap.HOOKS), default="xdp"),
            xdp_mode=dict(type="str", choices=list(decap.XDP_MODES), default="auto"),
            addresses=dict(type="list", elements="str"),
            pin_root=dict(type="path", default="/sys/fs/bpf/xdplb/decap"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        required_if=[("state", "present", ["object"])],
        supports_check_mode=True,
    )
    params = module.params
    try:
        addresses = params["addresses"]
        if addresses is None and params["state"] == "present":
            addresses = decap.interface_addresses(params["interface"])
        request = decap.normalize(params["interface"], params["object"], params["hook"], params["xdp_mode"],
                                  addresses, params["state"])
        result = decap.ensure(request, params["pin_root"], module.check_mode)
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field, value=short(exc.value))
    except Exception as exc:  # BpfError: errno and libbpf's own words
        module.fail_json(msg=f"BPF operation failed: {exc}")
    module.exit_json(changed=result["changed"], changes=result["changes"],
                     programs=result["after"]["programs"], addresses=result["after"]["addresses"],
                     stats=result["stats"], diff={"before": result["before"], "after": result["after"]})


if __name__ == "__main__":
    main()
