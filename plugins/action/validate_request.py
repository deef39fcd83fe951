# -*- coding: utf-8 -*-
# Copyright: xdplb.katran contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""xdplb.katran.validate_request: the whole request checked on the controller, with the engine's checks.

The hosts run the same engine (plugins/module_utils/engine) and would refuse the same values, but
one at a time and after earlier plays changed other hosts. Running its checks here, for every host
a playbook will touch, refuses such a request before any host is contacted. Nothing here is a
second implementation: each check is an engine function; only the field names are the user's
variable names (balancer_vips[0].port, not the modules' content[0].port or vips[0]).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

from ansible.errors import AnsibleError
from ansible.module_utils.common.collections import is_sequence
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.xdplb.katran.plugins.module_utils.engine import daemon, validate
from ansible_collections.xdplb.katran.plugins.module_utils.engine.backend import addresses, netconf
from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import balancer, healthspec, vipspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bgp import bgpspec
from ansible_collections.xdplb.katran.plugins.module_utils.engine.bpf import program
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import (
    SHOW_MAX, EngineError, short, show)

# Errors listed in the message; the rest are counted (they are all in `errors`).
MAX_LISTED = 10
# Hosts named on one line of the message when they share an error (an extra var is on every host).
MAX_HOSTS = 8
# A message cut to this length: an engine message quotes a value whole in a few places.
MAX_MESSAGE = 300

# The balancer role's settings that end up in lb_config and the state file, as the engine's
# config_request names them.
_CONFIG = {"balancer_gateway_mac": "gateway_mac", "balancer_source_mode": "source_mode",
           "balancer_source_v4": "source_v4", "balancer_source_v6": "source_v6",
           "balancer_max_packet_size": "max_packet_size"}
# The balancer role's health check defaults, as the state file's top-level health (healthspec) names them.
_HEALTH = {"balancer_health_kind": "kind", "balancer_health_interval": "interval", "balancer_health_timeout": "timeout",
           "balancer_health_rise": "rise", "balancer_health_fall": "fall"}
# The balancer role's BGP settings (balancer_bgp_*), as the bird_config module's config (bgpspec) names them.
_BGP = {"balancer_bgp_" + key: key for key in bgpspec.KEYS}
# The role's other BGP variables: paths on the host, where BIRD runs.
_BGP_PATHS = ("balancer_bgp_config_file", "balancer_bgp_socket", "balancer_bgp_pidfile", "balancer_bgp_drain_file")
AGENT_MODES = ("systemd", "process")
# route_advmss's range (engine/backend/routes.py): 0 leaves the routes alone.
ADVMSS = (536, 65495)


class Refused(Exception):
    """A value a host would refuse: `field` is the user's variable path."""

    def __init__(self, field, value, msg):
        super().__init__(msg)
        # short() keeps any int, and one of more than 4300 digits cannot even be printed later.
        if isinstance(value, int) and not isinstance(value, bool) and not -2 ** 63 <= value < 2 ** 64:
            value = show(value)
        self.field, self.value, self.msg = field, short(value), msg


def _cut(msg, value):
    """`msg` with a long value quoted whole replaced by its shown form, and cut to MAX_MESSAGE."""
    if value is not None and not isinstance(value, (bool, int, float)):
        for text in (repr(value), str(value)):
            if len(text) > SHOW_MAX and text in msg:
                msg = msg.replace(text, show(value))
    return msg if len(msg) <= MAX_MESSAGE else msg[:MAX_MESSAGE - 3] + "..."


def _engine(func, *args, rename=None, where=None, **kwargs):
    """func(*args, **kwargs); an EngineError becomes Refused, its field renamed by `rename`
    (the engine's name -> the user's variable) where the engine does not know the user's name.
    The engine's checks take (value, field, ...): anything else they raise is named after args[1]
    and args[0], or `where` (field, value)."""
    try:
        return func(*args, **kwargs)
    except EngineError as exc:
        field, msg = exc.field or "", exc.msg
        if len(field) > 2 * SHOW_MAX:  # an unknown key is part of the path, whole
            cut = "%s... (%d characters)" % (field[:SHOW_MAX], len(field))
            field, msg = cut, msg.replace(field, cut)
        if rename and field in rename:
            user = rename[field]
            msg = user + msg[len(field):] if msg.startswith(field) else "%s: %s" % (user, msg)
            field = user
        raise Refused(field, exc.value, _cut(msg, exc.value)) from None
    except Exception as exc:  # pylint: disable=broad-exception-caught
        field, value = where or (args[1] if len(args) > 1 else "request", args[0] if args else None)
        raise Refused(field, value, _cut("%s: %s cannot be checked (%s: %s)" % (
            field, show(value), type(exc).__name__, exc), None)) from None


def _fail(field, value, problem):
    raise Refused(field, value, _cut("%s: %s (got %s)" % (field, problem, show(value)), value))


def plain(value):
    """`value` as the plain types a module receives (JSON's): Ansible's tagged or lazy containers
    and strings become dict, list and str, so the engine sees what the host would."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict) or hasattr(value, "items"):
        return {plain(k): plain(v) for k, v in value.items()}
    if is_sequence(value) or isinstance(value, (set, frozenset)):
        return [plain(v) for v in value]
    return str(value)


def _python(value, field):
    """An interpreter path for a unit's ExecStart: absolute, one word (it is written into the unit
    file, where a newline or a space would change what systemd runs)."""
    if value in (None, ""):
        return
    if not isinstance(value, str) or not os.path.isabs(value) or re.search(r"\s|[\x00-\x1f%$\\]", value):
        _fail(field, value, "expected an absolute path to a Python interpreter, without spaces, "
                            "'%', '$' or '\\' (it is the unit's ExecStart)")


def _unit_path(value, field):
    """An absolute file path the agent's unit names (ExecStart, ReadWritePaths): one word, as _python."""
    if value in (None, ""):
        _fail(field, value, "expected an absolute path")
    if not isinstance(value, str) or not os.path.isabs(value) or value.endswith("/") \
            or re.search(r"\s|[\x00-\x1f%$\\]", value):
        _fail(field, value, "expected an absolute path to a file, without spaces, '%', '$' or '\\' "
                            "(it goes into the agent's unit: ExecStart and ReadWritePaths)")


