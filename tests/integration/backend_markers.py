"""`needs_ipip` / `needs_ip6tnl`: tests that need the kernel's tunnel modules.

The CI host kernel has no ipip or ip6_tunnel module; the kernel tier (`make kernel`: virtme-ng,
Debian's kernel) has both and runs these tests in its guest, selected with
`-m "needs_ipip or needs_ip6tnl"` (tests/kernel/test_kernel_tier.py).
The probe creates the device the way an operator would, in a scratch namespace.
"""
import functools
import warnings

import pytest

from backend_netns import NetNS


@functools.lru_cache(maxsize=None)
def kernel_can_create(kind):
    """(True, '') or (False, why) for `ip link add X type KIND external`."""
    try:
        ns = NetNS()
    except Exception as exc:  # no root, no iproute2: nothing netns-based can run either
        return False, "cannot create a network namespace: %s" % exc
    try:
        done = ns.ip("link", "add", "xkt-probe", "type", kind, "external", check=False)
        if done.returncode == 0:
            return True, ""
        return False, (done.stderr or done.stdout).strip()
    finally:
        ns.delete()


def _mark(name):
    # Registration belongs in an ini file or the top conftest; until then keep pytest quiet.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(pytest.mark, name)


def _needs(kind, module, mark_name):
    ok, why = kernel_can_create(kind)
    skip = pytest.mark.skipif(
        not ok, reason="needs a kernel that can create %s devices (the %s module): "
        "`ip link add X type %s external` failed here: %s - runs in the kernel tier (make kernel)"
        % (kind, module, kind, why))

    def decorate(func):
        return skip(_mark(mark_name)(func))
    return decorate


def needs_ipip(func):
    return _needs("ipip", "ipip", "needs_ipip")(func)


def needs_ip6tnl(func):
    return _needs("ip6tnl", "ip6_tunnel", "needs_ipip")(func)


def lacks(kind):
    """For tests of the error a kernel without the module must give."""
    ok, _why = kernel_can_create(kind)
    return pytest.mark.skipif(ok, reason="this kernel can create %s devices" % kind)
