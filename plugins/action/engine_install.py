# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of xdplb.katran.engine_install: read O(object.src) (and each of O(objects)) here, send the bytes along.

The module runs on the managed host and cannot see the controller's files. Reading the file here
and passing it base64-encoded in the module's arguments makes installing the BPF object part of the
one engine_install module run, instead of a copy task (a stat and a copy module run: ~1.9 s).
"""
from __future__ import annotations

import base64
import os

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

MODULE = "xdplb.katran.engine_install"


class _SourceError(Exception):
    """O(object.src) cannot be read on the controller; the message says why."""


class _Refused(Exception):
    """(msg, field, value) of an object the module must not be run with."""


class ActionModule(ActionBase):

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        args = dict(self._task.args)
        try:
            args["object"] = self._sent(args.get("object"), "object")
            objects = args.get("objects")
            if isinstance(objects, list):
                args["objects"] = [self._sent(obj, "objects[%d]" % i) for i, obj in enumerate(objects)]
        except _Refused as exc:
            return self._fail(result, *exc.args)
        if args["object"] is None:
            del args["object"]
        result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
        return result

    def _sent(self, obj, field):
        """`obj` ({src, dest} or {content_base64, dest}) as the module gets it: src read here and
        replaced by its bytes. Anything else is left to the module's checks."""
        if not isinstance(obj, dict) or obj.get("src") is None:
            return obj
        # Checked here because the file is read before the module sees its arguments; the module
        # validates the rest (types, the required dest) before it writes anything.
        if obj.get("content_base64") is not None:
            raise _Refused("%s: give src or content_base64, not both" % field, field, None)
        try:
            data = self._read(obj["src"])
        except _SourceError as exc:
            raise _Refused("%s.src: %s" % (field, exc), field + ".src", obj["src"]) from None
        sent = dict((k, v) for k, v in obj.items() if k != "src")
        sent["content_base64"] = base64.b64encode(data).decode("ascii")
        return sent

    def _read(self, src):
        """The bytes of ``src`` on the controller, found as ansible.builtin.copy finds its src (the
        role's and the playbook's files/ directories, then relative to them), vault decrypted."""
        if not isinstance(src, str) or not src:
            raise _SourceError("%r is not a path" % (src,))
        try:
            found = self._find_needle("files", src)
        except AnsibleError:
            raise _SourceError("%s not found on the controller" % src) from None
        if os.path.isdir(found):
            raise _SourceError("%s is a directory, not a file" % found)
        try:
            real = self._loader.get_real_file(found, decrypt=True)
        except AnsibleError as exc:  # a vaulted file that cannot be decrypted, for one
            raise _SourceError("%s cannot be read: %s" % (found, exc.message)) from None
        try:
            with open(real, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise _SourceError("%s cannot be read: %s" % (found, exc.strerror)) from None
        finally:
            self._loader.cleanup_tmp_file(real)

    @staticmethod
    def _fail(result, msg, field, value):
        result.update(failed=True, msg=msg, field=field, value=value)
        return result
