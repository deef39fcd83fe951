"""Long-running engine commands on hosts with or without systemd: the pidfile, detaching, and the
HTTP listener of an exporter. Shared by the balancer agent and the backend exporter (health/agent.py,
backend/metrics.py, cli.py); stdlib only, no Ansible imports.
"""
import ipaddress
import os
import socket
import socketserver
import sys
import time
import wsgiref.simple_server

from .errors import EngineError, show


def log_line(line):
    """One line to stderr: under systemd the journal stamps it; elsewhere (lab, terminal, the
    --daemon log file) the line carries the time."""
    if os.environ.get("JOURNAL_STREAM"):
        sys.stderr.write(line + "\n")
    else:
        sys.stderr.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S%z"), line))
    sys.stderr.flush()


def running(pidfile, command):
    """The pid a pidfile names when that process runs and `command` (``agent``,
    ``backend-exporter``) is one of its arguments; else None. The argument check keeps a pid
    reused by another program after a reboot from being taken for ours."""
    try:
        with open(pidfile) as handle:
            pid = int(handle.read().split()[0])
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = handle.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid > 0 and command.encode() in argv else None


def daemonize(pidfile, log_file):
    """Detach (double fork, new session), stderr and stdout to `log_file`, pid in `pidfile`
    (0600). Returns in the daemon; the caller's process exits after printing the daemon's pid,
    which it reads from a pipe once the daemon has written its pidfile."""
    rfd, wfd = os.pipe()
    if os.fork():
        os.close(wfd)
        with os.fdopen(rfd) as pipe:
            answer = pipe.read()
        return answer or None
    os.close(rfd)
    os.setsid()
    if os.fork():
        os._exit(0)  # pylint: disable=protected-access  # the middle process must not run atexit handlers
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
    tmp = "%s.%d" % (pidfile, os.getpid())
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write("%d\n" % os.getpid())
    os.rename(tmp, pidfile)
    os.write(wfd, b"%d" % os.getpid())
    os.close(wfd)
    return ""


# ------------------------------------------------------------------ HTTP listener
def parse_listen(value, field="listen"):
    """(address, port) of ``ADDR:PORT`` or ``[IPV6]:PORT``: an IP address (no host name, which
    could resolve to another address than the one a firewall rule was written for) and a port
    1-65535. EngineError naming `field` otherwise."""
    text = value if isinstance(value, str) else ""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise EngineError("%s: %s: an IPv6 address goes in brackets, such as [::1]:9438" % (field, show(value)),
                          field=field, value=value)
    if not sep or not host:
        raise EngineError("%s: %s: expected ADDRESS:PORT (such as 127.0.0.1:9438 or [::1]:9438)" % (field, show(value)),
                          field=field, value=value)
    return listen_address(host, field), listen_port(port, field)


def listen_address(value, field):
    """An IP address to listen on (0.0.0.0 and :: included), as a string."""
    if "%" in str(value):
        raise EngineError("%s: %s: scoped IPv6 addresses (with %%zone) are not supported" % (field, show(value)),
                          field=field, value=value)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise EngineError("%s: %s is not an IP address (such as 127.0.0.1, ::1, 0.0.0.0)" % (field, show(value)),
                          field=field, value=value) from None


def listen_port(value, field):
    if isinstance(value, bool) or not str(value).isdigit() or not 1 <= int(value) <= 65535:
        raise EngineError("%s: %s: the port must be a number from 1 to 65535" % (field, show(value)),
                          field=field, value=value)
    return int(value)


class _Handler(wsgiref.simple_server.WSGIRequestHandler):
    # A client that connects and sends nothing must not hold the (single-threaded) server for long.
    timeout = 10

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        # A line per scrape (every 15 s, for ever) would only fill the log.
        pass


def http_server(app, address, port):
    """A bound, listening WSGI server for `app` on (address, port), IPv6 included; the caller runs
    serve_forever(). One request at a time: a scrape is cheap, and the collectors need no locks."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET

    class Server(wsgiref.simple_server.WSGIServer):
        address_family = family

        def server_bind(self):
            if family == socket.AF_INET6:
                # [::] takes IPv6 only: an IPv4 scrape of this host goes to 0.0.0.0 explicitly.
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Not HTTPServer.server_bind: its getfqdn() asks DNS for the address's name, which
            # hangs start-up on a host (or lab namespace) without a resolver.
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = address, self.socket.getsockname()[1]
            self.setup_environ()

    try:
        server = wsgiref.simple_server.make_server(address, port, app, server_class=Server, handler_class=_Handler)
    except OSError as exc:
        where = "[%s]:%d" % (address, port) if family == socket.AF_INET6 else "%s:%d" % (address, port)
        raise EngineError("listen: cannot listen on %s: %s" % (where, exc.strerror or exc), field="listen",
                          value=where) from exc
    return server
