"""Validation of a whole VIP request before anything touches the kernel.

Every error names the field by its path in the request and quotes the value, e.g.
``vips[3].reals[1].weight: -1 must be >= 0``, so an operator finds the line in a playbook without
a traceback. parse_vips() checks everything it can without the kernel; the limits that depend on
what is already loaded (distinct reals across VIPs kept from earlier runs, the object's map sizes)
are checked by balancer.plan() before its first write.

Normalised VIP (what the engine, the modules and the state file use)::

    {"address": "10.0.0.1", "port": 80, "protocol": "tcp", "flags": ["no_sport"],
     "icmp_echo": True, "reals": [{"address": "10.1.0.1", "weight": 1}, ...],
     "key": "10.0.0.1:80/tcp"}

Reals come back sorted by address (IPv4 first), flags sorted by name, addresses in canonical
form, so two requests meaning the same thing compare equal.
"""
import contextlib
import gc
import ipaddress
import operator
import socket

from . import healthspec, maglev
from ..bpf import abi
from ..errors import EngineError, key_path, show

FLAGS = {
    "no_sport": abi.VIP_F_NO_SPORT,
    "no_conn_table": abi.VIP_F_NO_CONN_TABLE,
    "dport_hash": abi.VIP_F_DPORT_HASH,
}
PROTOCOLS = ("tcp", "udp")
MAX_WEIGHT = 65535
VIP_FIELDS = ("address", "port", "protocol", "flags", "icmp_echo", "reals", "health")
REAL_FIELDS = ("address", "weight")


def fail(path, value, problem):
    raise EngineError("%s: %s %s" % (path, show(value), problem), field=path, value=value)


