#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_probe
short_description: Open flows to an address and count which responder answered
version_added: 0.1.0
description:
  - Opens O(count) TCP connections (or UDP exchanges) to O(address):O(port), each from a new
    source port, and reports per responder name how many flows it answered, as told by
    M(xdplb.katran.lab_responder). It is read-only and never changes anything.
  - Fails when fewer than O(min_success) flows were answered.
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
  address:
    description: Address to connect to (a VIP, or a backend's own address).
    type: str
    required: true
  port:
    description: Destination port.
    type: int
    default: 8080
  protocol:
    description: Transport protocol.
    type: str
    choices: [tcp, udp]
    default: tcp
  count:
    description: Number of flows.
    type: int
    default: 10
  timeout:
    description: Seconds to wait for each answer.
    type: float
    default: 2.0
  min_success:
    description: Least number of answered flows for success; defaults to O(count).
    type: int
"""

EXAMPLES = r"""
- name: Twenty TCP flows through the VIP
  xdplb.katran.lab_probe:
    address: 10.99.0.10
    port: 8080
    count: 20
  register: probe
"""

RETURN = r"""
servers:
  description: Number of flows each responder answered, by name.
  returned: always
  type: dict
  sample: {"xkt-be1": 11, "xkt-be2": 9}
failures:
  description: Number of flows that got no answer.
  returned: always
  type: int
errors:
  description: The first ten failure reasons.
  returned: always
  type: list
  elements: str
answers:
  description: Per flow, who answered and which client address and port it saw.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine import validate
from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import labtraffic
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            address=dict(type="str", required=True),
            port=dict(type="int", default=8080),
            protocol=dict(type="str", choices=["tcp", "udp"], default="tcp"),
            count=dict(type="int", default=10),
            timeout=dict(type="float", default=2.0),
            min_success=dict(type="int"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        validate.ip_address(params["address"], "address")
        validate.integer(params["port"], "port", 1, 65535)
        validate.integer(params["count"], "count", 1, 10000)
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field)
    result = labtraffic.probe(params["address"], params["port"], params["protocol"], params["count"], params["timeout"])
    wanted = params["count"] if params["min_success"] is None else params["min_success"]
    answered = params["count"] - result["failures"]
    if answered < wanted:
        module.fail_json(msg=f"{answered} of {params['count']} {params['protocol']} flows to "
                             f"{params['address']}:{params['port']} were answered (wanted {wanted})", **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
