"""xdplb.katran.vips_served_by: the backend_vips site.yml derives for a backend from balancer_vips."""
from ansible_collections.xdplb.katran.plugins.filter.vips_served_by import FilterModule, vips_served_by

VIPS = [
    {"address": "10.99.0.10", "port": 80, "protocol": "tcp", "reals": ["10.30.1.2", {"address": "10.30.2.2", "weight": 2}]},
    {"address": "10.99.0.10", "port": 80, "protocol": "udp", "reals": [{"address": "10.30.1.2"}]},
    {"address": "fd00:99::10", "port": 80, "reals": ["fd00:30:1::2", "fd00:30:2::2"]},
    {"address": "10.99.0.20", "port": 443, "reals": [{"address": "10.30.2.2", "weight": 0}]},
]


def test_every_vip_that_lists_one_of_the_addresses_once_in_order():
    assert vips_served_by(VIPS, ["10.30.1.2", "fd00:30:1::2"]) == ["10.99.0.10", "fd00:99::10"]
    assert vips_served_by(VIPS, ["10.30.2.2"]) == ["10.99.0.10", "10.99.0.20"]
    assert vips_served_by(VIPS, ["fd00:30:2::2", "10.30.2.2"]) == ["10.99.0.10", "fd00:99::10", "10.99.0.20"]


def test_a_backend_that_is_no_real_serves_nothing():
    assert vips_served_by(VIPS, ["10.30.9.9"]) == []
    assert vips_served_by(VIPS, []) == []
    assert vips_served_by([], ["10.30.1.2"]) == []
    assert vips_served_by(None, None) == []


def test_addresses_compare_as_given_and_a_vip_without_reals_is_skipped():
    # site.yml passes the gathered addresses and ansible_host; nothing normalises them here.
    assert vips_served_by(VIPS, ["FD00:30:1::2"]) == []
    assert vips_served_by([{"address": "10.99.0.30", "reals": []}, {"address": "10.99.0.31"}], ["10.30.1.2"]) == []


def test_registered_under_its_name():
    assert FilterModule().filters() == {"vips_served_by": vips_served_by}
