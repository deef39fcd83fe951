"""engine_install's list forms (units, objects) next to the single ones: one run, each file on its own."""
import os
import stat

import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine import install
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError


def _unit(path, text):
    return {"path": str(path), "content": text}


def test_units_and_objects_are_written_each_only_when_it_differs(tmp_path):
    dest = str(tmp_path / "lib" / "xdplb_engine")
    units = [_unit(tmp_path / "systemd" / "a.service", "[Unit]\n"), _unit(tmp_path / "systemd" / "b.service", "[Service]\n")]
    objs = [{"dest": str(tmp_path / "bpf" / "balancer.o.candidate"), "data": b"\x7fELF a"},
            {"dest": str(tmp_path / "bpf" / "hc_encap.o"), "data": b"\x7fELF b"}]
    check = install.ensure(dest, check_mode=True, files={}, units=units, objs=objs)
    assert check["units"] == [u["path"] for u in units] and check["objects"] == [o["dest"] for o in objs]
    assert check["unit"] and check["object"] and not os.path.exists(tmp_path / "systemd")
    first = install.ensure(dest, files={}, units=units, objs=objs)
    assert first["changed"] and first["units"] == check["units"] and first["objects"] == check["objects"]
    assert stat.S_IMODE(os.stat(units[1]["path"]).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(objs[1]["dest"]).st_mode) == 0o600
    assert (tmp_path / "bpf" / "hc_encap.o").read_bytes() == b"\x7fELF b"
    again = install.ensure(dest, files={}, units=units, objs=objs)
    assert not again["changed"] and again["units"] == [] and again["objects"] == [] and not again["unit"]
    # Only the file that changed is reported: the role restarts the agent for its own files only.
    objs[1]["data"] = b"\x7fELF c"
    units[1]["content"] += "Restart=on-failure\n"
    edited = install.ensure(dest, files={}, units=units, objs=objs)
    assert edited["units"] == [units[1]["path"]] and edited["objects"] == [objs[1]["dest"]]


def test_the_single_forms_still_work_and_come_first(tmp_path):
    dest = str(tmp_path / "xdplb_engine")
    one = _unit(tmp_path / "one.service", "[Unit]\n")
    more = [_unit(tmp_path / "two.service", "[Unit]\n")]
    obj = {"dest": str(tmp_path / "x.o"), "data": b"x"}
    result = install.ensure(dest, files={}, unit=one, obj=obj, units=more, objs=[{"dest": str(tmp_path / "y.o"), "data": b"y"}])
    assert result["units"] == [one["path"], more[0]["path"]]
    assert result["objects"] == [obj["dest"], str(tmp_path / "y.o")]
    alone = install.ensure(str(tmp_path / "other"), files={}, unit=_unit(tmp_path / "one.service", "[Unit]\nX=1\n"))
    assert alone["unit"] and alone["units"] == [one["path"]] and not alone["object"] and alone["objects"] == []


def test_a_path_given_twice_or_a_bad_item_is_refused_by_its_name_before_any_write(tmp_path):
    dest = str(tmp_path / "xdplb_engine")
    twice = [_unit(tmp_path / "a.service", "x"), _unit(tmp_path / "b.service", "y")]
    with pytest.raises(EngineError) as info:
        install.ensure(dest, files={}, unit=_unit(tmp_path / "b.service", "z"), units=twice)
    assert info.value.field == "units[1].path" and "is also unit.path" in info.value.msg
    with pytest.raises(EngineError) as info:
        install.ensure(dest, files={}, objs=[{"dest": str(tmp_path / "o"), "data": b""},
                                             {"dest": str(tmp_path / "." / "o"), "data": b""}])
    assert info.value.field == "objects[1].dest"
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(EngineError) as info:
        install.ensure(dest, files={}, units=[_unit(tmp_path / "ok.service", "x")],
                       objs=[{"dest": str(tmp_path / "ok.o"), "data": b""}, {"dest": str(blocker / "x.o"), "data": b""}])
    assert info.value.field == "objects[1].dest"
    assert sorted(os.listdir(tmp_path)) == ["file"], "nothing written"


def test_item_requests_name_their_item():
    with pytest.raises(EngineError) as info:
        install.object_request({"src": "hc_encap.o", "content_base64": None, "dest": "/x"}, "objects[1]")
    assert info.value.field == "objects[1].src" and info.value.msg.startswith("objects[1].src: hc_encap.o was not read")
    with pytest.raises(EngineError) as info:
        install.object_request({"src": None, "content_base64": "!!", "dest": "/x"}, "objects[0]")
    assert info.value.field == "objects[0].content_base64"
    with pytest.raises(EngineError) as info:
        install.unit_request({"path": "/x", "content": "@PYTHON@", "python": "python3"}, "units[1]")
    assert info.value.field == "units[1].python" and info.value.msg.startswith("units[1].python: 'python3' must be")
    # The single forms keep their names.
    with pytest.raises(EngineError) as info:
        install.unit_request({"path": "/x", "content": "@PYTHON@", "python": "python3"})
    assert info.value.field == "unit.python"
