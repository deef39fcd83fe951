#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bpf_map
short_description: Manage entries of any pinned BPF map, by BTF field names or raw bytes
version_added: 0.1.0
description:
  - Makes entries of the BPF map pinned at O(path) present with a value, or absent. Works on any
    map with data values (hash, array, LRU, per-CPU variants), not only this collection's.
  - Keys and values are given by the C field names of the map's types, read from the BTF the
    kernel keeps for the map (structs as mappings, integers, enum names, IP addresses and MACs for
    byte and big-endian fields, lists for arrays); members left out are zero. With O(raw=true),
    or for maps created without BTF, they are hex strings of exactly the key and value size.
  - Every entry is encoded before the first write, so a bad field changes nothing. An entry is
    written only when its stored value differs.
  - Per-CPU maps get the same value on every CPU. Array maps cannot delete, so V(absent) writes
    zeros, and a zeroed slot counts as absent.
  - With neither O(key) nor O(entries), returns the map's entries (up to O(limit)) and changes nothing.
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
  path:
    description: Path of the pinned map in a BPF filesystem.
    type: path
    required: true
  key:
    description: Key of one entry (mapping by field names, integer, string, or hex with O(raw)).
    type: raw
  value:
    description: Value of that entry, for O(state=present).
    type: raw
  entries:
    description:
      - Several entries at once, each a mapping with C(key) and (for V(present)) C(value).
        Mutually exclusive with O(key).
    type: list
    elements: dict
  state:
    description: Whether the entries exist with these values.
    type: str
    choices: [present, absent]
    default: present
  raw:
    description: Keys and values are hex strings of the exact key and value size (C(0a000001...)); C(:) C(-) and spaces are ignored.
    type: bool
    default: false
  limit:
    description: Most entries returned when reading the whole map.
    type: int
    default: 1000
seealso:
  - module: xdplb.katran.lb_info
"""

EXAMPLES = r"""
- name: Do not answer pings on a VIP address (lb_vip_addrs by field names)
  xdplb.katran.bpf_map:
    path: /sys/fs/bpf/xdplb/lb_vip_addrs
    key: {addr: 192.0.2.10, family: 4}
    value: {flags: 1}

- name: Same entry as raw bytes
  xdplb.katran.bpf_map:
    path: /sys/fs/bpf/xdplb/lb_vip_addrs
    raw: true
    key: "c000020a000000000000000000000000 04000000"
    value: "01000000"

- name: Read a whole map
  xdplb.katran.bpf_map:
    path: /sys/fs/bpf/xdplb/lb_reals
  register: vips_map
"""

RETURN = r"""
entries:
  description:
    - Per entry of the request, the decoded C(key), the value C(before) and C(after) (null when
      absent) and whether it C(changed). When reading the whole map, C(key) and C(value).
    - Per-CPU values that differ between CPUs come back as a mapping with one key C(per_cpu), the list of values.
  returned: always
  type: list
  elements: dict
  sample: [{key: {addr: c000020a000000000000000000000000, family: 4}, before: null, after: {flags: 1}, changed: true}]
map:
  description: The map's C(name), C(id), C(type), C(key_size), C(value_size), C(max_entries) and, with BTF, C(key_type) and C(value_type).
  returned: always
  type: dict
  sample: {name: lb_vip_addrs, id: 7000, type: hash, key_size: 20, value_size: 4, max_entries: 512,
           key_type: struct lb_addr, value_type: struct lb_addr_meta}
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import bpfmap, libbpf
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


def _text(entries, side):
    return json.dumps([{"key": e["key"], "value": e[side]} for e in entries if e["changed"]],
                      indent=2, sort_keys=True, default=str) + "\n"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            key=dict(type="raw", no_log=False),
            value=dict(type="raw"),
            entries=dict(type="list", elements="dict"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            raw=dict(type="bool", default=False),
            limit=dict(type="int", default=1000),
        ),
        mutually_exclusive=[("key", "entries")],
        required_by={"value": "key"},
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["key"] is None and p["entries"] is None:
            module.exit_json(**bpfmap.dump(p["path"], raw=p["raw"], limit=p["limit"]))
        entries = p["entries"] if p["entries"] is not None else [{"key": p["key"], "value": p["value"]}]
        res = bpfmap.ensure(p["path"], entries, state=p["state"], raw=p["raw"], check_mode=module.check_mode)
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field)
    except libbpf.BpfError as exc:
        module.fail_json(msg=str(exc), errno=exc.errno)
    res["diff"] = {"before": _text(res["entries"], "before"), "after": _text(res["entries"], "after"),
                   "before_header": p["path"], "after_header": p["path"]}
    module.exit_json(**res)


if __name__ == "__main__":
    main()
