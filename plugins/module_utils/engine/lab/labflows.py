"""Lab traffic: long-lived TCP flows that keep talking, for failover, drain and rollout tests.

A detached process opens ``count`` TCP connections to address:port, each from its own ephemeral
port (so ECMP on the router and the balancer's hash place each flow anew), sends one line on every
connection each ``interval`` seconds and reads the answers of M(lab_responder)
(``<name> <client-address> <client-port>``). It keeps a report, a JSON file replaced atomically
about once a second, that says per flow which backend answers it, how many lines were sent and
answered, the longest wait for an answer, and how the flow ended:

- ``open``: still talking;
- ``closed``: ended by the client on request (stop, or the end of ``duration``) and the responder's
  FIN came back: a clean end;
- ``reset``: the connection was reset (a backend that does not know it answered with a RST, which
  is what a flow moved to another backend gets);
- ``error``: the connection could not be opened, the peer closed it uninvited, or anything else.

SIGTERM (or the end of ``duration``) ends every open flow cleanly: half-close (FIN), wait for the
responder's FIN, then close. Stdlib only, relative imports only: it runs inside a module and as a
copied engine alike.
"""

import errno
import json
import os
import select
import signal
import socket
import time

from ..errors import EngineError
from .labtraffic import running_pid

REPORT_VERSION = 1
_REPORT_EVERY = 1.0


class _Flow(object):
    __slots__ = ("id", "sock", "state", "error", "local_port", "server", "servers", "client_address",
                 "sent", "replies", "buf", "opened_at", "closed_at", "last_reply", "max_gap",
                 "waiting_since", "deadline")

    def __init__(self, index):
        self.id = index
        self.sock = None
        self.state = "connecting"
        self.error = None
        self.local_port = 0
        self.server = None
        self.servers = []
        self.client_address = None
        self.sent = 0
        self.replies = 0
        self.buf = b""
        self.opened_at = None
        self.closed_at = None
        self.last_reply = None
        self.max_gap = 0.0
        self.waiting_since = None   # monotonic time of the oldest unanswered line
        self.deadline = None

    def view(self, now_mono, mono_to_wall):
        gap = self.max_gap
        if self.state == "open" and self.waiting_since is not None:
            gap = max(gap, now_mono - self.waiting_since)
        return {"id": self.id, "local_port": self.local_port, "server": self.server,
                "servers": list(self.servers), "client_address": self.client_address, "state": self.state,
                "error": self.error, "sent": self.sent, "replies": self.replies,
                "max_gap": round(gap, 3),
                "opened_at": mono_to_wall(self.opened_at), "closed_at": mono_to_wall(self.closed_at),
                "last_reply": mono_to_wall(self.last_reply)}


def summarize(flows, stall_after=5.0, now=None):
    """Counts over the flows of a report (the ``flows`` list as written)."""
    now = time.time() if now is None else now
    counts = {"open": 0, "closed": 0, "reset": 0, "error": 0, "connecting": 0, "closing": 0}
    servers = {}
    stalled = 0
    for flow in flows:
        counts[flow["state"]] = counts.get(flow["state"], 0) + 1
        if flow["server"]:
            servers[flow["server"]] = servers.get(flow["server"], 0) + 1
        if flow["state"] == "open" and flow["sent"] > flow["replies"]:
            last = flow["last_reply"] or flow["opened_at"] or now
            if now - last > stall_after:
                stalled += 1
    started = sum(1 for flow in flows if flow["opened_at"] is not None)
    return {"started": started, "open": counts["open"] + counts["closing"], "closed": counts["closed"],
            "reset": counts["reset"], "errors": counts["error"] + counts["connecting"],
            "stalled": stalled, "replies": sum(flow["replies"] for flow in flows),
            "sent": sum(flow["sent"] for flow in flows),
            "max_gap": max([flow["max_gap"] for flow in flows] or [0.0]),
            "servers": servers, "moved": sum(1 for flow in flows if len(flow["servers"]) > 1),
            "error_messages": sorted({"flow %d: %s" % (f["id"], f["error"]) for f in flows if f["error"]})[:10]}


