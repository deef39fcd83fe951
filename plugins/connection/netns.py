# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: netns
short_description: Run tasks inside a named network namespace on the controller
description:
  - Runs each task inside the network namespace C(/run/netns/<name>) of the controller host, so
    a whole fleet (client, router, balancers, backends) can live on one machine.
  - Every command runs in a private mount namespace with a fresh sysfs mounted on C(/sys), so
    C(/sys/class/net) and gathered facts show the namespace's own interfaces, and with the host's
    bpffs bound back on C(/sys/fs/bpf), so BPF pins are shared with the host.
    (C(ip netns exec) would hide the host's bpffs; plain C(nsenter) would show the host's interfaces.)
  - Files are shared with the controller (same filesystem); no transfer takes place.
  - The controller must run as root and have C(nsenter) and C(unshare) (util-linux).
version_added: 0.1.0
author:
  - xdplb.katran developers (@xdplb)
options:
  remote_addr:
    description:
      - Name of the network namespace (as listed by C(ip netns list)).
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_netns_name
  netns_dir:
    description:
      - Directory holding the named network namespace handles.
    type: path
    default: /run/netns
    vars:
      - name: ansible_netns_dir
  bpffs:
    description:
      - The host's BPF filesystem, bound into every command's mount namespace. Mounted on the host
        first when it is not mounted yet.
    type: path
    default: /sys/fs/bpf
    vars:
      - name: ansible_netns_bpffs
notes:
  - A missing namespace makes the host UNREACHABLE with a message naming the namespace.
  - Changes made by a task to mounts are private to that task.
"""

EXAMPLES = r"""
# inventory.yml
# all:
#   hosts:
#     xkt-lb1:
#       ansible_connection: xdplb.katran.netns
#     web1:
#       ansible_connection: xdplb.katran.netns
#       ansible_host: xkt-be1   # namespace name differs from the host name

- name: Show the interfaces a lab host sees
  hosts: xkt-lb1
  gather_facts: true
  tasks:
    - name: Print them
      ansible.builtin.debug:
        var: ansible_facts.interfaces
"""

import os
import shutil
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

# Runs inside the new mount namespace. The command arrives as "$1" so nothing from the task is
# ever spliced into this script. The host bpffs is bound aside before sysfs is replaced (a new
# sysfs hides it) and moved back on top afterwards.
_ENTER_SCRIPT = r"""
set -e
bpffs="$2"
aside=$(mktemp -d /tmp/.xdplb-netns-bpffs.XXXXXX)
mount --bind "$bpffs" "$aside"
mount -t sysfs sysfs /sys
mount --move "$aside" "$bpffs"
rmdir "$aside"
exec /bin/sh -c "$1"
"""


class Connection(ConnectionBase):
    """Local execution inside a named network namespace."""

    transport = "xdplb.katran.netns"
    has_pipelining = True
    default_user = "root"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._netns_path = None

    def _connect(self):
        if self._connected:
            return self
        if os.geteuid() != 0:
            raise AnsibleConnectionFailure("the netns connection needs root on the controller")
        for tool in ("nsenter", "unshare", "mount"):
            if shutil.which(tool) is None:
                raise AnsibleConnectionFailure(f"the netns connection needs '{tool}' (util-linux) on the controller")
        name = self.get_option("remote_addr")
        path = os.path.join(self.get_option("netns_dir"), name)
        if not os.path.exists(path):
            raise AnsibleConnectionFailure(
                f"network namespace '{name}' does not exist ({path} is missing); create it first (e.g. the xdplb.katran.lab role)"
            )
        self._ensure_host_bpffs()
        self._netns_path = path
        self._connected = True
        display.vvv(f"NETNS CONNECTION to {name}", host=name)
        return self

    def _ensure_host_bpffs(self):
        bpffs = self.get_option("bpffs")
        if subprocess.run(["mountpoint", "-q", bpffs], check=False).returncode == 0:
            return
        os.makedirs(bpffs, exist_ok=True)
        result = subprocess.run(["mount", "-t", "bpf", "bpf", bpffs], capture_output=True, check=False)
        if result.returncode != 0:
            raise AnsibleConnectionFailure(f"cannot mount bpffs on {bpffs}: {result.stderr.decode(errors='replace').strip()}")

    def exec_command(self, cmd, in_data=None, sudoable=False):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        argv = [
            "nsenter", f"--net={self._netns_path}", "--",
            "unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", _ENTER_SCRIPT, "xdplb-netns", cmd, self.get_option("bpffs"),
        ]
        display.vvv(f"EXEC {cmd}", host=self.get_option("remote_addr"))
        env = dict(os.environ, LANG="C", LC_ALL="C")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if in_data else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        stdout, stderr = proc.communicate(in_data)
        return proc.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        self._copy(in_path, out_path)

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        self._copy(in_path, out_path)

    @staticmethod
    def _copy(src, dest):
        # Namespaces share the controller's filesystem: a copy is the whole transfer.
        if not os.path.exists(to_bytes(src, errors="surrogate_or_strict")):
            raise AnsibleError(f"file or module does not exist: {src}")
        try:
            shutil.copyfile(src, dest)
        except OSError as exc:
            raise AnsibleError(f"failed to copy {src} to {dest}: {exc}") from exc

    def reset(self):
        # Nothing persists between commands (each one is a fresh nsenter): a reset (meta:
        # reset_connection, a reboot) only forgets the namespace, so the next command checks again
        # that it exists. The base class would warn that reset is not implemented.
        self.close()

    def close(self):
        self._connected = False
        self._netns_path = None
