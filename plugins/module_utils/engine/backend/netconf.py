"""net.ipv4.conf.* / net.ipv6.conf.* by effective value.

For most keys the kernel does not use conf.<dev>.<key> alone: it combines it with conf.all.<key>
(rp_filter, arp_ignore, arp_announce: the maximum of the two). Asking for rp_filter=0 on tunl0 while
conf.all.rp_filter=1 therefore means lowering `all` - which would silently weaken every other device.
So the plan first writes each other device's own value to what it effectively had, then lowers `all`.

Devices created later take conf.default, so when `all` goes down `default` goes up to keep their
effective value too (unless include_default asks for the new value there as well).
Writing conf.default.<key> (IPv4) also copies the value into every device whose own value was never
written since it was created; devices whose own value differs from the new default get it
re-written first so no device changes as a side effect.

Reads and writes go to /proc/sys/net of the namespace this process is in: the sysctl tree there is
per network namespace. No commands are spawned.

plan() is pure (snapshot in, writes out) so the rules are unit-tested without a kernel.
"""
import fnmatch
import os
import tempfile

from .. import validate
from ..errors import EngineError

PROC_NET = "/proc/sys/net"
DEFAULT_SYSCTL_FILE = "/etc/sysctl.d/60-xdplb-katran.conf"
FAMILIES = ("ipv4", "ipv6")
SPECIAL = ("all", "default")

MAX = "max"  # effective = max(all, dev); the kernel's ORCONF on 0/1 keys is the same thing
AND = "and"  # effective = min(all, dev)
DEV = "dev"  # effective = dev; conf.all is never written for these (for some it overwrites every device)

# key: (rule, minimum, maximum) - include/linux/inetdevice.h and net/ipv6/addrconf.c
KEYS = {
    "ipv4": {
        "rp_filter": (MAX, 0, 2),
        "arp_ignore": (MAX, 0, 8),
        "arp_announce": (MAX, 0, 2),
        "arp_filter": (MAX, 0, 1),
        "arp_notify": (MAX, 0, 1),
        "accept_local": (MAX, 0, 1),
        "log_martians": (MAX, 0, 1),
        "proxy_arp": (MAX, 0, 1),
        "route_localnet": (MAX, 0, 1),
        "send_redirects": (MAX, 0, 1),
        "src_valid_mark": (MAX, 0, 1),
        "accept_source_route": (AND, 0, 1),
        "forwarding": (DEV, 0, 1),
    },
    "ipv6": {
        "accept_dad": (MAX, 0, 2),
        "proxy_ndp": (MAX, 0, 1),
        "disable_ipv6": (DEV, 0, 1),
        "accept_ra": (DEV, 0, 2),
        "autoconf": (DEV, 0, 1),
    },
}

# Only IPv4 copies a new conf.default into devices that never had the key written.
COPIES_DEFAULT = ("ipv4",)

SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
               "/lib/sysctl.d")
SYSCTL_CONF = "/etc/sysctl.conf"

HEADER = ("# Managed by xdplb.katran.net_conf: local edits are overwritten.\n"
          "# Device entries start with '-' so a device that does not exist yet is not an error;\n"
          "# systemd applies them again when the device appears.\n")


def combine(rule, all_value, dev_value):
    if rule == MAX:
        return max(all_value, dev_value)
    if rule == AND:
        return min(all_value, dev_value)
    return dev_value


# ---------------------------------------------------------------- request validation (no I/O)

