"""The balancer's BGP request (the role's balancer_bgp_* variables) checked and normalised.

Keys (missing or null ones take the defaults below)::

    {"local_as": 65010, "router_id": "", "families": ["ipv4", "ipv6"],
     "peers": [{"address": "10.20.1.1", "as": 65000, "password": "", "bfd": True, "name": ""}],
     "password": "", "communities": ["65010:1"], "med": None,
     "vip_attributes": {"10.99.0.1": {"communities": [], "med": 10}},
     "bfd_interval": 100, "bfd_multiplier": 3, "table": 4242}

The normalised request has every key; each peer has its address in compressed form, its family
("ipv4"/"ipv6"), its password (its own, else the global one), bfd and a protocol name (its own, else
one made from the address). vip_attributes' keys are compressed addresses, each with both
communities (a list, or None: the global ones) and med (None: the global one).

Every error names the field by its path (``peers[1].address``) and quotes the value; a caller that
knows the user's names (validate_request) renames the top-level key. Imports only errors and validate.
"""
import ipaddress
import re

from ..errors import EngineError, key_path, show

FAMILIES = ("ipv4", "ipv6")
KEYS = ("local_as", "router_id", "families", "peers", "password", "communities", "med", "vip_attributes",
        "bfd_interval", "bfd_multiplier", "table")
PEER_KEYS = ("address", "as", "password", "bfd", "name")
ATTRIBUTE_KEYS = ("communities", "med")
DEFAULTS = {"local_as": None, "router_id": "", "families": ["ipv4", "ipv6"], "peers": [], "password": "",
            "communities": [], "med": None, "vip_attributes": {}, "bfd_interval": 100, "bfd_multiplier": 3,
            "table": 4242}
AS_RANGE = (1, 4294967295)
MED_RANGE = (0, 4294967295)
TABLE_RANGE = (1, 4294967295)
# The kernel's own tables (unspec 0, default 253, main 254, local 255): BIRD learning the agent's
# table must never learn the host's routes, nor may the agent's routes go there.
RESERVED_TABLES = (0, 253, 254, 255)
BFD_INTERVAL = (10, 10000)
BFD_MULTIPLIER = (1, 255)
NAME = re.compile(r"[a-z0-9_]{1,32}")
# BIRD keeps a TCP-MD5 key per socket; Linux allows 80 bytes (TCP_MD5SIG_MAXKEYLEN).
PASSWORD_MAX = 80


def fail(path, value, problem):
    raise EngineError("%s: %s %s" % (path, show(value), problem), field=path, value=value)


def _integer(value, path, lo, hi, what="an integer"):
    if isinstance(value, bool):
        fail(path, value, "must be %s, not a boolean" % what)
    if isinstance(value, str) and re.fullmatch(r"\s*\+?[0-9]{1,20}\s*", value):
        value = int(value)
    if not isinstance(value, int):
        fail(path, value, "must be %s" % what)
    if not lo <= value <= hi:
        fail(path, value, "is out of range: %s must be between %d and %d" % (what, lo, hi))
    return value


def _address(value, path, what="an IP address"):
    if not isinstance(value, str) or "/" in value or "%" in value:
        fail(path, value, "is not an address (expected %s, without a prefix length or zone)" % what)
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        fail(path, value, "is not an address (expected %s)" % what)
    return None


def _text(value, path, what):
    if value is None:
        return ""
    if not isinstance(value, str):
        fail(path, value, "must be a string (%s)" % what)
    return value


def _password(value, path):
    value = _text(value, path, "a TCP-MD5 password")
    if len(value.encode("utf-8", "surrogatepass")) > PASSWORD_MAX:
        # Not quoted: it is a secret.
        raise EngineError("%s: is longer than %d bytes (TCP-MD5 keys are at most %d)" % (path, PASSWORD_MAX, PASSWORD_MAX),
                          field=path, value="********")
    if any(c in value for c in "\"\\") or any(ord(c) < 0x20 or ord(c) == 0x7f for c in value):
        raise EngineError("%s: must not contain quotes, backslashes or control characters" % path,
                          field=path, value="********")
    return value


