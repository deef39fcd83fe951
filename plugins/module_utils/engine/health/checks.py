"""The check kinds: one nonblocking socket each, driven by the Monitor's selector.

A check connects to its inner destination (the VIP) with SO_MARK set to its real's mark; the
balancer's hc_encap program wraps every packet of a marked socket towards that real
(bpf/hc.py). The kernel's own TCP/UDP stack does the protocol, so an http check is a real
HTTP exchange over the data path. With mark 0 a check goes where routing sends it (tests).

Each probe ends in exactly one Result; no socket error ever leaves this module as an exception.
The owner closes a finished probe (close()) after taking its socket out of the selector.
"""

import errno
import os
import socket
import struct
import time

KINDS = ("tcp", "http", "udp", "none")
_LINGER_RST = struct.pack("ii", 1, 0)  # close() sends RST: no TIME_WAIT per check
_MAX_HTTP = 65536


class Result:
    __slots__ = ("ok", "reason", "latency")

    def __init__(self, ok, reason, latency=None):
        self.ok, self.reason, self.latency = ok, reason, latency

    def __repr__(self):
        return "Result(%r, %r)" % (self.ok, self.reason)


def _family(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _ms(seconds):
    return "%.1f ms" % (seconds * 1000.0)


class Probe:
    """One run of one check. The Monitor calls events() for the selector mask it wants,
    ready() when the socket is ready, expire() at the deadline; done holds the Result."""

    def __init__(self, spec, now):
        self.spec = spec
        self.started = now
        self.deadline = now + spec["timeout"]
        self.done = None
        self.sock = None
        self._buf = b""
        self._sent = False
        kind = spec["kind"]
        stype = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
        try:
            s = socket.socket(_family(spec["address"]), stype | socket.SOCK_NONBLOCK)
        except OSError as exc:
            self.done = Result(False, "socket: %s" % os.strerror(exc.errno))
            return
        self.sock = s
        try:
            if spec.get("mark"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, spec["mark"])
            if kind != "udp":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            if spec.get("device"):
                # Out of the interface that carries hc_encap, whatever the routing table says.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, spec["device"].encode())
            if spec.get("source"):
                s.bind((spec["source"], 0))
            rc = s.connect_ex((spec["address"], spec["port"]))
            if kind == "udp":
                if rc:
                    raise OSError(rc, os.strerror(rc))
                s.send(spec.get("payload", "").encode("utf-8"))
                self._sent = True
            elif rc not in (0, errno.EINPROGRESS):
                raise OSError(rc, os.strerror(rc))
        except OSError as exc:
            self._finish(False, self._error_reason(exc.errno), now)

    def _error_reason(self, err):
        if err == errno.ECONNREFUSED:
            return "port unreachable" if self.spec["kind"] == "udp" else "connection refused"
        return os.strerror(err).lower() if err else "error"

    def events(self):
        """'r' or 'w': what the probe waits for."""
        return "r" if self._sent else "w"

    def _finish(self, ok, reason, now):
        if self.done is None:
            self.done = Result(ok, reason, now - self.started)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def expire(self, now):
        kind = self.spec["kind"]
        what = {"tcp": "no handshake", "http": "no HTTP answer", "udp": "no reply"}[kind]
        if kind == "http" and not self._sent:
            what = "no handshake"
        self._finish(False, "%s in %g s" % (what, self.spec["timeout"]), now)

    def ready(self, now):
        kind = self.spec["kind"]
        try:
            if not self._sent:
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._finish(False, self._error_reason(err), now)
                    return
                if kind == "tcp":
                    self._finish(True, "connected in %s" % _ms(now - self.started), now)
                    return
                host = self.spec.get("host") or self.spec["address"]
                request = "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: xdplb-agent\r\nConnection: close\r\n\r\n" % (
                    self.spec.get("path", "/"), host)
                self.sock.send(request.encode("ascii"))
                self._sent = True
                return
            data = self.sock.recv(_MAX_HTTP if kind == "http" else 65535)
        except BlockingIOError:
            return
        except OSError as exc:
            self._finish(False, self._error_reason(exc.errno), now)
            return
        if kind == "udp":
            self._finish(*self._judge_udp(data), now=now)
            return
        self._buf += data
        verdict = self._judge_http(eof=not data)
        if verdict is not None:
            self._finish(*verdict, now=now)

    def _judge_udp(self, data):
        expect = self.spec.get("expect", "")
        if expect and expect.encode("utf-8") not in data:
            return False, "reply without %r" % expect[:40]
        return True, "replied in %s" % _ms(time.monotonic() - self.started)

    def _judge_http(self, eof):
        """(ok, reason) once the answer is known, else None (read on)."""
        head, sep, body = self._buf.partition(b"\r\n")
        if not sep and not eof and len(self._buf) < _MAX_HTTP:
            return None
        parts = head.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return False, "not an HTTP answer: %r" % head[:40]
        status = int(parts[1])
        wanted = self.spec.get("status") or [200]
        if status not in wanted:
            return False, "HTTP %d (expected %s)" % (status, ", ".join(str(s) for s in wanted))
        expect = self.spec.get("expect", "")
        if expect:
            if expect.encode("utf-8") in body:
                return True, "HTTP %d with %r" % (status, expect[:40])
            if not eof and len(self._buf) < _MAX_HTTP:
                return None
            return False, "HTTP %d without %r in the body" % (status, expect[:40])
        return True, "HTTP %d in %s" % (status, _ms(time.monotonic() - self.started))
