#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: ip_address
short_description: Addresses on a network device, such as the VIPs a backend binds on lo
version_added: 0.1.0
description:
  - Adds or removes IPv4 and IPv6 addresses on a device through netlink (pyroute2).
  - A backend in direct server return owns each VIP locally, usually as C(/32) or C(/128) on C(lo),
    so the decapsulated packet is delivered to a local socket and the reply leaves from the VIP.
  - IPv6 addresses are added with C(nodad) (IFA_F_NODAD) by default, so they are usable at once
    instead of staying "tentative" during duplicate address detection.
  - An address on a tunnel device must be of a family the tunnel carries (an C(ipip) device takes
    no IPv6 address, an C(ip6tnl) device in mode C(ip6ip6) no IPv4); anything else fails before a
    change is made.
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
  device:
    description: The device the addresses belong to. It must exist.
    type: str
    default: lo
  addresses:
    description:
      - Addresses as C(ADDR) or C(ADDR/PREFIX). A bare address is a host address (C(/32) for
        IPv4, C(/128) for IPv6).
      - IPv6 addresses are identified by the address alone, so listing one that exists with another
        prefix length replaces it.
    type: list
    elements: str
    default: []
  state:
    description: Whether the listed addresses must be on the device or not.
    type: str
    choices: [present, absent]
    default: present
  exclusive:
    description:
      - Also remove addresses of the managed set that are not listed (only with O(state=present)).
      - The managed set is narrow on purpose, so a forgotten entry cannot cut the host off its
        network. It is the addresses that are permanent (not from DHCP or SLAAC, which have a
        lifetime), of scope global, with a host prefix length (C(/32), C(/128), what VIPs are)
        and, when O(managed_networks) is given, inside one of those networks.
      - Never in it are C(127.0.0.1/8) and C(::1) (scope host), link-local addresses, and
        addresses with any other prefix length (such as a C(/24) management address).
      - On a device other than C(lo) that carries a static C(/32) management address (some clouds
        do this), list it or restrict the set with O(managed_networks).
    type: bool
    default: false
  managed_networks:
    description: Restrict the managed set of O(exclusive) to addresses inside these networks.
    type: list
    elements: str
    default: []
  nodad:
    description: Add IPv6 addresses without duplicate address detection.
    type: bool
    default: true
seealso:
  - module: xdplb.katran.ip_tunnel
  - module: xdplb.katran.net_conf
"""

EXAMPLES = r"""
- name: Bind the VIPs on lo
  xdplb.katran.ip_address:
    addresses:
      - 192.0.2.10
      - 2001:db8:10::10

- name: Exactly these VIPs on lo - removes other /32 and /128 VIPs from earlier runs
  xdplb.katran.ip_address:
    addresses: "{{ backend_vips | map(attribute='address') | list }}"
    exclusive: true
    managed_networks: [192.0.2.0/24, 2001:db8:10::/64]

- name: Drop a VIP from a drained backend
  xdplb.katran.ip_address:
    addresses: [192.0.2.10]
    state: absent
"""

RETURN = r"""
device:
  description: The device.
  returned: always
  type: str
  sample: lo
before:
  description: Addresses on the device before, link-local ones left out.
  returned: always
  type: list
  elements: str
  sample: [127.0.0.1/8, '::1/128']
after:
  description: Addresses on the device after (or, in check mode, as they would be).
  returned: always
  type: list
  elements: str
  sample: [127.0.0.1/8, 192.0.2.10/32, 2001:db8:10::10/128, '::1/128']
added:
  description: Addresses added.
  returned: always
  type: list
  elements: str
  sample: [192.0.2.10/32, 2001:db8:10::10/128]
removed:
  description: Addresses removed.
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import addresses
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short


def main():
    module = AnsibleModule(
        argument_spec=dict(
            device=dict(type="str", default="lo"),
            addresses=dict(type="list", elements="str", default=[]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            exclusive=dict(type="bool", default=False),
            managed_networks=dict(type="list", elements="str", default=[]),
            nodad=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = addresses.ensure(
            params["device"], params["addresses"], state=params["state"],
            exclusive=params["exclusive"], managed_networks=params["managed_networks"],
            nodad=params["nodad"], check_mode=module.check_mode)
    except EngineError as exc:
        module.fail_json(msg=str(exc), field=exc.field, value=short(exc.value))
    diff = {"before_header": "%s addresses" % result["device"],
            "after_header": "%s addresses" % result["device"],
            "before": "".join(a + "\n" for a in result["before"]),
            "after": "".join(a + "\n" for a in result["after"])}
    module.exit_json(diff=diff, **result)


if __name__ == "__main__":
    main()
