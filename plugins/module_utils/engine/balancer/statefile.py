"""The balancer state document: the file the balancer role keeps and the boot unit restores
(``python3 -m xdplb_engine restore``), and the JSON object lb_vip reads from ``src`` / ``content``.

One schema for every reader, so a document lb_vip accepts (and keep_as keeps) is one the restore
accepts. The rules that protect a fleet's configuration:

* ``vips`` is required: a missing or null list is an error, never "no VIPs" (with purge, that
  would empty the balancer). Removing every VIP takes an explicit ``"vips": []``, and for the
  restore also an explicit ``"purge": true``.
* ``object`` and ``interface`` are required for the restore (and for keep_as, which keeps a file
  the restore reads); other keys are optional, null meaning "not given".
* Unknown keys, at the top level, in ``config``, in a VIP or a real, are errors: a misspelt key
  would otherwise be silently ignored.
* ``health`` (optional) holds the balancer-wide health check defaults (healthspec); each VIP may
  have its own ``health``. They reach the agent and lb_vip's diff, never the kernel maps.
* A file is read whole only up to MAX_BYTES; a directory, binary or truncated file is refused.

Every error is a StateFileError naming the field by its path in the document and quoting the
value cut with errors.show. Relative imports and stdlib only, no Ansible imports.
"""
import os

from . import balancer, healthspec, vipspec
from .. import document, validate
from ..bpf import program
from ..document import fail as _fail
from ..errors import EngineError, StateFileError, key_path, show

STATE_VERSION = 1
STATE_KEYS = ("version", "object", "program", "interface", "mode", "pin_root", "config", "vips",
              "purge", "ring_size", "health")
CONFIG_KEYS = ("interface", "gateway_mac", "gateway", "source_mode", "source_v4", "source_v6",
               "max_packet_size")
_CONFIG_TEXT = ("interface", "gateway_mac", "gateway", "source_mode", "source_v4", "source_v6")
# The largest state file read: 512 VIPs of 100 reals are about 3 MiB of JSON; a file much larger is
# not a state file, and reading it whole would cost the host its memory.
MAX_BYTES = 64 << 20


def _join(prefix, name):
    return "%s.%s" % (prefix, name) if prefix else name


def read_document(path, field="state_file"):
    """(bytes, decoded JSON) of the file at `path`; StateFileError (message starting with the path,
    `field` naming the argument) when it cannot be a state file."""
    where = path if isinstance(path, str) and len(path) <= 200 else show(path)
    return document.read(path, MAX_BYTES, where, field)


def decode(data, field, where=None):
    """JSON text (bytes or str) -> the decoded value; StateFileError saying where it is broken."""
    return document.decode(data, MAX_BYTES, where or field, field)


def _optional_text(data, key, prefix):
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        _fail(_join(prefix, key), value, "must be a non-empty string (or left out)")
    return value