def _device(value, field):
    if value not in (None, ""):
        _engine(validate.device_name, value, field)


def _integer(value, field, low, high):
    return _engine(validate.integer, value, field, low, high)


def _collector(get):
    """(errors, run): run(check, *names) calls check with the values of the variables `names`
    (None for an undefined one; not at all when none is defined), adds what it refuses to errors
    and returns whether it ran. A variable that cannot be templated is an error too."""
    errors = []

    def run(check, *names):
        try:
            values = [get(n) for n in names]
            if names and not any(defined for defined, _v in values):
                return None
            check(*[v if defined else None for defined, v in values])
        except Refused as exc:
            errors.append(exc)
        return True
    return errors, run


def _enabled(value, field="balancer_bgp_enabled"):
    """A switch as the role's `| bool` reads it (an extra var is a string); not a boolean is an error."""
    if value is None:
        return False
    try:
        return boolean(value, strict=True)
    except TypeError:
        _fail(field, value, "expected true or false")
    return False


def check_balancer(get):
    """Every error of a balancer's variables; get(name) -> (defined, value)."""
    errors, run = _collector(get)
    health = {}

    def health_defaults(*values):
        given = {_HEALTH[name]: value for name, value in zip(_HEALTH, values) if value is not None}
        # As the state file's top-level health, which the agent and lb_vip read (the role builds it).
        health["defaults"] = _engine(healthspec.parse_defaults, given, "health",
                                     rename={"health." + v: k for k, v in _HEALTH.items()},
                                     where=("balancer_health_kind", given.get("kind")))

    run(health_defaults, *_HEALTH)
    # The VIPs' own health resolved against those defaults (the built-in ones when they are refused).
    run(lambda v: _engine(vipspec.parse_vips, v, "balancer_vips", health=health.get("defaults")), "balancer_vips")
    run(lambda v: _unit_path(v, "balancer_health_state_file"), "balancer_health_state_file")
    run(lambda v: v is None or _engine(validate.choice, v, "balancer_agent_mode", AGENT_MODES), "balancer_agent_mode")
    run(lambda v: v is None or _engine(validate.capabilities, v, "balancer_agent_capabilities"), "balancer_agent_capabilities")
    run(lambda v: _device(v, "balancer_interface"), "balancer_interface")
    run(lambda v: v is None or _engine(validate.choice, v, "balancer_xdp_mode", program.MODES), "balancer_xdp_mode")
    run(lambda v: v is None or _engine(vipspec.ring_size, v, "balancer_ring_size"), "balancer_ring_size")
    run(lambda v: _python(v, "balancer_engine_python"), "balancer_engine_python")

    def config(*values):
        args = {_CONFIG[name]: value for name, value in zip(_CONFIG, values) if value not in (None, "")}
        # The state file the role writes holds these settings; config_request is how the boot-time
        # restore (statefile.parse_settings) and lb_config check them. The interface is checked above.
        _engine(balancer.config_request, "eth0", check_interface=False, rename={v: k for k, v in _CONFIG.items()},
                where=("balancer_max_packet_size", args.get("max_packet_size")), **args)

    run(config, *_CONFIG)

    def bgp(enabled, *values):
        # Off (the default), the role touches nothing of BGP: its variables are not looked at.
        if not _enabled(enabled):
            return
        given = {_BGP[name]: value for name, value in zip(_BGP, values) if value is not None}
        # As bird_config checks its config, each field named after the role's variable
        # (balancer_bgp_peers[1].address, not peers[1].address).
        _engine(bgpspec.check, given, "balancer_bgp_", where=("balancer_bgp_local_as", given.get("local_as")))

    run(bgp, "balancer_bgp_enabled", *_BGP)

    def bgp_more(enabled, agent, mode, *paths):
        try:
            if not _enabled(enabled):
                return
        except Refused:
            return  # reported once, above
        if agent is not None and not boolean(agent, strict=False):
            _fail("balancer_agent", agent, "must be true with balancer_bgp_enabled: the agent decides what BIRD announces "
                  "(the VIPs this balancer can serve), so without it no VIP is ever announced")
        if mode is not None:
            _engine(validate.choice, mode, "balancer_bgp_mode", AGENT_MODES)
        for name, value in zip(_BGP_PATHS, paths):
            if value is not None:
                _unit_path(value, name)

    run(bgp_more, "balancer_bgp_enabled", "balancer_agent", "balancer_bgp_mode", *_BGP_PATHS)

    def metrics(enabled, agent, address, port):
        if not _enabled(enabled, "balancer_metrics_enabled"):
            return
        if agent is not None and not boolean(agent, strict=False):
            _fail("balancer_agent", agent, "must be true with balancer_metrics_enabled: the agent serves the metrics")
        if address is not None:
            _engine(validate.ip_address, address, "balancer_metrics_listen_address")
        if port is not None:
            _integer(port, "balancer_metrics_port", 1, 65535)

    run(metrics, "balancer_metrics_enabled", "balancer_agent", "balancer_metrics_listen_address", "balancer_metrics_port")
    return errors


