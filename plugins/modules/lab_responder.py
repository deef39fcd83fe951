#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_responder
short_description: Run a small TCP/UDP responder that names the host that answered
version_added: 0.1.0
description:
  - Starts a detached process that answers every TCP line and UDP datagram on O(port) with
    C(<name> <client-address> <client-port>), on every local address (VIPs on lo included) and both
    address families. A probe (M(xdplb.katran.lab_probe)) learns from it which backend served a flow
    and whether the client's own address arrived (direct server return keeps it).
  - For labs and smoke tests; the process exits by itself after O(lifetime) seconds.
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
  name:
    description: Name the responder answers with; defaults to the host name.
    type: str
  port:
    description: TCP and UDP port.
    type: int
    default: 8080
  lifetime:
    description: Seconds after which the responder exits on its own.
    type: int
    default: 3600
  pidfile:
    description: Where the process id is kept (mode 0600).
    type: path
    required: true
  state:
    description: Whether the responder runs.
    type: str
    choices: [started, stopped]
    default: started
"""

EXAMPLES = r"""
- name: Answer on port 8080 as this backend
  xdplb.katran.lab_responder:
    name: "{{ inventory_hostname }}"
    pidfile: /run/xdplb-lab/{{ inventory_hostname }}/responder.pid
"""

RETURN = r"""
pid:
  description: Process id of the running responder (0 when stopped).
  returned: always
  type: int
"""

import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import labtraffic
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            port=dict(type="int", default=8080),
            lifetime=dict(type="int", default=3600),
            pidfile=dict(type="path", required=True),
            state=dict(type="str", choices=["started", "stopped"], default="started"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not 1 <= params["port"] <= 65535:
        module.fail_json(msg=f"port: {params['port']} is not a port number (1-65535)", field="port")
    if params["lifetime"] < 1:
        module.fail_json(msg=f"lifetime: {params['lifetime']} must be at least 1 second", field="lifetime")
    running = labtraffic.running_pid(params["pidfile"])
    if params["state"] == "stopped":
        changed = bool(running)
        if changed and not module.check_mode:
            labtraffic.stop_responder(params["pidfile"])
        module.exit_json(changed=changed, pid=0)
    if running or module.check_mode:
        module.exit_json(changed=not running, pid=running)
    try:
        changed, pid = labtraffic.start_responder(params["name"] or socket.gethostname(), params["port"],
                                                  params["lifetime"], params["pidfile"])
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field)
    module.exit_json(changed=changed, pid=pid)


if __name__ == "__main__":
    main()
