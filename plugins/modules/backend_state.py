#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backend_state
short_description: Write the backend state file that the boot-time backend restore reads
version_added: 0.1.0
description:
  - Validates O(document) with the engine's own schema of the backend state file (the one
    C(python3 -m xdplb_engine backend-restore) reads at boot) and writes it to O(path) as JSON,
    atomically, fsync'ed, mode 0600, only when its bytes or mode differ. A document the restore
    would refuse is refused here, by field and value, and nothing is written.
  - Every key is required; a missing or null one is an error, never "nothing there" (an explicit
    empty C(vips) list is how a document says "no VIPs on lo").
  - The backend role writes its state file with this module, and runs it in check mode before it
    changes anything on the host, so a bad variable is refused before the first change.
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
  path:
    description:
      - Where the state file goes, such as C(/etc/xdplb/backend.json). A missing parent directory is
        created (0700); an existing one is left as it is.
    type: path
    required: true
  document:
    description:
      - The state document, with the keys C(version) (optional, 1), C(kind) (C(backend)), C(vips),
        C(vips_exclusive), C(decap) (C(kernel) or C(bpf)), C(interface), C(families), C(rp_filter)
        (0 or 2), C(arp_ignore) (0-8), C(arp_announce) (0-2), C(arp_devices), C(tunnels) (a list
        of C(name), C(kind), C(mode), C(addresses); V([]) with BPF decap), C(bpf) (C(object),
        C(hook), C(xdp_mode), C(pin_root), C(addresses); null with kernel decap) and C(advmss)
        (0, or 536-65495).
      - Numbers must be numbers and flags booleans, as in the file.
    type: dict
    required: true
  names:
    description:
      - The caller's names for the document's fields, so an error names what the user wrote. With
        V(vips) mapped to V(backend_vips), an error about C(vips[1]) names C(backend_vips[1]). A key
        matches a field and everything under it (C(bpf) covers C(bpf.hook)); the longest match wins.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Keep the backend's state for the boot unit
  xdplb.katran.backend_state:
    path: /etc/xdplb/backend.json
    document:
      kind: backend
      vips: [192.0.2.10]
      vips_exclusive: true
      decap: kernel
      interface: eth0
      families: [4]
      rp_filter: 0
      arp_ignore: 1
      arp_announce: 2
      arp_devices: [eth0]
      tunnels: [{name: ipip0, kind: ipip, addresses: []}]
      bpf: null
      advmss: 0
"""

RETURN = r"""
path:
  description: The state file.
  returned: always
  type: str
  sample: /etc/xdplb/backend.json
written:
  description: Whether the file was written (would be, in check mode).
  returned: always
  type: bool
  sample: true
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine import document
from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import backend_state
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short


def renamed(exc, names):
    """(msg, field) of `exc` with its field spelled as the caller's variable (see O(names))."""
    field = exc.field or ""
    best = None
    for key in names:
        if field == key or field.startswith(key + ".") or field.startswith(key + "["):
            if best is None or len(key) > len(best):
                best = key
    if best is None:
        return exc.msg, exc.field
    new = str(names[best]) + field[len(best):]
    msg = exc.msg
    if msg.startswith(field + ":"):
        msg = new + msg[len(field):]
    return msg, new


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True),
                                              document=dict(type="dict", required=True),
                                              names=dict(type="dict", default={})),
                           supports_check_mode=True)
    path, names = module.params["path"], module.params["names"]
    try:
        text = backend_state.render(module.params["document"])
        if os.path.isdir(path):
            raise EngineError("path: %s is a directory" % path, field="path", value=path)
        before = _read(path)
        parent = os.path.dirname(os.path.abspath(path))
        if not module.check_mode and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700)
        written = document.keep_file(path, text.encode("utf-8"), module.check_mode, mode=0o600)
    except EngineError as exc:
        msg, field = renamed(exc, names)
        module.fail_json(msg=msg, field=field, value=short(exc.value))
    except OSError as exc:
        module.fail_json(msg="path: %s: %s" % (path, exc.strerror or exc), field="path", value=path)
    module.exit_json(changed=written, path=path, written=written,
                     diff={"before": before, "after": text, "before_header": path, "after_header": path})


if __name__ == "__main__":
    main()
