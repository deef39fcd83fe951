"""Lab traffic: a steady stream of new TCP connections, for health-check tests.

A detached process opens a new connection to address:port every ``interval`` seconds (a new
source port each time, so the balancer hashes each one anew), sends one line, reads the answer of
M(lab_responder) (``<name> <client-address> <client-port>``) and closes. It records every
attempt as ``[wall time, server name or "", error or ""]`` and replaces its report (JSON) about
once a second. summarize() answers what a test asks: which backends answered in a time window,
when each answered last, how many attempts failed and why.

Stdlib only, relative imports only: it runs inside a module.
"""
import json
import os
import signal
import socket
import time

from ..errors import EngineError
from .labtraffic import running_pid

REPORT_VERSION = 1
_REPORT_EVERY = 1.0


def _write(path, data):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(data, handle, separators=(",", ":"))
    os.replace(tmp, path)


def read_report(path):
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EngineError("report: %s is not a report of a lab stream: %s" % (path, exc), field="report")
    if not isinstance(data, dict) or data.get("version") != REPORT_VERSION:
        raise EngineError("report: %s is not a report of a lab stream" % path, field="report")
    return data


def _attempt(family, address, port, timeout):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
        sock.sendall(b"hello\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(1024)
            if not chunk:
                break
            buf += chunk
        name = buf.decode(errors="replace").split()
        return (name[0], "") if name else ("", "closed without an answer")
    except socket.timeout:
        return "", "timed out"
    except OSError as exc:
        return "", (exc.strerror or str(exc)).lower()
    finally:
        sock.close()


def run(address, port, interval, duration, report, timeout, stop):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    head = {"version": REPORT_VERSION, "pid": os.getpid(), "address": address, "port": port, "interval": interval}
    attempts = []
    start = time.monotonic()
    next_at, next_report = start, start
    while not stop() and time.monotonic() - start < duration:
        server, error = _attempt(family, address, port, timeout)
        attempts.append([round(time.time(), 3), server, error])
        now = time.monotonic()
        if now >= next_report:
            _write(report, dict(head, running=True, attempts=attempts))
            next_report = now + _REPORT_EVERY
        next_at = max(next_at + interval, now)
        time.sleep(max(0.0, next_at - time.monotonic()))
    _write(report, dict(head, running=False, attempts=attempts))


def validate(address, port, interval, duration, timeout):
    import ipaddress
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise EngineError("address: %r is not an IP address" % address, field="address", value=address)
    for name, value, lo, hi in (("port", port, 1, 65535), ("interval", interval, 0.005, 60),
                                ("duration", duration, 1, 86400), ("timeout", timeout, 0.05, 60)):
        if not lo <= value <= hi:
            raise EngineError("%s: %s must be from %s to %s" % (name, value, lo, hi), field=name, value=value)


def start(address, port, interval, duration, report, pidfile, timeout=1.0):
    """Start the detached stream (no-op while the pidfile's process runs): (changed, pid)."""
    validate(address, port, interval, duration, timeout)
    pid = running_pid(pidfile)
    if pid:
        return False, pid
    for path, field in ((report, "report"), (pidfile, "pidfile")):
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise EngineError("%s: the directory of %s does not exist" % (field, path), field=field)
    if os.path.exists(report):
        os.unlink(report)
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the daemon
        os.close(read_fd)
        code = 0
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            flag = []
            signal.signal(signal.SIGTERM, lambda *_args: flag.append(1))
            fd = os.open(pidfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, ("%d\n" % os.getpid()).encode())
            os.close(fd)
            os.write(write_fd, b"ok")
            os.close(write_fd)
            run(address, port, interval, duration, report, timeout, lambda: bool(flag))
        except BaseException:  # pylint: disable=broad-except  # the daemon reports through its exit only
            code = 1
        finally:
            try:
                os.unlink(pidfile)
            except OSError:
                pass
            os._exit(code)
    os.close(write_fd)
    os.waitpid(child, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        if pipe.read() != b"ok":
            raise EngineError("the stream process did not start")
    return True, running_pid(pidfile)


def stop(pidfile, report, wait=10.0):
    """Stop the stream and wait for its last report; returns whether a process was stopped."""
    pid = running_pid(pidfile)
    if not pid:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while running_pid(pidfile) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def summarize(attempts, since=None, until=None):
    """Counts over the attempts in [since, until] (wall times; None: unbounded)."""
    servers, errors = {}, {}
    ok = failed = 0
    first_failure = last_failure = None
    for at, server, error in attempts:
        if (since is not None and at < since) or (until is not None and at > until):
            continue
        if server:
            ok += 1
            s = servers.setdefault(server, {"count": 0, "first": at, "last": at})
            s["count"] += 1
            s["last"] = at
        else:
            failed += 1
            errors[error] = errors.get(error, 0) + 1
            first_failure = at if first_failure is None else first_failure
            last_failure = at
    return {"attempts": ok + failed, "answered": ok, "failures": failed, "servers": servers, "errors": errors,
            "first_failure": first_failure, "last_failure": last_failure}