@contextlib.contextmanager
def gc_paused():
    """No cyclic garbage collection inside: a large request builds tens of thousands of small,
    acyclic objects, and every collection pass over them (the oldest generation scans the whole
    request) finds nothing to free. Costs 10-25% of a no-change run otherwise."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _join(prefix, name):
    return "%s.%s" % (prefix, name) if prefix else name


def address(value, path, cache=None):
    """A unicast address without prefix or zone, as an ipaddress object.

    `cache` (a dict) remembers addresses already parsed in this request: a real listed under
    hundreds of VIPs is parsed once, which is most of the validation time of a large request.
    """
    if cache is not None and value in cache:
        return cache[value]
    if not isinstance(value, str) or not value.strip():
        fail(path, value, "is not an IP address (expected a string such as 192.0.2.10 or 2001:db8::10)")
    text = value.strip()
    if "/" in text or "%" in text:
        fail(path, value, "must be a bare address, without a prefix length or %zone")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        fail(path, value, "is not a valid IPv4 or IPv6 address")
    if ip.is_unspecified or ip.is_multicast:
        fail(path, value, "must be a unicast address")
    if cache is not None:
        cache[value] = ip
    return ip


def integer(value, path, lo, hi):
    if isinstance(value, bool):
        fail(path, value, "must be an integer, not a boolean")
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        if len(value.strip().lstrip("+-")) > 20:
            # int() refuses over 4300 digits with a ValueError; no field takes 20 digits anyway.
            fail(path, value, "is out of range (must be between %d and %d)" % (lo, hi))
        value = int(value)
    if not isinstance(value, int):
        fail(path, value, "must be an integer")
    if value < lo:
        fail(path, value, "must be >= %d" % lo)
    if value > hi:
        fail(path, value, "must be <= %d" % hi)
    return value


def ring_size(value, path="ring_size"):
    value = integer(value, path, 3, 1 << 24)
    if not maglev.is_prime(value):
        fail(path, value, "is not prime (Maglev needs a prime ring size, e.g. 65537)")
    return value


def key_text(addr, port, protocol):
    """'10.0.0.1:80/tcp', '[2001:db8::1]:443/tcp': how VIPs are named in results and errors."""
    host = "[%s]" % addr if ":" in str(addr) else str(addr)
    return "%s:%d/%s" % (host, port, protocol)


def _flags(value, path):
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        fail(path, value, "must be a list of flag names (%s)" % ", ".join(sorted(FLAGS)))
    out = set()
    for i, name in enumerate(value):
        if not isinstance(name, str) or name.strip().lower() not in FLAGS:
            fail("%s[%d]" % (path, i), name, "is not a VIP flag (known: %s)" % ", ".join(sorted(FLAGS)))
        out.add(name.strip().lower())
    return sorted(out)


def _known_keys(value, path, allowed):
    for k in value:
        if k not in allowed:
            fail(key_path(path, k), value[k], "is not a known field (expected one of %s)" % ", ".join(allowed))


_REAL_KEYS = frozenset(REAL_FIELDS)
_ADDRESS = operator.itemgetter("address")
_WEIGHT = operator.itemgetter("weight")


def _real_key(text):
    """(version, packed, canonical text) of a valid unicast IPv4 address string, else None.

    inet_pton accepts exactly what ipaddress accepts for IPv4 (four decimal octets, no leading
    zeros) at a fraction of the cost, and inet_ntoa gives the same canonical text. Anything else,
    or anything inet_pton refuses, returns None and is left to address().
    """
    if ":" in text:
        return None
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return None
    if packed == b"\0\0\0\0" or 224 <= packed[0] < 240:  # unspecified, multicast: address() says so
        return None
    return 4, packed, socket.inet_ntoa(packed)


def _reals_fast(reals_raw, mapping, v6_vip, cache):
    """The common, valid case of _reals in bulk (C-level passes over the items), or None.

    None means "something needs a closer look" (a bad or unusual item, a duplicate, all weights
    zero, a family mix...): _reals then walks the items one by one and names the culprit. Every
    check here is one the item loop makes too, so both accept exactly the same requests and
    return the same list.
    """
    if mapping:
        addrs = list(reals_raw)
        weights = list(reals_raw.values())
    else:
        types = set(map(type, reals_raw))
        if types == {dict}:
            try:
                addrs = list(map(_ADDRESS, reals_raw))
                weights = list(map(_WEIGHT, reals_raw))
            except KeyError:
                return None
            # Both keys present in every item (and checked below): two keys means no others.
            if set(map(len, reals_raw)) != {2}:
                return None
        elif types == {str}:
            addrs, weights = list(reals_raw), [1] * len(reals_raw)
        else:
            return None
    if set(map(type, addrs)) != {str} or set(map(type, weights)) != {int} \
            or min(weights) < 0 or max(weights) > MAX_WEIGHT or not any(weights):
        return None
    # address text -> version byte + packed address, which sorts as (version, packed) does but
    # compares as one bytes object and caches its hash (duplicate check); and -> canonical text.
    rank, canon = cache.setdefault("rank", {}), cache.setdefault("canon", {})
    ranks = list(map(rank.get, addrs))
    if None in ranks:
        for i, addr in enumerate(addrs):
            if ranks[i] is None:
                key = _real_key(addr.strip())
                if key is None:
                    try:
                        ip = address(addr, "reals")
                    except EngineError:
                        return None
                    key = (ip.version, ip.packed, ip.compressed)
                ranks[i] = rank[addr] = bytes((key[0],)) + key[1]
                canon[addr] = key[2]
    if len(set(ranks)) != len(ranks) or (v6_vip and min(ranks)[0] == 4):
        return None
    texts = list(map(canon.__getitem__, addrs))
    return [{"address": texts[i], "weight": weights[i]} for i in sorted(range(len(ranks)), key=ranks.__getitem__)]


def _reals(reals_raw, rpath, vip_ip, cache):
    """[{address, weight}] sorted by address (IPv4 first), addresses canonical; the hot path of a
    large request.

    Lists give items {address, weight} or bare addresses (paths reals[3].address); the compact
    mapping {address: weight} names items by address (paths reals[10.1.0.1]).
    """
    mapping = isinstance(reals_raw, dict)
    if not mapping and not isinstance(reals_raw, (list, tuple)):
        fail(rpath, reals_raw, "must be a list of reals (address and weight) or a mapping address: weight")
    known = cache.setdefault("reals", {})  # address text -> (version, packed, canonical text)
    v6_vip = vip_ip.version == 6
    out = _reals_fast(reals_raw, mapping, v6_vip, cache)
    if out is not None:
        return out
    out, seen = [], {}
    for i, item in (reals_raw.items() if mapping else enumerate(reals_raw)):
        if mapping:
            addr, weight = i, item
        elif type(item) is dict and item.keys() <= _REAL_KEYS:  # pylint: disable=unidiomatic-typecheck  # exact dict: fast path
            addr, weight = item.get("address"), item.get("weight")
        elif isinstance(item, str):
            addr, weight = item, None
        elif isinstance(item, dict):  # a dict subclass (Ansible's tagged values), or unknown keys
            _known_keys(item, "%s[%d]" % (rpath, i), REAL_FIELDS)
            addr, weight = item.get("address"), item.get("weight")
        else:
            fail("%s[%d]" % (rpath, i), item, "must be a mapping with address and weight (or an address string)")
        key = known.get(addr) if type(addr) is str else None  # pylint: disable=unidiomatic-typecheck
        if key is None:
            ip = address(addr, "%s[%s]" % (rpath, i) if mapping else "%s[%d].address" % (rpath, i))
            key = known[addr] = (ip.version, ip.packed, ip.compressed)
        if weight is None:
            weight = 1
        elif type(weight) is not int or not 0 <= weight <= MAX_WEIGHT:  # pylint: disable=unidiomatic-typecheck  # bool is not a weight
            weight = integer(weight, "%s[%s]" % (rpath, i) if mapping else "%s[%d].weight" % (rpath, i),
                             0, MAX_WEIGHT)
        if v6_vip and key[0] == 4:
            fail("%s[%s]" % (rpath, i) if mapping else "%s[%d].address" % (rpath, i), key[2],
                 "is IPv4 but the VIP %s is IPv6: the data plane carries IPv4 in IPv4, IPv4 in IPv6 and "
                 "IPv6 in IPv6, never IPv6 in IPv4; give this VIP IPv6 reals" % vip_ip)
        if key in seen:
            where = "%s[%s]" % (rpath, i) if mapping else "%s[%d].address" % (rpath, i)
            fail(where, key[2], "is listed twice (also %s[%s]); give each real once" % (rpath, seen[key]))
        seen[key] = i
        out.append(key + (weight,))
    if not any(r[3] for r in out):
        fail(rpath, [r[3] for r in out] if out else reals_raw,
             "needs at least one real with weight > 0 (all weights are zero or the list is empty); "
             "remove the VIP (state: absent) to take it out of service")
    out.sort()
    return [{"address": r[2], "weight": r[3]} for r in out]


def _health(raw, port, path, cache, defaults):
    """The VIP's resolved health spec; the defaults' own spec is built once per request."""
    base = cache.get("health")
    if base is None:
        defaults = healthspec.parse_defaults(None) if defaults is None else defaults
        base = cache["health"] = (defaults, healthspec.base_spec(defaults))
    hpath = _join(path, "health")
    if raw is None:
        return healthspec.for_port(base[1], port, hpath)
    return healthspec.resolve(raw, port, base[0], hpath)


def parse_vip(raw, path="", cache=None, health=None):
    """One VIP request (a dict) -> normalised VIP. `path` prefixes field names in errors;
    `health`: the balancer-wide health defaults (healthspec.parse_defaults), None for the built-in ones."""
    cache = {} if cache is None else cache
    if not isinstance(raw, dict):
        fail(path or "vip", raw, "must be a mapping with address, port, protocol and reals")
    _known_keys(raw, path, VIP_FIELDS)
    ip = address(raw.get("address"), _join(path, "address"))
    if raw.get("port") is None:
        fail(_join(path, "port"), None, "is required (0 means every port of the address)")
    port = integer(raw.get("port"), _join(path, "port"), 0, 65535)
    proto = raw.get("protocol")
    proto = "tcp" if proto is None else proto
    if not isinstance(proto, str) or proto.strip().lower() not in PROTOCOLS:
        fail(_join(path, "protocol"), proto, "is not a supported protocol (tcp or udp)")
    proto = proto.strip().lower()
    echo = raw.get("icmp_echo")
    if echo is not None and not isinstance(echo, bool):
        fail(_join(path, "icmp_echo"), echo, "must be true or false")
    reals = _reals(raw.get("reals"), _join(path, "reals"), ip, cache)
    return {
        "address": ip.compressed, "port": port, "protocol": proto,
        "flags": _flags(raw.get("flags"), _join(path, "flags")),
        "icmp_echo": True if echo is None else echo,
        "reals": reals, "key": key_text(ip.compressed, port, proto),
        "health": _health(raw.get("health"), port, path, cache, health),
    }


def parse_vips(raw_list, path="vips", max_vips=abi.MAX_VIPS, max_reals=abi.MAX_REALS, health=None):
    """The whole set form: every VIP valid, no duplicates, within the map sizes. `health`: the
    balancer-wide health defaults (healthspec.parse_defaults), None for the built-in ones."""
    with gc_paused():
        return _parse_vips(raw_list, path, max_vips, max_reals, health)


def _parse_vips(raw_list, path, max_vips, max_reals, health):
    if not isinstance(raw_list, (list, tuple)):
        fail(path, raw_list, "must be a list of VIPs")
    vips, seen, echo, cache = [], {}, {}, {}
    for i, raw in enumerate(raw_list):
        vpath = "%s[%d]" % (path, i)
        vip = parse_vip(raw, vpath, cache, health)
        if vip["key"] in seen:
            fail(vpath, vip["key"], "is listed twice (also %s[%d])" % (path, seen[vip["key"]]))
        seen[vip["key"]] = i
        if raw.get("icmp_echo") is not None:
            other = echo.setdefault(vip["address"], (i, vip["icmp_echo"]))
            if other[1] != vip["icmp_echo"]:
                fail(_join(vpath, "icmp_echo"), vip["icmp_echo"],
                     "conflicts with %s[%d].icmp_echo on the same address (echo replies are per address)"
                     % (path, other[0]))
        vips.append(vip)
    # A VIP that leaves icmp_echo unset follows another VIP of its address that sets it.
    for vip in vips:
        if vip["address"] in echo:
            vip["icmp_echo"] = echo[vip["address"]][1]
    check_limits(vips, path, max_vips, max_reals)
    return vips


def real_addresses(vips):
    """The set of real addresses of normalised VIPs."""
    return {r["address"] for v in vips for r in v["reals"]}


def check_limits(vips, path, max_vips, max_reals, reals=None):
    """`reals`: real_addresses(vips), when the caller has it already."""
    if len(vips) > max_vips:
        fail(path, len(vips), "VIPs exceed the %d the balancer holds (LB_MAX_VIPS)" % max_vips)
    reals = real_addresses(vips) if reals is None else reals
    # Index 0 of lb_reals is never a real: a zeroed ring slot must mean "no backend".
    if len(reals) > max_reals - 1:
        fail(path, len(reals), "distinct reals exceed the %d the balancer holds (LB_MAX_REALS - 1)"
             % (max_reals - 1))


def flags_value(names):
    value = 0
    for name in names:
        value |= FLAGS[name]
    return value


def flag_names(value):
    names = [name for name, bit in FLAGS.items() if value & bit]
    unknown = value & ~sum(FLAGS.values())
    if unknown:
        names.append("0x%x" % unknown)
    return sorted(names)
