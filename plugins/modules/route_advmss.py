#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: route_advmss
short_description: Set the MSS advertised on the default routes
version_added: 0.1.0
description:
  - Sets the C(advmss) metric of every default route of the main table (IPv4 and IPv6), keeping
    gateway, device and priority. A backend then tells clients to send segments small enough that
    the balancer's tunnel header still fits the path (1440 for IPIP, 1420 for IP6IP6 on 1500 bytes).
  - Routes from a network manager are rewritten by it on the next change; the backend role also
    restores the value at boot.
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
options:
  advmss:
    description: The MSS in bytes (536-65495).
    type: int
    required: true
"""

EXAMPLES = r"""
- name: Room for IPIP on a 1500-byte path
  xdplb.katran.route_advmss:
    advmss: 1440
"""

RETURN = r"""
routes:
  description: The default routes with their advmss before and after.
  returned: always
  type: list
  elements: dict
  sample: [{"family": 4, "gateway": "10.30.1.1", "before": null, "after": 1440}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import routes
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short


def main():
    module = AnsibleModule(argument_spec=dict(advmss=dict(type="int", required=True)), supports_check_mode=True)
    try:
        result = routes.ensure(module.params["advmss"], module.check_mode)
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field, value=short(exc.value))
    before = {f"{r['family']} via {r['gateway']}": r["before"] for r in result["routes"]}
    after = {f"{r['family']} via {r['gateway']}": r["after"] for r in result["routes"]}
    module.exit_json(changed=result["changed"], routes=result["routes"], diff={"before": before, "after": after})


if __name__ == "__main__":
    main()
