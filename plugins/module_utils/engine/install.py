"""Install the engine's own source files on a host, for the boot units (``python3 -m xdplb_engine``).

The files are read through the import system rather than from disk, because inside a module they
live in the AnsiballZ payload (a zip); the same code works from a checkout. Files are written only
when their bytes differ, atomically (temporary file, then rename), root-only.
"""
import os
import pkgutil
import sys
import tempfile

from .errors import EngineError

PACKAGE = __name__.rpartition(".")[0]


def sources():
    """{file name: bytes} for every module of the engine package that this process can see."""
    package = sys.modules[PACKAGE]
    names = ["__init__"] + sorted(info.name for info in pkgutil.iter_modules(package.__path__))
    files = {}
    for name in names:
        data = pkgutil.get_data(PACKAGE, name + ".py")
        if data is None:
            raise EngineError(f"engine file {name}.py cannot be read", field="engine", value=name)
        files[name + ".py"] = data
    return files


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
    present = os.listdir(dest) if os.path.isdir(dest) else []
    remove = sorted(n for n in present if n.endswith(".py") and n not in files)
    return write, remove


def _loose_or_missing(path):
    if os.path.exists(path) and not os.path.isdir(path):
        raise EngineError(f"directories: {path} exists and is not a directory", field="directories", value=path)
    return not os.path.isdir(path) or os.stat(path).st_mode & 0o077 != 0


def ensure(dest, check_mode=False, files=None, directories=()):
    """Make ``dest`` hold exactly the engine's files, and each of ``directories`` exist with mode 0700
    (created or tightened; the roles keep their object and state there). Returns {changed, written,
    removed, mode_fixed, directories}: ``directories`` lists those created or tightened."""
    files = sources() if files is None else files
    dirs = [d for d in directories if _loose_or_missing(d)]
    write, remove = plan(dest, files)
    mode_fixed = os.path.isdir(dest) and os.stat(dest).st_mode & 0o077 != 0
    changed = bool(write or remove or mode_fixed or dirs or not os.path.isdir(dest))
    result = dict(changed=changed, written=write, removed=remove, mode_fixed=mode_fixed, directories=dirs)
    if check_mode or not changed:
        return result
    for path in dirs:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    os.makedirs(dest, mode=0o700, exist_ok=True)
    os.chmod(dest, 0o700)
    for name in write:
        fd, tmp = tempfile.mkstemp(dir=dest, prefix="." + name + ".")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(files[name])
            os.chmod(tmp, 0o600)
            os.replace(tmp, os.path.join(dest, name))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    for name in remove:
        os.unlink(os.path.join(dest, name))
    cache = os.path.join(dest, "__pycache__")
    if write and os.path.isdir(cache):
        # Stale bytecode would be ignored anyway (mtime check), but a renamed module's would linger.
        for name in os.listdir(cache):
            os.unlink(os.path.join(cache, name))
    return result