def community(value, path):
    """'A:B' with A and B in 0..65535 -> (A, B)."""
    match = re.fullmatch(r"\s*([0-9]{1,5})\s*:\s*([0-9]{1,5})\s*", value) if isinstance(value, str) else None
    if not match or int(match.group(1)) > 65535 or int(match.group(2)) > 65535:
        fail(path, value, "is not a standard community (expected \"A:B\", each between 0 and 65535)")
    return (int(match.group(1)), int(match.group(2)))


def communities(values, path):
    if values is None:
        return []
    if not isinstance(values, list):
        fail(path, values, "must be a list of communities such as \"65010:100\"")
    out = []
    for index, value in enumerate(values):
        item = community(value, "%s[%d]" % (path, index))
        text = "%d:%d" % item
        if text not in out:
            out.append(text)
    return out


def _med(value, path):
    if value is None or value == "":
        return None
    return _integer(value, path, *MED_RANGE, what="a MED")


def _mapping(raw, path, allowed, what):
    if not isinstance(raw, dict):
        fail(path, raw, "must be a mapping (%s)" % what)
    for key in raw:
        if key not in allowed:
            fail(key_path(path, key), raw[key], "is not a known key (expected one of %s)" % ", ".join(allowed))


def _families(value, path):
    if isinstance(value, str) or not isinstance(value, list) or not value:
        fail(path, value, "must be a non-empty list of %s" % " and ".join(FAMILIES))
    out = []
    for index, item in enumerate(value):
        if item not in FAMILIES:
            fail("%s[%d]" % (path, index), item, "is not an address family (one of %s)" % ", ".join(FAMILIES))
        if item not in out:
            out.append(item)
    return [f for f in FAMILIES if f in out]


def _peer_name(address):
    return "peer_" + re.sub(r"[^0-9a-f]", "_", address.compressed.lower())


def _peers(raw, families, password, join):
    path = join("peers")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        # Not quoted: one peer given as a mapping holds its password.
        raise EngineError("%s: must be a list of peers ({address, as, password, bfd, name}), not a %s"
                          % (path, type(raw).__name__), field=path, value="********")
    out, seen, names = [], {}, {}
    for index, item in enumerate(raw):
        where = "%s[%d]" % (path, index)
        _mapping(item, where, PEER_KEYS, "a peer: address, as, password, bfd, name")
        if item.get("address") is None:
            fail(where + ".address", None, "is required (the peer's IP address)")
        address = _address(item["address"], where + ".address", "the peer's IPv4 or IPv6 address")
        family = "ipv%d" % address.version
        if family not in families:
            fail(where + ".address", item["address"], "is an %s peer on an %s-only session (%s lists %s)"
                 % ("IPv6" if address.version == 6 else "IPv4", "IPv4" if families == ["ipv4"] else "IPv6",
                    join("families"), ", ".join(families)))
        if address.is_multicast or address.is_unspecified or address.is_loopback:
            fail(where + ".address", item["address"], "is not a unicast address a BGP peer can have")
        if address in seen:
            fail(where + ".address", item["address"], "is listed twice (also %s[%d].address)" % (path, seen[address]))
        seen[address] = index
        if item.get("as") is None:
            fail(where + ".as", None, "is required (the peer's AS number)")
        peer_as = _integer(item["as"], where + ".as", *AS_RANGE, what="an AS number")
        own = _password(item.get("password"), where + ".password")
        bfd = item.get("bfd", True)
        if bfd is None:
            bfd = True
        if not isinstance(bfd, bool):
            fail(where + ".bfd", bfd, "must be true or false")
        name = item.get("name") or ""
        if name:
            if not isinstance(name, str) or not NAME.fullmatch(name):
                fail(where + ".name", name, "is not a protocol name (1 to 32 of a-z, 0-9 and _)")
        else:
            name = _peer_name(address)
        if name in names:
            fail(where + ".name", name, "is the name of %s[%d] too" % (path, names[name]))
        names[name] = index
        out.append({"address": address.compressed, "family": family, "as": peer_as,
                    "password": own or password, "bfd": bfd, "name": name})
    return out


