"""A normalised BGP request (bgpspec.check) -> BIRD 2's configuration text.

What BIRD announces comes from the agent's kernel table (``table``): for each VIP this balancer can
serve, the agent keeps a host route through its TUN device there, and the kernel removes them all
when the agent dies. BIRD learns that table (one kernel protocol per family, exporting nothing back)
and exports only those routes to its BGP peers, with the communities and MED asked for. So the text
depends on the Ansible variables only, never on health: a reload happens only when they change.

The same request renders the same bytes (sorted, no timestamps), so the module can compare texts.
"""
import ipaddress

KERNEL = {"ipv4": "xdplb_vips4", "ipv6": "xdplb_vips6"}
EXPORT = {"ipv4": "xdplb_export4", "ipv6": "xdplb_export6"}
HOST_LEN = {"ipv4": 32, "ipv6": 128}
# Short retry timers: a session lost to a router restart or a link flap comes back within seconds
# (BIRD's defaults, 120 s to connect again and up to 300 s after an error, keep a balancer out long).
CONNECT_RETRY = 3
ERROR_WAIT = (1, 10)

HEADER = """\
# Managed by Ansible (xdplb.katran.balancer role, module xdplb.katran.bird_config): changes here are
# overwritten. Set the balancer_bgp_* variables instead.
# BIRD announces the host routes the xdplb agent keeps in kernel table {table} (one per VIP this
# balancer can serve, withdrawn when the VIP cannot be served or the agent stops) and nothing else.
"""


def _quote(text):
    # bgpspec refuses quotes, backslashes and control characters in passwords.
    return '"%s"' % text


def _attributes(communities, med, indent):
    lines = []
    for item in communities:
        a, b = item.split(":")
        lines.append("%sbgp_community.add((%s, %s));" % (indent, a, b))
    if med is not None:
        lines.append("%sbgp_med = %d;" % (indent, med))
    return lines


def _filter(request, family):
    lines = ["# Only the agent's routes, host routes only, with this balancer's communities and MED.",
             "filter %s" % EXPORT[family], "{",
             '  if proto != "%s" then reject;' % KERNEL[family],
             "  if net.len != %d then reject;" % HOST_LEN[family]]
    for address, attrs in request["vip_attributes"].items():
        if attrs["family"] != family:
            continue
        communities = request["communities"] if attrs["communities"] is None else attrs["communities"]
        med = request["med"] if attrs["med"] is None else attrs["med"]
        lines.append("  if net = %s/%d then {" % (ipaddress.ip_address(address).compressed, HOST_LEN[family]))
        lines.extend(_attributes(communities, med, "    "))
        lines.append("    accept;")
        lines.append("  }")
    lines.extend(_attributes(request["communities"], request["med"], "  "))
    lines.append("  accept;")
    lines.append("}")
    return lines


def _peer(request, peer):
    lines = ["protocol bgp %s {" % peer["name"],
             '  description "xdplb peer %s";' % peer["address"],
             "  local as %d;" % request["local_as"],
             "  neighbor %s as %d;" % (peer["address"], peer["as"])]
    if peer["password"]:
        lines.append("  password %s;" % _quote(peer["password"]))
    if peer["bfd"]:
        lines.append("  bfd on;")
    lines.extend(["  connect retry time %d;" % CONNECT_RETRY,
                  "  error wait time %d, %d;" % ERROR_WAIT,
                  "  %s {" % peer["family"],
                  "    import none;",
                  "    export filter %s;" % EXPORT[peer["family"]],
                  "    next hop self;",
                  "  };",
                  "}"])
    return lines


def render(request):
    """The configuration text (ends with a newline)."""
    lines = HEADER.format(table=request["table"]).splitlines()
    lines.append("")
    if request["router_id"]:
        lines += ["router id %s;" % request["router_id"], ""]
    else:
        lines += ["# No router id given: BIRD takes one of the host's IPv4 addresses.", ""]
    lines += ["protocol device {", "}", ""]
    if any(p["bfd"] for p in request["peers"]):
        lines += ["protocol bfd xdplb_bfd {",
                  '  interface "*" {',
                  "    min rx interval %d ms;" % request["bfd_interval"],
                  "    min tx interval %d ms;" % request["bfd_interval"],
                  "    multiplier %d;" % request["bfd_multiplier"],
                  "  };",
                  "}", ""]
    for family in request["families"]:
        lines += ["# The agent's table, learned (routes it did not add itself); nothing is written back to the kernel.",
                  "protocol kernel %s {" % KERNEL[family],
                  "  kernel table %d;" % request["table"],
                  "  learn;",
                  "  scan time 1;",
                  "  %s { import all; export none; };" % family,
                  "}", ""]
        lines += _filter(request, family) + [""]
    for peer in request["peers"]:
        lines += _peer(request, peer) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def protocols(request):
    """The protocol names the text defines, as `birdc show protocols` lists them."""
    names = ["device1"]
    if any(p["bfd"] for p in request["peers"]):
        names.append("xdplb_bfd")
    names += [KERNEL[f] for f in request["families"]]
    return names + [p["name"] for p in request["peers"]]
