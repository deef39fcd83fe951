"""BIRD's own tools: ``bird -p -c FILE`` (parse only), ``birdc -s SOCKET configure`` and
``show protocols``, always as argv lists (no shell), and the install of a configuration file.

apply() is the bird_config module's whole job: check the request, render it, compare with the file,
validate a temporary copy with BIRD, rename it into place and ask the running BIRD to reload; a
reload BIRD refuses puts the old file back, so the file and BIRD's running configuration stay the same.
"""
import grp
import os
import re
import subprocess
import tempfile

from ..errors import EngineError, show
from . import bgpspec, birdconf

TIMEOUT = 30
# `birdc configure` answers one of these when it took the file (BIRD 2, proto/cli codes 0003 and 0004).
ACCEPTED = ("Reconfigured", "Reconfiguration in progress")
MASK = "********"
_PASSWORD = re.compile(r'(\bpassword\s+)"[^"\n]*"')


def mask(text):
    """A configuration text with every password "..." replaced by the mask (for diffs)."""
    return None if text is None else _PASSWORD.sub(r'\1"%s"' % MASK, text)


def _run(argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False,
                              env=dict(os.environ, LANG="C", LC_ALL="C"))
    except FileNotFoundError:
        raise EngineError("%s: not found (is BIRD 2 installed? Debian's package is bird2)" % argv[0],
                          field="validate_binary", value=argv[0]) from None
    except subprocess.TimeoutExpired:
        raise EngineError("%s did not answer within %d s" % (" ".join(argv), TIMEOUT)) from None
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def birdc_for(binary):
    """birdc next to `binary` when that is a path (/usr/sbin/bird -> /usr/sbin/birdc), else birdc."""
    if os.sep in binary:
        return os.path.join(os.path.dirname(binary), "birdc")
    return "birdc"


def check_file(path, binary="bird"):
    """Parse `path` with `bird -p`; EngineError quoting BIRD's message when it refuses it."""
    code, out = _run([binary, "-p", "-c", path])
    if code != 0:
        raise EngineError("BIRD refuses the configuration: %s" % (out.strip() or "exit status %d" % code),
                          field="config", value=None)


def running(socket, birdc="birdc"):
    """Whether a BIRD answers on `socket`."""
    if not os.path.exists(socket):
        return False
    code, out = _run([birdc, "-s", socket, "show", "status"])
    return code == 0 and "Daemon is up and running" in out


def configure(socket, birdc="birdc"):
    """Tell the BIRD on `socket` to read its configuration file again; EngineError with its answer
    when it did not take it."""
    code, out = _run([birdc, "-s", socket, "configure"])
    if code != 0 or not any(word in out for word in ACCEPTED):
        raise EngineError("BIRD did not take the new configuration (birdc configure): %s"
                          % (out.strip() or "exit status %d" % code), field="config", value=None)
    return out.strip()


def show_protocols(socket, birdc="birdc"):
    """[{name, proto, table, state, since, info}] as `birdc show protocols` lists them."""
    code, out = _run([birdc, "-s", socket, "show", "protocols"])
    if code != 0:
        raise EngineError("birdc show protocols: %s" % (out.strip() or "exit status %d" % code))
    return parse_protocols(out)


def parse_protocols(out):
    """The rows of `birdc show protocols`' text."""
    rows = []
    for line in out.splitlines():
        words = line.split()
        # BIRD 2.0: "Name Proto Table State Since Info"; since is a date and a time (or one word).
        if len(words) < 4 or words[0] in ("Name", "BIRD") or words[0].startswith("0"):
            continue
        table = words[2] if words[2] != "---" else ""
        rest = words[4:]
        # Since is a time (15:42:57.092) or a date and a time, depending on BIRD's timeformat.
        two = len(rest) >= 2 and re.fullmatch(r"[0-9-]+", rest[0]) and re.fullmatch(r"[0-9:.]+", rest[1])
        since = " ".join(rest[:2]) if two else " ".join(rest[:1])
        info = " ".join(rest[2:] if two else rest[1:])
        rows.append({"name": words[0], "proto": words[1], "table": table, "state": words[3], "since": since, "info": info})
    return rows


def show_protocols_all(socket, birdc="birdc"):
    """show_protocols' rows, each with "neighbor": the BGP neighbor's address ("" when none), from
    `birdc show protocols all`."""
    code, out = _run([birdc, "-s", socket, "show", "protocols", "all"])
    if code != 0:
        raise EngineError("birdc show protocols all: %s" % (out.strip() or "exit status %d" % code))
    return parse_protocols_all(out)


def parse_protocols_all(out):
    """Rows of `birdc show protocols all`: a protocol's line starts in the first column, its details
    are indented below it."""
    rows = []
    for line in out.splitlines():
        if line[:1].isspace():
            words = line.split()
            if rows and words[:2] == ["Neighbor", "address:"] and len(words) > 2:
                rows[-1]["neighbor"] = words[2]
            continue
        for row in parse_protocols(line):
            row["neighbor"] = ""
            rows.append(row)
    return rows


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _owner():
    """(gid, mode): group bird may read the file (Debian's bird.service runs BIRD as bird) when it exists."""
    try:
        gid = grp.getgrnam("bird").gr_gid
    except KeyError:
        return None, 0o600
    # Only root can give a file to root:bird (a test run as a user keeps its own file).
    return (gid, 0o640) if os.geteuid() == 0 else (None, 0o640)


def _write_temp(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        gid, mode = _owner()
        if gid is not None:
            os.chown(tmp, 0, gid)
        os.chmod(tmp, mode)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _put_back(path, before):
    if before is None:
        os.unlink(path)
        return
    tmp = _write_temp(path, before)
    os.replace(tmp, path)


def apply(path, socket, config, binary="bird", reload=True, check_mode=False):
    """Install BIRD's configuration for the request `config` at `path`; reload the BIRD on `socket`.

    Returns {changed, path, reloaded, running, protocols, before, after} (before/after with the
    passwords masked). Nothing is written in check mode; a file BIRD refuses is never installed."""
    for field, value in (("path", path), ("socket", socket)):
        if not isinstance(value, str) or not os.path.isabs(value) or value.endswith("/"):
            raise EngineError("%s: %s is not an absolute file path" % (field, show(value)), field=field, value=value)
    request = bgpspec.check(config)
    text = birdconf.render(request)
    birdc = birdc_for(binary)
    before = _read(path)
    gid, mode = _owner()
    # A file with the right text but readable by others (or not by BIRD's group) is changed too.
    stat = os.stat(path) if before is not None else None
    permissions = stat is None or (stat.st_mode & 0o7777 == mode and (gid is None or (stat.st_uid, stat.st_gid) == (0, gid)))
    changed = before != text or not permissions
    result = {"changed": changed, "path": path, "reloaded": False, "running": running(socket, birdc),
              "protocols": birdconf.protocols(request), "before": mask(before) or "", "after": mask(text)}
    if check_mode or not changed:
        return result
    if before == text:
        if gid is not None:
            os.chown(path, 0, gid)
        os.chmod(path, mode)
        return result
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    tmp = _write_temp(path, text)
    try:
        check_file(tmp, binary)
    except BaseException:
        os.unlink(tmp)
        raise
    os.replace(tmp, path)
    if reload and result["running"]:
        try:
            configure(socket, birdc)
        except EngineError as exc:
            _put_back(path, before)
            raise EngineError("%s; the previous file was put back" % exc.msg, field=exc.field) from None
        result["reloaded"] = True
    return result
