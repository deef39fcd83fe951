"""Runs inside a fresh network namespace (unshare -n, see test_health_checks.py): real
listeners on lo, every check kind through the Monitor; prints {check id: [ok, reason]}."""
import json
import socket
import sys
import threading
import time

sys.path.insert(0, sys.argv[1])
from ansible_collections.xdplb.katran.plugins.module_utils.engine.health.monitor import Monitor  # noqa: E402


def tcp_listener(addr, port, http_status=None):
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)

    def serve():
        while True:
            c, _a = s.accept()
            if http_status:
                c.recv(4096)
                c.sendall(b"HTTP/1.0 %d X\r\n\r\nhello backend\n" % http_status)
            c.close()
    threading.Thread(target=serve, daemon=True).start()


def udp_listener(addr, port, reply):
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))

    def serve():
        while True:
            data, peer = s.recvfrom(2048)
            if reply:
                s.sendto(b"pong " + data, peer)
    threading.Thread(target=serve, daemon=True).start()


tcp_listener("127.0.0.1", 7001)
tcp_listener("::1", 7001)
tcp_listener("127.0.0.1", 7080, http_status=200)
tcp_listener("127.0.0.1", 7503, http_status=503)
udp_listener("127.0.0.1", 7053, reply=True)
udp_listener("127.0.0.1", 7054, reply=False)
base = {"interval": 0.2, "timeout": 0.3, "rise": 1, "fall": 1, "mark": 0x58480001}
specs = {
    "tcp-ok": dict(base, kind="tcp", address="127.0.0.1", port=7001),
    "tcp6-ok": dict(base, kind="tcp", address="::1", port=7001),
    "tcp-refused": dict(base, kind="tcp", address="127.0.0.1", port=7002),
    "http-ok": dict(base, kind="http", address="127.0.0.1", port=7080, path="/health", status=[200]),
    "http-expect": dict(base, kind="http", address="127.0.0.1", port=7080, expect="backend"),
    "http-expect-missing": dict(base, kind="http", address="127.0.0.1", port=7080, expect="nope"),
    "http-503": dict(base, kind="http", address="127.0.0.1", port=7503, status=[200]),
    "udp-ok": dict(base, kind="udp", address="127.0.0.1", port=7053, payload="ping", expect="pong"),
    "udp-refused": dict(base, kind="udp", address="127.0.0.1", port=7055, payload="ping"),
    "udp-silent": dict(base, kind="udp", address="127.0.0.1", port=7054, payload="ping"),
}
time.sleep(0.1)
mon = Monitor(specs)
mon.run_for(1.0)
out = {cid: [st["last"]["ok"], st["last"]["reason"], st["state"]] for cid, st in mon.snapshot().items()}
out["completed"] = mon.completed
print(json.dumps(out))
