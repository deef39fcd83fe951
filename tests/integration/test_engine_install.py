"""engine_install: the engine the boot units run is the one the modules run, installed in one task."""
import ast
import base64
import json
import os
import stat
import subprocess
import sys

import pytest

from ansible_collections.xdplb.katran.plugins.module_utils.engine import document, install
from ansible_collections.xdplb.katran.plugins.module_utils.engine.errors import EngineError
from lab_playbook import REPO, adhoc, playbook, task_results

ENGINE_DIR = os.path.join(REPO, "plugins", "module_utils", "engine")
MODULE = os.path.join(REPO, "plugins", "modules", "engine_install.py")
INVENTORY = "localhost,"


def _module_imports():
    """Engine modules the module imports, as paths below the engine: ``cli``, ``bpf/libbpf``."""
    tree = ast.parse(open(MODULE).read())
    shipped = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_shipped")
    names = set()
    base = "ansible_collections.xdplb.katran.plugins.module_utils.engine"
    for node in ast.walk(shipped):
        if isinstance(node, ast.ImportFrom) and node.module and (node.module + ".").startswith(base + "."):
            sub = node.module[len(base) + 1:].replace(".", "/")
            names.update((sub + "/" if sub else "") + alias.name for alias in node.names)
    return names


def _engine_files():
    """Every .py below the engine directory, as a path relative to it (``bpf/libbpf.py``)."""
    found = set()
    for top, dirs, names in os.walk(ENGINE_DIR):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(top, ENGINE_DIR)
        found.update(n if rel == "." else rel + "/" + n for n in names if n.endswith(".py"))
    return found


def test_module_imports_every_engine_file():
    # AnsiballZ only ships what the module imports: a new engine file missing from the list would
    # be missing on the hosts, and the boot restore would fail there with an ImportError.
    # (A subpackage's __init__.py travels with any module imported from it.)
    files = {f[:-3] for f in _engine_files() if not f.endswith("__init__.py")}
    assert files == _module_imports()
    assert files, "the walk found the engine"


def _run(dest):
    return adhoc(INVENTORY, "localhost", "xdplb.katran.engine_install", "dest=" + dest)["localhost"]


@pytest.fixture
def dest(tmp_path, monkeypatch):
    monkeypatch.setenv("ANSIBLE_TRANSPORT", "local")
    monkeypatch.setenv("ANSIBLE_PYTHON_INTERPRETER", sys.executable)
    return str(tmp_path / "lib" / "xdplb_engine")


