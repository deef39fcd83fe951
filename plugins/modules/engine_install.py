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
  - Only files whose bytes differ are written (atomically, mode 0600); the directory is made 0700;
    C(.py) files that are no longer part of the engine are removed.
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
options:
  dest:
    description: Directory of the engine package; its parent goes on C(PYTHONPATH).
    type: path
    required: true
"""

EXAMPLES = r"""
- name: Engine for the boot unit
  xdplb.katran.engine_install:
    dest: /usr/local/lib/xdplb/xdplb_engine
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
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine import install
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


def _shipped():
    """Never called. AnsiballZ ships the module_utils a module imports, so these imports are what
    puts the whole engine into this module's payload; tests check the list against the directory."""
    from ansible_collections.xdplb.katran.plugins.module_utils.engine import (  # noqa: F401
        __main__, abi, addresses, backend_restore, balancer, bpfmap, btf, cli, decap, decap_abi, doctor,
        errors, hostnet, lab, labflows, labtraffic, libbpf, maglev, netconf, netlink, probe, program,
        routes, tunnel, validate, vips, vipspec)


def main():
    module = AnsibleModule(argument_spec=dict(dest=dict(type="path", required=True)), supports_check_mode=True)
    try:
        result = install.ensure(module.params["dest"], module.check_mode)
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field)
    except OSError as exc:
        module.fail_json(msg=f"dest: {module.params['dest']}: {exc}", field="dest")
    changes = [f"write {n}" for n in result["written"]] + [f"remove {n}" for n in result["removed"]]
    module.exit_json(changed=result["changed"], written=result["written"], removed=result["removed"],
                     diff={"before": "", "after": "".join(c + "\n" for c in changes)})


if __name__ == "__main__":
    main()
