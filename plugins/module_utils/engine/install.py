"""Install the engine's own source files on a host, for the boot units (``python3 -m xdplb_engine``).

The files are read through the import system rather than from disk, because inside a module they
live in the AnsiballZ payload (a zip); the same code works from a checkout. Files are written only
when their bytes differ, atomically (temporary file, then rename), root-only. The same task can
install the systemd unit that runs the engine at boot and a file sent from the controller (the
balancer role's BPF object).
"""
import base64
import binascii
import importlib
import os
import pkgutil
import socket
import sys

from . import hostnet
from .document import atomic_write, differs
from .errors import EngineError, show

PACKAGE = __name__.rpartition(".")[0]


def sources():
    """{path below the package, such as ``bpf/libbpf.py``: bytes} for every module of the engine
    package and of its subpackages that this process can see."""
    files = {}
    _collect(PACKAGE, "", files)
    return files


def _collect(package_name, prefix, files):
    package = importlib.import_module(package_name)
    infos = sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name)
    for name in ["__init__"] + [info.name for info in infos if not info.ispkg]:
        data = pkgutil.get_data(package_name, name + ".py")
        if data is None:
            raise EngineError(f"engine file {prefix}{name}.py cannot be read", field="engine", value=prefix + name)
        files[prefix + name + ".py"] = data
    for info in infos:
        if info.ispkg:
            _collect(package_name + "." + info.name, prefix + info.name + "/", files)


def _present(dest):
    """The ``.py`` files under ``dest`` (paths relative to it), bytecode caches left out."""
    found = []
    for top, dirs, names in os.walk(dest):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(top, dest)
        found += [n if rel == "." else rel + "/" + n for n in names if n.endswith(".py")]
    return found


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def plan(dest, files):
    """What ``ensure`` would do: files to write and stale ``.py`` files to remove."""
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise EngineError(f"dest: {dest} exists and is not a directory", field="dest", value=dest)
    write = sorted(name for name, data in files.items() if _read(os.path.join(dest, name)) != data)
    present = _present(dest) if os.path.isdir(dest) else []
    remove = sorted(n for n in present if n.endswith(".py") and n not in files)
    return write, remove


def _missing_dir(path):
    if os.path.exists(path) and not os.path.isdir(path):
        raise EngineError(f"directories: {path} exists and is not a directory", field="directories", value=path)
    return not os.path.isdir(path)


def _check_dest(dest):
    """An existing dest is left as it is (never re-moded: it may be a directory the user had), but
    one that others can write is refused: the boot unit runs the code in it as root."""
    if os.path.isdir(dest) and os.stat(dest).st_mode & 0o022:
        raise EngineError(f"dest: {dest} exists and is writable by group or others (mode "
                          f"{os.stat(dest).st_mode & 0o777:04o}); the boot unit runs the engine from it as root, "
                          f"so give it mode 0700 (or 0755) or choose another dest", field="dest", value=dest)


def _check_file_dest(path, field):
    """A file can go to ``path``: it is not a directory, and its parent is a directory or missing."""
    if os.path.isdir(path):
        raise EngineError(f"{field}: {path} is a directory", field=field, value=path)
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise EngineError(f"{field}: {parent} (a parent of {path}) is not a directory", field=field, value=path)


