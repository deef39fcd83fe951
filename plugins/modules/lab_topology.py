#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_topology
short_description: Build or remove a load-balancer lab of network namespaces on one host
version_added: 0.1.0
description:
  - Creates a router namespace and, joined to it by veth pairs, a client, O(balancers) balancer
    namespaces and O(backends) backend namespaces, with IPv4 and IPv6 addresses, default routes
    and the VIP prefixes routed to the balancers (ECMP with layer-4 hashing when there are several).
  - Balancer and backend links get O(fabric_mtu) so encapsulated packets fit; XDP_PASS runs on the
    router ports that face balancers (XDP_TX on a veth needs a program on the peer) and transmit
    checksum offload is off on every lab interface.
  - Addresses, MAC addresses and names are derived from the indices; re-running changes nothing.
  - O(state=absent) removes every namespace whose name matches the lab's pattern, whatever the lab's
    size was, and the per-host directories given in O(host_dirs).
  - With O(routing=bgp) the router has no routes of its own to the VIP prefixes (static ones left from
    O(routing=static) are removed). It runs FRR (zebra, bgpd, bfdd) in its namespace as a private
    instance under C(<state_root>/<router>/frr), with an eBGP session per balancer and family (IPv4
    and IPv6, BFD 100 ms x 3, ECMP over up to 8 balancers), accepting only routes within
    O(vip_prefix4)/O(vip_prefix6) and announcing nothing. A changed configuration restarts it;
    O(routing=static) stops it and puts the static routes back.
  - With O(prometheus=true) the router also runs Prometheus in its namespace (never in the controller's
    own), its files under C(<state_root>/<router>/prometheus), listening on the router's address facing
    the client, port O(prometheus_port). It scrapes every balancer (job C(xdplb_balancer), port 9437) and
    backend (job C(xdplb_backend), port 9438) at its lab IPv4 address every second, label C(instance) the
    lab host name, and evaluates O(prometheus_rule_files) every second. The task returns when its
    C(/-/ready) answers. A changed configuration or rule file restarts it; O(prometheus=false) stops it.
  - "Runs on the controller as root (C(connection: local))."
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
  state:
    description: Whether the lab exists.
    type: str
    choices: [present, absent]
    default: present
  prefix:
    description: Prefix of every namespace name (C(<prefix>router), C(<prefix>lb1), C(<prefix>be1), ...).
    type: str
    default: xkt-
  balancers:
    description: Number of balancer namespaces.
    type: int
    default: 1
  backends:
    description: Number of backend namespaces.
    type: int
    default: 2
  fabric_mtu:
    description: MTU of the router links to balancers and backends; must leave room for 40 bytes of IP6IP6.
    type: int
    default: 1600
  client_mtu:
    description: MTU of the client link.
    type: int
    default: 1500
  vip_prefix4:
    description: IPv4 prefix the router sends to the balancers.
    type: str
    default: 10.99.0.0/24
  vip_prefix6:
    description: IPv6 prefix the router sends to the balancers.
    type: str
    default: fd00:99::/64
  xdp_pass_object:
    description:
      - BPF object with an XDP_PASS program in section C(xdp), attached to the router ports facing
        balancers. Required with O(state=present).
    type: path
  routing:
    description:
      - How the router reaches the VIPs. V(static) routes the VIP prefixes to every balancer (ECMP);
        V(bgp) learns them from the balancers over BGP, with FRR in the router namespace.
    type: str
    choices: [static, bgp]
    default: static
  state_root:
    description:
      - Parent of the per-host directories; with O(routing=bgp) the router's FRR files (configuration,
        pid files, sockets, C(frr.log)) go to C(<state_root>/<router>/frr). Required with O(routing=bgp);
        given with O(routing=static), an FRR started there before is stopped.
    type: path
  router_as:
    description: AS number of the router with O(routing=bgp).
    type: int
    default: 65000
  balancer_as:
    description: AS number the router expects from every balancer with O(routing=bgp).
    type: int
    default: 65010
  prometheus:
    description: Whether the router runs the lab's Prometheus. Needs O(state_root) and C(prometheus) on the controller.
    type: bool
    default: false
  prometheus_port:
    description: Port of the lab's Prometheus on the router's client-facing address.
    type: int
    default: 9090
  prometheus_rule_files:
    description: Rule files the lab's Prometheus loads (copied into its directory).
    type: list
    elements: path
    default: []
  host_dirs:
    description:
      - Directories holding one sub-directory per lab host (state files, BPF pins); with
        O(state=absent) the sub-directories of this lab are removed.
    type: list
    elements: path
    default: []