def test_installed_engine_runs_the_cli_and_reruns_change_nothing(dest):
    first = _run(dest)
    assert first["changed"] and not first.get("failed"), first
    installed = {os.path.relpath(os.path.join(top, n), dest) for top, _dirs, names in os.walk(dest) for n in names}
    assert installed == _engine_files()
    for name in installed:
        with open(os.path.join(dest, name), "rb") as mine, open(os.path.join(ENGINE_DIR, name), "rb") as src:
            assert mine.read() == src.read(), name
        assert stat.S_IMODE(os.stat(os.path.join(dest, name)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700
    for sub in {os.path.dirname(name) for name in installed} - {""}:
        assert stat.S_IMODE(os.stat(os.path.join(dest, sub)).st_mode) == 0o700, sub
    # What the boot unit runs: a state file that does not exist is a clear exit 2, not an ImportError.
    proc = subprocess.run([sys.executable, "-m", "xdplb_engine", "restore", "/nonexistent/balancer.json"],
                          cwd=os.path.dirname(dest), env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "nonexistent/balancer.json" in proc.stderr
    again = _run(dest)
    assert not again["changed"] and again["written"] == [] and again["removed"] == []


def test_repairs_a_changed_file_removes_a_stale_one_and_leaves_the_mode(dest):
    _run(dest)
    with open(os.path.join(dest, "balancer", "vips.py"), "a") as handle:
        handle.write("# edited by hand\n")
    open(os.path.join(dest, "renamed_long_ago.py"), "w").close()
    os.chmod(dest, 0o755)
    result = _run(dest)
    assert result["changed"] and result["written"] == ["balancer/vips.py"] and result["removed"] == ["renamed_long_ago.py"]
    assert "renamed_long_ago.py" not in os.listdir(dest)
    # An existing dest is never re-moded (it may be the user's own directory); its files are 0600.
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(os.path.join(dest, "balancer", "vips.py")).st_mode) == 0o600


def test_a_dest_others_can_write_is_refused_and_left_as_it_is(dest):
    _run(dest)
    os.chmod(dest, 0o777)
    result = _run(dest)
    assert result.get("field") == "dest" and "writable by group or others" in result["msg"], result
    assert dest in result["msg"] and stat.S_IMODE(os.stat(dest).st_mode) == 0o777
    os.chmod(dest, 0o700)


def test_check_mode_writes_nothing(tmp_path):
    dest = str(tmp_path / "xdplb_engine")
    result = install.ensure(dest, check_mode=True)
    assert result["changed"] and "balancer/vips.py" in result["written"]
    assert not os.path.exists(dest)


def test_dest_that_is_a_file_is_refused_by_name(dest):
    os.makedirs(os.path.dirname(dest))
    open(dest, "w").close()
    result = _run(dest)
    assert result.get("field") == "dest" and "is not a directory" in result["msg"] and dest in result["msg"]
    assert os.path.isfile(dest)


def test_directories_are_created_0700_and_existing_ones_never_re_moded(dest, tmp_path):
    lib, objects, state = str(tmp_path / "lib"), str(tmp_path / "lib" / "bpf"), str(tmp_path / "etc" / "xdplb")
    args = "dest=%s directories=%s,%s,%s" % (dest, lib, objects, state)
    check = install.ensure(dest, check_mode=True, directories=[lib, objects, state])
    assert check["directories"] == [lib, objects, state] and not os.path.exists(lib)
    first = adhoc(INVENTORY, "localhost", "xdplb.katran.engine_install", args)["localhost"]
    assert first["changed"] and first["directories"] == [lib, objects, state], first
    assert all(stat.S_IMODE(os.stat(d).st_mode) == 0o700 for d in (lib, objects, state, dest))
    # The user's own directory (balancer_lib_dir: /usr/local/lib): left 0755, nothing to change.
    os.chmod(state, 0o755)
    shared = str(tmp_path / "usr-local-lib")
    os.mkdir(shared, 0o755)
    os.chmod(shared, 0o755)
    args += "," + shared
    again = adhoc(INVENTORY, "localhost", "xdplb.katran.engine_install", args)["localhost"]
    assert not again["changed"] and again["directories"] == [] and again["written"] == [], again
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o755 and stat.S_IMODE(os.stat(shared).st_mode) == 0o755
    open(str(tmp_path / "etc" / "plain"), "w").close()
    refused = adhoc(INVENTORY, "localhost", "xdplb.katran.engine_install",
                    "dest=%s directories=%s" % (dest, tmp_path / "etc" / "plain"))["localhost"]
    assert refused.get("field") == "directories" and "is not a directory" in refused["msg"]


def test_unit_is_written_0644_with_its_directory_only_when_it_differs(dest, tmp_path):
    unit = str(tmp_path / "systemd" / "xdplb-balancer.service")
    args = {"dest": dest, "unit": {"path": unit, "content": "[Unit]\nDescription=x\n"}}
    check = install.ensure(dest, check_mode=True, unit=args["unit"])
    assert check["unit"] and not os.path.exists(unit)
    first = adhoc(INVENTORY, "localhost", "xdplb.katran.engine_install", args)["localhost"]
    assert first["changed"] and first["unit"], first
    with open(unit) as handle:
        assert handle.read() == "[Unit]\nDescription=x\n"
    assert stat.S_IMODE(os.stat(unit).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(os.path.dirname(unit)).st_mode) == 0o755
    again = adhoc(INVENTORY, "localhost", "xdplb.katran.engine_install", args)["localhost"]
    assert not again["changed"] and not again["unit"]
    args["unit"]["content"] += "After=network.target\n"
    edited = adhoc(INVENTORY, "localhost", "xdplb.katran.engine_install", args)["localhost"]
    assert edited["changed"] and edited["unit"] and edited["written"] == []
    # What the roles read instead of gathering facts.
    assert edited["host"]["systemd"] == os.path.isdir("/run/systemd/system")
    assert "default_interface" in edited["host"]
    # The interpreter Ansible used on the host: what the boot units run the engine with by default.
    assert os.path.isabs(edited["host"]["python"]) and os.access(edited["host"]["python"], os.X_OK)


def test_unit_runs_the_engine_with_the_hosts_interpreter_or_the_one_given(dest, tmp_path):
    unit = tmp_path / "xdplb-balancer.service"
    content = "[Service]\nExecStart=@PYTHON@ -m xdplb_engine restore /etc/xdplb/balancer.json\n"
    result = _play(tmp_path, {"dest": dest, "unit": {"path": str(unit), "content": content}})
    assert result["unit"] and unit.read_text() == content.replace("@PYTHON@", result["host"]["python"])
    assert result["host"]["python"] == sys.executable  # the ANSIBLE_PYTHON_INTERPRETER of the fixture
    again = _play(tmp_path, {"dest": dest, "unit": {"path": str(unit), "content": content}})
    assert not again["changed"], again
    given = _play(tmp_path, {"dest": dest, "unit": {"path": str(unit), "content": content, "python": "/opt/py/bin/python3"}})
    assert given["unit"] and "ExecStart=/opt/py/bin/python3 -m xdplb_engine" in unit.read_text()
    before = unit.read_text()
    for bad in ("python3", "/usr/bin/python3 -I", "/opt/$HOME/python3"):
        refused = _play(tmp_path, {"dest": dest, "unit": {"path": str(unit), "content": content, "python": bad}})
        assert refused.get("field") == "unit.python" and repr(bad) in refused["msg"], refused
    assert unit.read_text() == before


def test_keep_file_writes_0600_atomically_only_when_bytes_or_mode_differ(tmp_path):
    dest = str(tmp_path / "balancer.json")
    assert document.keep_file(dest, b"{}", check_mode=True) and not os.path.exists(dest)
    assert document.keep_file(dest, b"{}")
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert not document.keep_file(dest, b"{}")
    os.chmod(dest, 0o644)
    assert document.keep_file(dest, b"{}") and stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert document.keep_file(dest, b'{"vips": []}')
    with open(dest, "rb") as handle:
        assert handle.read() == b'{"vips": []}'
    assert os.listdir(tmp_path) == ["balancer.json"]


def _play(tmp_path, args, *extra):
    """engine_install with ``args`` as a one-task playbook (``extra``: ansible-playbook options such
    as --check); the playbook sits in tmp_path, so a relative object.src is looked up under it."""
    path = tmp_path / "engine_install.json"
    path.write_text(json.dumps([{"hosts": INVENTORY.rstrip(","), "gather_facts": False,
                                 "tasks": [{"name": "adhoc", "xdplb.katran.engine_install": args}]}]))
    _rc, data = playbook(str(path), "-i", INVENTORY, *extra, check=False)
    return task_results(data, "adhoc")["localhost"]


def test_object_from_the_controller_is_written_0600_only_when_bytes_or_mode_differ(dest, tmp_path):
    src = tmp_path / "balancer.o"
    src.write_bytes(bytes(range(256)) * 40)
    obj = str(tmp_path / "lib" / "bpf" / "balancer.o.candidate")
    args = {"dest": dest, "object": {"src": str(src), "dest": obj}}
    check = _play(tmp_path, args, "--check", "--diff")
    assert check["changed"] and check["object"] and not os.path.exists(os.path.dirname(obj)), check
    assert "object %s (10240 bytes)" % obj in check["diff"]["after"]
    first = _play(tmp_path, args)
    assert first["changed"] and first["object"], first
    with open(obj, "rb") as handle:
        assert handle.read() == src.read_bytes()
    assert stat.S_IMODE(os.stat(obj).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(obj)).st_mode) == 0o700
    again = _play(tmp_path, args)
    assert not again["changed"] and not again["object"], again
    assert not _play(tmp_path, args, "--check")["changed"]
    os.chmod(obj, 0o644)
    mode = _play(tmp_path, args)
    assert mode["changed"] and mode["object"] and stat.S_IMODE(os.stat(obj).st_mode) == 0o600
    src.write_bytes(b"\x7fELF another object")
    edited = _play(tmp_path, args)
    assert edited["changed"] and edited["object"] and edited["written"] == [], edited
    with open(obj, "rb") as handle:
        assert handle.read() == b"\x7fELF another object"
    assert sorted(os.listdir(os.path.dirname(obj))) == ["balancer.o.candidate"], "no temporary file left"


def test_object_src_is_looked_up_as_copy_does(dest, tmp_path):
    # Relative to the playbook (its files/ directory first), as ansible.builtin.copy's src.
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "pass.o").write_bytes(b"from files/")
    obj = str(tmp_path / "pass.o.candidate")
    result = _play(tmp_path, {"dest": dest, "object": {"src": "pass.o", "dest": obj}})
    assert result["object"], result
    with open(obj, "rb") as handle:
        assert handle.read() == b"from files/"


