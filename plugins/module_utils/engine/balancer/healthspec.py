"""Health check settings: the per-VIP ``health`` mapping and the balancer-wide defaults.

What the agent checks (engine/health) and what lb_vip shows in its diff come from here; the kernel
maps never see any of it (a health-only change rewrites no ring). Every error names the field by
its path and quotes the value, as vipspec does: ``vips[2].health.fall: 0 must be >= 1``.

Defaults (the state document's top-level ``health``, from the role's ``balancer_health_*``)::

    {"kind": "tcp", "interval": 1.0, "timeout": 1.0, "rise": 2, "fall": 3}

Resolved per-VIP spec (normalised VIPs carry it as ``health``): every key filled, numbers as float
(interval, timeout) and int; kind none is ``{"kind": "none"}`` alone::

    {"kind": "tcp", "port": 80, "interval": 1.0, "timeout": 1.0, "rise": 2, "fall": 3,
     "path": "/", "host": "", "status": [200], "payload": "", "expect": ""}

A VIP on port 0 (every port) without a health mapping is not checked (kind none); one with a
health mapping must give health.port or kind none.

A timeout the VIP inherits is capped at the VIP's own interval (a VIP asking for checks every
0.5 s with the default 1 s timeout means "time out before the next check"); a timeout given with
an interval it exceeds is an error.

Imports only errors (vipspec imports this module).
"""
import math

from ..errors import EngineError, key_path, show

KINDS = ("tcp", "http", "udp", "none")
DEFAULT_KEYS = ("kind", "interval", "timeout", "rise", "fall")
SPEC_KEYS = ("kind", "port", "interval", "timeout", "rise", "fall", "path", "host", "status", "payload", "expect")
BUILTIN_DEFAULTS = {"kind": "tcp", "interval": 1.0, "timeout": 1.0, "rise": 2, "fall": 3}
INTERVAL = (0.05, 3600.0)
TIMEOUT = (0.01, 3600.0)
COUNT = (1, 100)
MAX_PATH, MAX_HOST, MAX_TEXT = 1024, 255, 4096
# Keys that only some kinds use, and which ones.
ONLY = {"path": ("http",), "host": ("http",), "status": ("http",), "payload": ("udp",), "expect": ("udp", "http")}
_EXTRA = {"path": "/", "host": "", "status": (200,), "payload": "", "expect": ""}


def fail(path, value, problem):
    raise EngineError("%s: %s %s" % (path, show(value), problem), field=path, value=value)


def _join(prefix, name):
    return "%s.%s" % (prefix, name) if prefix else name


def _kind(value, path):
    if not isinstance(value, str) or value.strip().lower() not in KINDS:
        fail(path, value, "is not a health check kind (one of %s)" % ", ".join(KINDS))
    return value.strip().lower()


def _number(value, path, lo, hi):
    """Seconds, as a float: an int, a float or a numeric string."""
    if isinstance(value, bool):
        fail(path, value, "must be a number of seconds, not a boolean")
    given = value
    if isinstance(value, str):
        try:
            value = float(value.strip()) if len(value) <= 32 else None
        except ValueError:
            value = None
    if not isinstance(value, (int, float)):
        fail(path, given, "must be a number of seconds")
    value = float(value)
    if not math.isfinite(value):
        fail(path, given, "must be a finite number of seconds")
    if value < lo:
        fail(path, value, "must be >= %s" % lo)
    if value > hi:
        fail(path, value, "must be <= %s" % hi)
    return value


def _integer(value, path, lo, hi):
    if isinstance(value, bool):
        fail(path, value, "must be an integer, not a boolean")
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value.strip()) <= 20:
        value = int(value)
    if not isinstance(value, int):
        fail(path, value, "must be an integer")
    if value < lo:
        fail(path, value, "must be >= %d" % lo)
    if value > hi:
        fail(path, value, "must be <= %d" % hi)
    return value


def _mapping(raw, path, allowed):
    if not isinstance(raw, dict):
        fail(path, raw, "must be a mapping with some of %s" % ", ".join(allowed))
    for k in raw:
        if k not in allowed:
            fail(key_path(path, k), raw[k], "is not a known health field (expected one of %s)" % ", ".join(allowed))


def parse_defaults(raw, path="health"):
    """The balancer-wide defaults (a mapping with some of DEFAULT_KEYS, or None) -> every key filled.
    Null values mean "not given"."""
    if raw is None:
        return dict(BUILTIN_DEFAULTS)
    _mapping(raw, path, DEFAULT_KEYS)
    out = dict(BUILTIN_DEFAULTS)
    given = {k: v for k, v in raw.items() if v is not None}
    if "kind" in given:
        out["kind"] = _kind(given["kind"], _join(path, "kind"))
    if "interval" in given:
        out["interval"] = _number(given["interval"], _join(path, "interval"), *INTERVAL)
    if "timeout" in given:
        out["timeout"] = _number(given["timeout"], _join(path, "timeout"), *TIMEOUT)
    for key in ("rise", "fall"):
        if key in given:
            out[key] = _integer(given[key], _join(path, key), *COUNT)
    if out["timeout"] > out["interval"]:
        if "timeout" in given:
            fail(_join(path, "timeout"), out["timeout"], "must be <= the interval (%s s)" % out["interval"])
        out["timeout"] = out["interval"]
    return out


