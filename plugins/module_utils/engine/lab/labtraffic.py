"""Lab traffic: a named TCP/UDP responder and a probe that counts who answered.

The responder answers every TCP line and every UDP datagram with
``<name> <client-address> <client-port>\\n`` so a probe from the client learns which backend
served it and whether the backend saw the client's real address (DSR keeps it).
It listens on the IPv6 wildcard with V6ONLY off, so it answers on every local address —
including VIPs bound to lo — for both families. A UDP answer leaves from the address the datagram
was sent to (IPV6_PKTINFO), as a DSR service must: a client's connected socket, and the balancer
agent's udp check, drop a reply from the backend's own address. A TCP request that starts with
``GET `` gets an HTTP/1.0 answer (status 200, the same line as body) for http checks.
It exits by itself after ``lifetime`` seconds.
"""

import errno
import os
import select
import signal
import socket
import time

from ..errors import EngineError


def _listeners(port):
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    tcp.bind(("::", port))
    tcp.listen(128)
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    udp.bind(("::", port))
    return tcp, udp


def _answer_udp(udp, name):
    data, ancillary, _flags, addr = udp.recvmsg(2048, socket.CMSG_SPACE(20))
    reply = f"{name} {_peer(addr)} {addr[1]}\n".encode()
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            # in6_pktinfo: the destination address, then the arrival ifindex (0 here: any device).
            udp.sendmsg([reply], [(level, kind, value[:16] + bytes(4))], 0, addr)
            return
    udp.sendto(reply, addr)


def _peer(addr):
    host = addr[0]
    return host[7:] if host.startswith("::ffff:") else host


def serve(name, port, lifetime, hold_seconds=0.0):
    """Answer until ``lifetime`` has passed. ``hold_seconds`` keeps TCP connections open after
    the answer (a long-lived flow for drain and failover tests)."""
    tcp, udp = _listeners(port)
    deadline = time.monotonic() + lifetime
    conns = {}
    while time.monotonic() < deadline:
        ready, _w, _x = select.select([tcp, udp] + list(conns), [], [], 0.5)
        for sock in ready:
            if sock is tcp:
                conn, addr = tcp.accept()
                conns[conn] = (addr, b"")
            elif sock is udp:
                _answer_udp(udp, name)
            else:
                addr, buf = conns[sock]
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sock.close()
                    del conns[sock]
                    continue
                buf += data
                if buf.startswith(b"GET "):
                    if b"\r\n\r\n" in buf:  # the whole request head: answer and close
                        body = f"{name} {_peer(addr)} {addr[1]}\n".encode()
                        sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                        sock.close()
                        del conns[sock]
                    else:
                        conns[sock] = (addr, buf)
                    continue
                while b"\n" in buf:
                    buf = buf.split(b"\n", 1)[1]
                    sock.sendall(f"{name} {_peer(addr)} {addr[1]}\n".encode())
                conns[sock] = (addr, buf)
    for sock in list(conns) + [tcp, udp]:
        sock.close()


def start_responder(name, port, lifetime, pidfile):
    """Start a detached responder; returns (changed, pid). Idempotent by pidfile + liveness."""
    pid = running_pid(pidfile)
    if pid:
        return False, pid
    try:
        _listeners(port)[0].close()
    except OSError as exc:
        raise EngineError(f"port: {port} cannot be bound ({exc.strerror})", field="port", value=port)
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the daemon
        os.close(read_fd)
        os.setsid()
        if os.fork():
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        fd = os.open(pidfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        os.write(write_fd, b"ok")
        os.close(write_fd)
        try:
            serve(name, port, lifetime)
        finally:
            try:
                os.unlink(pidfile)
            except OSError:
                pass
            os._exit(0)
    os.close(write_fd)
    os.waitpid(child, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        if pipe.read() != b"ok":
            raise EngineError("the responder did not start")
    return True, running_pid(pidfile)


def running_pid(pidfile):
    try:
        with open(pidfile) as handle:
            pid = int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0
    if pid <= 0:
        # kill(0 or -n, 0) would test a process group, not the responder.
        return 0
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return pid if exc.errno == errno.EPERM else 0
    return pid


def stop_responder(pidfile):
    pid = running_pid(pidfile)
    if not pid:
        return False
    os.kill(pid, signal.SIGTERM)
    for _attempt in range(50):
        if not running_pid(pidfile):
            break
        time.sleep(0.1)
    try:
        os.unlink(pidfile)
    except OSError:
        pass
    return True


def probe(address, port, protocol="tcp", count=10, timeout=2.0, source_port_base=0):
    """Open ``count`` flows to address:port; returns per-server counts and failures.

    Each flow is a new connection (TCP) or a new socket (UDP), so each gets a fresh source port
    and hashes anew at the balancer.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    servers, errors, answers = {}, [], []
    for index in range(count):
        sock = socket.socket(family, kind)
        sock.settimeout(timeout)
        try:
            if source_port_base:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", source_port_base + index))
            if kind == socket.SOCK_STREAM:
                sock.connect((address, port))
                sock.sendall(b"hello\n")
                reply = _read_line(sock)
            else:
                sock.sendto(b"hello\n", (address, port))
                reply = sock.recv(2048).decode(errors="replace").strip()
            server, seen_addr, seen_port = (reply.split() + ["", "", ""])[:3]
            servers[server] = servers.get(server, 0) + 1
            answers.append({"server": server, "client_address": seen_addr, "client_port": int(seen_port or 0),
                            "local_port": sock.getsockname()[1]})
        except OSError as exc:
            errors.append(f"flow {index}: {exc.strerror or exc}")
        finally:
            sock.close()
    return {"servers": servers, "failures": len(errors), "errors": errors[:10], "answers": answers}


def _read_line(sock):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()
