"""The agent's /metrics text (engine/health/metrics.py) from a known counters snapshot and health
view: names, labels and values as the alert rules and the operator guide use them, and a text
promtool accepts. The real maps and agent behind it: tests/integration/test_agent_metrics.py."""
import shutil
import subprocess

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import vipspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.health import agent, metrics, plan

# A checked TCP VIP, and a port-0 UDP VIP without health.port, which is not checked.
VIPS = vipspec.parse_vips([{"address": "10.99.0.10", "port": 80, "protocol": "tcp", "reals": ["10.30.1.2", "10.30.1.3"]},
                           {"address": "fd00:99::10", "port": 0, "protocol": "udp", "reals": ["fd00:30::2"]}])
ZERO = dict.fromkeys(("pass", "tx", "drop", "conn_hit", "conn_miss", "conn_evict", "icmp_echo", "icmp_too_big",
                      "drop_ip_options", "drop_fragment", "drop_too_big", "drop_malformed", "drop_no_real",
                      "drop_encap"), 0)


def _snapshot(ring_id=7):
    return {"vips": [{"key": v["key"], "address": v["address"], "port": v["port"], "protocol": v["protocol"],
                      "vip_num": i, "packets": 10 * (i + 1), "bytes": 1000 * (i + 1), "ring_id": ring_id + i,
                      "reals": [{"address": r["address"], "index": 1 + j, "packets": 5 + j, "bytes": 500 + j}
                                for j, r in enumerate(v["reals"])]} for i, v in enumerate(VIPS)],
            "reals": [{"address": "10.30.1.2", "index": 1, "packets": 5, "bytes": 500}],
            "unattributed": {"packets": 1, "bytes": 64},
            "global": dict(ZERO, tx=30, drop=2, drop_no_real=2, conn_miss=3, conn_evict=1),
            "conn_table": {"ipv4": 65536, "ipv6": 65536}}


class _Agent(agent.Agent):
    """An agent as start() leaves it for the exporter: configuration, checks, states."""

    def __init__(self, down=()):
        super().__init__("/nonexistent.json", log=lambda _line: None)
        self.cfg = {"state": {"pin_root": "/nonexistent", "interface": None, "vips": VIPS}}
        self.intent = (None, VIPS)
        self.checks = plan.build(VIPS)
        self.states_now = {cid: {"state": "down" if c["real"] in down else "up"} for cid, c in self.checks.items()}
        self.monitor = self

    def snapshot(self):  # the Monitor's view
        return self.states_now


def _render(monkeypatch, snap=None, down=(), clock=lambda: 1000.0):
    a = _Agent(down)
    for member in [m for c in a.checks.values() if c["real"] in down for m in c["members"]]:
        a.transitions[member] = 1
    a.publish_metrics()
    exp = metrics.Exporter(a, ("127.0.0.1", 0), clock=clock)
    monkeypatch.setattr(exp, "_counters", lambda: _snapshot() if snap is None else snap)
    return exp, exp.render().decode()


def test_counters_per_vip_and_per_pair(monkeypatch):
    _exp, text = _render(monkeypatch)
    lines = text.splitlines()
    assert 'xdplb_vip_packets_total{port="80",protocol="tcp",vip="10.99.0.10"} 10.0' in lines
    assert 'xdplb_vip_real_packets_total{vip="10.99.0.10",port="80",protocol="tcp",real="10.30.1.3"} 6' in lines
    assert 'xdplb_vip_real_bytes_total{vip="fd00:99::10",port="0",protocol="udp",real="fd00:30::2"} 500' in lines
    assert 'xdplb_drops_total{reason="no_real"} 2.0' in lines
    assert "xdplb_conn_table_evictions_total 1.0" in lines and "xdplb_unattributed_packets_total 1.0" in lines
    assert 'xdplb_packets_total{verdict="tx"} 30.0' in lines


def test_health_of_each_pair_and_vip(monkeypatch):
    _exp, text = _render(monkeypatch, down=("10.30.1.3",))
    lines = text.splitlines()
    assert 'xdplb_real_up{vip="10.99.0.10",port="80",protocol="tcp",real="10.30.1.2"} 1' in lines
    assert 'xdplb_real_up{vip="10.99.0.10",port="80",protocol="tcp",real="10.30.1.3"} 0' in lines
    assert 'xdplb_real_health_transitions_total{vip="10.99.0.10",port="80",protocol="tcp",real="10.30.1.3"} 1' in lines
    assert 'xdplb_vip_healthy_reals{port="80",protocol="tcp",vip="10.99.0.10"} 1.0' in lines
    # A VIP without checks keeps its reals in the ring: they count as healthy (no false alert).
    assert 'xdplb_vip_healthy_reals{port="0",protocol="udp",vip="fd00:99::10"} 1.0' in lines
    assert 'xdplb_vip_reals{port="0",protocol="udp",vip="fd00:99::10"} 1.0' in lines
    assert not any(line.startswith("xdplb_bgp_") for line in lines)  # no BGP on this agent


def test_a_new_ring_is_a_new_generation(monkeypatch):
    times = iter([1000.0, 1005.0])
    exp, first = _render(monkeypatch, clock=lambda: next(times))
    assert 'xdplb_ring_generation{port="80",protocol="tcp",vip="10.99.0.10"} 1.0' in first.splitlines()
    monkeypatch.setattr(exp, "_counters", lambda: _snapshot(ring_id=9))
    second = exp.render().decode().splitlines()
    assert 'xdplb_ring_generation{port="80",protocol="tcp",vip="10.99.0.10"} 2.0' in second
    assert 'xdplb_ring_last_swap_timestamp_seconds{port="80",protocol="tcp",vip="10.99.0.10"} 1005.0' in second


def test_a_balancer_not_loaded_still_answers(monkeypatch):
    exp, _text = _render(monkeypatch)
    monkeypatch.setattr(exp, "_counters", lambda: None)  # what it returns while no maps are pinned
    text = exp.render().decode()
    assert "xdplb_balancer_loaded 0.0" in text.splitlines() and "xdplb_vip_packets_total" not in text


def test_promtool_accepts_the_text(monkeypatch, tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/bootstrap.sh installs Debian's prometheus"
    _exp, text = _render(monkeypatch, down=("10.30.1.2",))
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_listen_addresses():
    assert metrics.parse_listen("[fd00::1]:9437") == ("fd00::1", 9437)
    assert metrics.show_listen(("fd00::1", 9437)) == "[fd00::1]:9437"
    assert metrics.show_listen(("127.0.0.1", 9437)) == "127.0.0.1:9437"
