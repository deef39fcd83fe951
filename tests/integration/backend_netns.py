"""Throw-away network namespaces for the backend module tests, and running code inside them.

Code runs in a forked child that setns()es into the namespace, so the engine acts on "the namespace
the process is in" exactly as it does on a real host, with whatever pyroute2 the test runs under.
"""
import ctypes
import itertools
import os
import pickle
import subprocess
import traceback

CLONE_NEWNET = 0x40000000
PREFIX = "xkt-test-"
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


class ChildError(Exception):
    """An exception raised in the namespace child, with its type name and attributes kept."""

    def __init__(self, type_name, message, field=None, value=None, tb=""):
        super().__init__("%s: %s" % (type_name, message))
        self.type_name, self.message, self.field, self.value, self.tb = (
            type_name, message, field, value, tb)


def sh(cmd, ns=None, check=True):
    """Run an `ip`-style command (list), optionally inside `ns`; returns CompletedProcess."""
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns] + list(cmd)
    env = dict(os.environ, LANG="C", LC_ALL="C")
    return subprocess.run(cmd, check=check, capture_output=True, text=True, env=env)


class NetNS:
    def __init__(self):
        self.name = "%s%d-%d" % (PREFIX, os.getpid(), next(_counter))
        sh(["ip", "netns", "add", self.name])
        sh(["ip", "-n", self.name, "link", "set", "lo", "up"])

    def ip(self, *args, check=True):
        return sh(["ip", "-n", self.name] + list(args), check=check)

    def veth(self, name, peer):
        self.ip("link", "add", "name", name, "type", "veth", "peer", "name", peer)
        self.ip("link", "set", "dev", name, "up")
        self.ip("link", "set", "dev", peer, "up")

    def proc(self, family, target, key):
        return int(self.run(_read_proc, family, target, key))

    def set_proc(self, family, target, key, value):
        self.run(_write_proc, family, target, key, value)

    def run(self, func, *args, **kwargs):
        return run_in_ns(self.name, func, *args, **kwargs)

    def delete(self):
        sh(["ip", "netns", "del", self.name], check=False)


def _read_proc(family, target, key):
    with open("/proc/sys/net/%s/conf/%s/%s" % (family, target, key)) as handle:
        return handle.read().strip()


def _write_proc(family, target, key, value):
    with open("/proc/sys/net/%s/conf/%s/%s" % (family, target, key), "w") as handle:
        handle.write("%s\n" % value)


def run_in_ns(ns, func, *args, **kwargs):
    """func(*args, **kwargs) in a child process inside network namespace `ns`."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(read_fd)
        try:
            fd = os.open("/run/netns/%s" % ns, os.O_RDONLY)
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns(%s) failed" % ns)
            payload = ("ok", func(*args, **kwargs))
        except BaseException as exc:  # everything goes back to the parent
            payload = ("err", (type(exc).__name__, str(exc), getattr(exc, "field", None),
                               getattr(exc, "value", None), traceback.format_exc()))
        try:
            data = pickle.dumps(payload)
        except Exception as exc:
            data = pickle.dumps(("err", ("PickleError", str(exc), None, None, "")))
        with os.fdopen(write_fd, "wb") as out:
            out.write(data)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    if status == "err":
        raise ChildError(*value)
    return value
