"""The backend's Prometheus metrics: decap counters, the doctor's findings, the build.

    python3 -m xdplb_engine backend-exporter /etc/xdplb/backend.json --listen 127.0.0.1:9438

Each scrape reads the host afresh, from the state file the boot restore reads (the intent: VIPs,
decap mode, pin root), so the exporter needs no reload when the role changes it:

- xdplb_backend_decap_packets_total{result} / _bytes_total{result}: the BPF decap's per-CPU
  decap_stats, summed (pinned under the state's bpf.pin_root; absent in kernel-tunnel mode or
  while nothing is pinned). bytes are frame lengths as received, L2 included (lb_abi.h).
- xdplb_backend_tunnel_rx_{packets,bytes,dropped,errors}_total{device}: kernel-tunnel mode, the
  tunnel devices' receive counters from /proc/net/dev (per network namespace, unlike /sys/class/net
  seen from another namespace's mount), for the state's devices and the fallback tunl0/ip6tnl0.
- xdplb_backend_check{check,severity}: 1 while the doctor (doctor.check, backend_check's run) has
  a finding of that check and severity, else 0; every check of doctor.CHECKS x critical, warning is
  always there, so an alert exists before its first failure. When the doctor cannot run (the
  state file is invalid, pyroute2 missing), xdplb_backend_doctor_success is 0 and the check gauges
  are left out: 0 would claim a healthy backend nobody looked at.
- xdplb_backend_build_info{version} 1; xdplb_backend_doctor_duration_seconds.

prometheus_client is imported only by registry() (hosts without metrics need not have it).
No Ansible imports.
"""
import os
import sys
import time

from . import doctor
from .. import VERSION, daemon
from ..bpf import decap_abi, libbpf
from ..errors import EngineError

DEFAULT_STATE_FILE = "/etc/xdplb/backend.json"
SEVERITIES = (doctor.CRITICAL, doctor.WARNING)
TUNNEL_FALLBACK = {"ipip": "tunl0", "ip6tnl": "ip6tnl0"}
# /proc/net/dev's receive columns, in its order.
RX_FIELDS = ("bytes", "packets", "errors", "dropped")


def decap_counters(pin_root):
    """{result: {packets, bytes}} of the pinned decap_stats, or None when nothing is pinned there."""
    path = os.path.join(pin_root, decap_abi.MAP_STATS)
    if not os.path.exists(path):
        return None
    stats_map = libbpf.Map.from_pin(path)
    try:
        return decap_abi.read_stats(stats_map)
    finally:
        stats_map.close()


def proc_net_dev(path="/proc/net/dev"):
    """{device: {bytes, packets, errors, dropped}} of the receive side, this network namespace's."""
    out = {}
    with open(path) as handle:
        for line in handle.read().splitlines()[2:]:
            name, _sep, rest = line.partition(":")
            fields = rest.split()
            if len(fields) >= len(RX_FIELDS):
                out[name.strip()] = {key: int(fields[i]) for i, key in enumerate(RX_FIELDS)}
    return out


def tunnel_devices(state):
    """The devices that receive unwrapped packets in kernel mode: the state's, then the fallbacks
    (where a packet lands when no external device of its kind is up)."""
    names = [t["name"] for t in state["tunnels"]]
    for spec in state["tunnels"]:
        if TUNNEL_FALLBACK[spec["kind"]] not in names:
            names.append(TUNNEL_FALLBACK[spec["kind"]])
    return names