def base_spec(defaults):
    """The resolved spec of a VIP that gives no health, but its port (None for kind none):
    computed once per request, so such a VIP costs one dict copy (vipspec's fast path)."""
    if defaults["kind"] == "none":
        return None
    spec = {"kind": defaults["kind"], "port": 0}
    for key in ("interval", "timeout", "rise", "fall"):
        spec[key] = defaults[key]
    spec.update(_EXTRA)
    spec["status"] = list(_EXTRA["status"])
    return spec


def for_port(base, port, path="health"):
    """The resolved spec of a VIP on `port` without a health mapping, from base_spec()."""
    if base is None or not port:
        # A VIP on every port (0) has no port to check unless its own health gives one: it is not
        # checked, as before health checks existed (a state file kept by an older collection
        # must still restore).
        return {"kind": "none"}
    spec = dict(base, port=port)
    spec["status"] = list(base["status"])
    return spec


def _port_required(path, kind):
    fail(_join(path, "port"), None, "is required: the VIP's port is 0 (every port) and the %s check needs the port "
         "it connects to; give health.port or health.kind none" % kind)


def _text(value, path, limit, what, printable):
    if not isinstance(value, str):
        fail(path, value, "must be a string (%s)" % what)
    if len(value.encode("utf-8", "surrogatepass")) > limit:
        fail(path, value, "is longer than %d bytes" % limit)
    if printable and any(not 0x21 <= ord(c) <= 0x7e for c in value):
        fail(path, value, "must be printable ASCII without spaces (%s)" % what)
    return value


def _status(value, path):
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        fail(path, value, "must be a non-empty list of HTTP status codes (100-599)")
    return sorted({_integer(code, "%s[%d]" % (path, i), 100, 599) for i, code in enumerate(value)})


def resolve(raw, vip_port, defaults, path="health"):
    """A VIP's ``health`` (a mapping, or None) -> its resolved spec; `vip_port`: the VIP's port,
    `defaults`: parse_defaults(); `path`: the health mapping's path in errors."""
    if raw is None:
        return for_port(base_spec(defaults), vip_port, path)
    _mapping(raw, path, SPEC_KEYS)
    given = {k: v for k, v in raw.items() if v is not None}
    kind = _kind(given["kind"], _join(path, "kind")) if "kind" in given else defaults["kind"]
    for key, kinds in ONLY.items():
        if key in given and kind not in kinds:
            fail(_join(path, key), given[key], "applies to health kind %s only (this check is %s)"
                 % (" and ".join(kinds), kind))
    if kind == "none":
        for key in ("port", "interval", "timeout", "rise", "fall"):
            if key in given:
                _check_field(key, given[key], path)  # a bad value is wrong whatever the kind
        return {"kind": "none"}
    spec = {"kind": kind}
    if "port" in given:
        spec["port"] = _integer(given["port"], _join(path, "port"), 1, 65535)
    elif not vip_port:
        _port_required(path, kind)
    else:
        spec["port"] = vip_port
    for key in ("interval", "timeout", "rise", "fall"):
        spec[key] = _check_field(key, given[key], path) if key in given else defaults[key]
    if spec["timeout"] > spec["interval"]:
        if "timeout" in given:
            fail(_join(path, "timeout"), spec["timeout"], "must be <= the interval (%s s)" % spec["interval"])
        spec["timeout"] = spec["interval"]
    spec["path"] = _text(given.get("path", "/"), _join(path, "path"), MAX_PATH, "an HTTP path", True)
    if not spec["path"].startswith("/"):
        fail(_join(path, "path"), spec["path"], "must start with / (an HTTP path)")
    spec["host"] = _text(given.get("host", ""), _join(path, "host"), MAX_HOST, "an HTTP Host header", True)
    spec["status"] = _status(given["status"], _join(path, "status")) if "status" in given else [200]
    spec["payload"] = _text(given.get("payload", ""), _join(path, "payload"), MAX_TEXT, "UTF-8 text", False)
    spec["expect"] = _text(given.get("expect", ""), _join(path, "expect"), MAX_TEXT, "UTF-8 text", False)
    return spec


def _check_field(key, value, path):
    if key == "port":
        return _integer(value, _join(path, key), 1, 65535)
    if key == "interval":
        return _number(value, _join(path, key), *INTERVAL)
    if key == "timeout":
        return _number(value, _join(path, key), *TIMEOUT)
    return _integer(value, _join(path, key), *COUNT)


def describe(spec):
    """One line of a resolved spec, as lb_vip's diff shows it after ``KEY: health``."""
    if spec is None:
        return "none"
    if spec["kind"] == "none":
        return "none"
    words = ["%s port %d interval %s timeout %s rise %d fall %d"
             % (spec["kind"], spec["port"], spec["interval"], spec["timeout"], spec["rise"], spec["fall"])]
    if spec["kind"] == "http":
        codes = ",".join(str(s) for s in spec["status"])
        words.append("path %s host %s status %s" % (spec["path"], spec["host"] or "(vip)", codes))
    if spec["kind"] == "udp":
        words.append("payload %s" % show(spec["payload"]))
    if spec["kind"] in ("udp", "http") and spec["expect"]:
        words.append("expect %s" % show(spec["expect"]))
    return " ".join(words)