def test_a_bad_object_is_refused_by_name_before_anything_is_written(dest, tmp_path):
    missing = str(tmp_path / "nowhere" / "balancer.o")
    result = _play(tmp_path, {"dest": dest, "directories": [str(tmp_path / "lib")],
                              "object": {"src": missing, "dest": str(tmp_path / "x.o")}})
    assert result.get("field") == "object.src" and result["value"] == missing, result
    assert result["msg"] == "object.src: %s not found on the controller" % missing
    src = tmp_path / "balancer.o"
    src.write_bytes(b"\x7fELF")
    for obj_dest, why in ((str(tmp_path), "is a directory"), (str(src / "x.o"), "is not a directory")):
        result = _play(tmp_path, {"dest": dest, "directories": [str(tmp_path / "lib")],
                                  "object": {"src": str(src), "dest": obj_dest}})
        assert result.get("field") == "object.dest" and why in result["msg"], result
    both = _play(tmp_path, {"dest": dest, "object": {"src": str(src), "content_base64": "AAAA", "dest": "/x.o"}})
    assert both.get("field") == "object", both
    bad = _play(tmp_path, {"dest": dest, "object": {"content_base64": "not base64!", "dest": str(tmp_path / "x.o")}})
    assert bad.get("field") == "object.content_base64", bad
    # The engine, its directories and the object are all checked before the first write.
    assert sorted(os.listdir(tmp_path)) == ["balancer.o", "engine_install.json"]