"""

EXAMPLES = r"""
- name: Build a lab with two balancers and three backends
  xdplb.katran.lab_topology:
    balancers: 2
    backends: 3
    xdp_pass_object: "{{ playbook_dir }}/../files/bpf/pass.o"

- name: The same lab, the router learning the VIPs from the balancers over BGP
  xdplb.katran.lab_topology:
    balancers: 2
    backends: 3
    routing: bgp
    state_root: /run/xdplb-lab
    xdp_pass_object: "{{ playbook_dir }}/../files/bpf/pass.o"

- name: Remove it
  xdplb.katran.lab_topology:
    state: absent
    host_dirs:
      - /run/xdplb-lab
      - /sys/fs/bpf/xdplb-lab
"""

RETURN = r"""
changes:
  description: What was (or, in check mode, would be) changed, one line per change.
  returned: always
  type: list
  elements: str
lab:
  description: The lab as built; the inventory is written from it.
  returned: when O(state=present)
  type: dict
  contains:
    router:
      description: Name of the router namespace.
      type: str
    hosts:
      description: One entry per host namespace (client, balancers, backends).
      type: list
      elements: dict
      sample:
        - kind: lb
          index: 1
          netns: xkt-lb1
          interface: eth0
          router_port: to-lb1
          mtu: 1600
          mac: "02:58:4b:20:01:02"
          router_mac: "02:58:4b:20:01:01"
          ipv4: 10.20.1.2/24
          ipv6: fd00:20:1::2/64
          gateway_ipv4: 10.20.1.1
          gateway_ipv6: "fd00:20:1::1"
vtysh:
  description: The argv prefix of a vtysh that talks to this lab's FRR (append C(-c) and a command).
  returned: when O(state=present) and O(routing=bgp)
  type: list
  elements: str
  sample: [vtysh, --vty_socket, /run/xdplb-lab/xkt-router/frr]
prometheus_url:
  description: Base URL of the lab's Prometheus, reachable from the router and the client namespaces.
  returned: when O(state=present) and O(prometheus=true)
  type: str
  sample: http://10.10.1.1:9090
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import lab as lab_engine
from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import labmonitor
from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import labrouting
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "absent"], default="present"),
            prefix=dict(type="str", default="xkt-"),
            balancers=dict(type="int", default=1),
            backends=dict(type="int", default=2),
            fabric_mtu=dict(type="int", default=lab_engine.FABRIC_MTU),
            client_mtu=dict(type="int", default=lab_engine.CLIENT_MTU),
            vip_prefix4=dict(type="str", default=lab_engine.VIP_PREFIX4),
            vip_prefix6=dict(type="str", default=lab_engine.VIP_PREFIX6),
            xdp_pass_object=dict(type="path", no_log=False),
            routing=dict(type="str", choices=list(lab_engine.ROUTINGS), default="static"),
            state_root=dict(type="path"),
            router_as=dict(type="int", default=labrouting.ROUTER_AS),
            balancer_as=dict(type="int", default=labrouting.BALANCER_AS),
            prometheus=dict(type="bool", default=False),
            prometheus_port=dict(type="int", default=labmonitor.PORT),
            prometheus_rule_files=dict(type="list", elements="path", default=[]),
            host_dirs=dict(type="list", elements="path", default=[]),
        ),
        required_if=[("state", "present", ["xdp_pass_object"]), ("routing", "bgp", ["state_root"]),
                     ("prometheus", True, ["state_root"])],
        supports_check_mode=True,
    )
    params = module.params
    try:
        if params["state"] == "absent":
            changes = lab_engine.absent(params["prefix"], params["host_dirs"], module.check_mode)
            module.exit_json(changed=bool(changes), changes=changes)
        lab = lab_engine.plan(params["prefix"], params["balancers"], params["backends"], params["fabric_mtu"],
                              params["client_mtu"], params["vip_prefix4"], params["vip_prefix6"])
        changes = lab_engine.present(lab, params["xdp_pass_object"], module.check_mode, params["routing"],
                                     params["state_root"], params["router_as"], params["balancer_as"],
                                     params["prometheus"], params["prometheus_port"], params["prometheus_rule_files"])
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field)
    extra = {}
    if params["routing"] == "bgp":
        extra["vtysh"] = labrouting.vtysh_argv(labrouting.frr_dir(params["state_root"], lab["router"]))
    if params["prometheus"]:
        extra["prometheus_url"] = labmonitor.url(lab, params["prometheus_port"])
    module.exit_json(changed=bool(changes), changes=changes, lab=lab, **extra)


if __name__ == "__main__":
    main()