def normalize(ipv4=None, ipv6=None, devices=(), include_default=False):
    """Check every argument; return {'settings': {family: {key: value}}, 'devices': [...], ...}."""
    settings = {}
    for family, given in (("ipv4", ipv4), ("ipv6", ipv6)):
        if given is None:
            continue
        if not isinstance(given, dict):
            validate.fail(family, given, "expected a mapping of key: value")
        for key, value in given.items():
            if key not in KEYS[family]:
                validate.fail(family, key, "unknown or unsupported net.%s.conf key; supported: %s"
                              % (family, ", ".join(sorted(KEYS[family]))))
            _rule, low, high = KEYS[family][key]
            settings.setdefault(family, {})[key] = validate.integer(
                value, "%s.%s" % (family, key), low, high)
    if not settings:
        validate.fail("ipv4", ipv4, "nothing to set: give at least one key under ipv4 or ipv6")
    names = validate.device_names(list(devices), "devices")
    for name in names:
        if name in SPECIAL:
            validate.fail("devices", name, "'all' and 'default' are not devices; the module "
                          "manages conf.all itself and conf.default with include_default")
    if not names and not include_default:
        validate.fail("devices", devices, "name at least one device, or set include_default")
    return {"settings": settings, "devices": names,
            "include_default": validate.boolean(include_default, "include_default")}


# ---------------------------------------------------------------- reading /proc/sys/net

def conf_path(proc_root, family, target, key):
    # The directory keeps the device name as is: eth0.100 is conf/eth0.100/, not conf/eth0/100/.
    return os.path.join(proc_root, family, "conf", target, key)


def _read_int(path):
    with open(path) as handle:
        return int(handle.read().split()[0])


def read_snapshot(request, proc_root=PROC_NET):
    """{family: {key: {'all': v, 'default': v, dev: v, ...}}} for every device of the namespace.

    Fails (before anything is written) on a key this kernel lacks or a named device without a
    conf directory for the family.
    """
    snapshot = {}
    for family, settings in request["settings"].items():
        conf_dir = os.path.join(proc_root, family, "conf")
        try:
            present = sorted(os.listdir(conf_dir))
        except OSError as exc:
            raise EngineError("cannot read %s: %s (is %s enabled in this kernel?)"
                              % (conf_dir, exc.strerror, family), field=family)
        for name in request["devices"]:
            if name not in present:
                validate.fail("devices", name, "no such device with %s configuration in this "
                              "network namespace (no %s)" % (family, os.path.join(conf_dir, name)))
        for key in settings:
            values = {}
            for target in present:
                try:
                    values[target] = _read_int(conf_path(proc_root, family, target, key))
                except FileNotFoundError:
                    if target in SPECIAL:
                        validate.fail(family, key, "this kernel has no net.%s.conf.all.%s"
                                      % (family, key))
                    if target in request["devices"]:
                        validate.fail("devices", target, "device disappeared while reading")
                    # a device that went away meanwhile is simply not part of the picture
            snapshot.setdefault(family, {})[key] = values
    return snapshot


# ---------------------------------------------------------------- planning (pure)

def _effective(rule, values):
    all_value = values["all"]
    out = {name: combine(rule, all_value, value)
           for name, value in values.items() if name not in SPECIAL}
    # what a device created later gets
    out["default"] = combine(rule, all_value, values["default"])
    return out


