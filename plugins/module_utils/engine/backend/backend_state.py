"""The backend state document: what the backend role set on a host, which ``backend-restore``
puts back at boot. One schema for its writer (the backend_state module, from the backend role) and
its readers (``python3 -m xdplb_engine backend-restore``, backend_check's ``state_file``), so the
role can only keep a document the restore will accept.

Every key is required and nothing has a default (but ``version``, 1, and the arp_* keys of a
document without a version, which roles before version 1 wrote): a missing or null field must
never read as "nothing there" and remove what the host has (``"vips": []`` is how a document says
"no VIPs"). Errors are StateFileError naming the field (``tunnels[0].kind``) and the value, cut by
show().

Relative imports and stdlib only, no Ansible imports.
"""
import json

from . import decap, tunnel
from .. import validate
from ..document import fail as _fail
from ..errors import EngineError, StateFileError, key_path

KIND = "backend"
VERSION = 1
KEYS = ("version", "kind", "vips", "vips_exclusive", "decap", "interface", "families", "rp_filter",
        "arp_ignore", "arp_announce", "arp_devices", "tunnels", "bpf", "advmss")
ARP_KEYS = ("arp_ignore", "arp_announce", "arp_devices")
TUNNEL_KEYS = ("name", "kind", "mode", "addresses")
BPF_KEYS = ("object", "hook", "xdp_mode", "pin_root", "addresses")
DECAP_MODES = ("kernel", "bpf")
# Strict rp_filter (1) drops every unwrapped packet: the role offers 0 and 2 only.
RP_FILTER = (0, 2)
ADVMSS_MIN, ADVMSS_MAX = 536, 65495
# Where a missing value would be read as "remove everything", say how to ask for that.
HINTS = {"vips": " (list the VIPs on lo; \"vips\": [] is how to remove them all)"}
# A backend document is a few KB; reading more than this means it is not one.
MAX_BYTES = 16 * 1024 * 1024


def _keys(doc, allowed, field, optional=(), nullable=()):
    """Exactly the keys of `allowed` (less `optional` ones), none null unless `nullable`."""
    if not isinstance(doc, dict):
        _fail(field or "document", doc, "expected an object")
    for key in doc:
        if key not in allowed:
            _fail(key_path(field, key), doc[key],
                  "unknown key (expected %s)" % ", ".join(allowed))
    for key in allowed:
        name = key_path(field, key)
        hint = HINTS.get(name, "")
        if key not in doc and key not in optional:
            raise StateFileError("%s: is required%s" % (name, hint), field=name)
        if key in doc and doc[key] is None and key not in optional + nullable:
            _fail(name, None, "is required%s" % hint)


def _int(value, field, low, high):
    # A JSON document has real numbers: "2" or true is a wrong type here, not a spelling.
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(field, value, "expected an integer")
    if not low <= value <= high:
        _fail(field, value, "must be between %d and %d" % (low, high))
    return value


def _bool(value, field):
    if not isinstance(value, bool):
        _fail(field, value, "expected true or false")
    return value


def _list(value, field):
    if not isinstance(value, list):
        _fail(field, value, "expected a list")
    return value


def _str(value, field):
    if not isinstance(value, str) or not value:
        _fail(field, value, "expected a non-empty string")
    return value


def _abspath(value, field):
    if not _str(value, field).startswith("/") or "\0" in value:
        _fail(field, value, "expected an absolute path")
    return value


def _addresses(values, field, bare=False):
    seen = set()
    for index, value in enumerate(_list(values, field)):
        name = "%s[%d]" % (field, index)
        parsed = validate.ip_address(value, name) if bare else validate.ip_interface(value, name).ip
        if parsed in seen:
            _fail(name, value, "listed twice")
        seen.add(parsed)
    return values


def _choice(value, field, choices):
    # 4.0 == 4 and True == 1 in Python, not in the document's types.
    if type(value) not in {type(c) for c in choices} or value not in choices:
        _fail(field, value, "must be one of %s" % ", ".join(str(c) for c in choices))
    return value


def _tunnel(spec, field):
    _keys(spec, TUNNEL_KEYS, field, optional=("mode",))
    name = validate.device_name(spec["name"], field + ".name")
    kind = _choice(spec["kind"], field + ".kind", tunnel.KINDS)
    if spec.get("mode") is not None:
        _choice(spec["mode"], field + ".mode", tuple(tunnel.PROTOS[kind]))
    _addresses(spec["addresses"], field + ".addresses")
    try:
        # What ip_tunnel itself refuses (an IPv6 address on an ipip device...).
        tunnel.normalize(name, kind, mode=spec.get("mode"), addresses=spec["addresses"], adopt=True)
    except EngineError as exc:
        raise StateFileError("%s.%s" % (field, exc.msg), field="%s.%s" % (field, exc.field), value=exc.value)
    return name, kind


