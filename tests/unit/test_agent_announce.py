"""Which VIP addresses the agent announces (Agent.served): an address stays while any of its VIPs
is in the maps and not failing open; nothing while the balancer cannot serve at all."""
from ansible_collections.xdplb.katran.plugins.module_utils.engine.health import agent

from test_agent_config import _run, _state

VIPS = [{"address": "10.99.0.20", "key": "10.99.0.20:8080/tcp"},
        {"address": "10.99.0.20", "key": "10.99.0.20:8080/udp"},
        {"address": "fd00:99::20", "key": "[fd00:99::20]:8080/tcp"},
        {"address": "10.99.0.21", "key": "10.99.0.21:80/tcp"}]


def _agent(monkeypatch, why=None, in_maps=None, fail_open=()):
    a = agent.Agent("/nonexistent.json")
    a.intent = (None, VIPS)
    a.in_maps = set(in_maps if in_maps is not None else (v["key"] for v in VIPS))
    a.fail_open = {k: {"fail_open": True} for k in fail_open}
    monkeypatch.setattr(a, "_not_serving", lambda: why)
    return a


def test_every_vip_served(monkeypatch):
    addresses, withdrawn, why = _agent(monkeypatch).served()
    assert addresses == ["10.99.0.20", "10.99.0.21", "fd00:99::20"] and withdrawn == {} and why is None


def test_an_address_stays_while_one_of_its_vips_can_be_served(monkeypatch):
    addresses, withdrawn, _why = _agent(monkeypatch, fail_open=["10.99.0.20:8080/tcp", "[fd00:99::20]:8080/tcp"]).served()
    assert addresses == ["10.99.0.20", "10.99.0.21"]
    assert withdrawn == {"fd00:99::20": "every real down ([fd00:99::20]:8080/tcp failing open)"}


def test_a_vip_not_in_the_maps_is_not_announced(monkeypatch):
    addresses, withdrawn, _why = _agent(monkeypatch, in_maps=["10.99.0.20:8080/udp"]).served()
    assert addresses == ["10.99.0.20"]
    assert withdrawn == {"10.99.0.21": "not in the maps yet", "fd00:99::20": "not in the maps yet"}


def test_nothing_while_the_balancer_cannot_serve(monkeypatch):
    addresses, withdrawn, why = _agent(monkeypatch, why="no XDP program on eth0").served()
    assert addresses == [] and why == "no XDP program on eth0"
    assert set(withdrawn.values()) == {"no XDP program on eth0"} and len(withdrawn) == 3


def test_announce_arguments_are_checked_before_anything_starts(tmp_path):
    rc, _out, err = _run(["agent", str(_state(tmp_path)), "--announce-table", "254"])
    assert rc == 2 and "announce table: 254 must be a routing table number" in err
    rc, _out, err = _run(["agent", str(_state(tmp_path)), "--announce-table", "4242", "--announce-device", "a/b"])
    assert rc == 2 and "announce_device" in err
    rc, _out, err = _run(["agent", str(_state(tmp_path)), "--drain-file", "/x"])
    assert rc == 2 and "--drain-file needs --announce-table" in err


def test_metrics_arguments_are_checked_before_anything_starts(tmp_path):
    rc, _out, err = _run(["agent", str(_state(tmp_path)), "--metrics-listen", "127.0.0.1"])
    assert rc == 2 and "--metrics-listen: '127.0.0.1' is not ADDR:PORT or [IPv6]:PORT" in err
    rc, _out, err = _run(["agent", str(_state(tmp_path)), "--metrics-listen", "lb1:9437"])
    assert rc == 2 and "'lb1' is not an IP address" in err
    rc, _out, err = _run(["agent", str(_state(tmp_path)), "--bird-socket", "/run/bird/bird.ctl"])
    assert rc == 2 and "--bird-socket needs --announce-table" in err
