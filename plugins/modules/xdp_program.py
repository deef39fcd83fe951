#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: xdp_program
short_description: Load a BPF object with pinned maps and attach its XDP program to an interface
version_added: 0.1.0
description:
  - Loads O(object) with its maps pinned by name under O(pin_root) and attaches its XDP program to
    O(interface). Maps already pinned there are reused with their contents, so reloading or
    upgrading the program keeps VIPs, reals, rings and connections.
  - Idempotent by program tag. When the program attached to the interface has the same tag (the
    kernel's hash of its instructions) and uses the maps pinned under O(pin_root), nothing changes.
  - A running program is replaced atomically (C(XDP_FLAGS_REPLACE)), the interface is never
    without an XDP program. Only a change between native and generic mode cannot be atomic; the
    module then warns.
  - The program being replaced is pinned as C(xdp_previous) under O(pin_root), so O(rollback=true)
    can put it back (atomically as well) when the new program broke something, for example the
    connection Ansible runs through.
  - O(state=absent) detaches the XDP program from the interface and, with O(remove_pins=true),
    removes the balancer's pinned maps (their contents are lost).
  - O(pin_root) must be inside a BPF filesystem; it is created with mode 0700, and C(/sys/fs/bpf)
    is mounted when it is not.
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
  interface:
    description: Network device the program is attached to.
    type: str
    required: true
  object:
    description:
      - Path of the BPF object (ELF, built with BTF) on the managed host. Required with
        O(state=present) unless O(rollback=true).
    type: path
  program:
    description:
      - Name of the XDP program (function) in O(object). Defaults to C(xdp_balancer) when the
        object has it, else to the object's only program.
    type: str
  mode:
    description:
      - V(native) attaches in the driver and fails when the driver cannot; V(generic) uses the
        kernel's generic (skb) path; V(auto) lets the kernel choose (native when the driver has it)
        and keeps the mode of a program already attached.
    type: str
    choices: [auto, native, generic]
    default: auto
  pin_root:
    description: Directory in the BPF filesystem where the object's maps are pinned by name.
    type: path
    default: /sys/fs/bpf/xdplb
  state:
    description: Whether the program is attached.
    type: str
    choices: [present, absent]
    default: present
  force:
    description: Reload and replace the program even when the same one is attached (a reload keeps the maps).
    type: bool
    default: false
  remove_pins:
    description: With O(state=absent), also remove the pinned balancer maps and O(pin_root) if it is then empty.
    type: bool
    default: false
  rollback:
    description:
      - Attach again the program this module last replaced on O(interface) (pinned as
        C(xdp_previous) under O(pin_root)); the program it replaces becomes the previous one, so a
        second rollback undoes the first. Fails when nothing was replaced yet (to undo a first
        attach, use O(state=absent)).
    type: bool
    default: false
notes:
  - Attaching XDP to the interface Ansible connects through can cut the connection if the program
    drops that traffic; the balancer program passes everything that is not for a VIP.
seealso:
  - module: xdplb.katran.lb_config
  - module: xdplb.katran.lb_vip
"""

EXAMPLES = r"""
- name: Attach the balancer in native mode, failing if the driver cannot
  xdplb.katran.xdp_program:
    object: /usr/local/lib/xdplb/balancer.o
    interface: eth0
    mode: native
  register: xdp

- name: Show the mode obtained
  ansible.builtin.debug:
    msg: "{{ xdp.program }} id {{ xdp.prog_id }} runs in {{ xdp.mode }} mode"

- name: Reload the same object (maps and their contents are kept)
  xdplb.katran.xdp_program:
    object: /usr/local/lib/xdplb/balancer.o
    interface: eth0
    force: true

- name: Attach a new build, then put the old program back if the host became unreachable
  block:
    - name: Attach the new build
      xdplb.katran.xdp_program:
        object: /usr/local/lib/xdplb/balancer.o
        interface: eth0
    - name: Check the connection still works
      ansible.builtin.wait_for_connection:
        timeout: 20
  rescue:
    - name: Roll back to the previous program
      xdplb.katran.xdp_program:
        interface: eth0
        rollback: true

- name: Detach and forget every VIP
  xdplb.katran.xdp_program:
    interface: eth0
    state: absent
    remove_pins: true
"""

RETURN = r"""
action:
  description: V(attached), V(replaced), V(rolled back), V(unchanged), V(detached) or V(absent).
  returned: always
  type: str
  sample: replaced
prog_id:
  description: Id of the attached program (null when detached, or in check mode before attaching).
  returned: always
  type: int
  sample: 1560
tag:
  description: Tag of the object's program.
  returned: when state is present
  type: str
  sample: 15e030f539b7b6fa
program:
  description: Name of the attached program.
  returned: when state is present
  type: str
  sample: xdp_balancer
mode:
  description: Attach mode obtained, V(native) or V(generic).
  returned: always
  type: str
  sample: native
previous:
  description: The program attached before (C(prog_id), C(tag), C(name), C(mode)), or null.
  returned: always
  type: dict
maps:
  description: Per map of the object, its pin path, map id and whether an existing pin was reused.
  returned: when state is present
  type: dict
  sample: {lb_reals: {pin: /sys/fs/bpf/xdplb/lb_reals, id: 7002, reused: true}}
actions:
  description: Side actions taken (pin root created, bpffs mounted, maps pinned or unpinned).
  returned: always
  type: list
  elements: str
ifindex:
  description: Index of the interface.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import libbpf, program
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short


def _text(prog):
    if not prog:
        return "no XDP program\n"
    return "%s id %s tag %s mode %s\n" % (prog.get("name") or prog.get("program"), prog.get("prog_id"),
                                          prog.get("tag"), prog.get("mode"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", required=True),
            object=dict(type="path"),
            program=dict(type="str"),
            mode=dict(type="str", choices=list(program.MODES), default="auto"),
            pin_root=dict(type="path", default=program.DEFAULT_PIN_ROOT),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            force=dict(type="bool", default=False),
            remove_pins=dict(type="bool", default=False),
            rollback=dict(type="bool", default=False),
        ),
        mutually_exclusive=[("rollback", "object")],
        supports_check_mode=True,
    )
    p = module.params
    if p["state"] == "present" and not p["rollback"] and not p["object"]:
        module.fail_json(msg="object: is required with state=present (unless rollback=true)", field="object")
    try:
        if p["rollback"]:
            res = program.rollback(p["interface"], pin_root=p["pin_root"], check_mode=module.check_mode)
            after = {"name": res["program"], "prog_id": res["prog_id"], "tag": res["tag"], "mode": res["mode"]}
        elif p["state"] == "present":
            res = program.ensure(p["object"], p["interface"], mode=p["mode"], pin_root=p["pin_root"],
                                 program=p["program"], force=p["force"], check_mode=module.check_mode)
            after = {"name": res["program"], "prog_id": res.get("prog_id"), "tag": res["tag"], "mode": res.get("mode")}
        else:
            res = program.detach(p["interface"], pin_root=p["pin_root"], remove_pins=p["remove_pins"],
                                 pin_names=balancer.BALANCER_MAPS + balancer.PAIR_MAPS + balancer.CTL_MAPS + (program.PREVIOUS_PIN,),
                                 check_mode=module.check_mode)
            after = None
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field, value=short(exc.value))
    except libbpf.BpfError as exc:
        module.fail_json(msg=str(exc), errno=exc.errno)
    for warning in res.pop("warnings"):
        module.warn(warning)
    header = "XDP on %s" % p["interface"]
    res["diff"] = {"before": _text(res["previous"]), "after": _text(after) + "".join("%s\n" % a for a in res["actions"]),
                   "before_header": header, "after_header": header}
    module.exit_json(**res)


if __name__ == "__main__":
    main()