def _addresses(raw, path, item_path):
    """Each item as the backend role's ip_address task (lo) and backend_check would take it."""
    if not isinstance(raw, list):
        _fail(path, raw, "expected a list of VIP addresses")
    if not raw:
        _fail(path, raw, "must list at least one VIP address")
    seen = {}
    for index, value in enumerate(raw):
        field = item_path(index)
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            _fail(field, value, "expected an IP address as a string")
        item = addresses.entry(_engine(validate.ip_interface, str(value), field))
        key = (item["family"], item["address"])
        if key in seen:
            _fail(field, value, "listed twice (also %s)" % item_path(seen[key]))
        seen[key] = index


def check_backend(get, derived=None):
    """Every error of a backend's variables; `derived`: the balancer_vips its backend_vips come
    from when it has none (site.yml), checked as the addresses they become."""
    errors, run = _collector(get)
    if run(lambda v: _addresses(v, "backend_vips", lambda i: "backend_vips[%d]" % i), "backend_vips") is None \
            and isinstance(derived, list):
        def from_balancer_vips():
            for index, vip in enumerate(derived):
                if isinstance(vip, dict) and "address" in vip:
                    _engine(validate.ip_interface, vip["address"], "balancer_vips[%d].address" % index)
        run(from_balancer_vips)
    run(lambda v: _device(v, "backend_interface"), "backend_interface")
    run(lambda v: _device(v, "backend_ipip_device"), "backend_ipip_device")
    run(lambda v: _device(v, "backend_ip6tnl_device"), "backend_ip6tnl_device")
    run(lambda v: v in (None, "") or _engine(addresses.parse_list, [v], "backend_tunnel_address"),
        "backend_tunnel_address")
    for name, key in (("backend_arp_ignore", "arp_ignore"), ("backend_arp_announce", "arp_announce")):
        _rule, low, high = netconf.KEYS["ipv4"][key]
        run(lambda v, n=name, lo=low, hi=high: v is None or _integer(v, n, lo, hi), name)

    def advmss(value):
        if value is not None and 0 < _integer(value, "backend_advmss", 0, ADVMSS[1]) < ADVMSS[0]:
            _fail("backend_advmss", value, "must be 0 (leave the routes alone) or between %d and %d" % ADVMSS)

    run(advmss, "backend_advmss")

    def rp_filter(value, tunnel_address):
        if value is not None and str(value) == "2" and not tunnel_address:
            _fail("backend_rp_filter", value, "2 (loose) needs backend_tunnel_address: loose mode drops "
                                              "packets on a device without an address")

    run(rp_filter, "backend_rp_filter", "backend_tunnel_address")
    run(lambda v: _python(v, "backend_engine_python"), "backend_engine_python")

    # The exporter's variables are checked whether or not it is enabled: enabling it later must not
    # be the moment a long-standing typo shows.
    def enabled(value):
        if value is None:
            return
        try:
            boolean(value, strict=True)
        except TypeError:
            _fail("backend_metrics_enabled", value, "expected true or false")

    run(enabled, "backend_metrics_enabled")
    run(lambda v: v is None or _engine(daemon.listen_address, v, "backend_metrics_listen_address"),
        "backend_metrics_listen_address")
    run(lambda v: v is None or _integer(v, "backend_metrics_port", 1, 65535), "backend_metrics_port")
    run(lambda v: v is None or _engine(validate.choice, v, "backend_metrics_mode", AGENT_MODES), "backend_metrics_mode")

    def packages(value):
        if value is not None and (not isinstance(value, list) or not all(isinstance(p, str) and p for p in value)):
            _fail("backend_metrics_packages", value, "expected a list of package names ([] installs nothing)")

    run(packages, "backend_metrics_packages")
    return errors