def _plan_key(family, key, wanted, values, named, include_default):
    rule, low, high = KEYS[family][key]
    old_all = values["all"]
    devs = {name: value for name, value in values.items() if name not in SPECIAL}
    new_all = old_all
    if rule == MAX:
        new_all = min(old_all, wanted)
    elif rule == AND:
        new_all = max(old_all, wanted)

    after = dict(values)
    writes = []

    def write(target, value, reason):
        writes.append({"family": family, "key": key, "target": target,
                       "before": values[target], "after": value, "reason": reason})
        after[target] = value

    # 1. other devices keep their effective value once `all` moves
    for name in sorted(devs):
        if name in named:
            continue
        kept = combine(rule, old_all, devs[name])
        if combine(rule, new_all, devs[name]) != kept:
            write(name, kept, "keep effective value while conf.all changes")

    # 2. the named devices
    for name in named:
        if combine(rule, new_all, devs[name]) != wanted:
            write(name, wanted, "requested")

    new_default = values["default"]
    if include_default:
        new_default = wanted
    elif combine(rule, new_all, new_default) != combine(rule, old_all, new_default):
        # devices created later must not be weaker either
        new_default = combine(rule, old_all, new_default)
    # 3. a new IPv4 default is copied into devices never written: write theirs explicitly first
    if new_default != values["default"] and family in COPIES_DEFAULT:
        written = {w["target"] for w in writes}
        for name in sorted(devs):
            if name not in written and devs[name] != new_default:
                if name in named:
                    write(name, wanted, "requested")
                else:
                    write(name, devs[name], "keep own value when conf.default changes")

    # 4. conf.default before conf.all, so a device appearing meanwhile is never the weaker one
    if new_default != values["default"]:
        write("default", new_default, "requested for devices created later" if include_default
              else "keep the effective value of devices created later")
    if new_all != old_all:
        write("all", new_all, "lower conf.all so the requested devices can have %d" % wanted
              if rule == MAX else "raise conf.all so the requested devices can have %d" % wanted)

    persist = {}
    for name in named:
        persist[name] = wanted
    for w in writes:
        persist[w["target"]] = w["after"]
    # the named devices' effective value depends on conf.all unless `wanted` is the extreme
    if rule == MAX and wanted < high or rule == AND and wanted > low:
        persist["all"] = new_all
    if include_default:
        persist["default"] = new_default
    return writes, after, persist


def plan(snapshot, request):
    """Writes (in a safe order), effective values before/after and the entries to persist."""
    writes = []
    persist = []
    effective_before = {}
    effective_after = {}
    for family, settings in request["settings"].items():
        for key, wanted in settings.items():
            rule = KEYS[family][key][0]
            values = snapshot[family][key]
            key_writes, after, key_persist = _plan_key(
                family, key, wanted, values, request["devices"], request["include_default"])
            writes.extend(key_writes)
            for target, value in key_persist.items():
                persist.append((family, target, key, value))
            effective_before.setdefault(family, {})[key] = _effective(rule, values)
            effective_after.setdefault(family, {})[key] = _effective(rule, after)
    return {"writes": writes, "persist": persist,
            "effective_before": effective_before, "effective_after": effective_after}


# ---------------------------------------------------------------- the sysctl.d file (pure)

def sysctl_key(family, target, key):
    """Dotted form, or the slash form when the device name has a dot (VLANs: eth0.100)."""
    if "." in target:
        return "net/%s/conf/%s/%s" % (family, target, key)
    return "net.%s.conf.%s.%s" % (family, target, key)


def canonical_key(text):
    """A sysctl.d key in slash form: sysctl.d(5) - if the first separator is '/', dots are kept."""
    text = text.strip().lstrip("-").strip()
    slash, dot = text.find("/"), text.find(".")
    if slash != -1 and (dot == -1 or slash < dot):
        return text.strip("/")
    return text.replace(".", "/")