def test_object_as_base64_without_a_controller_file(dest, tmp_path):
    obj = str(tmp_path / "x.o")
    result = _play(tmp_path, {"dest": dest, "object": {"content_base64": base64.b64encode(b"\x00\x01").decode(),
                                                       "dest": obj}})
    assert result["object"] and not result.get("failed"), result
    with open(obj, "rb") as handle:
        assert handle.read() == b"\x00\x01"


def test_ensure_checks_the_object_before_it_writes_anything(tmp_path):
    dest = str(tmp_path / "xdplb_engine")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(EngineError) as info:
        install.ensure(dest, directories=[str(tmp_path / "lib")],
                       obj={"dest": str(blocker / "bpf" / "x.o"), "data": b"x"})
    assert info.value.field == "object.dest"
    assert sorted(os.listdir(tmp_path)) == ["file"]
    check = install.ensure(dest, check_mode=True, obj={"dest": str(tmp_path / "bpf" / "x.o"), "data": b"x"})
    assert check["object"] and check["changed"] and sorted(os.listdir(tmp_path)) == ["file"]


def test_units_and_objects_lists_in_one_run_each_reported_by_path(dest, tmp_path):
    # The balancer role's one task: the restore and agent units, balancer.o and hc_encap.o.
    for name, data in (("balancer.o", b"\x7fELF balancer"), ("hc_encap.o", b"\x7fELF hc")):
        (tmp_path / name).write_bytes(data)
    units = [{"path": str(tmp_path / "systemd" / "xdplb-balancer.service"), "content": "[Service]\nExecStart=@PYTHON@\n"},
             {"path": str(tmp_path / "systemd" / "xdplb-agent.service"), "content": "[Service]\nExecStart=@PYTHON@ -m x\n",
              "python": "/opt/py/bin/python3"}]
    objects = [{"src": str(tmp_path / "balancer.o"), "dest": str(tmp_path / "lib" / "bpf" / "balancer.o.candidate")},
               {"src": "hc_encap.o", "dest": str(tmp_path / "lib" / "bpf" / "hc_encap.o")}]
    args = {"dest": dest, "units": units, "objects": objects}
    check = _play(tmp_path, args, "--check", "--diff")
    assert check["units"] == [u["path"] for u in units] and check["objects"] == [o["dest"] for o in objects], check
    assert "object %s (7 bytes)" % objects[1]["dest"] in check["diff"]["after"]
    assert not os.path.exists(tmp_path / "lib" / "bpf")
    first = _play(tmp_path, args)
    assert first["changed"] and first["unit"] and first["object"] and len(first["units"]) == 2, first
    assert (tmp_path / "lib" / "bpf" / "hc_encap.o").read_bytes() == b"\x7fELF hc"
    assert "ExecStart=/opt/py/bin/python3 -m x" in open(units[1]["path"]).read()
    assert "ExecStart=%s\n" % first["host"]["python"] in open(units[0]["path"]).read()
    # The bytes are not echoed back (ansible-core 2.21 returns no invocation at all; older ones
    # show the size in its place).
    assert base64.b64encode(b"\x7fELF hc").decode() not in json.dumps(first)
    if "invocation" in first:
        assert first["invocation"]["module_args"]["objects"][1]["content_base64"] == "(7 bytes)"
    again = _play(tmp_path, args)
    assert not again["changed"] and again["units"] == [] and again["objects"] == [], again
    (tmp_path / "hc_encap.o").write_bytes(b"\x7fELF hc 2")
    edited = _play(tmp_path, args)
    assert edited["objects"] == [objects[1]["dest"]] and edited["units"] == [] and edited["written"] == [], edited
    missing = _play(tmp_path, dict(args, objects=[objects[0], {"src": str(tmp_path / "nowhere.o"), "dest": "/x.o"}]))
    assert missing.get("field") == "objects[1].src", missing
    assert missing["msg"] == "objects[1].src: %s not found on the controller" % (tmp_path / "nowhere.o")
    bad = _play(tmp_path, dict(args, units=[dict(units[0], python="python3")]))
    assert bad.get("field") == "units[0].python", bad
