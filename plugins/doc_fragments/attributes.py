# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attribute descriptions shared by the collection's modules.

A module extends C(xdplb.katran.attributes) (check_mode, diff_mode, idempotent) and, when it changes
kernel state of the host, C(xdplb.katran.attributes.platform); its own C(attributes:) section then only
states the support level, as community.docker does.
"""
from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation
        indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
"""

    PLATFORM = r"""
options: {}
attributes:
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: linux
notes:
  - The module acts on the network namespace it runs in. To manage another namespace run Ansible
    inside it (for example through a connection that enters the namespace); C(ip netns exec) is
    enough for the network state but remounts C(/sys).
"""
