"""lb_vip's request parsing (engine/balancer/viprequest.py), without a kernel: what each form becomes."""
import json

import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine.balancer import viprequest
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError

BASE = dict(pin_root="/nonexistent", state="present", address=None, port=None, protocol="tcp", flags=None,
            icmp_echo=None, reals=None, vips=None, src=None, content=None, keep_as=None, purge=False, ring_size=None)


def _params(**kwargs):
    return dict(BASE, **kwargs)


def test_single_vip_absent_is_a_key_to_remove():
    desired, remove, document = viprequest._request(_params(address="10.0.0.1", port=80, state="absent"))
    assert desired == [] and remove and document is None


def test_single_vip_absent_needs_a_port():
    with pytest.raises(EngineError) as info:
        viprequest._request(_params(address="10.0.0.1", state="absent"))
    assert info.value.field == "port"


def test_set_form_from_content_keeps_the_document_bytes():
    text = json.dumps([{"address": "10.0.0.1", "port": 80, "reals": ["10.1.0.1"]}])
    desired, remove, document = viprequest._request(_params(content=text))
    assert len(desired) == 1 and remove == [] and document == text.encode()


def test_set_form_absent_names_the_bad_entry():
    with pytest.raises(EngineError) as info:
        viprequest._request(_params(content=json.dumps([{"address": "10.0.0.1", "port": 80, "protocol": "sctp"}]),
                                    state="absent"))
    assert info.value.field == "content[0].protocol"


def test_keep_as_refuses_a_plain_list():
    with pytest.raises(EngineError) as info:
        viprequest._request(_params(content="[]", keep_as="/tmp/x.json"))
    assert info.value.field == "keep_as"
