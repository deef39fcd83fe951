#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bird_config
short_description: Configure BIRD 2 to announce the balancer's VIPs over BGP (with BFD), validated and reloaded
version_added: 0.1.0
description:
  - Renders BIRD 2's configuration for the BGP request O(config) and installs it at O(path).
  - BIRD announces only the host routes the health-check agent keeps in the kernel table O(config.table)
    (one per VIP this balancer can serve; the agent withdraws them when it cannot, and the kernel when the
    agent dies), so the file depends on the arguments only, never on health.
  - The request is checked first (errors name the field, such as C(peers[1].address), and quote the value);
    the new text is compared with the file, and only a different text is written.
  - A new file is first written next to O(path) and parsed with C(bird -p -c); when BIRD refuses it the
    module fails quoting BIRD's message and O(path) is not touched. It is then renamed into place (mode
    C(0640), group C(bird) when that group exists, else C(0600)).
  - When a BIRD answers on O(socket) and O(reload) is true it is told to read the file again
    (C(birdc configure)); sessions whose settings did not change stay up (a filter change, such as a
    community or a MED, re-exports the routes without restarting the session). When BIRD does not take
    it, the previous file is put back and the module fails.
  - Passwords are never shown, neither in the diff nor in the results.
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
    details: The diff is the configuration text with every password replaced by C(********).
  idempotent:
    support: full
options:
  path:
    description: BIRD's configuration file (the one BIRD runs with, Debian's C(/etc/bird/bird.conf)).
    type: path
    default: /etc/bird/bird.conf
  socket:
    description: BIRD's control socket (C(birdc -s)); when no BIRD answers there the file is only written.
    type: path
    default: /run/bird/bird.ctl
  pidfile:
    description: BIRD's pid file; not used to find BIRD (the socket is), accepted so a play can pass what it started BIRD with.
    type: path
  validate_binary:
    description: The C(bird) program that parses the new file (C(bird -p -c)); C(birdc) is taken from the same directory when this is a path.
    type: str
    default: bird
  reload:
    description: Tell a running BIRD to read the changed file (C(birdc configure)).
    type: bool
    default: true
  config:
    description: The BGP request. Each key is checked by the engine; null values take the defaults below.
    type: dict
    required: true
    suboptions:
      local_as:
        description: This balancer's AS number, 1 to 4294967295.
        type: raw
        required: true
      router_id:
        description: BIRD's router id, an IPv4 address; empty lets BIRD take one of the host's IPv4 addresses.
        type: raw
        default: ""
      families:
        description: Address families of the sessions and of the VIPs announced (V(ipv4), V(ipv6)); a peer of another family is an error.
        type: raw
        default: [ipv4, ipv6]
      peers:
        description: The BGP peers (routers); one BIRD protocol each, with the peer's address family as its only channel.
        type: list
        elements: dict
        default: []
        suboptions:
          address:
            description: The peer's IPv4 or IPv6 address.
            type: raw
            required: true
          as:
            description: The peer's AS number.
            type: raw
            required: true
          password:
            description: TCP-MD5 password of this session; empty takes O(config.password).
            type: str
          bfd:
            description: Run BFD with the peer, so a lost path is noticed within O(config.bfd_interval) times O(config.bfd_multiplier).
            type: raw
            default: true
          name:
            description: BIRD's protocol name (1 to 32 of a-z, 0-9 and _); empty makes one from the address (C(peer_10_20_1_1)).
            type: raw
      password:
        description: TCP-MD5 password of the peers without their own; an error without peers.
        type: str
        default: ""
      communities:
        description: Standard communities C(A:B) (each 0 to 65535) added to every VIP route.
        type: raw
        default: []
      med:
        description: MED (0 to 4294967295) of every VIP route; null sets none.
        type: raw
      vip_attributes:
        description:
          - Per VIP address, C(communities) and C(med) that replace the global ones for that address's route
            (a key left out keeps the global value).
        type: raw
        default: {}
      bfd_interval:
        description: BFD minimum receive and transmit interval, in milliseconds (10 to 10000).
        type: raw
        default: 100
      bfd_multiplier:
        description: BFD packets missed before a session is down (1 to 255).
        type: raw
        default: 3
      table:
        description: The kernel routing table the agent keeps its VIP routes in (not 0, 253, 254 nor 255).
        type: raw
        default: 4242
seealso:
  - module: xdplb.katran.lb_vip
"""

EXAMPLES = r"""
- name: Announce the VIPs to the top-of-rack router over IPv4 and IPv6, with BFD
  xdplb.katran.bird_config:
    config:
      local_as: 65010
      peers:
        - {address: 10.20.1.1, as: 65000}
        - {address: "fd00:20:1::1", as: 65000}
      communities: ["65010:100"]

- name: A BIRD of its own (a lab namespace), with a password and a MED for one VIP
  xdplb.katran.bird_config:
    path: /var/lib/lab/lb1/bird/bird.conf
    socket: /var/lib/lab/lb1/bird/bird.ctl
    config:
      local_as: 65010
      families: [ipv4]
      password: "{{ vault_bgp_password }}"
      peers: [{address: 10.20.1.1, as: 65000}]
      vip_attributes:
        10.99.0.1: {med: 100}
"""

RETURN = r"""
path:
  description: The configuration file.
  returned: always
  type: str
  sample: /etc/bird/bird.conf
reloaded:
  description: Whether a running BIRD was told to read the changed file, and took it.
  returned: always
  type: bool
running:
  description: Whether a BIRD answered on O(socket).
  returned: always
  type: bool
protocols:
  description: The names of the protocols the configuration defines, as C(birdc show protocols) lists them.
  returned: always
  type: list
  elements: str
  sample: [device1, xdplb_bfd, xdplb_vips4, xdplb_vips6, peer_10_20_1_1, peer_fd00_20_1__1]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bgp import bird
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short

# A dict literal: "as" is a keyword.
PEER = {"address": dict(type="raw", required=True), "as": dict(type="raw", required=True),
        "password": dict(type="str", no_log=True), "bfd": dict(type="raw", default=True), "name": dict(type="raw")}
CONFIG = dict(local_as=dict(type="raw", required=True), router_id=dict(type="raw", default=""),
              families=dict(type="raw", default=["ipv4", "ipv6"]),
              peers=dict(type="list", elements="dict", default=[], options=PEER),
              password=dict(type="str", default="", no_log=True),
              communities=dict(type="raw", default=[]), med=dict(type="raw"),
              vip_attributes=dict(type="raw", default={}), bfd_interval=dict(type="raw", default=100),
              bfd_multiplier=dict(type="raw", default=3), table=dict(type="raw", default=4242))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/bird/bird.conf"),
            socket=dict(type="path", default="/run/bird/bird.ctl"),
            pidfile=dict(type="path"),
            validate_binary=dict(type="str", default="bird"),
            reload=dict(type="bool", default=True),
            config=dict(type="dict", required=True, options=CONFIG),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        res = bird.apply(p["path"], p["socket"], p["config"], binary=p["validate_binary"], reload=p["reload"],
                         check_mode=module.check_mode)
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field, value=short(exc.value))
    before, after = res.pop("before"), res.pop("after")
    if module._diff:
        res["diff"] = {"before": before, "after": after, "before_header": p["path"], "after_header": p["path"]}
    module.exit_json(**res)


if __name__ == "__main__":
    main()
