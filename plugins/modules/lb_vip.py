#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lb_vip
short_description: Put VIPs of the XDP balancer in service, change their reals, or remove them
version_added: 0.1.0
description:
  - Manages the VIPs of the balancer whose maps are pinned under O(pin_root) (loaded by
    M(xdplb.katran.xdp_program)). A VIP is an address, a port (0 for every port) and a protocol,
    with a list of reals (backends) and their weights.
  - Single form (O(address), O(port), O(protocol), O(reals)) manages one VIP and leaves the others
    alone. Set form (O(vips)) applies a whole list in one call; with O(purge=true) VIPs that are
    not listed are removed. The set form is what the balancer role uses, so hundreds of VIPs are
    one task.
  - The whole request is validated before anything is written (addresses, ports, protocols,
    flags, duplicate reals, negative or all-zero weights, IPv6 VIPs with IPv4 reals, more VIPs or
    reals than the maps hold); errors name the field, for example C(vips[3].reals[1].weight).
  - The current state is read from the kernel maps on every run. Only the difference is
    written; a VIP's Maglev ring is rebuilt and swapped in atomically only when its reals or
    weights changed, so other VIPs see no write at all.
  - A real with weight 0 is drained; it gets no new flows, but stays known to the balancer so
    established connections (connection table) keep reaching it.
  - Rings are identical on every balancer given the same VIP and reals (the hash is stable across
    hosts and Python versions), so flows keep their real when ECMP moves them between balancers.
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
  state:
    description:
      - V(present) puts the VIP (or every VIP of O(vips)) in service with exactly the given reals;
        V(absent) removes it (with O(vips), removes every listed VIP; only their address, port and
        protocol matter).
    type: str
    choices: [present, absent]
    default: present
  address:
    description: VIP address (IPv4 or IPv6). Single form; mutually exclusive with O(vips), O(src) and O(content).
    type: str
  port:
    description: VIP port, 0-65535; 0 is the any-port VIP of the address and protocol.
    type: int
  protocol:
    description: VIP protocol.
    type: str
    choices: [tcp, udp]
    default: tcp
  flags:
    description:
      - V(no_sport) hashes without the client's source port (all flows of a client go to one real).
      - V(no_conn_table) never uses the connection table (the ring alone decides; for UDP or
        stateless services).
      - V(dport_hash) hashes on the destination port only (port-0 VIPs that shard by port).
    type: list
    elements: str
    choices: [no_sport, no_conn_table, dport_hash]
  icmp_echo:
    description:
      - Answer ICMP echo requests (ping) to the VIP address. This is a property of the address,
        shared by all its VIPs; the default is V(true).
    type: bool
  reals:
    description:
      - The VIP's reals, a list whose items have C(address) (IPv4 or IPv6; an IPv6 VIP needs IPv6
        reals, an IPv4 VIP takes both) and C(weight) (0-65535, default 1; 0 drains the real). A
        plain address string is a real of weight 1.
      - Or the compact form, a mapping of address to weight (see the examples). For hundreds of
        VIPs it is several times cheaper for Ansible to template and transfer.
      - At least one real must have a weight above 0.
    type: raw
  vips:
    description:
      - Set form. A list of VIPs, each a mapping with C(address), C(port), C(protocol), C(flags),
        C(icmp_echo) and C(reals) as in the single form (either form of reals).
      - Suboptions are checked by the module itself (not by Ansible's argument checker), so a list of
        thousands of reals stays fast; errors name the item, such as C(vips[3].reals[1].weight).
    type: list
    elements: dict
  src:
    description:
      - Set form read from a JSON file on the managed host instead of O(vips) (for example the
        state file the balancer role writes for boot-time restore, whose C(vips) key is used; a
        plain JSON list works too). Keeps a very large VIP list out of the task arguments.
      - A JSON object is read with the boot-time restore's schema. Its C(vips) key is required (a
        missing or null list fails as C(src.vips), it never means "no VIPs"; give C([]) to remove
        every VIP with O(purge)), unknown keys fail, and errors name the field as
        C(src.vips[0].port). Files over 64 MiB, directories and binary files are refused.
    type: path
  content:
    description:
      - Set form as JSON text, in the same shapes as O(src) (a state file's object, whose C(vips) key
        is used, or a plain list), for example C("{{ state | to_json }}"), with the same rules
        (errors named as C(content.vips[0].port)).
      - For thousands of reals one string is far cheaper for Ansible to template and transfer than a
        list in O(vips), and it needs no file on the host first.
      - Not logged on the host (it lists every backend, like the mode 0600 state file it becomes).
    type: str
  keep_as:
    description:
      - With O(src) or O(content), keep the JSON the VIPs came from as this file once they are in
        service (atomically, mode 0600, only when its bytes differ). The balancer role keeps its
        state file for the boot-time restore this way, so the boot unit never restores a request
        the kernel refused. Nothing is written when the run fails or in check mode (RV(kept) is
        then V(false) and RV(keep_pending) says whether it would be written).
      - The JSON must be a state document (an object), not a plain list; an empty C(vips) needs
        C(purge) set to V(true) in it, as the restore requires.
      - A state document (a JSON object) is first checked as the restore reads it (C(version),
        C(object), C(interface), C(mode), C(config), ...); a field it would refuse fails the task
        before anything changes, named as C(content.mode) or C(src.mode).
    type: path
  health_state_file:
    description:
      - The balancer agent's health state file. When given, the configured weights are applied
        through the current health (read under the pin-root lock). A real the file says is down gets
        weight 0, a drained real (weight 0) stays 0, and when every real of a VIP is down the VIP
        fails open (keeps the weights it has in the kernel). A missing file means every real is up.
      - O(keep_as) still keeps the configured weights, not the effective ones.
    type: path
  purge:
    description: With O(vips) or O(src), remove every VIP of the balancer that is not listed.
    type: bool
    default: false
  ring_size:
    description:
      - Maglev ring size, a prime. It is built into the object (C(LB_RING_SIZE), 65537 by default);
        give it only to assert the size in use. A size that differs from the loaded rings fails.
    type: int
