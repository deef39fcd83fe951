#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: net_conf
short_description: Set net.ipv4.conf / net.ipv6.conf keys by their effective value
version_added: 0.1.0
description:
  - Makes the value the kernel B(actually uses) for a key on the named devices what was asked.
    For C(rp_filter), C(arp_ignore), C(arp_announce) and several other IPv4 keys the kernel uses the
    maximum of C(net.ipv4.conf.all.KEY) and C(net.ipv4.conf.DEVICE.KEY), so asking for
    C(rp_filter=0) on a tunnel device while C(all) is 1 requires lowering C(all).
  - Other devices are never weakened. Before C(all) is lowered, every other existing device gets its
    own value written so its effective value stays what it was, and C(conf.default) is raised so
    devices created later keep theirs too.
  - Writing an IPv4 C(conf.default) value also changes every device whose own value was never
    written; such devices get their current value written explicitly first.
  - Values are read from and written to C(/proc/sys/net) of the network namespace the module runs
    in. Every argument (keys, ranges, devices) is checked before anything is written.
  - With O(persist=true) the values the module relies on (the named devices, C(all), devices it
    had to pin, C(default) when asked or raised) are merged into one file under C(/etc/sysctl.d/)
    so a reboot restores them. Device entries are prefixed with C(-) so a device that does not
    exist yet at boot is not an error; systemd re-applies per-device entries when the device
    appears.
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
  ipv4:
    description:
      - C(net.ipv4.conf) keys and the effective value wanted on O(devices).
      - Supported keys and ranges are C(rp_filter) 0-2, C(arp_ignore) 0-8, C(arp_announce) 0-2,
        C(arp_filter), C(arp_notify), C(accept_local), C(log_martians), C(proxy_arp),
        C(route_localnet), C(send_redirects), C(src_valid_mark) 0-1 (the kernel uses the maximum of
        C(all) and the device); C(accept_source_route) 0-1 (the minimum); C(forwarding) 0-1 (the
        device value alone; C(all) is never written for it because that overwrites every device).
    type: dict
  ipv6:
    description:
      - C(net.ipv6.conf) keys and the effective value wanted on O(devices).
      - Supported keys are C(accept_dad) 0-2 and C(proxy_ndp) 0-1 (maximum of C(all) and the
        device), C(disable_ipv6) 0-1, C(accept_ra) 0-2, C(autoconf) 0-1 (the device value alone).
    type: dict
  devices:
    description:
      - Devices whose effective value must be what O(ipv4) and O(ipv6) ask for. They must exist.
      - Names with dots (VLANs such as C(eth0.100)) are fine; they are written in the slash form
        to the sysctl file.
      - C(all) and C(default) are not devices; see O(include_default).
    type: list
    elements: str
    default: []
  include_default:
    description:
      - Also make the value effective for devices created later (C(conf.default)), for example a
        tunnel device created after this task.
    type: bool
    default: false
  persist:
    description: Merge the values into O(sysctl_file) so they survive a reboot.
    type: bool
    default: true
  sysctl_file:
    description:
      - The file under C(/etc/sysctl.d/) the module owns. It is rewritten atomically with mode
        0644; keys it holds from earlier runs are kept, keys of this run replace them.
      - Later files (and C(/etc/sysctl.conf)) setting the same keys are reported as warnings,
        since they would override these values at boot.
    type: path
    default: /etc/sysctl.d/60-xdplb-katran.conf
notes:
  - The module spawns no commands; it reads and writes C(/proc/sys/net) directly.
seealso:
  - module: ansible.posix.sysctl
  - module: xdplb.katran.ip_tunnel
"""

EXAMPLES = r"""
- name: Let decapsulated packets through the tunnel device, keep every other device as it is
  xdplb.katran.net_conf:
    ipv4:
      rp_filter: 0
    devices: [ipip0, tunl0]

- name: Never answer ARP for the VIPs bound on lo
  xdplb.katran.net_conf:
    ipv4:
      arp_ignore: 1
      arp_announce: 2
    devices: "{{ ansible_facts.interfaces | reject('equalto', 'lo') | list }}"
    include_default: true

- name: Per-host file in a lab where hosts share one filesystem
  xdplb.katran.net_conf:
    ipv4: {rp_filter: 2}
    devices: [eth0.100]
    sysctl_file: /etc/sysctl.d/60-xdplb-katran-{{ inventory_hostname }}.conf
"""

RETURN = r"""
effective:
  description:
    - Effective values before and after, per family, key and device. The entry C(default) is what
      a device created later gets.
  returned: always
  type: dict
  sample:
    before: {ipv4: {rp_filter: {lo: 1, eth0: 1, ipip0: 1, default: 1}}}
    after: {ipv4: {rp_filter: {lo: 1, eth0: 1, ipip0: 0, default: 1}}}
writes:
  description: The sysctl writes made (or, in check mode, that would be made), in order, with why.
  returned: always
  type: list
  elements: dict
  sample:
    - {family: ipv4, key: rp_filter, target: eth0, before: 0, after: 1, sysctl: net.ipv4.conf.eth0.rp_filter,
       reason: keep effective value while conf.all changes}
    - {family: ipv4, key: rp_filter, target: all, before: 1, after: 0, sysctl: net.ipv4.conf.all.rp_filter,
       reason: lower conf.all so the requested devices can have 0}
devices:
  description: The devices the values were asked for.
  returned: always
  type: list
  elements: str
sysctl_file:
  description: The persisted file, C(path) null when O(persist=false).
  returned: always
  type: dict
  contains:
    path:
      description: Path of the file.
      type: str
    changed:
      description: Whether the file content changed (or would change).
      type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import netconf
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError, short


def _effective_text(effective):
    lines = []
    for family in sorted(effective):
        for key in sorted(effective[family]):
            for target, value in sorted(effective[family][key].items()):
                label = "(devices created later)" if target == "default" else target
                lines.append("%s %s %s = %s\n" % (family, key, label, value))
    return "".join(lines)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ipv4=dict(type="dict"),
            ipv6=dict(type="dict"),
            devices=dict(type="list", elements="str", default=[]),
            include_default=dict(type="bool", default=False),
            persist=dict(type="bool", default=True),
            sysctl_file=dict(type="path", default=netconf.DEFAULT_SYSCTL_FILE),
        ),
        required_one_of=[("ipv4", "ipv6")],
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = netconf.ensure(
            ipv4=params["ipv4"], ipv6=params["ipv6"], devices=params["devices"],
            include_default=params["include_default"], persist=params["persist"],
            sysctl_file=params["sysctl_file"], check_mode=module.check_mode)
    except EngineError as exc:
        module.fail_json(msg=str(exc), field=exc.field, value=short(exc.value))

    for warning in result.pop("warnings"):
        module.warn(warning)
    file_info = result["sysctl_file"]
    diff = [{"before_header": "effective values", "after_header": "effective values",
             "before": _effective_text(result["effective"]["before"]),
             "after": _effective_text(result["effective"]["after"])}]
    if file_info["path"]:
        diff.append({"before_header": file_info["path"], "after_header": file_info["path"],
                     "before": file_info["before"] or "", "after": file_info["after"] or ""})
    result["sysctl_file"] = {"path": file_info["path"], "changed": file_info["changed"]}
    module.exit_json(diff=diff, **result)


if __name__ == "__main__":
    main()
