#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lb_info
short_description: Read the XDP balancer's program, config, VIPs, reals and counters
version_added: 0.1.0
description:
  - Reads, and never changes, the balancer whose maps are pinned under O(pin_root) - and, with
    O(interface), the XDP program attached there.
  - Counters are per-CPU in the kernel and returned summed over CPUs.
  - The result is shaped for jmespath, e.g. C(vips[?port==`80`].reals[].address) or
    C(reals[?stats.packets==`0`].address).
author:
  - xdplb.katran developers (@xdplb)
extends_documentation_fragment:
  - xdplb.katran.attributes
  - xdplb.katran.attributes.platform
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  pin_root:
    description: Directory in the BPF filesystem holding the balancer's pinned maps.
    type: path
    default: /sys/fs/bpf/xdplb
  interface:
    description: Also report the XDP program attached to this interface.
    type: str
  stats:
    description: Include counters (per VIP, per real and global).
    type: bool
    default: true
  ring_slots:
    description: Count each real's slots in its VIP's ring (reads every ring; slower with many VIPs).
    type: bool
    default: false
  health_state_file:
    description:
      - The balancer agent's health state file (the balancer role's C(balancer_health_state_file), the agent's
        default C(/var/lib/xdplb/health.json)). Each real then has C(health) and each VIP C(fail_open).
      - A missing file means the agent has found nothing yet (every real C(unknown), which counts as up).
      - Not read by default, so that hosts sharing one file system (the lab's) never show another's findings.
    type: path
  state_file:
    description:
      - The balancer state file the role keeps (C(balancer_state_dir)/balancer.json). Each real then has
        C(configured_weight), the weight the operator set, next to C(weight), the one the kernel has
        (0 for a real the agent took out of the ring).
    type: path
seealso:
  - module: xdplb.katran.lb_vip
"""

EXAMPLES = r"""
- name: Read the balancer
  xdplb.katran.lb_info:
    interface: eth0
  register: lb

- name: Reals of the port-80 VIPs
  ansible.builtin.debug:
    msg: "{{ lb | community.general.json_query('vips[?port==`80`].reals[].address') }}"

- name: Read the balancer with the agent's findings
  xdplb.katran.lb_info:
    health_state_file: /var/lib/xdplb/health.json
    state_file: /etc/xdplb/balancer.json
  register: lb

- name: Reals the agent took out of the rings
  ansible.builtin.debug:
    msg: "{{ lb.vips | map(attribute='reals') | flatten | selectattr('health.state', 'eq', 'down') | map(attribute='address') | unique }}"

- name: Fail when the program is not attached natively
  ansible.builtin.assert:
    that: lb.program.mode == 'native'
"""

RETURN = r"""
loaded:
  description: Whether balancer maps are pinned under O(pin_root); everything else is empty when not.
  returned: always
  type: bool
program:
  description: XDP program on O(interface) (C(prog_id), C(tag), C(name), C(mode)), null when none or no O(interface).
  returned: always
  type: dict
  sample: {prog_id: 1560, tag: 15e030f539b7b6fa, name: xdp_balancer, mode: native}
config:
  description: Balancer-wide settings (C(if_mac), C(gateway_mac), C(source_mode), C(source_v4), C(source_v6), C(max_packet_size)).
  returned: when loaded
  type: dict
vips:
  description:
    - VIPs sorted by address, port and protocol, each with C(key), C(address), C(port), C(protocol),
      C(flags), C(icmp_echo), C(vip_num), C(ring) (C(present), C(consistent)), C(stats)
      (C(packets), C(bytes)) and C(reals).
    - Each real has C(address), C(weight), C(index), C(stats) (packets and bytes of this VIP sent
      to this real, the per-(VIP, real) counters, zero from the moment the real joined the VIP) and,
      with O(ring_slots), C(ring_slots); with O(ring_slots) the VIP's C(ring) also has the C(id) of the
      installed ring map (a swap installs a new one).
    - With O(health_state_file) or O(state_file), each real also has C(health) (C(state) C(up), C(down)
      or C(unknown); C(since), C(reason) and C(last), the last check's C(ok), C(at) and C(reason)) and
      C(configured_weight) (from O(state_file), else null), and each VIP C(fail_open) (every real
      in its ring is down, so the agent kept the last ring).
  returned: when loaded
  type: list
  elements: dict
  sample:
    - key: 192.0.2.10:80/tcp
      address: 192.0.2.10
      port: 80
      protocol: tcp
      flags: []
      icmp_echo: true
      vip_num: 0
      ring: {present: true, consistent: true}
      stats: {packets: 1200, bytes: 96000}
      fail_open: false
      reals:
        - address: 10.1.0.11
          weight: 100
          configured_weight: 100
          index: 1
          stats: {packets: 600, bytes: 48000}
          health: {state: up, since: 1765000000.0, reason: connected in 0.4 ms,
                   last: {ok: true, at: 1765000001.0, reason: connected in 0.4 ms}}
reals:
  description:
    - Every real in use, with C(index), C(address), C(vips) (keys of the VIPs using it) and C(stats)
      (the real's counters over all its VIPs).
  returned: when loaded
  type: list
  elements: dict
global:
  description:
    - Global counters (C(pass), C(tx), C(drop) and the C(drop_*) breakdown, C(conn_hit), C(conn_miss),
      C(conn_evict), ...).
    - C(conn_evict) counts new flows that took the connection-table entry of another live flow
      (its set was full); that flow follows its VIP's ring from then on.
  returned: when loaded and O(stats) is true
  type: dict
unattributed:
  description:
    - Packets and bytes (C(packets), C(bytes)) forwarded for a (VIP, real) that has no per-(VIP, real)
      counter, e.g. connection-table hits to a real removed from that VIP but still used by another, or
      traffic between loading a balancer.o that adds these counters and the next VIP run.
  returned: when loaded and O(stats) is true
  type: dict
  sample: {packets: 0, bytes: 0}
limits:
  description: Map capacities and use (C(max_vips), C(max_reals), C(vips), C(reals), C(reals_freed), C(reals_never_used)).
  returned: when loaded
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer, healthstate
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import libbpf, program
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pin_root=dict(type="path", default="/sys/fs/bpf/xdplb"),
            interface=dict(type="str"),
            stats=dict(type="bool", default=True),
            ring_slots=dict(type="bool", default=False),
            health_state_file=dict(type="path"),
            state_file=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        prog = None
        if p["interface"]:
            prog = program.attached(program.ifindex(p["interface"]))
            if prog is not None:
                prog.pop("map_ids")
        if not balancer.is_loaded(p["pin_root"]):
            module.exit_json(changed=False, loaded=False, program=prog, vips=[], reals=[])
        data = healthstate.annotate_from(balancer.info(p["pin_root"], stats=p["stats"], ring_slots=p["ring_slots"]),
                                         p["health_state_file"], p["state_file"])
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field)
    except libbpf.BpfError as exc:
        module.fail_json(msg=str(exc), errno=exc.errno)
    module.exit_json(changed=False, loaded=True, program=prog, **data)


if __name__ == "__main__":
    main()
