#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_flows
short_description: Keep long-lived TCP flows talking through a VIP and report how they fared
version_added: 0.1.0
description:
  - With O(state=started), starts a detached process that opens O(count) TCP connections to
    O(address):O(port), each from its own source port, sends one line on every connection each
    O(interval) seconds and reads the answers of M(xdplb.katran.lab_responder), which name the
    backend. It writes a report (JSON) to O(report) about once a second.
  - The point is to prove that established connections survive an operation (losing a balancer,
    draining a backend, rolling out a new program). A flow that lands on a backend that does not
    know it is reset, and the report counts resets.
  - With O(state=status), reads the report; with O(wait_replies), first waits (at most O(timeout)
    seconds) until every flow that is open has that many more answers, which proves traffic still
    flows after a change.
  - With O(state=stopped), ends every open flow cleanly (the client sends FIN and waits for the
    responder's), waits for the process to exit and returns the final report. A flow that ended
    that way is C(closed); one that was reset is C(reset).
  - The process also ends its flows cleanly by itself after O(duration) seconds.
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
    description: Start the flows, read their report, or stop them.
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
  count:
    description: Number of connections (1-1000).
    type: int
    default: 20
  interval:
    description: Seconds between two lines on each connection (0.05-60).
    type: float
    default: 0.5
  duration:
    description: Seconds after which the process ends every flow cleanly and exits.
    type: int
    default: 900
  report:
    description: Path of the JSON report (mode 0600); its directory must exist.
    type: path
    required: true
  pidfile:
    description: Where the process id is kept; defaults to O(report) with C(.pid) appended.
    type: path
  connect_timeout:
    description: Seconds a connection may take to open before it counts as an error.
    type: float
    default: 10.0
  wait_replies:
    description:
      - With O(state=status), wait until every flow that is open when the task starts has this many
        more answers (or is no longer open). 0 does not wait.
    type: int
    default: 0
  timeout:
    description:
      - Seconds to wait, for the flows to open (O(state=started)), for O(wait_replies)
        (O(state=status)) or for the process to exit (O(state=stopped)).
    type: float
    default: 60.0
  stall_after:
    description: An open flow whose oldest unanswered line is older than this many seconds counts as stalled.
    type: float
    default: 5.0
  min_open:
    description:
      - With O(state=started), fail when fewer flows opened; defaults to O(count).
    type: int
notes:
  - The process is detached from Ansible and runs in the network namespace of the task.
seealso:
  - module: xdplb.katran.lab_responder
  - module: xdplb.katran.lab_probe
"""

EXAMPLES = r"""
- name: Forty long-lived flows through the VIP
  xdplb.katran.lab_flows:
    address: 10.99.0.10
    port: 8080
    count: 40
    interval: 0.2
    report: /run/xdplb-lab/xkt-client/flows.json

- name: Every open flow got three more answers since now
  xdplb.katran.lab_flows:
    state: status
    report: /run/xdplb-lab/xkt-client/flows.json
    wait_replies: 3
    timeout: 60
  register: flows

- name: Nothing was reset
  ansible.builtin.assert:
    that:
      - flows.reset == 0
      - flows.behind == 0

- name: End the flows cleanly
  xdplb.katran.lab_flows:
    state: stopped
    report: /run/xdplb-lab/xkt-client/flows.json
  register: final
"""

RETURN = r"""
running:
  description: Whether the flow process runs (after the task).
  returned: always
  type: bool
pid:
  description: Process id of the flow process (0 when none runs).
  returned: always
  type: int
phase:
  description: C(connecting), C(running), C(closing) or C(done); null when there is no report.
  returned: always
  type: str
started:
  description: Flows that were opened.
  returned: always
  type: int
open:
  description: Flows still open.
  returned: always
  type: int
closed:
  description: Flows ended cleanly on request (FIN both ways).
  returned: always
  type: int
reset:
  description: Flows that were reset.
  returned: always
  type: int
errors:
  description: Flows that failed otherwise (could not open, closed by the peer uninvited, no FIN back).
  returned: always
  type: int
stalled:
  description: Open flows waiting longer than O(stall_after) for an answer.
  returned: always
  type: int
moved:
  description: Flows answered by more than one responder (must be 0 for TCP).
  returned: always
  type: int
sent:
  description: Lines sent over all flows.
  returned: always
  type: int
replies:
  description: Answers received over all flows.
  returned: always
  type: int
max_gap:
  description: Longest wait for an answer on any flow, in seconds.
  returned: always
  type: float
servers:
  description: Number of flows each responder answers, by name.
  returned: always
  type: dict
  sample: {"xkt-be1": 13, "xkt-be2": 14, "xkt-be3": 13}
error_messages:
  description: Up to ten distinct reasons flows failed or were reset.
  returned: always
  type: list
  elements: str
progressed:
  description: With O(wait_replies), open flows that got the answers waited for.
  returned: when O(state=status)
  type: int
behind:
  description: With O(wait_replies), open flows that did not get them within O(timeout).
  returned: when O(state=status)
  type: int
flows:
  description:
    - Per flow C(id), C(local_port), C(server), C(servers), C(client_address), C(state), C(error),
      C(sent), C(replies), C(max_gap), C(opened_at), C(closed_at) and C(last_reply) (epoch seconds).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import labflows
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError

_EMPTY = {"started": 0, "open": 0, "closed": 0, "reset": 0, "errors": 0, "stalled": 0, "moved": 0, "sent": 0,
          "replies": 0, "max_gap": 0.0, "servers": {}, "error_messages": []}


def _result(data, pidfile, stall_after):
    pid = labflows.running_pid(pidfile)
    if data is None:
        return dict(_EMPTY, running=bool(pid), pid=pid, phase=None, flows=[])
    out = labflows.summarize(data["flows"], stall_after=stall_after)
    out.update(running=bool(pid), pid=pid, phase=data["phase"], flows=data["flows"])
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["started", "status", "stopped"], default="started"),
            address=dict(type="str"),
            port=dict(type="int", default=8080),
            count=dict(type="int", default=20),
            interval=dict(type="float", default=0.5),
            duration=dict(type="int", default=900),
            report=dict(type="path", required=True),
            pidfile=dict(type="path"),
            connect_timeout=dict(type="float", default=10.0),
            wait_replies=dict(type="int", default=0),
            timeout=dict(type="float", default=60.0),
            stall_after=dict(type="float", default=5.0),
            min_open=dict(type="int"),
        ),
        required_if=[("state", "started", ["address"])],
        supports_check_mode=True,
    )
    p = module.params
    pidfile = p["pidfile"] or p["report"] + ".pid"
    try:
        if p["state"] == "started":
            labflows.validate(p["address"], p["port"], p["count"], p["interval"], p["duration"])
            if labflows.running_pid(pidfile):
                module.exit_json(changed=False, **_result(labflows.read_report(p["report"]), pidfile, p["stall_after"]))
            if module.check_mode:
                module.exit_json(changed=True, **_result(None, pidfile, p["stall_after"]))
            data = labflows.start(p["address"], p["port"], p["count"], p["interval"], p["duration"], p["report"],
                                  pidfile, connect_timeout=p["connect_timeout"], wait=p["timeout"])
            result = _result(data, pidfile, p["stall_after"])
            wanted = p["count"] if p["min_open"] is None else p["min_open"]
            if result["started"] < wanted:
                module.fail_json(msg="%d of %d flows to %s:%d opened (wanted %d)" % (
                    result["started"], p["count"], p["address"], p["port"], wanted), changed=True, **result)
            module.exit_json(changed=True, **result)
        if p["state"] == "status":
            if p["wait_replies"] < 0:
                module.fail_json(msg="wait_replies: %d must not be negative" % p["wait_replies"], field="wait_replies")
            if p["wait_replies"]:
                data, done, behind = labflows.wait_progress(p["report"], p["wait_replies"], p["timeout"], pidfile)
            else:
                data, done, behind = labflows.read_report(p["report"]), 0, 0
            module.exit_json(changed=False, progressed=done, behind=behind,
                             **_result(data, pidfile, p["stall_after"]))
        running = bool(labflows.running_pid(pidfile))
        if module.check_mode or not running:
            module.exit_json(changed=running, **_result(labflows.read_report(p["report"]), pidfile, p["stall_after"]))
        data = labflows.stop(p["report"], pidfile, wait=p["timeout"])
        module.exit_json(changed=True, **_result(data, pidfile, p["stall_after"]))
    except EngineError as exc:
        module.fail_json(msg=exc.msg, field=exc.field)


if __name__ == "__main__":
    main()
