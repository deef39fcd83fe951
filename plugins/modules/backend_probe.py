#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backend_probe
short_description: Send an encapsulated SYN to a backend and report whether a SYN-ACK comes back
version_added: 0.1.0
description:
  - Runs on any host that can reach the backend (a balancer, a client). It wraps a TCP SYN from its
    own address to O(vip):O(port) in IPIP (IPv4 VIP, IPv4 backend), 4in6 (IPv4 VIP, IPv6 backend) or
    IP6IP6 (IPv6 VIP), addressed to O(backend), as a balancer would, and waits for the backend's
    SYN-ACK, which a healthy backend sends straight to the prober.
  - No SYN-ACK with the SYN delivered is the classic rp_filter failure; run
    M(xdplb.katran.backend_check) on the backend to find the cause.
  - Sends one packet; changes nothing. Needs root (raw sockets).
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
  backend:
    description: The backend's own address (the outer destination).
    type: str
    required: true
  vip:
    description: The VIP the backend serves.
    type: str
    required: true
  port:
    description: A TCP port the backend listens on at the VIP.
    type: int
    required: true
  client:
    description: Inner source address; defaults to this host's address towards the backend. Replies go there.
    type: str
  timeout:
    description: Seconds to wait for the SYN-ACK.
    type: float
    default: 2.0
  fail_when_silent:
    description: Fail the task when no SYN-ACK arrives.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Probe every backend from the first balancer
  xdplb.katran.backend_probe:
    backend: "{{ hostvars[item].ansible_host }}"
    vip: 10.99.0.10
    port: 80
  loop: "{{ groups['backends'] }}"
  delegate_to: "{{ groups['balancers'][0] }}"
"""

RETURN = r"""
syn_ack:
  description: Whether the backend answered.
  returned: always
  type: bool
rtt_ms:
  description: Time to the SYN-ACK in milliseconds (null when none came).
  returned: always
  type: float
client:
  description: The inner source address used.
  returned: always
  type: str
sport:
  description: The inner source port used.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine import validate
from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import probe
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backend=dict(type="str", required=True),
            vip=dict(type="str", required=True),
            port=dict(type="int", required=True),
            client=dict(type="str"),
            timeout=dict(type="float", default=2.0),
            fail_when_silent=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        for field in ("backend", "vip", "client"):
            if params[field] is not None:
                validate.ip_address(params[field], field)
        validate.integer(params["port"], "port", 1, 65535)
        result = probe.encapsulated_syn(params["backend"], params["vip"], params["port"], params["client"],
                                        params["timeout"])
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field)
    except PermissionError:
        module.fail_json(msg="raw sockets need root (CAP_NET_RAW)")
    if params["fail_when_silent"] and not result["syn_ack"]:
        module.fail_json(msg=f"no SYN-ACK from {params['backend']} for {params['vip']}:{params['port']} "
                             f"within {params['timeout']} s", **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
