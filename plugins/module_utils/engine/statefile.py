"""The state file the balancer role keeps and the boot unit restores (``python3 -m xdplb_engine
restore``): its keys and their validation, shared by the CLI and by lb_vip's ``keep_as``, so a file
is only kept when the restore will accept it.

Relative imports and stdlib only, no Ansible imports.
"""
from . import balancer, program, vipspec
from .errors import EngineError

STATE_VERSION = 1
STATE_KEYS = ("version", "object", "program", "interface", "mode", "pin_root", "config", "vips",
              "purge", "ring_size")
CONFIG_KEYS = ("interface", "gateway_mac", "gateway", "source_mode", "source_v4", "source_v6",
               "max_packet_size")


def parse_settings(data):
    """Everything of a state document (a dict) but its VIPs, validated as the boot-time restore
    reads it; raises EngineError naming the field."""
    unknown = [k for k in data if k not in STATE_KEYS]
    if unknown:
        raise EngineError("%s: unknown key (expected %s)" % (unknown[0], ", ".join(STATE_KEYS)), field=unknown[0])
    if data.get("version", STATE_VERSION) != STATE_VERSION:
        raise EngineError("version: %r is not supported (this engine reads version %d)"
                          % (data.get("version"), STATE_VERSION), field="version")
    for key in ("object", "interface"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise EngineError("%s: is required (a string)" % key, field=key, value=data.get(key))
    mode = data.get("mode") or "auto"
    if mode not in program.MODES:
        raise EngineError("mode: %r must be one of %s" % (mode, ", ".join(program.MODES)), field="mode", value=mode)
    cfg = data.get("config")
    if cfg is not None:
        if not isinstance(cfg, dict):
            raise EngineError("config: must be an object", field="config", value=cfg)
        bad = [k for k in cfg if k not in CONFIG_KEYS]
        if bad:
            raise EngineError("config.%s: unknown key (expected %s)" % (bad[0], ", ".join(CONFIG_KEYS)),
                              field="config." + bad[0])
        args = dict(cfg)
        args.setdefault("interface", data["interface"])
        try:
            # The interface may not exist yet at boot: that is checked when the config is applied.
            cfg = balancer.config_request(check_interface=False, **args)
        except EngineError as exc:
            raise EngineError("config.%s" % exc.msg, field="config.%s" % exc.field, value=exc.value)
    ring_size = data.get("ring_size")
    if ring_size is not None:
        vipspec.ring_size(ring_size)
    purge = data.get("purge", True)
    if not isinstance(purge, bool):
        raise EngineError("purge: must be true or false", field="purge", value=purge)
    return {"object": data["object"], "program": data.get("program"), "interface": data["interface"],
            "mode": mode, "pin_root": data.get("pin_root") or balancer.DEFAULT_PIN_ROOT, "config": cfg,
            "purge": purge, "ring_size": ring_size}


def parse_state(data):
    """A whole state document (a dict), validated; raises EngineError naming the field."""
    return dict(parse_settings(data), vips=vipspec.parse_vips(data.get("vips") or []))