def ensure(dest, check_mode=False, files=None, directories=(), unit=None, obj=None, units=(), objs=()):
    """Make ``dest`` hold exactly the engine's files, and each of ``directories`` exist (the roles keep
    their object and state there). A missing directory (``dest`` too) is created with mode 0700; one
    that exists is left as it is, never re-moded (``balancer_lib_dir: /usr/local/lib`` must not lock
    /usr/local/lib to root), but a ``dest`` writable by group or others is refused (its code runs as
    root at boot). ``unit`` ({path, content}):
    the systemd unit that runs the engine at boot, mode 0644, its directory created (0755) when
    missing. ``obj`` ({dest, data: bytes}): a file sent from the controller (the balancer role's BPF
    object), mode 0600, its directory created (0700) when missing. Everything is checked before
    anything is written. ``units`` and ``objs``: more of them (lists, after ``unit`` and ``obj``).
    Returns {changed, written, removed, directories, unit, object, units, objects}: ``directories``
    lists those created, ``units`` and ``objects`` the paths of the unit files and objects that
    change, ``unit`` and ``object`` whether any does."""
    files = sources() if files is None else files
    dirs = [d for d in directories if _missing_dir(d)]
    write, remove = plan(dest, files)
    _check_dest(dest)
    unit_list = _listed([unit] if unit else [], units, "unit", "units", "path")
    obj_list = _listed([obj] if obj else [], objs, "object", "objects", "dest")
    for field, item in unit_list:
        _check_file_dest(item["path"], field)
    for field, item in obj_list:
        _check_file_dest(item["dest"], field)
    unit_changed = [(item["path"], item["content"].encode()) for _f, item in unit_list
                    if differs(item["path"], item["content"].encode(), 0o644)]
    obj_changed = [(item["dest"], item["data"]) for _f, item in obj_list if differs(item["dest"], item["data"], 0o600)]
    changed = bool(write or remove or dirs or unit_changed or obj_changed or not os.path.isdir(dest))
    result = dict(changed=changed, written=write, removed=remove, directories=dirs,
                  unit=bool(unit_changed), object=bool(obj_changed),
                  units=[p for p, _d in unit_changed], objects=[p for p, _d in obj_changed])
    if check_mode or not changed:
        return result
    for path in dirs + ([] if os.path.isdir(dest) else [dest]):
        if not os.path.isdir(path):  # listed twice, or made as the parent of an earlier entry
            os.makedirs(path, mode=0o700)
            # makedirs' mode is cut by the umask; this directory is the one just created.
            os.chmod(path, 0o700)
    for name in write:
        path = os.path.join(dest, name)
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path), mode=0o700)
            os.chmod(os.path.dirname(path), 0o700)
        atomic_write(path, files[name], 0o600)
    for name in remove:
        os.unlink(os.path.join(dest, name))
    if write:
        # Stale bytecode would be ignored anyway (mtime check), but a renamed module's would linger.
        for top, _dirs, names in os.walk(dest):
            if os.path.basename(top) == "__pycache__":
                for name in names:
                    os.unlink(os.path.join(top, name))
    for path, data in unit_changed:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
        atomic_write(os.path.abspath(path), data, 0o644)
    for path, data in obj_changed:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        atomic_write(os.path.abspath(path), data, 0o600)
    return result


def _listed(single, many, name, names, key):
    """[(field of its path in errors, item)] of the single form and the list form together; a path
    given twice is refused (the second would silently win)."""
    out = [("%s.%s" % (name, key), item) for item in single]
    out += [("%s[%d].%s" % (names, i, key), item) for i, item in enumerate(many or ())]
    seen = {}
    for field, item in out:
        path = os.path.abspath(item[key])
        if path in seen:
            raise EngineError("%s: %s is also %s" % (field, item[key], seen[path]), field=field, value=item[key])
        seen[path] = field
    return out


def object_request(obj, field="object"):
    """{dest, data} of engine_install's ``object`` ({src, content_base64, dest} or None), its bytes
    decoded; `field`: its name in errors (``objects[1]`` for an item of ``objects``)."""
    if obj is None:
        return None
    if obj["content_base64"] is None:
        # The action plugin did not read src (the module run without it, or object given as a string).
        raise EngineError("%s.src: %s was not read on the controller (the xdplb.katran.engine_install action "
                          "plugin reads it when %s is a mapping); give %s.content_base64 instead"
                          % (field, obj["src"], field, field), field=field + ".src", value=obj["src"])
    try:
        data = base64.b64decode(obj["content_base64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EngineError("%s.content_base64: not valid base64 (%s)" % (field, exc), field=field + ".content_base64")
    return {"dest": obj["dest"], "data": data}


def unit_request(unit, field="unit"):
    """engine_install's ``unit`` ({path, content, python} or None) with @PYTHON@ replaced by unit.python
    or this process's interpreter (in a module: the one Ansible uses on the host); `field`: its name
    in errors (``units[1]`` for an item of ``units``)."""
    if unit is None:
        return None
    python = unit["python"] or sys.executable
    if not os.path.isabs(python) or any(c.isspace() or c in "%$\\" for c in python):
        raise EngineError("%s.python: %s must be an absolute path without spaces, '%%', '$' or '\\' "
                          "(it goes into the unit's ExecStart)" % (field, show(python)), field=field + ".python", value=python)
    return {"path": unit["path"], "content": unit["content"].replace("@PYTHON@", python)}


def host_facts():
    """What a role needs to know about the host to install the engine's boot unit and attach the
    program, without gathering Ansible facts: whether systemd runs it (sd_booted(): the directory
    /run/systemd/system exists), the interface of the IPv4 default route, and this process's Python
    (inside a module, the interpreter Ansible used on the host: the one whose imports the modules
    proved, so the boot units run the engine with it rather than a hard-coded /usr/bin/python3), and
    the names of the host's network devices (a role refuses an unknown interface before it attaches)."""
    return {"systemd": os.path.isdir("/run/systemd/system"), "default_interface": hostnet.default_interface(),
            "python": sys.executable, "interfaces": sorted(name for _index, name in socket.if_nameindex())}