def _vip_attributes(raw, join):
    path = join("vip_attributes")
    if raw is None:
        return {}
    _mapping(raw, path, list(raw) if isinstance(raw, dict) else (), "VIP address: {communities, med}")
    out = {}
    for key, value in raw.items():
        where = key_path(path, key)
        address = _address(key, where, "a VIP address as the key") if isinstance(key, str) else None
        if address is None:
            fail(where, key, "is not an address (expected a VIP address as the key)")
        if address.compressed in out:
            fail(where, key, "is the same address as another key")
        if value is None:
            value = {}
        _mapping(value, where, ATTRIBUTE_KEYS, "communities, med")
        given = value.get("communities")
        out[address.compressed] = {
            "family": "ipv%d" % address.version,
            "communities": None if given is None else communities(given, where + ".communities"),
            "med": _med(value.get("med"), where + ".med")}
    return dict(sorted(out.items(), key=lambda kv: ipaddress.ip_address(kv[0]).packed))


def check(request, prefix=""):
    """The request (a mapping with some of KEYS) -> the normalised request, or EngineError.
    `prefix` goes before each key in the fields named: "" (peers[1].address), "config." or the
    role's "balancer_bgp_" (balancer_bgp_peers[1].address)."""
    def join(name):
        return prefix + name

    if not isinstance(request, dict):
        fail(prefix.rstrip("._") or "request", request, "must be a mapping with some of %s" % ", ".join(KEYS))
    for key in request:
        if key not in KEYS:
            fail(join(key) if isinstance(key, str) and len(key) <= 40 else key_path(prefix.rstrip("._"), key),
                 request[key], "is not a known BGP setting (expected one of %s)" % ", ".join(KEYS))
    raw = dict(DEFAULTS)
    raw.update({k: v for k, v in request.items() if v is not None})
    out = {}
    if raw["local_as"] is None:
        fail(join("local_as"), None, "is required (this balancer's AS number)")
    out["local_as"] = _integer(raw["local_as"], join("local_as"), *AS_RANGE, what="an AS number")
    router_id = _text(raw["router_id"], join("router_id"), "an IPv4 address").strip()
    if router_id:
        parsed = _address(router_id, join("router_id"), "an IPv4 address")
        if parsed.version != 4 or parsed.is_unspecified:
            fail(join("router_id"), raw["router_id"], "is not an IPv4 address (BIRD's router id is one, even on IPv6 sessions)")
        router_id = parsed.compressed
    out["router_id"] = router_id
    out["families"] = _families(raw["families"], join("families"))
    out["password"] = _password(raw["password"], join("password"))
    out["peers"] = _peers(raw["peers"], out["families"], out["password"], join)
    if out["password"] and not out["peers"]:
        raise EngineError("%s: is set but %s is empty (a password without a peer)" % (join("password"), join("peers")),
                          field=join("password"), value="********")
    out["communities"] = communities(raw["communities"], join("communities"))
    out["med"] = _med(raw["med"], join("med"))
    out["vip_attributes"] = _vip_attributes(raw["vip_attributes"], join)
    out["bfd_interval"] = _integer(raw["bfd_interval"], join("bfd_interval"), *BFD_INTERVAL, what="milliseconds")
    out["bfd_multiplier"] = _integer(raw["bfd_multiplier"], join("bfd_multiplier"), *BFD_MULTIPLIER, what="a count")
    table = _integer(raw["table"], join("table"), *TABLE_RANGE, what="a kernel routing table")
    if table in RESERVED_TABLES:
        fail(join("table"), table, "is a table of the kernel's own (0, 253 default, 254 main, 255 local); "
                                   "pick one only the agent uses")
    out["table"] = table
    return out


def masked(normalised):
    """The normalised request with every password replaced by ******** (for diffs and results)."""
    out = dict(normalised)
    if out.get("password"):
        out["password"] = "********"
    out["peers"] = [dict(p, password="********" if p.get("password") else "") for p in normalised.get("peers", [])]
    return out