notes:
  - Real indices are reference-counted across VIPs. A freed index is not reused while other free
    indices exist, and never while a connection-table entry could still point at it if that can be
    avoided, so a removed real's open connections never land on a different real.
  - Writes are ordered so that an interrupted run leaves a state the next run repairs (reported
    in RV(repairs)), and no VIP ever points to a missing ring.
seealso:
  - module: xdplb.katran.xdp_program
  - module: xdplb.katran.lb_config
  - module: xdplb.katran.lb_info
"""

EXAMPLES = r"""
- name: One VIP with three reals, the third drained
  xdplb.katran.lb_vip:
    address: 192.0.2.10
    port: 80
    protocol: tcp
    reals:
      - {address: 10.1.0.11, weight: 100}
      - {address: 10.1.0.12, weight: 100}
      - {address: 10.1.0.13, weight: 0}

- name: The whole VIP list in one task, removing VIPs no longer listed
  xdplb.katran.lb_vip:
    vips: "{{ balancer_vips }}"
    purge: true
  register: vip_result

- name: Compact form of reals, address to weight
  xdplb.katran.lb_vip:
    vips:
      - address: 192.0.2.20
        port: 443
        reals: {10.1.0.11: 2, 10.1.0.12: 1, "2001:db8:1::13": 1}

- name: Show which reals changed per VIP
  ansible.builtin.debug:
    msg: "{{ vip_result.vips | selectattr('action', 'ne', 'unchanged') | list }}"

- name: An IPv6 VIP for DNS, ring only (no connection table), no ping replies
  xdplb.katran.lb_vip:
    address: "2001:db8::53"
    port: 53
    protocol: udp
    flags: [no_conn_table]
    icmp_echo: false
    reals: ["2001:db8:1::10", "2001:db8:1::11"]

- name: Remove a VIP
  xdplb.katran.lb_vip:
    address: 192.0.2.10
    port: 80
    state: absent

- name: Apply the VIPs of the state file the role wrote for boot-time restore
  xdplb.katran.lb_vip:
    src: /etc/xdplb/balancer.json
    purge: true

- name: Apply a state document, then keep it as the file the boot unit restores
  xdplb.katran.lb_vip:
    content: "{{ {'version': 1, 'object': '/usr/local/lib/xdplb/bpf/balancer.o', 'interface': 'eth0',
                  'vips': balancer_vips} | to_json }}"
    keep_as: /etc/xdplb/balancer.json
    purge: true
"""

RETURN = r"""
vips:
  description:
    - One entry per VIP of the request (and per VIP removed), with what changed.
    - C(action) is V(added), V(changed), V(removed) or V(unchanged).
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: The VIP as C(address:port/protocol) (IPv6 in brackets).
      type: str
      sample: 192.0.2.10:80/tcp
    address:
      description: VIP address.
      type: str
    port:
      description: VIP port.
      type: int
    protocol:
      description: VIP protocol.
      type: str
    action:
      description: What happened to the VIP.
      type: str
    vip_num:
      description: The VIP's slot in the balancer (ring and counter index).
      type: int
    reals_added:
      description: Reals that are new to this VIP.
      type: list
      elements: str
    reals_removed:
      description: Reals no longer in this VIP.
      type: list
      elements: str
    weights_changed:
      description: Reals whose weight changed, with C(address), C(before) and C(after).
      type: list
      elements: dict
    flags_changed:
      description: Whether the VIP's flags changed.
      type: bool
    ring_written:
      description: Whether a new ring was swapped in for this VIP.
      type: bool
    ring_slots_changed:
      description: Ring slots that point to another real than before (all of them for a new VIP).
      type: int
  sample:
    - key: 192.0.2.10:80/tcp
      address: 192.0.2.10
      port: 80
      protocol: tcp
      action: changed
      vip_num: 0
      reals_added: []
      reals_removed: []
      weights_changed: [{address: 10.1.0.13, before: 100, after: 0}]
      flags_changed: false
      ring_written: true
      ring_slots_changed: 21846