def check_drain(get):
    """drain_addresses (a list, or a string as drain.yml reads one) and undrain_weight."""
    errors, run = _collector(get)

    def drain_addresses(value):
        if value is None:
            return
        items = re.findall(r"[0-9A-Fa-f]*[.:][0-9A-Fa-f.:]+", value) if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            _fail("drain_addresses", value, "expected the backend's real addresses (a list, or a string of them)")
        for index, item in enumerate(items):
            _engine(vipspec.address, item, "drain_addresses[%d]" % index)

    run(drain_addresses, "drain_addresses")
    # Put back by lb_vip as a real's weight (0 would leave the backend drained).
    run(lambda v: v is None or _engine(vipspec.integer, v, "undrain_weight", 1, vipspec.MAX_WEIGHT), "undrain_weight")
    return errors


def report(found):
    """(message, errors) of [(host or None, Refused)]: one line per distinct error with the hosts
    that have it, the first MAX_LISTED lines, the value cut."""
    lines, order = {}, []
    for host, exc in found:
        if exc.msg not in lines:
            lines[exc.msg] = []
            order.append(exc.msg)
        if host is not None:
            lines[exc.msg].append(host)
    text = []
    for msg in order[:MAX_LISTED]:
        hosts = lines[msg]
        who = ", ".join(hosts[:MAX_HOSTS]) + (" and %d more" % (len(hosts) - MAX_HOSTS) if len(hosts) > MAX_HOSTS else "")
        text.append("%s: %s" % (who, msg) if who else msg)
    if len(order) > MAX_LISTED:
        text.append("and %d more (see errors)" % (len(order) - MAX_LISTED))
    errors = [{"host": host, "field": exc.field, "value": exc.value, "msg": exc.msg} for host, exc in found]
    return "; ".join(text), errors


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False
    ARGUMENT_SPEC = dict(role=dict(type="str", choices=["balancer", "backend"]),
                         balancers=dict(type="list", elements="str", default=[]),
                         backends=dict(type="list", elements="str", default=[]),
                         require_balancer_vips=dict(type="bool", default=False),
                         backend_vips_from=dict(type="str"),
                         drain=dict(type="bool", default=False))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        task_vars = task_vars or {}
        _spec, args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)
        result["changed"] = False
        try:
            found = self._check(args, task_vars)
        except Refused as exc:  # the task's own arguments
            result.update(failed=True, msg=exc.msg)
            return result
        if found:
            msg, errors = report(found)
            where = "" if args.get("role") else " (checked on the controller, before any host was touched)"
            result.update(failed=True, msg="the request is refused%s: %s" % (where, msg), errors=errors)
        else:
            result.update(msg="the request is valid", errors=[])
        return result

    def _check(self, args, task_vars):
        role = args.get("role")
        if role is not None:
            get = self._task_var_getter(task_vars)
            checks = check_balancer(get) if role == "balancer" else check_backend(get)
            return [(None, exc) for exc in checks]
        hostvars = task_vars.get("hostvars", {})
        found = []
        balancers = self._hosts(args, "balancers")
        for host in balancers:
            get = self._hostvar_getter(hostvars, host)
            if args.get("require_balancer_vips") and not get("balancer_vips")[0]:
                found.append((host, Refused("balancer_vips", None, "balancer_vips: is required (the VIPs this "
                                                                   "balancer serves, usually a group variable of balancers)")))
            found.extend((host, exc) for exc in check_balancer(get))
        source = args.get("backend_vips_from")
        for host in self._hosts(args, "backends"):
            get = self._hostvar_getter(hostvars, host)
            derived = None
            if source is not None and not found:
                # As site.yml derives backend_vips: its own balancer_vips, else the first balancer's.
                defined, derived = get("balancer_vips")
                if not defined and source:
                    derived = self._hostvar_getter(hostvars, source)("balancer_vips")[1]
            found.extend((host, exc) for exc in check_backend(get, derived))
        if args.get("drain"):
            for host in balancers or [task_vars.get("inventory_hostname")]:
                get = self._hostvar_getter(hostvars, host) if host in hostvars else self._task_var_getter(task_vars)
                found.extend((host if balancers else None, exc) for exc in check_drain(get))
        return found

    @staticmethod
    def _hosts(args, name):
        return list(args[name])

    def _hostvar_getter(self, hostvars, host):
        """get(name) -> (defined, value) from a host's variables (inventory, extra vars, facts),
        templated as that host's play would template them.

        Not through hostvars[host][name]: that view templates without the magic variables, so a
        group variable built from hostvars (balancer_vips listing each backend's lab_ipv4) would
        be undefined here although the host's own play resolves it."""
        raw = hostvars.raw_get(host) if host in hostvars else None
        if not isinstance(raw, Mapping):
            raise Refused("hosts", host, "%s is not a host of the inventory" % show(host))
        templar = self._templar.copy_with_new_env(available_variables=dict(raw, hostvars=hostvars))

        def get(name):
            if name not in raw:
                return False, None
            try:
                return True, plain(templar.template(raw[name]))
            except AnsibleError as exc:
                raise Refused(name, None, "%s: %s: cannot be templated: %s" % (host, name, _cut(str(exc), None))) from None
        return get

    def _task_var_getter(self, task_vars):
        """get(name) -> (defined, value) from this task's variables (the role's defaults included), templated."""
        def get(name):
            if name not in task_vars:
                return False, None
            try:
                return True, plain(self._templar.template(task_vars[name]))
            except AnsibleError as exc:
                raise Refused(name, None, "%s: cannot be templated: %s" % (name, _cut(str(exc), None))) from None
        return get
