"""lb_vip's request: the single form (address, port, protocol, ...) or the set form (vips, or a
JSON document from src / content), validated whole before any kernel access, applied with
vips.ensure and, with keep_as, kept as the state file the boot unit restores.

The module holds the argument spec; everything it decides is here, so it is tested without Ansible.
"""
from . import statefile, vips, vipspec
from .. import document
from ..errors import EngineError


def _document(p):
    """(the JSON document as bytes, its decoded value, its field name) of src or content."""
    if p["src"]:
        try:
            document, data = statefile.read_document(p["src"], field="src")
        except EngineError as exc:
            raise EngineError("src: %s" % exc.msg, field="src", value=p["src"])
        return document, data, "src"
    try:
        data = statefile.decode(p["content"], "content")
    except EngineError as exc:
        raise EngineError(exc.msg, field="content")
    return p["content"].encode("utf-8"), data, "content"


def _set_form(p):
    """(the JSON document as bytes or None, the VIP list, its path in errors) of vips, src or content.

    A JSON object is a state document, read with the restore's own schema (statefile): its `vips`
    is required (a missing or null list is never "no VIPs"), unknown keys are refused, and with
    keep_as it must be a document the boot-time restore accepts. A plain JSON list is the VIPs."""
    if p["vips"] is not None:
        return None, p["vips"], "vips"
    document, data, field = _document(p)
    if isinstance(data, dict):
        try:
            statefile.parse_settings(data, prefix=field, restore=bool(p["keep_as"]))
            raw = statefile.raw_vips(data, prefix=field)
            if p["keep_as"] and not raw and data.get("purge") is None:
                statefile.parse_state(data, prefix=field, restore=True)  # says what to add
        except EngineError as exc:
            if p["keep_as"]:
                raise EngineError("%s (keep_as keeps the state file the boot-time restore reads)" % exc.msg,
                                  field=exc.field, value=exc.value)
            raise
        return document, raw, field + ".vips"
    if isinstance(data, list):
        if p["keep_as"]:
            raise EngineError("keep_as: the boot-time restore reads a state document (a JSON object with version, "
                              "object, interface and vips), not the plain list of VIPs that %s holds" % field,
                              field="keep_as", value=p["keep_as"])
        return document, data, field
    vipspec.fail(field, data, "must hold a state document (a JSON object with vips) or a list of VIPs")


def _request(p):
    """(normalised VIPs, keys to remove, JSON document of src or content or None): the whole
    request validated before any kernel access."""
    single = {k: p[k] for k in ("address", "port", "protocol", "flags", "icmp_echo", "reals")}
    if p["address"] is not None:
        if p["state"] == "absent":
            port = vipspec.integer(p["port"], "port", 0, 65535) if p["port"] is not None else None
            if port is None:
                vipspec.fail("port", None, "is required (0 means every port of the address)")
            addr = vipspec.address(p["address"], "address")
            return [], [vipspec.key_text(addr.compressed, port, p["protocol"])], None
        return [vipspec.parse_vip(single)], [], None
    document, raw, path = _set_form(p)
    if p["state"] == "absent":
        keys = []
        for i, v in enumerate(raw):
            vpath = "%s[%d]" % (path, i)
            if not isinstance(v, dict):
                vipspec.fail(vpath, v, "must be a mapping with address, port and protocol")
            addr = vipspec.address(v.get("address"), vpath + ".address")
            port = vipspec.integer(v.get("port"), vpath + ".port", 0, 65535)
            proto = v.get("protocol") or "tcp"
            if not isinstance(proto, str) or proto.lower() not in vipspec.PROTOCOLS:
                vipspec.fail(vpath + ".protocol", proto, "is not a supported protocol (tcp or udp)")
            keys.append(vipspec.key_text(addr.compressed, port, proto.lower()))
        return [], keys, document
    return vipspec.parse_vips(raw, path=path), [], document


def diff_text(view):
    """One line per fact, each naming its VIP: in a unified diff of several VIPs sharing reals, a
    changed weight line must say which VIP it belongs to without its context lines."""
    lines = []
    for key in sorted(view["vips"]):
        spec = view["vips"][key]
        if spec is None:
            lines.append("%s: absent" % key)
            continue
        lines.append("%s: flags %s" % (key, ",".join(spec["flags"]) or "none"))
        lines.append("%s: icmp_echo %s" % (key, "true" if spec["icmp_echo"] else "false"))
        lines.extend("%s: real %s weight %s" % (key, addr, weight) for addr, weight in spec["reals"].items())
    return "".join(line + "\n" for line in lines)


def ensure(p, check_mode=False, want_diff=False):
    """Validate lb_vip's whole request (its module parameters, ``p``), apply it to the maps pinned
    under p["pin_root"] and, with keep_as, keep the applied document. Returns vips.ensure's result
    plus kept / keep_pending (with keep_as), ``diff`` as text (only with ``want_diff``) and ``warnings``."""
    if p["ring_size"] is not None:
        vipspec.ring_size(p["ring_size"])
    desired, remove, doc = _request(p)
    result = vips.ensure(p["pin_root"], desired, remove=remove, purge=p["purge"] and p["state"] == "present",
                         ring_size=p["ring_size"], check_mode=check_mode, want_diff=want_diff)
    if p["keep_as"]:
        try:
            differs = document.keep_file(p["keep_as"], doc, check_mode=check_mode)
        except OSError as exc:
            raise EngineError("keep_as: %s: %s" % (p["keep_as"], exc), field="keep_as")
        # Check mode writes nothing: kept says what was written, keep_pending what would be.
        result["kept"] = differs and not check_mode
        result["keep_pending"] = differs and check_mode
        result["changed"] = result["changed"] or differs
    diff = result.pop("diff")
    if want_diff:
        # Only asked for in diff mode: from empty, the text of 512 x 100 reals is megabytes that
        # Ansible would read back and drop.
        result["diff"] = {"before": diff_text(diff["before"]), "after": diff_text(diff["after"]),
                          "before_header": p["pin_root"], "after_header": p["pin_root"]}
    return result