def _config(cfg, interface, prefix):
    path = _join(prefix, "config")
    if not isinstance(cfg, dict):
        _fail(path, cfg, "must be an object with %s" % ", ".join(CONFIG_KEYS))
    for key in cfg:
        if key not in CONFIG_KEYS:
            _fail(key_path(path, key), cfg[key], "is not a known key (expected one of %s)"
                  % ", ".join(CONFIG_KEYS))
    for key in _CONFIG_TEXT:
        value = cfg.get(key)
        if value is not None and not isinstance(value, str):
            _fail("%s.%s" % (path, key), value, "must be a string (or null)")
        if value is not None and len(value) > 64:
            # MACs, addresses and names are short: a longer value is a mistake, echoed cut.
            _fail("%s.%s" % (path, key), value, "is too long for a %s" % key)
    size = cfg.get("max_packet_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        _fail("%s.max_packet_size" % path, size, "must be an integer (0: no limit)")
    args = {k: v for k, v in cfg.items() if v is not None}
    args.setdefault("interface", interface or "lo")  # lb_vip without keep_as: no interface
    if not args.get("source_mode"):
        args.pop("source_mode", None)
    try:
        # The interface may not exist yet at boot: the restore checks it before attaching.
        return balancer.config_request(check_interface=False, **args)
    except EngineError as exc:
        raise StateFileError("%s.%s" % (path, exc.msg), field="%s.%s" % (path, exc.field), value=exc.value)


def parse_settings(data, prefix="", restore=True):
    """Everything of a state document (a dict) but its VIPs, validated.

    restore=True (the CLI, and lb_vip's keep_as): ``object`` and ``interface`` are required, as the
    boot-time restore needs them. restore=False (lb_vip src/content without keep_as): keys present
    are still checked, so a document is never half read."""
    if not isinstance(data, dict):
        _fail(prefix or "state file", data, "must be a JSON object with %s" % ", ".join(STATE_KEYS))
    for key in data:
        if key not in STATE_KEYS:
            _fail(key_path(prefix, key), data[key], "is not a known key (expected one of %s)"
                  % ", ".join(STATE_KEYS))
    version = data.get("version", STATE_VERSION)
    if type(version) is not int or version != STATE_VERSION:  # pylint: disable=unidiomatic-typecheck  # true == 1
        _fail(_join(prefix, "version"), version, "is not supported (this engine reads version %d)" % STATE_VERSION)
    for key in ("object", "interface"):
        value = data.get(key)
        if value is None and restore:
            _fail(_join(prefix, key), value, "is required (the restore needs it)")
        if value is not None and (not isinstance(value, str) or not value):
            _fail(_join(prefix, key), value, "must be a non-empty string")
    interface = data.get("interface")
    if interface is not None:
        try:
            validate.device_name(interface, _join(prefix, "interface"))
        except EngineError as exc:
            raise StateFileError(exc.msg, field=exc.field, value=exc.value)
    mode = data.get("mode")
    mode = "auto" if mode is None else mode
    if mode not in program.MODES:
        _fail(_join(prefix, "mode"), mode, "must be one of %s" % ", ".join(program.MODES))
    prog = _optional_text(data, "program", prefix)
    pin_root = _optional_text(data, "pin_root", prefix)
    if pin_root is not None and not os.path.isabs(pin_root):
        _fail(_join(prefix, "pin_root"), pin_root, "must be an absolute path inside a BPF filesystem")
    cfg = data.get("config")
    if cfg is not None:
        cfg = _config(cfg, interface or "", prefix)
    ring_size = data.get("ring_size")
    if ring_size is not None:
        try:
            vipspec.ring_size(ring_size, _join(prefix, "ring_size"))
        except EngineError as exc:
            raise StateFileError(exc.msg, field=exc.field, value=exc.value)
    purge = data.get("purge")
    if purge is not None and not isinstance(purge, bool):
        _fail(_join(prefix, "purge"), purge, "must be true or false")
    try:
        health = healthspec.parse_defaults(data.get("health"), _join(prefix, "health"))
    except EngineError as exc:
        raise StateFileError(exc.msg, field=exc.field, value=exc.value)
    return {"health": health, "object": data.get("object"), "program": prog, "interface": interface, "mode": mode,
            "pin_root": pin_root or balancer.DEFAULT_PIN_ROOT, "config": cfg,
            "purge": True if purge is None else purge, "purge_given": purge is not None, "ring_size": ring_size}


def raw_vips(data, prefix=""):
    """The document's VIP list, which must be there: a missing list is never "no VIPs"."""
    path = _join(prefix, "vips")
    if "vips" not in data:
        raise StateFileError("%s: is required: the list of every VIP of the balancer (a missing list is never "
                             "read as no VIPs; to remove every VIP give \"vips\": [] explicitly)" % path, field=path)
    value = data["vips"]
    if value is None:
        _fail(path, value, "must be the list of every VIP of the balancer (null is never read as no VIPs; to "
              "remove every VIP give \"vips\": [] explicitly)")
    if not isinstance(value, list):
        _fail(path, value, "must be a list of VIPs")
    return value


def parse_state(data, prefix="", restore=True):
    """A whole state document (a dict), validated; raises StateFileError naming the field."""
    settings = parse_settings(data, prefix, restore)
    raw = raw_vips(data, prefix)
    if restore and not raw and not (settings["purge_given"] and settings["purge"]) and data.get("purge") is not False:
        raise StateFileError("%s: [] removes every VIP of the balancer at restore; add \"purge\": true to the state "
                             "file to mean it" % _join(prefix, "vips"), field=_join(prefix, "vips"), value=[])
    try:
        parsed = vipspec.parse_vips(raw, path=_join(prefix, "vips"), health=settings["health"])
    except StateFileError:
        raise
    except EngineError as exc:
        raise StateFileError(exc.msg, field=exc.field, value=exc.value)
    return dict(settings, vips=parsed)
