"""The agent's Prometheus exporter: GET /metrics in the text format (0.0.4), on --metrics-listen.

Two kinds of families, because of their sizes:
* The small ones (per VIP, global, connection table, program, BGP, the process): prometheus_client
  metric families on a registry of their own, rendered by its generate_latest.
* The per-(VIP, real) ones: 512 VIPs x 100 reals are 51,200 series per family. generate_latest
  takes 0.7 s of CPU for two such families (measured here, prometheus_client 0.26), so their
  lines are rendered from label prefixes built once per layout of the maps (the VIPs and their
  reals) and the values of this read: about 15 ms for the same two families
  (bench/metrics_bench.py). The health families of that size only change with a health change:
  their text is kept until the agent publishes another view.

The HTTP server is one thread beside the agent's loop: one scrape at a time, the maps read with
file descriptors of its own, without the pin-root lock (counters are read, never written). What it
reports of health comes from a view the agent's loop publishes (Agent.metrics_view, one reference
swapped at a time), never from the loop's own dicts.
"""
import os
import threading
import time

from .. import VERSION, daemon
from ..balancer import counters
from ..bpf import program
from ..bgp import bird
from ..errors import EngineError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DROP_REASONS = ("ip_options", "fragment", "too_big", "malformed", "no_real", "encap")


def show_listen(listen):
    host, port = listen
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def _esc(value):
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _labels(pairs):
    return ",".join('%s="%s"' % (k, _esc(v)) for k, v in pairs)


def _head(name, kind, text):
    return "# HELP %s %s\n# TYPE %s %s\n" % (name, text, name, kind)


class _Lines:
    """Lines `name{labels} value` of one family whose label sets change rarely: the prefixes are
    built when the labels change, each render joins them with the values."""

    def __init__(self, name, kind, text):
        self.head = _head(name, kind, text)
        self.name = name
        self.layout = None
        self.prefixes = []

    def render(self, layout, label_sets, values):
        if layout != self.layout or len(self.prefixes) != len(values):
            self.prefixes = ["%s{%s} " % (self.name, _labels(ls)) for ls in label_sets()]
            self.layout = layout
        if not self.prefixes:
            return self.head
        return self.head + "\n".join(map(str.__add__, self.prefixes, map(str, values))) + "\n"


def _vip_labels(v):
    return (("vip", v["address"]), ("port", str(v["port"])), ("protocol", v["protocol"]))