class BackendCollector:
    """A prometheus_client collector (collect() yields metric families): one doctor run and one
    map read per scrape. `check`: doctor.check's signature (tests give the doctor another host)."""

    def __init__(self, state_file=DEFAULT_STATE_FILE, check=doctor.check, net_dev="/proc/net/dev", log=None):
        self.state_file, self.check, self.net_dev = state_file, check, net_dev
        self.log = log or daemon.log_line
        self._errors = {}

    def _said(self, what, error):
        """Log a failure once per distinct message, not once per scrape, and when it ends."""
        last = self._errors.get(what)
        if error is not None and error != last:
            self.log("%s failed: %s" % (what, error))
        elif error is None and last is not None:
            self.log("%s works again" % what)
        self._errors[what] = error

    def collect(self):
        # prometheus_client is imported here only, never at module import.
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        info = GaugeMetricFamily("xdplb_backend_build_info", "The xdplb.katran version of the backend exporter.",
                                 labels=["version"])
        info.add_metric([VERSION], 1)
        yield info

        started = time.monotonic()
        try:
            report = self.check(state_file=self.state_file)
            error = None
        except (EngineError, libbpf.BpfError, OSError, ImportError) as exc:
            report, error = None, getattr(exc, "msg", None) or str(exc)
        self._said("the doctor", error)
        duration = time.monotonic() - started
        yield GaugeMetricFamily("xdplb_backend_doctor_success",
                                "1 when the doctor could look at the host in this scrape, 0 when it could not "
                                "(see the exporter's log); the xdplb_backend_check gauges are left out then.",
                                value=0 if report is None else 1)
        yield GaugeMetricFamily("xdplb_backend_doctor_duration_seconds", "Time the doctor took in this scrape.",
                                value=duration)
        if report is not None:
            yield self._checks(report, GaugeMetricFamily)
        state = report["state"] if report else None
        if state is None:
            return
        if state["decap"] == "bpf":
            yield from self._decap(state["bpf"]["pin_root"], CounterMetricFamily)
        else:
            yield from self._tunnels(state, CounterMetricFamily)

    def _checks(self, report, gauge):
        failing = {(f["check"], f["severity"]) for f in report["findings"]}
        family = gauge("xdplb_backend_check",
                       "1 while the backend doctor (backend_check) has a finding of this check and severity, else 0.",
                       labels=["check", "severity"])
        known = list(doctor.CHECKS) + sorted({c for c, s in failing if s in SEVERITIES} - set(doctor.CHECKS))
        for check in known:
            for severity in SEVERITIES:
                family.add_metric([check, severity], 1 if (check, severity) in failing else 0)
        return family

    def _decap(self, pin_root, counter):
        try:
            stats = decap_counters(pin_root)
            error = None
        except (libbpf.BpfError, OSError) as exc:
            stats, error = None, str(exc)
        self._said("reading the decap counters under %s" % pin_root, error)
        if stats is None:
            return
        packets = counter("xdplb_backend_decap_packets", "Packets the BPF decap saw, by what it did with them "
                          "(decap_v4, decap_v6: unwrapped; every packet lands in one result).", labels=["result"])
        octets = counter("xdplb_backend_decap_bytes", "Bytes (frames as received, L2 included) the BPF decap saw, "
                         "by result.", labels=["result"])
        for name in decap_abi.STAT_NAMES:
            packets.add_metric([name], stats[name]["packets"])
            octets.add_metric([name], stats[name]["bytes"])
        yield packets
        yield octets

    def _tunnels(self, state, counter):
        try:
            rx = proc_net_dev(self.net_dev)
            error = None
        except OSError as exc:
            rx, error = {}, str(exc)
        self._said("reading %s" % self.net_dev, error)
        families = {key: counter("xdplb_backend_tunnel_rx_" + key, "What the kernel tunnel device received "
                                 "(/proc/net/dev: %s)." % key, labels=["device"]) for key in RX_FIELDS}
        devices = [d for d in tunnel_devices(state) if d in rx]
        for device in devices:
            for key in RX_FIELDS:
                families[key].add_metric([device], rx[device][key])
        if devices:
            yield from (families[key] for key in ("packets", "bytes", "dropped", "errors"))


def registry(state_file=DEFAULT_STATE_FILE, process=True, **kwargs):
    """A CollectorRegistry with the backend collector (and the process_* metrics of this process);
    EngineError naming the package when prometheus_client is missing."""
    try:
        from prometheus_client import CollectorRegistry, ProcessCollector
    except ImportError as exc:
        raise EngineError("prometheus_client: this Python (%s) cannot import it (%s); install it for this "
                          "interpreter (Debian: apt install python3-prometheus-client, the backend role's "
                          "backend_metrics_packages)" % (sys.executable, exc), field="prometheus_client") from exc
    reg = CollectorRegistry()
    reg.register(BackendCollector(state_file, **kwargs))
    if process:
        ProcessCollector(registry=reg)
    return reg


def text(reg):
    """The exposition text of a registry, as a scrape gets it."""
    from prometheus_client import generate_latest
    return generate_latest(reg).decode()


def app(reg):
    from prometheus_client import make_wsgi_app
    return make_wsgi_app(reg)