def parse_sysctl_text(text):
    """[(canonical key, raw key, value)] in file order; comments and junk lines are skipped."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        raw, _sep, value = line.partition("=")
        entries.append((canonical_key(raw), raw.strip(), value.strip()))
    return entries


def render_sysctl_text(existing_text, persist):
    """The file with `persist` entries replacing or extending what is there."""
    entries = {}
    order = []
    for canon, raw, value in parse_sysctl_text(existing_text or ""):
        if canon not in entries:
            order.append(canon)
        entries[canon] = (raw, value)
    for family, target, key, value in persist:
        raw = sysctl_key(family, target, key)
        if target not in SPECIAL:
            raw = "-" + raw
        canon = canonical_key(raw)
        if canon not in entries:
            order.append(canon)
        entries[canon] = (raw, str(value))
    lines = ["%s = %s" % entries[canon] for canon in order]
    return HEADER + "".join(line + "\n" for line in lines)


def later_overrides(path, persist, dirs=SYSCTL_DIRS, sysctl_conf=SYSCTL_CONF):
    """Files applied after `path` at boot that set (or glob over) a key we persist."""
    ours = os.path.basename(path)
    later = {}
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            # the first directory holding a basename shadows the others (/etc over /usr/lib)
            if name.endswith(".conf") and name > ours and name not in later:
                later[name] = os.path.join(directory, name)
    files = [later[name] for name in sorted(later)]
    if os.path.exists(sysctl_conf) and not any(
            os.path.realpath(f) == os.path.realpath(sysctl_conf) for f in files):
        files.append(sysctl_conf)
    wanted = {canonical_key(sysctl_key(f, t, k)) for f, t, k, _v in persist}
    found = []
    for filename in files:
        if os.path.realpath(filename) == os.path.realpath(path):
            continue
        try:
            with open(filename) as handle:
                text = handle.read()
        except OSError:
            continue
        for canon, raw, value in parse_sysctl_text(text):
            hits = [k for k in wanted if k == canon or fnmatch.fnmatchcase(k, canon)]
            for hit in hits:
                found.append("%s sets %s = %s after %s and may override it at boot"
                             % (filename, raw.lstrip("-"), value, path))
    return found


def write_file_atomic(path, text, mode=0o644):
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------- the entry point

def _read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EngineError("cannot read %s: %s" % (path, exc.strerror), field="sysctl_file",
                          value=path)


def ensure(ipv4=None, ipv6=None, devices=(), include_default=False, persist=True,
           sysctl_file=DEFAULT_SYSCTL_FILE, check_mode=False, proc_root=PROC_NET):
    request = normalize(ipv4, ipv6, devices, include_default)
    if persist and (not isinstance(sysctl_file, str) or not os.path.isabs(sysctl_file)):
        validate.fail("sysctl_file", sysctl_file, "expected an absolute path")
    snapshot = read_snapshot(request, proc_root)
    the_plan = plan(snapshot, request)

    file_before = file_after = None
    warnings = []
    if persist:
        file_before = _read_text(sysctl_file)
        file_after = render_sysctl_text(file_before, the_plan["persist"])
        warnings = later_overrides(sysctl_file, the_plan["persist"])
    file_changed = bool(persist) and file_before != file_after

    if not check_mode:
        done = []
        for w in the_plan["writes"]:
            path = conf_path(proc_root, w["family"], w["target"], w["key"])
            try:
                with open(path, "w") as handle:
                    handle.write("%d\n" % w["after"])
            except OSError as exc:
                raise EngineError("writing %d to %s failed: %s (already written: %s)"
                                  % (w["after"], path, exc.strerror,
                                     ", ".join(done) or "nothing"), field=w["family"],
                                  value=w["key"])
            done.append("%s=%d" % (path, w["after"]))
        _verify(request, proc_root)
        if file_changed:
            write_file_atomic(sysctl_file, file_after)

    return {
        "changed": bool(the_plan["writes"]) or file_changed,
        "writes": [dict(w, sysctl=sysctl_key(w["family"], w["target"], w["key"]))
                   for w in the_plan["writes"]],
        "effective": {"before": the_plan["effective_before"],
                      "after": the_plan["effective_after"]},
        "devices": request["devices"],
        "sysctl_file": {"path": sysctl_file if persist else None, "changed": file_changed,
                        "before": file_before, "after": file_after},
        "warnings": warnings,
    }


def _verify(request, proc_root):
    """Re-read the named devices: something else in the namespace may be writing too."""
    for family, settings in request["settings"].items():
        for key, wanted in settings.items():
            rule = KEYS[family][key][0]
            all_value = _read_int(conf_path(proc_root, family, "all", key))
            for name in request["devices"]:
                got = combine(rule, all_value, _read_int(conf_path(proc_root, family, name, key)))
                if got != wanted:
                    raise EngineError("after writing, net.%s.conf.%s.%s is effectively %d, not %d"
                                      " - is something else changing it?"
                                      % (family, name, key, got, wanted), field=family, value=key)