class Exporter:
    """Serves /metrics for `agent` on (host, port) until close()."""

    def __init__(self, agent, listen, bird_socket=None, clock=time.time):
        self.agent = agent
        self.host, self.port = listen
        self.bird_socket = bird_socket
        self.clock = clock
        self.reader = None
        self.httpd = None
        self.thread = None
        self.rings = {}            # VIP key -> [ring id, generation, time the ring was first seen]
        self.pair_packets = _Lines("xdplb_vip_real_packets_total", "counter",
                                   "Packets forwarded per (VIP, real).")
        self.pair_bytes = _Lines("xdplb_vip_real_bytes_total", "counter",
                                 "L3 bytes (inner packet as received) forwarded per (VIP, real).")
        self.health_text = (None, "")

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        exporter = self

        def app(environ, start_response):
            if environ.get("PATH_INFO") != "/metrics":
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"xdplb agent: the metrics are at /metrics\n"]
            try:
                body, status = exporter.render(), "200 OK"
            except Exception as exc:  # pylint: disable=broad-except  # a broken scrape must not end the exporter
                exporter.agent.log("metrics: a scrape failed: %s" % exc)
                body, status = ("scrape failed: %s\n" % exc).encode(), "500 Internal Server Error"
            start_response(status, [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
            return [body]

        try:
            self.httpd = daemon.http_server(app, self.host, self.port)
        except EngineError as exc:
            raise EngineError("--metrics-%s" % exc.msg, field="metrics_listen", value=exc.value) from exc
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    def close(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    # ------------------------------------------------------------------ one scrape
    def render(self):
        snap = self._counters()
        view = self.agent.metrics_view
        parts = [self._small(snap, view)]
        if snap is not None:
            parts.append(self._pairs(snap))
        parts.append(self._health(view))
        return "".join(parts).encode()

    def _counters(self):
        """The counters snapshot, or None while the balancer is not loaded."""
        pin_root = self.agent.cfg["state"]["pin_root"] if self.agent.cfg else None
        try:
            if self.reader is None:
                self.reader = counters.Reader(pin_root)
            return self.reader.read()
        except EngineError:
            # Not loaded yet, or the maps were re-created (an upgrade): opened again next scrape.
            if self.reader is not None:
                self.reader.close()
                self.reader = None
            return None

    def _small(self, snap, view):
        from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest  # noqa: PLC0415

        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        registry.register(_Small(self, snap, view))
        return generate_latest(registry).decode()

    def _pairs(self, snap):
        vips = snap["vips"]
        layout = snap.get("layout") or tuple((v["key"], tuple(r["address"] for r in v["reals"])) for v in vips)

        def label_sets():
            return [_vip_labels(v) + (("real", r["address"]),) for v in vips for r in v["reals"]]

        packets = [r["packets"] for v in vips for r in v["reals"]]
        octets = [r["bytes"] for v in vips for r in v["reals"]]
        return self.pair_packets.render(layout, label_sets, packets) + self.pair_bytes.render(layout, label_sets, octets)

    def _health(self, view):
        if view is None:
            return ""
        if self.health_text[0] is view:
            return self.health_text[1]
        up = [_head("xdplb_real_up", "gauge", "1 when the agent's check of the real passes (the real is in the ring), 0 when it is down.")]
        flips = [_head("xdplb_real_health_transitions_total", "counter",
                       "Health changes (up to down or down to up) of the real for the VIP since the agent started.")]
        for (key, real), state in view["reals"]:
            labels = _labels(view["labels"][key] + (("real", real),))
            up.append("xdplb_real_up{%s} %d\n" % (labels, state))
            flips.append("xdplb_real_health_transitions_total{%s} %d\n" % (labels, view["transitions"].get((key, real), 0)))
        text = "".join(up) + "".join(flips)
        self.health_text = (view, text)
        return text

    def rings_seen(self, snap, now):
        """{VIP key: (generation, last swap time)}: a new ring id is a swap (seen at a scrape)."""
        out = {}
        for v in snap["vips"]:
            ring = v.get("ring_id")
            seen = self.rings.get(v["key"])
            if seen is None:
                seen = self.rings[v["key"]] = [ring, 1, now]
            elif ring != seen[0]:
                seen[:] = [ring, seen[1] + 1, now]
            out[v["key"]] = (seen[1], seen[2])
        for key in set(self.rings) - set(out):
            del self.rings[key]
        return out


class _Small:
    """The prometheus_client families of one scrape."""

    def __init__(self, exporter, snap, view):
        self.exporter, self.snap, self.view = exporter, snap, view

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        agent, snap, view = self.exporter.agent, self.snap, self.view
        build = GaugeMetricFamily("xdplb_agent_build_info", "The agent's version (1).", labels=["version"])
        build.add_metric([VERSION], 1)
        yield build
        loaded = GaugeMetricFamily("xdplb_balancer_loaded", "1 when the balancer's maps are pinned and readable.")
        loaded.add_metric([], 1 if snap is not None else 0)
        yield loaded
        yield from self._program(agent)
        if view is not None:
            yield from self._health_small(view)
        if snap is None:
            return
        labels = ["vip", "port", "protocol"]
        vp = CounterMetricFamily("xdplb_vip_packets", "Packets forwarded per VIP.", labels=labels)
        vb = CounterMetricFamily("xdplb_vip_bytes", "L3 bytes (inner packet as received) forwarded per VIP.", labels=labels)
        gen = GaugeMetricFamily("xdplb_ring_generation", "Rings the VIP has had since the agent started (a swap adds one; "
                                "seen at scrapes).", labels=labels)
        swap = GaugeMetricFamily("xdplb_ring_last_swap_timestamp_seconds", "When the VIP's current ring was first seen "
                                 "(Unix time).", labels=labels)
        rings = self.exporter.rings_seen(snap, self.exporter.clock())
        for v in snap["vips"]:
            lv = [v["address"], str(v["port"]), v["protocol"]]
            vp.add_metric(lv, v["packets"])
            vb.add_metric(lv, v["bytes"])
            g, t = rings[v["key"]]
            gen.add_metric(lv, g)
            swap.add_metric(lv, t)
        yield from (vp, vb, gen, swap)
        rp = CounterMetricFamily("xdplb_real_packets", "Packets forwarded to the real, over all its VIPs.", labels=["real"])
        rb = CounterMetricFamily("xdplb_real_bytes", "L3 bytes forwarded to the real, over all its VIPs.", labels=["real"])
        for r in snap["reals"]:
            rp.add_metric([r["address"]], r["packets"])
            rb.add_metric([r["address"]], r["bytes"])
        yield from (rp, rb)
        un = snap.get("unattributed") or {"packets": 0, "bytes": 0}
        up = CounterMetricFamily("xdplb_unattributed_packets", "Packets forwarded for a (VIP, real) the maps give no pair "
                                 "counter (a connection of a real since removed from that VIP).")
        up.add_metric([], un["packets"])
        yield up
        g = snap["global"]
        verdict = CounterMetricFamily("xdplb_packets", "Packets the XDP program saw, by verdict.", labels=["verdict"])
        for name in ("pass", "tx", "drop"):
            verdict.add_metric([name], g[name])
        yield verdict
        drops = CounterMetricFamily("xdplb_drops", "Packets to a VIP address dropped, by reason.", labels=["reason"])
        for reason in DROP_REASONS:
            drops.add_metric([reason], g["drop_" + reason])
        yield drops
        for name, field, text in (
                ("xdplb_conn_table_hits", "conn_hit", "Packets forwarded by a connection-table entry."),
                ("xdplb_conn_table_misses", "conn_miss", "New flows recorded in the connection table (took the ring)."),
                ("xdplb_conn_table_evictions", "conn_evict", "New flows that replaced the entry of another live flow "
                 "(its set was full)."),
                ("xdplb_icmp_echo_replies", "icmp_echo", "ICMP echo requests to a VIP address answered."),
                ("xdplb_icmp_too_big", "icmp_too_big", "ICMP fragmentation-needed / packet-too-big sent to a flow's real.")):
            c = CounterMetricFamily(name, text)
            c.add_metric([], g.get(field, 0))
            yield c
        cap = GaugeMetricFamily("xdplb_conn_table_capacity_flows", "Flows the connection table holds, per family.",
                                labels=["family"])
        for fam, n in sorted(snap["conn_table"].items()):
            cap.add_metric([fam], n)
        yield cap

    def _program(self, agent):
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        fam = GaugeMetricFamily("xdplb_program_info", "The XDP program attached to the balancer's interface (1).",
                                labels=["interface", "prog_id", "tag", "name", "attach_mode"])
        iface = agent.cfg["state"]["interface"] if agent.cfg else None
        if iface:
            try:
                prog = program.attached(program.ifindex(iface))
            except (EngineError, OSError):
                prog = None
            if prog is not None:
                fam.add_metric([iface, str(prog["prog_id"]), prog["tag"], prog["name"], str(prog["mode"])], 1)
        yield fam

    def _health_small(self, view):
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        labels = ["vip", "port", "protocol"]
        healthy = GaugeMetricFamily("xdplb_vip_healthy_reals", "Reals of the VIP whose check passes.", labels=labels)
        total = GaugeMetricFamily("xdplb_vip_reals", "Reals configured for the VIP.", labels=labels)
        fail_open = GaugeMetricFamily("xdplb_vip_fail_open", "1 when every real of the VIP is down and the VIP keeps its "
                                      "last ring (fails open).", labels=labels)
        for key, lv in sorted(view["labels"].items()):
            values = [x[1] for x in lv]
            healthy.add_metric(values, view["healthy"].get(key, 0))
            total.add_metric(values, view["configured"].get(key, 0))
            fail_open.add_metric(values, 1 if key in view["fail_open"] else 0)
        yield from (healthy, total, fail_open)
        if view["announced"] is not None:
            ann = GaugeMetricFamily("xdplb_bgp_announced", "1 while this balancer announces the VIP address (BGP).",
                                    labels=["vip"])
            for addr in view["addresses"]:
                ann.add_metric([addr], 1 if addr in view["announced"] else 0)
            yield ann
            drained = GaugeMetricFamily("xdplb_bgp_drained", "1 while the drain file withdraws every VIP of this balancer "
                                        "(balancer_drain.yml).")
            drained.add_metric([], 1 if view["drained"] else 0)
            yield drained
            if self.exporter.bird_socket:
                yield self._sessions()

    def _sessions(self):
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        fam = GaugeMetricFamily("xdplb_bgp_session_up", "1 while the BGP session is established (BIRD).",
                                labels=["peer", "session"])
        try:
            for row in bird.show_protocols_all(self.exporter.bird_socket):
                if row["proto"] == "BGP":
                    fam.add_metric([row.get("neighbor") or "", row["name"]],
                                   1 if row["info"].startswith("Established") else 0)
        except EngineError:
            pass  # BIRD down: no sessions to report; the alert on xdplb_bgp_announced still sees the VIPs
        return fam


def health_view(agent):
    """What the exporter reports of health, built by the agent's loop (Agent.publish_metrics)."""
    snap = agent.monitor.snapshot() if agent.monitor else {}
    intent = agent.intent[1] or ()
    labels = {v["key"]: _vip_labels(v) for v in intent}
    configured = {v["key"]: len(v["reals"]) for v in intent}
    # A real without a check (a port-0 VIP without health.port) counts as healthy, as the
    # overlay keeps it in the ring: only the checks that fail take reals away.
    healthy = dict(configured)
    reals = []
    for cid, check in agent.checks.items():
        st = snap.get(cid)
        if st is None:
            continue
        state = 1 if st["state"] == "up" else 0
        for key, real in check["members"]:
            if key in labels:
                reals.append(((key, real), state))
                healthy[key] -= 1 - state
    reals.sort()
    announcer = agent.announcer
    return {"labels": labels, "configured": configured, "reals": reals, "healthy": healthy,
            "transitions": dict(agent.transitions), "fail_open": set(agent.fail_open),
            "addresses": sorted({v["address"] for v in intent}),
            "announced": set(agent.announced) if announcer is not None else None,
            "drained": bool(agent.drain_file and os.path.exists(agent.drain_file))}
