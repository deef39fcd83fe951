"""Print, per VIP of the balancer pinned under argv[1], the size of its Maglev ring and a SHA-256
of the ring as real addresses (slot by slot), so two balancers can be compared.

Test helper of molecule/fleet: runs on a lab balancer with PYTHONPATH set to the engine the
balancer role installed (the same engine the boot-time restore runs).
"""
import hashlib
import json
import sys

from xdplb_engine.balancer import balancer


def main(pin_root):
    out = {}
    with balancer.Balancer(pin_root) as bal:
        state = bal.read()
        for name, vip in state.vips.items():
            ring = state.ring(vip["vip_num"]) or ()
            text = ",".join(state.real_addr.get(index, "-") for index in ring)
            out[name] = {"slots": len(ring), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
