#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: ip_tunnel
short_description: ipip and ip6tnl devices that decapsulate what the balancers send
version_added: 0.1.0
description:
  - Creates, changes and removes C(ipip) (IPv4 outer header) and C(ip6tnl) (IPv6 outer header)
    devices through netlink (pyroute2).
  - By default the device is B(external) (collect_metadata, C(ip link add NAME type ipip external)),
    so it takes tunnelled packets from any peer, which is what a backend behind several balancers
    needs. With O(external=false) it is a point-to-point tunnel between O(local) and O(remote).
  - The kernel keeps at most one external device per kind and network namespace. If one exists
    under another name the module fails and names it, or with O(adopt=true) manages that device
    under its current name (RV(name) tells which).
  - If an existing device with O(name) differs in O(external), O(local), O(remote) or O(mode) it
    is deleted and created again (RV(recreated)); a device of another kind with that name is never
    touched.
  - Where the kernel cannot create the kind (no C(ipip) or C(ip6_tunnel) module) the module fails
    saying so. Decapsulate with BPF there instead (the backend role's decap mode C(bpf)).
  - B(Fallback devices.) Loading the C(ipip) module creates C(tunl0), loading C(ip6_tunnel)
    creates C(ip6tnl0), in every namespace (unless C(net.core.fb_tunnels_only_for_init_net) says
    otherwise). They are wildcard tunnels the kernel will not delete. A packet goes to a matching
    point-to-point tunnel first, then to the external device if it is up, then to the fallback
    device if it is up. Their C(rp_filter) matters only when they receive packets (for example a
    setup that decapsulates on C(tunl0) itself). Name C(tunl0) or C(ip6tnl0) to manage the
    fallback device's O(up), O(mtu) and O(addresses); O(state=absent), O(local) and O(remote) are
    refused for them. RV(fallback) reports the fallback device of the kind in every result.
author:
  - xdplb.katran developers (@xdplb)
extends_documentation_fragment:
  - xdplb.katran.attributes
  - xdplb.katran.attributes.platform
attributes:
  check_mode:
    support: full
    details: Check mode cannot tell whether the kernel module loads; it warns when it is not loaded.
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  name:
    description: Device name (at most 15 characters).
    type: str
    required: true
  kind:
    description: C(ipip) for an IPv4 outer header, C(ip6tnl) for an IPv6 outer header.
    type: str
    choices: [ipip, ip6tnl]
    default: ipip
  state:
    description: Whether the device must exist.
    type: str
    choices: [present, absent]
    default: present
  external:
    description:
      - An external (collect_metadata) device, accepting tunnelled packets from any peer.
      - Set to V(false) for a point-to-point tunnel, which needs O(remote) and/or O(local).
    type: bool
    default: true
  local:
    description: Local endpoint of a point-to-point tunnel, of the kind's outer family.
    type: str
  remote:
    description: Remote endpoint of a point-to-point tunnel, of the kind's outer family.
    type: str
  mode:
    description:
      - Which inner packets the device accepts. For C(ipip) V(ipip) or V(any); for C(ip6tnl)
        V(any) (IPv4 and IPv6 inside IPv6), V(ip6ip6) or V(ipip6).
      - Unset means V(any) on creation (as iproute2 does) and whatever an existing device has.
    type: str
    choices: [any, ipip, ip6ip6, ipip6]
  mtu:
    description: MTU of the device (68-65535; 1280 at least in mode V(ip6ip6)). Unset leaves it.
    type: int
  addresses:
    description:
      - Addresses on the device, C(ADDR) or C(ADDR/PREFIX). When given, the list is exact for the
        device's global addresses (link-local ones stay); unset leaves addresses alone.
      - Loose reverse-path filtering (C(rp_filter=2)) drops packets arriving on a device without
        an address; an address here avoids that.
      - The family must be one the tunnel carries (no IPv6 on C(ipip)).
    type: list
    elements: str
  up:
    description: Administrative state of the device.
    type: bool
    default: true
  adopt:
    description:
      - When another external device of the kind exists under a different name, manage it instead
        of failing.
    type: bool
    default: false
seealso:
  - module: xdplb.katran.net_conf
  - module: xdplb.katran.ip_address
"""

EXAMPLES = r"""
- name: Catch-all IPIP decapsulation (v4 in v4)
  xdplb.katran.ip_tunnel:
    name: ipip0

- name: Catch-all IPv6 decapsulation (v6 in v6 and v4 in v6)
  xdplb.katran.ip_tunnel:
    name: ipip60
    kind: ip6tnl

- name: Keep the fallback device from receiving anything
  xdplb.katran.ip_tunnel:
    name: tunl0
    up: false

- name: A point-to-point tunnel with an address (so loose rp_filter accepts its packets)
  xdplb.katran.ip_tunnel:
    name: tun-lb1
    external: false
    local: 198.51.100.20
    remote: 198.51.100.1
    mtu: 1480
    addresses: [10.255.0.2/32]
"""

RETURN = r"""
name:
  description: The device managed (another name than asked when an external device was adopted).
  returned: always
  type: str
  sample: ipip0
kind:
  description: The tunnel kind.
  returned: always
  type: str
  sample: ipip
created:
  description: Whether the device was (or would be) created.
  returned: always
  type: bool
recreated:
  description: Whether the device was (or would be) deleted and created again with other parameters.
  returned: always
  type: bool
adopted:
  description: Whether an existing external device under another name was managed instead.
  returned: always
  type: bool
before:
  description: The device before; empty when it did not exist.
  returned: always
  type: dict
  sample: {}
after:
  description: The device after (in check mode as it would be; an MTU the kernel picks is null).
  returned: always
  type: dict
  sample: {name: ipip0, kind: ipip, external: true, local: null, remote: null, mode: any,
           mtu: 1480, up: true, addresses: []}
fallback:
  description: The kind's fallback device (tunl0 or ip6tnl0) and whether it exists and is up.
  returned: always
  type: dict
  sample: {name: tunl0, present: true, up: false}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import tunnel
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            kind=dict(type="str", choices=["ipip", "ip6tnl"], default="ipip"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            external=dict(type="bool", default=True),
            local=dict(type="str"),
            remote=dict(type="str"),
            mode=dict(type="str", choices=["any", "ipip", "ip6ip6", "ipip6"]),
            mtu=dict(type="int"),
            addresses=dict(type="list", elements="str"),
            up=dict(type="bool", default=True),
            adopt=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = dict(module.params)
    try:
        result = tunnel.ensure(check_mode=module.check_mode, **params)
    except EngineError as exc:
        module.fail_json(msg=str(exc), field=exc.field, value=short(exc.value))
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(diff={"before": result["before"], "after": result["after"]}, **result)


if __name__ == "__main__":
    main()
