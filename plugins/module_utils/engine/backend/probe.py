"""Active backend probe: send a balanced-looking SYN straight to a backend and wait for the SYN-ACK.

The prober plays balancer and client at once: it wraps a TCP SYN from its own address to the VIP
in IPIP / IP6IP6 / 4in6 addressed to the backend, exactly as a balancer would. A healthy backend
unwraps it and answers the prober directly (direct server return); a backend with the classic
rp_filter problem unwraps it and stays silent. The prober's kernel resets the half-open
connection when the SYN-ACK arrives, so nothing lingers on the backend.

Raw sockets: the kernel writes the outer header, this module the inner one (with checksums, so
no offload is involved). Needs root (CAP_NET_RAW).
"""
import ipaddress
import os
import select
import socket
import struct
import time

from ..errors import EngineError

IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def _tcp_syn(src, dst, sport, dport, seq):
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 6 << 4, 0x02, 64240, 0, 0)
    options = struct.pack("!BBH", 2, 4, 1400) + b"\x01\x01\x04\x02"  # MSS, NOP, NOP, SACK permitted
    segment = header[:12] + bytes([(5 + len(options) // 4) << 4]) + header[13:] + options
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 6, len(segment))
    else:
        pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(segment), 6)
    csum = _checksum(pseudo + segment)
    return segment[:16] + struct.pack("!H", csum) + segment[18:]


def _inner_packet(src, dst, sport, dport, seq):
    tcp = _tcp_syn(src, dst, sport, dport, seq)
    if src.version == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), os.getpid() & 0xFFFF, 0x4000, 64, 6, 0,
                             src.packed, dst.packed)
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        return header + tcp
    header = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, src.packed, dst.packed)
    return header + tcp


def local_address_towards(target, family):
    """The address this host would use as source towards ``target`` (no packet is sent)."""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    with socket.socket(af, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((str(target), 9))
        except OSError as exc:
            raise EngineError(f"no route from this host to {target}: {exc.strerror}", field="backend", value=str(target))
        return ipaddress.ip_address(sock.getsockname()[0])


def encapsulated_syn(backend, vip, port, client=None, timeout=2.0):
    """Send one encapsulated SYN; return {'syn_ack': bool, 'rtt_ms', 'client', 'sport', ...}."""
    backend, vip = ipaddress.ip_address(backend), ipaddress.ip_address(vip)
    if backend.version == 4 and vip.version == 6:
        raise EngineError("vip: an IPv6 VIP cannot be carried to an IPv4 backend address", field="vip", value=str(vip))
    client = ipaddress.ip_address(client) if client else local_address_towards(
        backend if backend.version == vip.version else vip, vip.version)
    if client.version != vip.version:
        raise EngineError(f"client: {client} is not of the VIP's family", field="client", value=str(client))
    sport = 40000 + (os.getpid() + int(time.time() * 1000)) % 20000
    seq = int.from_bytes(os.urandom(4), "big")
    inner = _inner_packet(client, vip, sport, port, seq)
    outer_af = socket.AF_INET if backend.version == 4 else socket.AF_INET6
    proto = IPPROTO_IPIP if vip.version == 4 else IPPROTO_IPV6
    listen_af = socket.AF_INET if vip.version == 4 else socket.AF_INET6
    with socket.socket(listen_af, socket.SOCK_RAW, socket.IPPROTO_TCP) as listener, \
            socket.socket(outer_af, socket.SOCK_RAW, proto) as sender:
        started = time.monotonic()
        sender.sendto(inner, (str(backend), 0))
        while True:
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                break
            ready, _w, _x = select.select([listener], [], [], left)
            if not ready:
                break
            data, addr = listener.recvfrom(65535)
            if ipaddress.ip_address(addr[0].split("%")[0]) != vip:
                continue
            tcp = data[(data[0] & 0x0F) * 4:] if vip.version == 4 else data
            src_port, dst_port, _seq, ack = struct.unpack("!HHII", tcp[:12])
            flags = tcp[13]
            if src_port == port and dst_port == sport and flags & 0x12 == 0x12 and ack == (seq + 1) & 0xFFFFFFFF:
                return {"syn_ack": True, "rtt_ms": round((time.monotonic() - started) * 1000, 3),
                        "client": str(client), "sport": sport, "backend": str(backend), "vip": str(vip), "port": port}
    return {"syn_ack": False, "rtt_ms": None, "client": str(client), "sport": sport, "backend": str(backend),
            "vip": str(vip), "port": port}