def _bpf(spec, field):
    _keys(spec, BPF_KEYS, field)
    _abspath(spec["object"], field + ".object")
    _choice(spec["hook"], field + ".hook", decap.HOOKS)
    _choice(spec["xdp_mode"], field + ".xdp_mode", decap.XDP_MODES)
    _abspath(spec["pin_root"], field + ".pin_root")
    _addresses(spec["addresses"], field + ".addresses", bare=True)


def _check(doc):
    # The kind first: a balancer's state file given here is named as such, not as 13 unknown keys.
    if not isinstance(doc, dict):
        _fail("document", doc, "expected a JSON object")
    if "kind" not in doc:
        raise StateFileError("kind: is required (%r for a backend state file)" % KIND, field="kind")
    if doc["kind"] != KIND:
        _fail("kind", doc["kind"], "not a backend state file (expected %r)" % KIND)
    # A document without a version is the one roles before version 1 wrote (kept on every host
    # until the role runs again): it had no arp_* keys, and refusing it would leave a rebooted
    # backend without its VIPs. Those keys are then all absent or all present.
    legacy = "version" not in doc
    if legacy and any(k in doc for k in ARP_KEYS):
        missing = [k for k in ARP_KEYS if k not in doc]
        if missing:
            raise StateFileError("%s: is required (with %s)" % (missing[0], ", ".join(k for k in ARP_KEYS if k in doc)),
                                 field=missing[0])
    # bpf is null with kernel decap, checked below.
    _keys(doc, KEYS, "", optional=("version",) + (ARP_KEYS if legacy else ()), nullable=("bpf",))
    if doc.get("version", VERSION) != VERSION:
        _fail("version", doc["version"], "this engine reads version %d" % VERSION)
    _addresses(doc["vips"], "vips")
    _bool(doc["vips_exclusive"], "vips_exclusive")
    mode = _choice(doc["decap"], "decap", DECAP_MODES)
    validate.device_name(doc["interface"], "interface")
    families = _list(doc["families"], "families")
    if not families:
        _fail("families", families, "list at least one outer family (4, 6)")
    for index, family in enumerate(families):
        _choice(family, "families[%d]" % index, (4, 6))
        if family in families[:index]:
            _fail("families[%d]" % index, family, "listed twice")
    _choice(doc["rp_filter"], "rp_filter", RP_FILTER)
    if "arp_devices" in doc:
        _int(doc["arp_ignore"], "arp_ignore", 0, 8)
        _int(doc["arp_announce"], "arp_announce", 0, 2)
        devices = _list(doc["arp_devices"], "arp_devices")
        for index, name in enumerate(devices):
            validate.device_name(name, "arp_devices[%d]" % index)
    names = set()
    for index, spec in enumerate(_list(doc["tunnels"], "tunnels")):
        name, _kind = _tunnel(spec, "tunnels[%d]" % index)
        if name in names:
            _fail("tunnels[%d].name" % index, name, "listed twice")
        names.add(name)
    if mode == "bpf":
        if doc["tunnels"]:
            _fail("tunnels", doc["tunnels"], "BPF decap (decap: 'bpf') uses no tunnel devices: expected []")
        if doc["bpf"] is None:
            _fail("bpf", None, "BPF decap (decap: 'bpf') needs its object, hook, xdp_mode, pin_root and addresses")
        _bpf(doc["bpf"], "bpf")
    elif doc["bpf"] is not None:
        _fail("bpf", doc["bpf"], "kernel decap (decap: 'kernel') has no BPF decap: expected null")
    advmss = doc["advmss"]
    if isinstance(advmss, bool) or not isinstance(advmss, int) or advmss != 0 and not ADVMSS_MIN <= advmss <= ADVMSS_MAX:
        _fail("advmss", advmss, "must be 0 (leave the routes alone) or between %d and %d" % (ADVMSS_MIN, ADVMSS_MAX))


def parse(doc):
    """The document (a dict) validated whole; returns it unchanged, raises StateFileError."""
    try:
        _check(doc)
    except StateFileError:
        raise
    except EngineError as exc:
        # validate.* raise EngineError: the same message, as an invalid document.
        raise StateFileError(exc.msg, field=exc.field, value=exc.value)
    return doc


def render(doc):
    """The file's text for a valid document: what the backend_state module writes."""
    return json.dumps(parse(doc), indent=2, sort_keys=True) + "\n"
