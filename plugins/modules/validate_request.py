#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: validate_request
short_description: Check a whole request with the engine's own checks, on the controller, before any host is touched
version_added: 0.1.0
description:
  - Runs, on the controller, the checks the hosts would make of the balancer and backend roles'
    variables (the engine's own functions, not a second implementation), so that a request any host
    would refuse is refused before the first host changes.
  - "Balancer variables: O(balancers) hosts' C(balancer_vips) (every VIP and real: addresses, ports,
    protocols, flags, weights, duplicates, unknown keys, the map sizes), C(balancer_interface) (a
    device name the kernel accepts), C(balancer_xdp_mode), C(balancer_ring_size), C(balancer_gateway_mac),
    C(balancer_source_mode), C(balancer_source_v4), C(balancer_source_v6), C(balancer_max_packet_size)
    (what the state file and lb_config accept), C(balancer_engine_python), the health check defaults
    C(balancer_health_kind), C(balancer_health_interval), C(balancer_health_timeout), C(balancer_health_rise)
    and C(balancer_health_fall) (as the agent reads the state file's C(health); each VIP's own C(health) is
    resolved against them), C(balancer_health_state_file) (an absolute path the agent's unit can name),
    C(balancer_agent_mode) and C(balancer_agent_capabilities) (Linux capability names)."
  - "With C(balancer_bgp_enabled), the BGP variables as M(xdplb.katran.bird_config) checks its O(xdplb.katran.bird_config#module:config):
    C(balancer_bgp_local_as), C(balancer_bgp_router_id), C(balancer_bgp_families), C(balancer_bgp_peers) (addresses, AS numbers,
    the family of each peer, duplicates, names), C(balancer_bgp_password) (not without peers, never quoted),
    C(balancer_bgp_communities), C(balancer_bgp_med), C(balancer_bgp_vip_attributes), C(balancer_bgp_bfd_interval),
    C(balancer_bgp_bfd_multiplier), C(balancer_bgp_table) (not a table of the kernel's own); C(balancer_bgp_mode) and the
    paths C(balancer_bgp_config_file), C(balancer_bgp_socket), C(balancer_bgp_pidfile) and C(balancer_bgp_drain_file)."
  - "With C(balancer_metrics_enabled), C(balancer_agent) (the agent serves the metrics), C(balancer_metrics_listen_address)
    (an IP address) and C(balancer_metrics_port) (1 to 65535)."
  - "Backend variables: O(backends) hosts' C(backend_vips) (addresses as ip_address binds them to lo,
    duplicates), C(backend_interface), C(backend_ipip_device), C(backend_ip6tnl_device),
    C(backend_tunnel_address), C(backend_arp_ignore), C(backend_arp_announce), C(backend_advmss),
    C(backend_rp_filter) (2 needs a tunnel address) and C(backend_engine_python)."
  - Errors name the host, the user's variable path (C(balancer_vips[2].reals[0].weight)) and the value,
    cut to a readable length; every bad host is reported, hosts sharing an error on one line.
  - What only a host can tell (whether the interface exists, the gateway's MAC, the kernel's tunnel
    modules) is checked by the roles on the host, still before they change it.
  - Nothing is changed anywhere; the hosts are not contacted.
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
  action:
    description: The checks run in the collection's action plugin of the same name, on the controller.
    support: full
options:
  role:
    description:
      - Check this host's variables of the role, as the role sees them (its defaults included), as the first
        task of the balancer and backend roles do. The message then does not repeat the host's name.
      - Without it, the variables of the hosts in O(balancers) and O(backends) are read from C(hostvars)
        (inventory, extra vars, facts; role defaults are valid and need no check).
    type: str
    choices: [balancer, backend]
  balancers:
    description: Inventory names of the hosts whose balancer variables are checked.
    type: list
    elements: str
    default: []
  backends:
    description: Inventory names of the hosts whose backend variables are checked.
    type: list
    elements: str
    default: []
  require_balancer_vips:
    description: Each host of O(balancers) must have C(balancer_vips) (C(site.yml); C(rollout.yml) keeps a host's own).
    type: bool
    default: false
  backend_vips_from:
    description:
      - A backend without C(backend_vips) serves VIP addresses of C(balancer_vips), as C(site.yml) derives
        them (its own C(balancer_vips), else this host's, the first balancer's). Those addresses are checked
        as the backend role would bind them (only when the balancers' variables are valid).
      - Unset, a backend without C(backend_vips) is not checked for VIPs.
    type: str
  drain:
    description:
      - Check the variables of C(drain.yml) and C(undrain.yml) a balancer would refuse, C(drain_addresses)
        (IP addresses) and C(undrain_weight) (a real's weight, 1 to 65535), on each host of O(balancers).
    type: bool
    default: false
notes:
  - Types and choices of the variables are the roles' argument specs' (M(ansible.builtin.validate_argument_spec));
    this module checks the contents those specs cannot express.
"""

EXAMPLES = r"""
- name: The whole request, before any host is touched
  xdplb.katran.validate_request:
    balancers: "{{ groups['balancers'] | default([]) | select('in', ansible_play_hosts_all) | list }}"
    backends: "{{ groups['backends'] | default([]) | select('in', ansible_play_hosts_all) | list }}"
    require_balancer_vips: true
    backend_vips_from: "{{ (groups['balancers'] | default([]))[:1] | join('') }}"
  run_once: true

- name: A role's variables on its host (first task of the role)
  xdplb.katran.validate_request:
    role: balancer
"""

RETURN = r"""
msg:
  description:
    - "C(the request is valid), or every error, one per distinct error, each with the hosts that
      have it, such as C(lb2: balancer_vips[0].port: 70000 must be <= 65535)."
  returned: always
  type: str
  sample: "the request is refused (checked on the controller, before any host was touched): lb1, lb2: balancer_vips[0].port: 70000 must be <= 65535"
errors:
  description: Each error apart, with the host (null with O(role)), the variable path and its value (cut when long).
  returned: always
  type: list
  elements: dict
  sample: [{host: lb2, field: "balancer_vips[0].port", value: 70000, msg: "balancer_vips[0].port: 70000 must be <= 65535"}]
"""
