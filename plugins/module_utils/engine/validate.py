"""Input checks shared by every engine entry point.

Each helper returns the normalised value or raises EngineError whose message starts with the field
name and quotes the offending value, so an operator can find the bad line in a playbook without
reading a traceback. Callers validate every argument before touching the kernel: a bad argument
must change nothing.
"""
import ipaddress
import re

from .errors import EngineError, show

# Linux IFNAMSIZ is 16 including the trailing NUL.
IFNAME_MAX = 15


def fail(field, value, problem):
    raise EngineError("%s: %s (got %s)" % (field, problem, show(value)), field=field, value=value)


def device_name(value, field="device"):
    """A name the kernel would accept for a network device (mirrors dev_valid_name())."""
    if not isinstance(value, str) or not value:
        fail(field, value, "expected a non-empty device name")
    if len(value) > IFNAME_MAX:
        fail(field, value, "device names are at most %d characters" % IFNAME_MAX)
    if value in (".", ".."):
        fail(field, value, "'.' and '..' are not device names")
    for ch in value:
        if ch in "/:" or ch.isspace():
            fail(field, value, "device names cannot contain '/', ':' or whitespace")
    return value


def device_names(values, field="devices"):
    """A list of device names, duplicates dropped, order kept."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        fail(field, values, "expected a list of device names")
    out = []
    for value in values:
        name = device_name(value, field)
        if name not in out:
            out.append(name)
    return out


def integer(value, field, minimum=None, maximum=None):
    """An int, also from a decimal string (YAML and templating often hand over strings)."""
    if isinstance(value, bool):
        fail(field, value, "expected an integer, not a boolean")
    if isinstance(value, str):
        if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
            fail(field, value, "expected an integer")
        if len(value.strip().lstrip("+-")) > 20:
            # int() refuses over 4300 digits with a ValueError; no field takes 20 digits anyway.
            fail(field, value, "is out of range")
        value = int(value)
    elif not isinstance(value, int):
        fail(field, value, "expected an integer")
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        fail(field, value, "must be between %d and %d" % (minimum, maximum))
    if minimum is not None and value < minimum:
        fail(field, value, "must be at least %d" % minimum)
    if maximum is not None and value > maximum:
        fail(field, value, "must be at most %d" % maximum)
    return value


def choice(value, field, choices):
    if value not in choices:
        fail(field, value, "must be one of %s" % ", ".join(str(c) for c in choices))
    return value


def _check_family(parsed, value, field, family):
    if family is not None and parsed.version != family:
        fail(field, value, "expected an IPv%d address" % family)


def _no_zone(value, field):
    if not isinstance(value, str) or not value.strip():
        fail(field, value, "expected an IP address as a string")
    if "%" in value:
        fail(field, value, "scoped IPv6 addresses (with %zone) are not supported")
    return value.strip()


def ip_address(value, field, family=None):
    """A bare address (no prefix length)."""
    text = _no_zone(value, field)
    if "/" in text:
        fail(field, value, "expected an address without a prefix length")
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        fail(field, value, "not a valid IPv4 or IPv6 address")
    _check_family(parsed, value, field, family)
    return parsed


def ip_interface(value, field, family=None):
    """An interface address 'ADDR' or 'ADDR/PLEN'; a bare address means a host address (/32, /128)."""
    text = _no_zone(value, field)
    addr, _sep, plen = text.partition("/")
    parsed = ip_address(addr, field, family)
    if not plen:
        plen = parsed.max_prefixlen
    else:
        if not plen.isdigit():
            fail(field, value, "the prefix length must be a number")
        plen = int(plen)
        if plen > parsed.max_prefixlen:
            fail(field, value, "the prefix length must be at most %d for IPv%d"
                 % (parsed.max_prefixlen, parsed.version))
    if parsed.is_multicast:
        fail(field, value, "multicast addresses cannot be assigned to a device")
    if parsed.is_unspecified:
        fail(field, value, "the unspecified address cannot be assigned to a device")
    return ipaddress.ip_interface("%s/%d" % (parsed, plen))


def ip_network(value, field, family=None):
    """A network in CIDR form; host bits must be clear so a typo is not silently widened."""
    text = _no_zone(value, field)
    try:
        parsed = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        fail(field, value, "not a valid network (%s)" % exc)
    _check_family(parsed, value, field, family)
    return parsed


def boolean(value, field):
    if not isinstance(value, bool):
        fail(field, value, "expected true or false")
    return value


# linux/capability.h, CAP_CHOWN (0) to CAP_CHECKPOINT_RESTORE (40): the names systemd and setpriv know.
CAPABILITIES = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
                "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
                "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
                "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
                "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
                "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE")


def capabilities(values, field="capabilities"):
    """A list of Linux capability names as a unit's CapabilityBoundingSet takes them (CAP_BPF), each once."""
    if not isinstance(values, list):
        fail(field, values, "expected a list of capability names such as CAP_NET_ADMIN")
    seen = set()
    for index, value in enumerate(values):
        item = "%s[%d]" % (field, index)
        if value not in CAPABILITIES:
            fail(item, value, "is not a Linux capability name (CAP_ and upper case, such as CAP_NET_RAW)")
        if value in seen:
            fail(item, value, "is listed twice")
        seen.add(value)
    return list(values)