def _write_json(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def read_report(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise EngineError("report: cannot read %s: %s" % (path, exc.strerror), field="report")
    except ValueError as exc:
        raise EngineError("report: %s is not a report of lab flows: %s" % (path, exc), field="report")


class _Runner(object):
    """The detached process: one select loop over every flow."""

    def __init__(self, address, port, count, interval, duration, report, connect_timeout, close_timeout):
        self.address, self.port, self.count = address, port, count
        self.interval, self.duration, self.report = interval, duration, report
        self.connect_timeout, self.close_timeout = connect_timeout, close_timeout
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.flows = [_Flow(i) for i in range(count)]
        self.stop = False
        self.phase = "connecting"
        self.wall0, self.mono0 = time.time(), time.monotonic()
        self.dirty = True

    def wall(self, mono):
        return None if mono is None else round(self.wall0 + (mono - self.mono0), 3)

    def write(self):
        now = time.monotonic()
        flows = [f.view(now, self.wall) for f in self.flows]
        _write_json(self.report, {"version": REPORT_VERSION, "pid": os.getpid(), "address": self.address,
                                  "port": self.port, "count": self.count, "interval": self.interval,
                                  "phase": self.phase, "started_at": self.wall(self.mono0),
                                  "updated_at": self.wall(now), "flows": flows})
        self.dirty = False

    def _end(self, flow, state, error=None):
        if flow.sock is not None:
            try:
                flow.sock.close()
            except OSError:
                pass
            flow.sock = None
        flow.state, flow.error = state, error
        flow.closed_at = time.monotonic()
        self.dirty = True

    def _connect_all(self):
        now = time.monotonic()
        for flow in self.flows:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            sock.setblocking(False)
            flow.sock, flow.deadline = sock, now + self.connect_timeout
            rc = sock.connect_ex((self.address, self.port))
            if rc not in (0, errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
                self._end(flow, "error", "connect: %s" % os.strerror(rc))

    def _connected(self, flow):
        rc = flow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if rc:
            self._end(flow, "error", "connect: %s" % os.strerror(rc))
            return
        flow.state, flow.opened_at = "open", time.monotonic()
        flow.local_port = flow.sock.getsockname()[1]
        flow.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.dirty = True
        self._send(flow)

    def _send(self, flow):
        try:
            flow.sock.send(("%d %d\n" % (flow.id, flow.sent)).encode())
        except (BlockingIOError, InterruptedError):
            return  # the send buffer is full (the path is down): TCP is already retransmitting
        except ConnectionResetError:
            self._end(flow, "reset", "connection reset by peer")
            return
        except BrokenPipeError:
            self._end(flow, "reset", "broken pipe (reset by peer)")
            return
        except OSError as exc:
            self._end(flow, "error", "send: %s" % (exc.strerror or exc))
            return
        flow.sent += 1
        if flow.waiting_since is None:
            flow.waiting_since = time.monotonic()

    def _read(self, flow):
        try:
            data = flow.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            self._end(flow, "reset", "connection reset by peer")
            return
        except OSError as exc:
            self._end(flow, "error", "recv: %s" % (exc.strerror or exc))
            return
        if not data:
            if flow.state == "closing":
                self._end(flow, "closed")
            else:
                self._end(flow, "error", "closed by the peer")
            return
        flow.buf += data
        now = time.monotonic()
        while b"\n" in flow.buf:
            line, flow.buf = flow.buf.split(b"\n", 1)
            fields = line.decode(errors="replace").split()
            if not fields:
                continue
            flow.replies += 1
            if flow.server is None:
                flow.server = fields[0]
                flow.client_address = fields[1] if len(fields) > 1 else None
            if fields[0] not in flow.servers:
                flow.servers.append(fields[0])
            if flow.waiting_since is not None:
                flow.max_gap = max(flow.max_gap, now - flow.waiting_since)
            flow.last_reply = now
            flow.waiting_since = None if flow.replies >= flow.sent else now

    def _begin_close(self):
        self.phase = "closing"
        now = time.monotonic()
        for flow in self.flows:
            if flow.state == "open":
                try:
                    flow.sock.shutdown(socket.SHUT_WR)
                except OSError as exc:
                    self._end(flow, "error", "shutdown: %s" % (exc.strerror or exc))
                    continue
                flow.state, flow.deadline = "closing", now + self.close_timeout
            elif flow.state == "connecting":
                self._end(flow, "error", "still connecting when the flows were stopped")
        self.dirty = True

    def run(self):
        self._connect_all()
        end = time.monotonic() + self.duration
        next_tick = time.monotonic() + self.interval
        next_report = 0.0
        while True:
            now = time.monotonic()
            if self.phase != "closing" and (self.stop or now >= end):
                self._begin_close()
            live = [f for f in self.flows if f.state in ("connecting", "open", "closing")]
            if self.phase == "connecting" and not any(f.state == "connecting" for f in self.flows):
                self.phase, self.dirty = "running", True
            if not live and self.phase == "closing":
                break
            for flow in live:
                if flow.state in ("connecting", "closing") and now >= flow.deadline:
                    self._end(flow, "error", "connect timed out" if flow.state == "connecting"
                              else "no FIN from the peer after the client closed")
            if self.dirty or now >= next_report:
                self.write()
                next_report = now + _REPORT_EVERY
            live = [f for f in self.flows if f.state in ("connecting", "open", "closing")]
            readers = [f.sock for f in live if f.state in ("open", "closing")]
            writers = [f.sock for f in live if f.state == "connecting"]
            wait = max(0.0, min(next_tick, next_report) - time.monotonic())
            try:
                ready_r, ready_w = select.select(readers, writers, [], min(wait, 0.5))[:2]
            except InterruptedError:
                continue
            by_sock = {f.sock: f for f in live}
            for sock in ready_w:
                if by_sock[sock].state == "connecting":
                    self._connected(by_sock[sock])
            for sock in ready_r:
                flow = by_sock[sock]
                if flow.sock is sock:
                    self._read(flow)
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.interval
                if self.phase != "closing":
                    for flow in self.flows:
                        if flow.state == "open":
                            self._send(flow)
        self.phase = "done"
        self.write()


def validate(address, port, count, interval, duration):
    import ipaddress
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise EngineError("address: '%s' is not an IP address" % address, field="address", value=address)
    if not 1 <= port <= 65535:
        raise EngineError("port: %d is not a port number (1-65535)" % port, field="port", value=port)
    if not 1 <= count <= 1000:
        raise EngineError("count: %d must be from 1 to 1000" % count, field="count", value=count)
    if not 0.05 <= interval <= 60:
        raise EngineError("interval: %s must be from 0.05 to 60 seconds" % interval, field="interval", value=interval)
    if not 1 <= duration <= 86400:
        raise EngineError("duration: %s must be from 1 to 86400 seconds" % duration, field="duration", value=duration)


def start(address, port, count, interval, duration, report, pidfile, connect_timeout=10.0, close_timeout=10.0,
          wait=60.0):
    """Start the detached flows; wait until every flow is open or failed (at most ``wait`` s).

    Returns the first report. Raises EngineError when the process does not come up."""
    validate(address, port, count, interval, duration)
    for path in (report, pidfile):
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise EngineError("%s: the directory of %s does not exist" % (
                "report" if path == report else "pidfile", path), field="report" if path == report else "pidfile")
    try:
        os.unlink(report)
    except OSError:
        pass
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
            runner = _Runner(address, port, count, interval, duration, report, connect_timeout, close_timeout)

            def _stop(signum, frame):
                runner.stop = True

            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
            fd = os.open(pidfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, ("%d\n" % os.getpid()).encode())
            os.close(fd)
            runner.write()
            os.write(write_fd, b"ok")
            os.close(write_fd)
            runner.run()
        except BaseException:
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
            raise EngineError("the flow process did not start")
    deadline = time.monotonic() + wait
    data = read_report(report)
    while time.monotonic() < deadline:
        data = read_report(report)
        if data and data["phase"] != "connecting":
            break
        time.sleep(0.1)
    return data


def stop(report, pidfile, wait=60.0):
    """End every flow cleanly and wait for the process to exit; returns the final report."""
    pid = running_pid(pidfile)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while running_pid(pidfile) and time.monotonic() < deadline:
            time.sleep(0.1)
        if running_pid(pidfile):
            raise EngineError("the flow process %d did not exit within %s seconds" % (pid, wait))
    return read_report(report)


def wait_progress(report, replies, timeout, pidfile=None):
    """Wait until every flow that is open now has ``replies`` more answers than now (or is no longer
    open), at most ``timeout`` seconds. Returns (report, flows that made it, flows that did not)."""
    first = read_report(report)
    if first is None:
        raise EngineError("report: %s does not exist (start the flows first)" % report, field="report")
    base = {f["id"]: f["replies"] for f in first["flows"] if f["state"] == "open"}
    deadline = time.monotonic() + timeout
    data = first
    while True:
        data = read_report(report) or data
        by_id = {f["id"]: f for f in data["flows"]}
        behind = [i for i, n in base.items()
                  if by_id[i]["state"] == "open" and by_id[i]["replies"] < n + replies]
        if not behind or time.monotonic() >= deadline or data["phase"] == "done":
            break
        if pidfile and not running_pid(pidfile):
            data = read_report(report) or data
            break
        time.sleep(0.2)
    by_id = {f["id"]: f for f in data["flows"]}
    done = [i for i, n in base.items() if by_id[i]["replies"] >= n + replies]
    return data, len(done), len(base) - len(done)
