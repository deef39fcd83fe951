#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_install
short_description: Install the xdplb engine on a host for the boot-time restore units
version_added: 0.1.0
description:
  - Writes the engine package (the plain-Python code behind every module of this collection) to
    O(dest), so that C(python3 -m xdplb_engine restore) and C(backend-restore) can run at boot
    without Ansible. The files travel inside the module itself, so it is one task and one transfer.
  - Only files whose bytes differ are written (atomically, mode 0600); C(.py) files that are no
    longer part of the engine are removed. A missing O(dest) is created with mode 0700. An existing
    one is left as it is, never re-moded, but one that group or others can write is refused (the
    boot unit runs its code as root).
  - The same task can create the role's directories (O(directories)), install the boot unit
    (O(unit), or several with O(units)) and a file from the controller such as the BPF object
    (O(object), or several with O(objects)), so a role needs no separate directory, template or copy
    task (each costs at least one module run).
  - Everything is checked before anything is written, so a bad argument changes nothing.
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
  action:
    description: The collection's action plugin of the same name reads O(object.src) and each O(objects[].src) on the controller.
    support: full
options:
  dest:
    description: Directory of the engine package; its parent goes on C(PYTHONPATH).
    type: path
    required: true
  directories:
    description:
      - Further directories to create in the same task, such as where a role keeps its BPF object
        and state file. A missing one is created with mode 0700; one that exists is left as it is,
        never re-moded (so C(/usr/local/lib) given here keeps its mode). Parents of a new directory
        are created too (with the default mode, before O(dest)); list them first to make them 0700
        as well.
    type: list
    elements: path
    default: []
  unit:
    description:
      - A systemd unit to install in the same task, typically the one that runs the engine at boot
        (rendered by the caller, for example with the P(ansible.builtin.template#lookup) lookup).
      - Written only when its bytes or mode differ, atomically, mode 0644; its directory is created
        (0755) when missing. Enabling it is left to M(ansible.builtin.systemd_service), and only
        systemd hosts need that.
    type: dict
    suboptions:
      path:
        description: Where the unit file goes, such as C(/etc/systemd/system/xdplb-balancer.service).
        type: path
        required: true
      content:
        description:
          - The unit file's text. Each C(@PYTHON@) in it is replaced by O(unit.python), so an
            C(ExecStart) runs the engine with the interpreter whose imports Ansible has proven on
            this host, without a task to find it first.
        type: str
        required: true
      python:
        description:
          - The interpreter that replaces C(@PYTHON@) in O(unit.content), an absolute path.
          - Default (empty or omitted) is the interpreter this module runs with, the one Ansible
            uses on the host (C(python) in RV(host)).
        type: str
  units:
    description:
      - More units to install in the same task, each as O(unit) (C(path), C(content), C(python)) and
        written by the same rules, after O(unit) when both are given; such as the balancer role's
        restore unit and its health-check agent's unit.
      - A path given twice (here or in O(unit)) is refused.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Where the unit file goes.
        type: path
        required: true
      content:
        description: The unit file's text; each C(@PYTHON@) is replaced by C(python).
        type: str
        required: true
      python:
        description: The interpreter that replaces C(@PYTHON@), as O(unit.python).
        type: str
  object:
    description:
      - A file from the controller to install on the host in the same task, typically the BPF object
        the balancer role attaches next (its candidate); one M(ansible.builtin.copy) task instead would
        cost two module runs.
      - Written only when its bytes or mode differ, atomically, mode 0600; its directory is created
        (0700) when missing. Nothing is written in check mode.
      - Give exactly one of O(object.src) and O(object.content_base64). The bytes travel in the
        module's arguments (not logged on the host), which suits files up to a few megabytes.
    type: dict
    suboptions:
      src:
        description:
          - The file on the controller. The action plugin reads it and hands its bytes to the module as
            O(object.content_base64). A relative path is looked up as for
            O(ansible.builtin.copy#module:src) (the role's or playbook's C(files/) directory first); a
            vaulted file is decrypted.
        type: path
      content_base64:
        description:
          - The file's bytes, base64-encoded, when they are not in a file on the controller. The action
            plugin sets it from O(object.src).
        type: str
      dest:
        description: Where the file goes on the managed host, such as C(/usr/local/lib/xdplb/bpf/balancer.o.candidate).
        type: path
        required: true
  objects:
    description:
      - More files from the controller to install in the same task, each as O(object) (C(src) or
        C(content_base64), and C(dest)) and written by the same rules, after O(object) when both are
        given; such as the balancer's object and the health-check agent's C(hc_encap.o).
      - A C(dest) given twice (here or in O(object)) is refused.
    type: list
    elements: dict
    default: []
    suboptions:
      src:
        description: The file on the controller, read by the action plugin as O(object.src).
        type: path
      content_base64:
        description: The file's bytes, base64-encoded, as O(object.content_base64).
        type: str
      dest:
        description: Where the file goes on the managed host.
        type: path
        required: true
"""

EXAMPLES = r"""
- name: Engine for the boot unit
  xdplb.katran.engine_install:
    dest: /usr/local/lib/xdplb/xdplb_engine
    directories: [/usr/local/lib/xdplb, /usr/local/lib/xdplb/bpf, /etc/xdplb]

- name: Engine and the unit that restores the balancer at boot, in one task
  xdplb.katran.engine_install:
    dest: /usr/local/lib/xdplb/xdplb_engine
    unit:
      path: /etc/systemd/system/xdplb-balancer.service
      # ExecStart=@PYTHON@ -m xdplb_engine restore ...: the interpreter Ansible uses on the host
      content: "{{ lookup('ansible.builtin.template', 'xdplb-balancer.service.j2') }}"
  notify: Reload systemd

- name: Engine, two units and two objects, in one task
  xdplb.katran.engine_install:
    dest: /usr/local/lib/xdplb/xdplb_engine
    units:
      - {path: /etc/systemd/system/xdplb-balancer.service, content: "{{ restore_unit }}"}
      - {path: /etc/systemd/system/xdplb-agent.service, content: "{{ agent_unit }}"}
    objects:
      - {src: files/bpf/balancer.o, dest: /usr/local/lib/xdplb/bpf/balancer.o.candidate}
      - {src: files/bpf/hc_encap.o, dest: /usr/local/lib/xdplb/bpf/hc_encap.o}
  register: engine

- name: Engine, its directories and the BPF object from the controller, in one task
  xdplb.katran.engine_install:
    dest: /usr/local/lib/xdplb/xdplb_engine
    directories: [/usr/local/lib/xdplb, /usr/local/lib/xdplb/bpf]
    object:
      src: files/bpf/balancer.o
      dest: /usr/local/lib/xdplb/bpf/balancer.o.candidate
  register: engine
"""

RETURN = r"""
written:
  description: Files written (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["vips.py"]
removed:
  description: Files removed because they are no longer part of the engine.
  returned: always
  type: list
  elements: str
  sample: []
directories:
  description: Entries of O(directories) created, mode 0700 (or that would be, in check mode); existing ones are not listed.
  returned: always
  type: list
  elements: str
  sample: ["/etc/xdplb"]
unit:
  description: Whether the unit file of O(unit) (or one of O(units)) was written (or would be, in check mode).
  returned: always
  type: bool
  sample: false
object:
  description: Whether the file of O(object) (or one of O(objects)) was written (or would be, in check mode).
  returned: always
  type: bool
  sample: true
units:
  description: Paths of the unit files of O(unit) and O(units) written (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["/etc/systemd/system/xdplb-agent.service"]
objects:
  description: Destinations of the files of O(object) and O(objects) written (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["/usr/local/lib/xdplb/bpf/hc_encap.o"]
host:
  description:
    - What the roles need to know about the host, so they need not gather facts.
    - C(systemd) is whether systemd manages the host (the directory C(/run/systemd/system) exists),
      C(default_interface) the interface of the IPv4 default route (null when there is none).
    - C(python) is the interpreter this module ran with on the host (the one Ansible used there), which
      the roles put in their boot units' C(ExecStart) by default.
    - C(interfaces) lists the names of the host's network devices (the balancer role refuses an unknown
      O(ignore:balancer_interface) before it attaches anything).
  returned: always
  type: dict
  sample: {systemd: true, default_interface: eth0, python: /usr/bin/python3, interfaces: [eth0, lo]}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine import install
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short


def _shipped():
    """Never called. AnsiballZ ships the module_utils a module imports, so these imports are what
    puts the whole engine into this module's payload; tests check the list against the directory."""
    from ansible_collections.xdplb.katran.plugins.module_utils.engine import (  # noqa: F401
        __main__, cli, daemon, document, errors, hostnet, install, netlink, validate)
    from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import (  # noqa: F401
        addresses, backend_restore, backend_state, decap, doctor, metrics, netconf, probe, routes, tunnel)
    from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import (  # noqa: F401
        balancer, counters, healthspec, healthstate, maglev, maglev_kernel, overlay, statefile, viprequest, vips, vipspec)
    from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import (  # noqa: F401
        abi, bpfmap, btf, decap_abi, hc, hc_abi, libbpf, program)
    from ansible_collections.xdplb.katran.plugins.module_utils.engine.bgp import bgpspec, bird, birdconf  # noqa: F401
    from ansible_collections.xdplb.katran.plugins.module_utils.engine.health import (  # noqa: F401
        agent, announce, checks, metrics, monitor, plan)
    from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import (  # noqa: F401
        lab, labflows, labmonitor, labrouting, labstream, labtraffic, procs)


UNIT_OPTIONS = dict(path=dict(type="path", required=True), content=dict(type="str", required=True), python=dict(type="str"))
OBJECT_OPTIONS = dict(src=dict(type="path"), content_base64=dict(type="str", no_log=True), dest=dict(type="path", required=True))
OBJECT_RULES = dict(mutually_exclusive=[("src", "content_base64")], required_one_of=[("src", "content_base64")])


def main():
    module = AnsibleModule(argument_spec=dict(dest=dict(type="path", required=True),
                                              directories=dict(type="list", elements="path", default=[]),
                                              unit=dict(type="dict", options=UNIT_OPTIONS),
                                              units=dict(type="list", elements="dict", default=[], options=UNIT_OPTIONS),
                                              object=dict(type="dict", options=OBJECT_OPTIONS, **OBJECT_RULES),
                                              objects=dict(type="list", elements="dict", default=[], options=OBJECT_OPTIONS,
                                                           **OBJECT_RULES)),
                           supports_check_mode=True)
    p = module.params
    try:
        obj = install.object_request(p["object"])
        objs = [install.object_request(o, "objects[%d]" % i) for i, o in enumerate(p["objects"])]
        unit = install.unit_request(p["unit"])
        units = [install.unit_request(u, "units[%d]" % i) for i, u in enumerate(p["units"])]
        result = install.ensure(p["dest"], module.check_mode, directories=p["directories"], unit=unit, obj=obj,
                                units=units, objs=objs)
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field, value=short(exc.value))
    except OSError as exc:
        module.fail_json(msg=f"dest: {p['dest']}: {exc}", field="dest")
    sizes = {o["dest"]: len(o["data"]) for o in [obj] + objs if o is not None}
    changes = ([f"directory {d} (0700)" for d in result["directories"]]
               + [f"write {n}" for n in result["written"]] + [f"remove {n}" for n in result["removed"]]
               + [f"unit {u}" for u in result["units"]]
               + [f"object {o} ({sizes[o]} bytes)" for o in result["objects"]])
    # The objects' base64 would be masked anyway (no_log); their size says more.
    args = dict(p)
    if obj is not None:
        args["object"] = dict(p["object"], content_base64="(%d bytes)" % len(obj["data"]))
    args["objects"] = [dict(raw, content_base64="(%d bytes)" % len(o["data"])) for raw, o in zip(p["objects"], objs)]
    module.exit_json(changed=result["changed"], written=result["written"], removed=result["removed"],
                     directories=result["directories"], unit=result["unit"], object=result["object"],
                     units=result["units"], objects=result["objects"],
                     host=install.host_facts(), invocation={"module_args": args},
                     diff={"before": "", "after": "".join(c + "\n" for c in changes)})


if __name__ == "__main__":
    main()
