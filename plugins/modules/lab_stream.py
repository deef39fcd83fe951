#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_stream
short_description: A steady stream of new TCP connections through a VIP, and which backend answered each
version_added: 0.2.0
description:
  - With O(state=started), starts a detached process that opens a new TCP connection to
    O(address):O(port) every O(interval) seconds (each from a new source port, so the balancer
    hashes it anew), sends one line, reads the answer of M(xdplb.katran.lab_responder), which names
    the backend, and closes. Every attempt is recorded with its time, the backend or the error, in
    a JSON report replaced about once a second.
  - The point is to measure what clients see while the rings change (how long a dead backend
    still gets new connections, how many attempts failed in between, when a backend is back).
  - With O(state=status) or O(state=stopped) (which stops the process first), returns the counts
    of the attempts between O(since) and O(until) (wall-clock seconds since the epoch; the
    controller's C(now()) when the lab runs on the controller).
  - For labs and tests, to addresses inside the lab.
author:
  - xdplb.katran developers (@xdplb)
extends_documentation_fragment:
  - xdplb.katran.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details: O(state=started) starts nothing while the process of O(pidfile) runs.
options:
  state:
    description: Start the stream, read its report, or stop it and read the final report.
    type: str
    choices: [started, status, stopped]
    default: started
  address:
    description: Address to connect to (a VIP). Required with O(state=started).
    type: str
  port:
    description: Destination TCP port.
    type: int
    default: 8080
  interval:
    description: Seconds between two new connections (0.005-60).
    type: float
    default: 0.05
  timeout:
    description: Seconds an attempt may take (connect and answer).
    type: float
    default: 1.0
  duration:
    description: Seconds after which the process stops by itself.
    type: int
    default: 900
  report:
    description: Path of the JSON report (mode 0600); its directory must exist.
    type: path
    required: true
  pidfile:
    description: Path of the process's pidfile; default O(report) with C(.pid) appended.
    type: path
  since:
    description: Count only attempts made at or after this wall-clock time.
    type: float
  until:
    description: Count only attempts made at or before this wall-clock time.
    type: float
"""

EXAMPLES = r"""
- name: Fifty new connections a second to the VIP
  xdplb.katran.lab_stream:
    address: 10.99.0.10
    report: /run/lab/stream.json

- name: What clients saw after the kill
  xdplb.katran.lab_stream:
    state: status
    report: /run/lab/stream.json
    since: "{{ kill_time }}"
  register: seen
"""

RETURN = r"""
running:
  description: Whether the stream process runs.
  returned: always
  type: bool
attempts:
  description: Attempts in the window.
  returned: always
  type: int
answered:
  description: Attempts a backend answered.
  returned: always
  type: int
failures:
  description: Attempts that failed (refused, timed out, closed without an answer).
  returned: always
  type: int
servers:
  description: Per backend name, C(count) of answers and the times of the C(first) and C(last).
  returned: always
  type: dict
  sample: {"xkh-be1": {"count": 40, "first": 1765000000.1, "last": 1765000002.0}}
errors:
  description: Failed attempts by reason.
  returned: always
  type: dict
  sample: {"connection refused": 3}
first_failure:
  description: Time of the first failed attempt in the window, or null.
  returned: always
  type: float
last_failure:
  description: Time of the last failed attempt in the window, or null.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import labstream
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


def _summary(p, pidfile):
    data = labstream.read_report(p["report"]) or {"attempts": []}
    out = labstream.summarize(data["attempts"], p["since"], p["until"])
    out["running"] = bool(labstream.running_pid(pidfile))
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["started", "status", "stopped"], default="started"),
            address=dict(type="str"),
            port=dict(type="int", default=8080),
            interval=dict(type="float", default=0.05),
            timeout=dict(type="float", default=1.0),
            duration=dict(type="int", default=900),
            report=dict(type="path", required=True),
            pidfile=dict(type="path"),
            since=dict(type="float"),
            until=dict(type="float"),
        ),
        required_if=[("state", "started", ["address"])],
        supports_check_mode=True,
    )
    p = module.params
    pidfile = p["pidfile"] or p["report"] + ".pid"
    try:
        if p["state"] == "started":
            labstream.validate(p["address"], p["port"], p["interval"], p["duration"], p["timeout"])
            if module.check_mode:
                module.exit_json(changed=not labstream.running_pid(pidfile), **_summary(p, pidfile))
            changed, _pid = labstream.start(p["address"], p["port"], p["interval"], p["duration"], p["report"],
                                            pidfile, timeout=p["timeout"])
            module.exit_json(changed=changed, **_summary(p, pidfile))
        changed = False
        if p["state"] == "stopped" and not module.check_mode:
            changed = labstream.stop(pidfile, p["report"])
        module.exit_json(changed=changed, **_summary(p, pidfile))
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field)


if __name__ == "__main__":
    main()