summary:
  description: Counts over the whole run.
  returned: always
  type: dict
  sample: {added: 1, changed: 1, removed: 0, unchanged: 510, rings_written: 2, ring_slots_changed: 87383,
           reals_allocated: 100, reals_freed: 0, ring_size: 65537}
repairs:
  description:
    - Inconsistencies left by an interrupted earlier run (killed between its ring swaps and its
      record writes, for example) that this run fixed, or would fix in check mode, one sentence each
      naming the VIP, VIP number, address or real; empty when the maps were consistent.
    - Reported are a VIP whose installed ring does not match its record, a VIP without a record or
      without a ring, a ring or record at a VIP number with no VIP (removed, or reused by a VIP of
      the request), a real in C(lb_reals) no VIP refers to, and an address in C(lb_vip_addrs) with no VIP.
    - The VIPs involved are also listed in RV(vips) with the action the request means for them.
  returned: always
  type: list
  elements: str
  sample: ["192.0.2.10:80/tcp: its installed ring does not match its record (an interrupted run): record rewritten"]
kept:
  description: Whether O(keep_as) was written by this run (always V(false) in check mode, which writes nothing).
  returned: when O(keep_as) is given
  type: bool
  sample: true
health:
  description:
    - With O(health_state_file), the VIPs with a real down or failing open, by key, each with C(down)
      (the addresses of the reals that are down) and C(fail_open).
  returned: when O(health_state_file) is given
  type: dict
  sample: {"192.0.2.10:80/tcp": {down: [10.1.0.13], fail_open: false}}
keep_pending:
  description: In check mode, whether O(keep_as) would be written (its bytes differ); V(false) otherwise.
  returned: when O(keep_as) is given
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import viprequest, vipspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import libbpf
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short


def _summary(params):
    args = dict(params)
    if isinstance(args["vips"], list):
        args["vips"] = "(%d VIPs)" % len(args["vips"])
    if args["content"] is not None:
        args["content"] = "(%d characters of JSON)" % len(args["content"])
    return args


def main():
    module = AnsibleModule(
        argument_spec=dict(
            pin_root=dict(type="path", default="/sys/fs/bpf/xdplb"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            address=dict(type="str"),
            port=dict(type="int"),
            protocol=dict(type="str", choices=["tcp", "udp"], default="tcp"),
            flags=dict(type="list", elements="str", choices=sorted(vipspec.FLAGS)),
            icmp_echo=dict(type="bool"),
            reals=dict(type="raw"),
            vips=dict(type="list", elements="dict"),
            src=dict(type="path"),
            content=dict(type="str", no_log=True),
            keep_as=dict(type="path"),
            health_state_file=dict(type="path"),
            purge=dict(type="bool", default=False),
            ring_size=dict(type="int"),
        ),
        mutually_exclusive=[("address", "vips", "src", "content")],
        required_one_of=[("address", "vips", "src", "content")],
        required_by={"reals": "address"},
        supports_check_mode=True,
    )
    p = module.params
    # ansible-core up to 2.20 adds every argument to the result as `invocation` unless the module
    # gives its own, on failure too: echoing a list of thousands of reals back (and scanning it for
    # secrets: there are none) costs more than applying it, so ours says how many VIPs were given.
    # 2.21 returns a module's invocation only with INJECT_INVOCATION (default off), and then ours.
    invocation = {"module_args": _summary(p)}
    if p["purge"] and p["address"] is not None:
        module.fail_json(invocation=invocation, field="purge",
                         msg="purge: applies to the set form (vips, src or content), not to a single VIP")
    if p["keep_as"] and not (p["src"] or p["content"] is not None):
        module.fail_json(invocation=invocation, msg="keep_as: needs src or content (the JSON to keep)", field="keep_as")
    if p["address"] is not None and p["state"] == "present" and p["reals"] is None:
        module.fail_json(invocation=invocation, msg="reals: is required with state=present", field="reals")
    try:
        result = viprequest.ensure(p, module.check_mode, module._diff)
    except EngineError as exc:
        module.fail_json(invocation=invocation, msg=exc.msg, field=exc.field, value=short(exc.value))
    except libbpf.BpfError as exc:
        module.fail_json(invocation=invocation, msg=str(exc), errno=exc.errno)
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(invocation=invocation, **result)


if __name__ == "__main__":
    main()
