"""lb_vip's request: the single form (address, port, protocol, ...) or the set form (vips, or a
JSON document from src / content), validated whole before any kernel access, applied with
vips.ensure and, with keep_as, kept as the state file the boot unit restores.

With health_state_file, the configured weights are applied through the agent's health state
(overlay.effective: a down real gets weight 0, all down fails open), read under the pin-root lock
together with the kernel's maps; keep_as is then written before the lock is released, so the
agent, which re-reads the state file under the same lock, never applies a stale intent.

The module holds the argument spec; everything it decides is here, so it is tested without Ansible.
"""
from . import healthspec, healthstate, overlay, statefile, vips, vipspec
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
    """(the JSON document as bytes or None, the VIP list, its path in errors, the health defaults or
    None) of vips, src or content.

    A JSON object is a state document, read with the restore's own schema (statefile): its `vips`
    is required (a missing or null list is never "no VIPs"), unknown keys are refused, and with
    keep_as it must be a document the boot-time restore accepts. A plain JSON list is the VIPs."""
    if p["vips"] is not None:
        return None, p["vips"], "vips", None
    document, data, field = _document(p)
    if isinstance(data, dict):
        try:
            settings = statefile.parse_settings(data, prefix=field, restore=bool(p["keep_as"]))
            raw = statefile.raw_vips(data, prefix=field)
            if p["keep_as"] and not raw and data.get("purge") is None:
                statefile.parse_state(data, prefix=field, restore=True)  # says what to add
        except EngineError as exc:
            if p["keep_as"]:
                raise EngineError("%s (keep_as keeps the state file the boot-time restore reads)" % exc.msg,
                                  field=exc.field, value=exc.value)
            raise
        return document, raw, field + ".vips", settings["health"]
    if isinstance(data, list):
        if p["keep_as"]:
            raise EngineError("keep_as: the boot-time restore reads a state document (a JSON object with version, "
                              "object, interface and vips), not the plain list of VIPs that %s holds" % field,
                              field="keep_as", value=p["keep_as"])
        return document, data, field, None
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
    document, raw, path, health = _set_form(p)
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
    return vipspec.parse_vips(raw, path=path, health=health), [], document


def diff_text(view, health=None):
    """One line per fact, each naming its VIP: in a unified diff of several VIPs sharing reals, a
    changed weight line must say which VIP it belongs to without its context lines. `health`:
    {VIP key: resolved health spec} of the VIPs whose health lines are shown."""
    lines = []
    health = health or {}
    for key in sorted(set(view["vips"]) | set(health)):
        spec = view["vips"].get(key)
        if key in view["vips"] and spec is None:
            lines.append("%s: absent" % key)
            continue
        if spec is not None:
            lines.append("%s: flags %s" % (key, ",".join(spec["flags"]) or "none"))
            lines.append("%s: icmp_echo %s" % (key, "true" if spec["icmp_echo"] else "false"))
            lines.extend("%s: real %s weight %s" % (key, addr, weight) for addr, weight in spec["reals"].items())
        if key in health:
            lines.append("%s: health %s" % (key, healthspec.describe(health[key])))
    return "".join(line + "\n" for line in lines)


def _kept_health(path):
    """{VIP key: resolved health spec} of the state file kept earlier at `path`; {} when there is
    none or it cannot be read (the diff then shows every health line as new)."""
    try:
        _raw, data = statefile.read_document(path, field="keep_as")
        return {v["key"]: v["health"] for v in statefile.parse_state(data, restore=False)["vips"]}
    except EngineError:
        return {}


def _health_diff(before, desired, diff):
    """(before, after) health specs for the diff: every VIP whose health changed, and every VIP the
    plan shows anyway; `before` from the state file kept earlier (keep_as), after from the request."""
    after = {v["key"]: v["health"] for v in desired}
    shown = set(diff["before"]["vips"]) | set(diff["after"]["vips"])
    # Without a kept file nothing is known of the health before: only the VIPs shown anyway get
    # their health line (a diff of one weight must not list every VIP).
    keys = ({k for k in after if before.get(k) != after[k]} if before else set()) | shown
    return {k: before[k] for k in keys if k in before}, {k: after[k] for k in keys if k in after}


def _keep(p, doc, check_mode, result):
    try:
        differs = document.keep_file(p["keep_as"], doc, check_mode=check_mode)
    except OSError as exc:
        raise EngineError("keep_as: %s: %s" % (p["keep_as"], exc), field="keep_as")
    # Check mode writes nothing: kept says what was written, keep_pending what would be.
    result["kept"] = differs and not check_mode
    result["keep_pending"] = differs and check_mode
    result["changed"] = result["changed"] or differs


def ensure(p, check_mode=False, want_diff=False):
    """Validate lb_vip's whole request (its module parameters, ``p``), apply it to the maps pinned
    under p["pin_root"] and, with keep_as, keep the applied document. Returns vips.ensure's result
    plus kept / keep_pending (with keep_as), health (with health_state_file: {VIP key: {down,
    fail_open}} of the VIPs with a real down or failing open), ``diff`` as text (only with
    ``want_diff``) and ``warnings``."""
    if p["ring_size"] is not None:
        vipspec.ring_size(p["ring_size"])
    desired, remove, doc = _request(p)
    health_file = p.get("health_state_file")
    news = {}
    # Read before the run keeps the new file: the diff's health lines compare with what was kept.
    kept_health = _kept_health(p["keep_as"]) if want_diff and p["keep_as"] else {}

    def through_health(vip_list, state):
        # Read under the lock, with the kernel's weights: the agent writes both under it too.
        eff, found = overlay.apply(vip_list, healthstate.read(health_file), state)
        news.update(found)
        return eff

    def done(result):
        if p["keep_as"]:
            _keep(p, doc, check_mode, result)

    result = vips.ensure(p["pin_root"], desired, remove=remove, purge=p["purge"] and p["state"] == "present",
                         ring_size=p["ring_size"], check_mode=check_mode, want_diff=want_diff,
                         overlay=through_health if health_file else None, on_done=done)
    if health_file:
        result["health"] = news
    diff = result.pop("diff")
    if want_diff:
        # Only asked for in diff mode: from empty, the text of 512 x 100 reals is megabytes that
        # Ansible would read back and drop.
        hb, ha = _health_diff(kept_health, desired, diff)
        result["diff"] = {"before": diff_text(diff["before"], hb), "after": diff_text(diff["after"], ha),
                          "before_header": p["pin_root"], "after_header": p["pin_root"]}
    return result
