"""stdout callback for tests: the whole run as one JSON document at the end.

ansible-core has no JSON stdout callback of its own (it lives in ansible.posix, which cannot be
installed offline here), and tests must read results, not scrape text.
"""
from __future__ import annotations

import json
import sys

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: xdplb_test_results
type: stdout
short_description: Task results and stats as one JSON document, for tests
description:
  - Prints one JSON document once the playbook ends, with C(tasks) (task, host, status and result
    of every task) and C(stats) (the recap counters per host).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "xdplb_test_results"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tasks = []

    def _add(self, status, result):
        self.tasks.append({"task": result._task.get_name(), "host": result._host.get_name(),
                           "status": status, "result": result._result})

    def v2_runner_on_ok(self, result):
        self._add("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._add("failed", result)

    def v2_runner_on_skipped(self, result):
        self._add("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._add("unreachable", result)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        sys.stdout.write(json.dumps({"tasks": self.tasks, "stats": summary}, default=str) + "\n")
