# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""xdplb.katran.vips_served_by: which VIPs of balancer_vips a backend serves (site.yml's backend_vips).

Plain Python (no Ansible import), so tests/unit calls it directly; the documentation is
vips_served_by.yml next to this file.
"""
from __future__ import annotations

from collections.abc import Mapping


def vips_served_by(vips, addresses):
    """The addresses of the VIPs in ``vips`` (balancer_vips entries) that list one of
    ``addresses`` as a real (a real is an address or a mapping with ``address``), each once, in
    the order of ``vips``."""
    mine = set(addresses or [])
    out = []
    for vip in vips or []:
        for real in vip.get("reals") or []:
            address = real.get("address") if isinstance(real, Mapping) else real
            if address in mine and vip["address"] not in out:
                out.append(vip["address"])
    return out


class FilterModule:
    """xdplb.katran filters."""

    def filters(self):
        return {"vips_served_by": vips_served_by}
