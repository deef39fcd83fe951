"""Reading and keeping a JSON state document, the part every state file shares (balancer and backend):
a file that cannot be one is refused with a StateFileError saying why, before its schema is even looked
at; keep_file() puts one in place, atomically, once it has been applied. atomic_write() is the
engine's one file writer (engine files, boot unit, object, state files).

What a boot unit may find at the path: nothing, a directory, a FIFO (opened without blocking, so the
boot does not hang), a file cut short by a full disk, another file copied over it, a file far too
large to read whole. None of them may end in a traceback or be read as "no VIPs".

Relative imports and stdlib only, no Ansible imports.
"""
import json
import os
import stat
import tempfile

from .errors import StateFileError, show


def fail(field, value, problem):
    """A field of a state document is wrong: StateFileError naming it and quoting the value, cut."""
    raise StateFileError("%s: %s (got %s)" % (field, problem, show(value)), field=field, value=value)


def _refuse(where, field, value, problem):
    raise StateFileError("%s: %s" % (where, problem), field=field, value=value)


def read(path, max_bytes, where, field="state_file"):
    """(bytes, decoded JSON) of the file at `path`; messages start with `where` (how the caller
    names the file), `field` names the argument."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError, TypeError) as exc:
        _refuse(where, field, path, "cannot read the file: %s" % (getattr(exc, "strerror", None) or exc))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            _refuse(where, field, path, "is a directory, not a state file")
        if not stat.S_ISREG(st.st_mode):
            _refuse(where, field, path, "is not a regular file")
        if st.st_size > max_bytes:
            _refuse(where, field, path, "is %d bytes, more than the %d MiB a state file may have"
                    % (st.st_size, max_bytes >> 20))
        with os.fdopen(fd, "rb") as handle:
            fd = None
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        _refuse(where, field, path, "cannot read the file: %s" % (exc.strerror or exc))
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > max_bytes:
        _refuse(where, field, path, "is more than the %d MiB a state file may have" % (max_bytes >> 20))
    return data, decode(data, max_bytes, where, field)


def _no_constant(name):
    raise ValueError("%s is not a JSON number" % name)


def decode(data, max_bytes, where, field):
    """JSON text (bytes or str) -> the decoded value; StateFileError saying where it is broken."""
    if len(data) > max_bytes:
        raise StateFileError("%s: %d characters, more than the %d MiB a state document may have"
                             % (where, len(data), max_bytes >> 20), field=field)
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StateFileError("%s: is not UTF-8 text (a binary file?): byte %d is 0x%02x"
                                 % (where, exc.start, data[exc.start]), field=field)
    if not data.strip():
        raise StateFileError("%s: is empty (a state document is a JSON object)" % where, field=field)
    try:
        # NaN and Infinity are not JSON: Python's reader takes them unless told otherwise.
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise StateFileError("%s: is nested too deeply to be a state document" % where, field=field) from None
    except ValueError as exc:
        # JSONDecodeError's own text says what and where ("Expecting ',' delimiter: line 3 column 5").
        cut = getattr(exc, "msg", str(exc))
        pos = " at line %d column %d" % (exc.lineno, exc.colno) if hasattr(exc, "lineno") else ""
        ends = getattr(exc, "pos", 0) >= len(data.rstrip()) or cut.startswith("Unterminated string")
        truncated = ", the document ends early (truncated?)" if ends and hasattr(exc, "pos") else ""
        raise StateFileError("%s: not valid JSON: %s%s%s" % (where, cut[:200], pos, truncated), field=field) from None


def atomic_write(path, data, mode, sync=False):
    """Atomic write: a temporary file in the same directory, then rename (``sync``: fsync first).
    The engine's one file writer (engine files, boot unit, object, state files)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def differs(path, data, mode):
    """Whether ``path`` is missing or differs from ``data`` in bytes or permission bits."""
    try:
        with open(path, "rb") as handle:
            return handle.read() != data or os.fstat(handle.fileno()).st_mode & 0o7777 != mode
    except FileNotFoundError:
        return True


def keep_file(dest, data, check_mode=False, mode=0o600):
    """Make ``dest`` hold ``data`` (bytes; atomic, fsync'ed, ``mode``) unless it already does;
    returns whether it changed (would change, in check mode). The balancer role applies its VIPs
    from the state document and only then keeps it as the file the boot unit restores."""
    if not differs(dest, data, mode):
        return False
    if not check_mode:
        atomic_write(os.path.abspath(dest), data, mode, sync=True)
    return True
