#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lb_config
short_description: Set the XDP balancer's balancer-wide settings (MACs, outer source, packet size)
version_added: 0.1.0
description:
  - Writes the balancer's single configuration entry (C(lb_config) under O(pin_root)), that is the MAC of
    O(interface) as the source of transmitted frames, the next hop (gateway) MAC, how the outer
    source address of encapsulated packets is chosen, and the largest packet balanced.
  - The gateway MAC is O(gateway_mac) when given, else the neighbour entry of O(gateway), else of
    the default route's gateway through O(interface) (IPv4 first, then IPv6). When the neighbour is
    not resolved yet the module sends one datagram towards it to trigger resolution and waits up
    to O(resolve_timeout) seconds, then fails naming the gateway and the neighbour state.
  - Every argument is checked before anything is looked up or written; values are read back
    from the kernel map, so the module reports a change only when the entry differs.
author:
  - xdplb.katran developers (@xdplb)
extends_documentation_fragment:
  - xdplb.katran.attributes
  - xdplb.katran.attributes.platform
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  pin_root:
    description: Directory in the BPF filesystem holding the balancer's pinned maps.
    type: path
    default: /sys/fs/bpf/xdplb
  interface:
    description: The balancer's interface (the one the XDP program is attached to); its MAC becomes the frames' source.
    type: str
    required: true
  gateway_mac:
    description: Next-hop MAC towards the reals. Mutually exclusive with O(gateway).
    type: str
  gateway:
    description: Address of the next hop whose MAC is resolved (neighbour table of O(interface)).
    type: str
  source_mode:
    description:
      - V(balancer) uses O(source_v4) / O(source_v6) (by default the first global addresses of
        O(interface)) as the outer source.
      - V(per_flow) derives the outer source from the client's address and port (C(172.16.0.0/16)
        for IPv4 outer headers, C(100::/64) for IPv6), as Katran does, so backends spread flows
        over their receive queues. Backends must accept (not filter) these sources.
    type: str
    choices: [balancer, per_flow]
    default: balancer
  source_v4:
    description: Outer IPv4 source address; default the interface's first global IPv4 address.
    type: str
  source_v6:
    description: Outer IPv6 source address; default the interface's first global IPv6 address.
    type: str
  max_packet_size:
    description:
      - Largest packet (IP header and payload, before encapsulation) the balancer forwards to a
        real; larger VIP packets are dropped and counted. V(0) means no limit.
    type: int
    default: 0
  resolve_timeout:
    description: Seconds to wait for the gateway's neighbour entry to resolve.
    type: float
    default: 3.0
seealso:
  - module: xdplb.katran.xdp_program
  - module: xdplb.katran.lb_vip
"""

EXAMPLES = r"""
- name: Gateway from the default route, outer source from the interface
  xdplb.katran.lb_config:
    interface: eth0

- name: Explicit gateway MAC, per-flow outer source, packets up to 1480 bytes
  xdplb.katran.lb_config:
    interface: eth0
    gateway_mac: "02:00:00:00:00:fe"
    source_mode: per_flow
    max_packet_size: 1480
"""

RETURN = r"""
config:
  description: The configuration now in the map (or that would be, in check mode).
  returned: always
  type: dict
  sample: {if_mac: "02:00:00:00:00:01", gateway_mac: "02:00:00:00:00:fe", source_mode: balancer,
           source_v4: 10.0.0.2, source_v6: "fd00::2", max_packet_size: 0}
previous:
  description: The configuration found in the map before.
  returned: always
  type: dict
gateway:
  description: Address whose MAC was resolved, or null when O(gateway_mac) was given.
  returned: always
  type: str
gateway_mac_from:
  description: Where the gateway MAC came from (V(given), V(neighbour), V(default route)).
  returned: always
  type: str
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import libbpf
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pin_root=dict(type="path", default="/sys/fs/bpf/xdplb"),
            interface=dict(type="str", required=True),
            gateway_mac=dict(type="str"),
            gateway=dict(type="str"),
            source_mode=dict(type="str", choices=list(balancer.SOURCE_MODES), default="balancer"),
            source_v4=dict(type="str"),
            source_v6=dict(type="str"),
            max_packet_size=dict(type="int", default=0),
            resolve_timeout=dict(type="float", default=3.0),
        ),
        mutually_exclusive=[("gateway_mac", "gateway")],
        supports_check_mode=True,
    )
    p = module.params
    try:
        req = balancer.config_request(p["interface"], gateway_mac=p["gateway_mac"], gateway=p["gateway"],
                                      source_mode=p["source_mode"], source_v4=p["source_v4"],
                                      source_v6=p["source_v6"], max_packet_size=p["max_packet_size"])
        res = balancer.ensure_config(p["pin_root"], req, check_mode=module.check_mode,
                                     timeout=p["resolve_timeout"])
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field, value=short(exc.value))
    except libbpf.BpfError as exc:
        module.fail_json(msg=str(exc), errno=exc.errno)
    for warning in res.pop("warnings"):
        module.warn(warning)
    res["diff"] = {"before": json.dumps(res["previous"], indent=2, sort_keys=True) + "\n",
                   "after": json.dumps(res["config"], indent=2, sort_keys=True) + "\n",
                   "before_header": "lb_config", "after_header": "lb_config"}
    module.exit_json(**res)


if __name__ == "__main__":
    main()
