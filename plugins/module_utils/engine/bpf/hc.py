"""hc_encap.o on the balancer interface's tc egress, and its mark -> real map.

The agent owns it: it loads the program with a map of its own (nothing pinned: the filter holds
the program, the program holds the map), attaches it with a fixed handle and priority so a
restarted agent replaces its predecessor's filter atomically, and keeps one entry per real it
checks. A check socket with SO_MARK = MARK_BASE + n leaves wrapped towards real n.
"""

import socket

from . import hc_abi, libbpf
from ..errors import EngineError

# tc filter identity on clsact egress: handle "HC", priority 1. bpf_tc_attach with
# BPF_TC_F_REPLACE swaps the program of exactly this filter, never another tool's.
TC_HANDLE = 0x4843
TC_PRIORITY = 1
# Marks the agent gives its check sockets: MARK_BASE + 1 .. MARK_BASE + HC_MAX_REALS. Chosen
# away from the low bits and the 0xff000000 / 0x0000ff00 ranges kube-proxy, Cilium and
# firewalld use.
MARK_BASE = 0x58480000


class Encap:
    """The loaded program and its map; attach() puts it on the interface."""

    def __init__(self, object_path, interface):
        try:
            self.ifindex = socket.if_nametoindex(interface)
        except OSError:
            raise EngineError("interface: %r does not exist in this network namespace" % interface,
                              field="interface", value=interface)
        self.interface = interface
        self.entries = {}
        try:
            self.obj = libbpf.BpfObject(object_path, pin_maps=False).load()
            self.prog_fd = self.obj.program_fd(hc_abi.PROG)
            self.reals = self.obj.map(hc_abi.MAP_REALS)
            self.stats_map = self.obj.map(hc_abi.MAP_STATS)
        except libbpf.BpfError as exc:
            raise EngineError("health-check program %s: %s" % (object_path, exc), field="hc_object",
                              value=object_path)
        self.max_entries = self.reals.info["max_entries"]

    def attach(self):
        try:
            return libbpf.tc_attach(self.ifindex, self.prog_fd, handle=TC_HANDLE, priority=TC_PRIORITY,
                                    egress=True)
        except libbpf.BpfError as exc:
            raise EngineError("attaching the health-check program to %s (tc egress): %s" % (self.interface, exc),
                              field="interface", value=self.interface)

    def attached(self):
        """Whether our filter on the interface runs this program (not a predecessor's)."""
        prog_id = libbpf.tc_query(self.ifindex, handle=TC_HANDLE, priority=TC_PRIORITY, egress=True)
        return prog_id is not None and prog_id == libbpf.prog_info(self.prog_fd)["id"]

    def sync(self, wanted):
        """Make the map hold exactly `wanted`: {mark: (outer source, real)}. Returns the changes."""
        if len(wanted) > self.max_entries:
            raise EngineError("%d reals to check exceed the %d the health-check program holds (HC_MAX_REALS)"
                              % (len(wanted), self.max_entries))
        changes = 0
        for mark, pair in wanted.items():
            if self.entries.get(mark) != pair:
                self.reals.update(hc_abi.mark_key(mark), hc_abi.real_value(*pair))
                self.entries[mark] = pair
                changes += 1
        for mark in [m for m in self.entries if m not in wanted]:
            self.reals.delete(hc_abi.mark_key(mark))
            del self.entries[mark]
            changes += 1
        return changes

    def stats(self):
        return hc_abi.read_stats(self.stats_map)

    def detach(self):
        try:
            return libbpf.tc_detach(self.ifindex, handle=TC_HANDLE, priority=TC_PRIORITY, egress=True)
        except libbpf.BpfError:
            return False

    def close(self):
        if self.obj is not None:
            self.obj.close()
            self.obj = None
