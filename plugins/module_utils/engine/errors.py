"""The exception types the engine raises, and how a bad value is shown in a message.

Modules turn EngineError into fail_json(msg=...); the CLI prints it. `field` and `value` say which
input was wrong so a caller can point at it without parsing the message.
"""

# A value quoted in a message is cut to this many characters: a 65,537-character value echoed
# whole, in a message that Ansible repeats several times, makes hundreds of KB of log.
SHOW_MAX = 80


class EngineError(Exception):
    def __init__(self, msg, field=None, value=None):
        super().__init__(msg)
        self.msg = msg
        self.field = field
        self.value = value


class StateFileError(EngineError):
    """A state file (balancer or backend) that cannot be read or is invalid: the CLI exits 2, and
    nothing has been changed on the host."""


def show(value, limit=SHOW_MAX):
    """repr() of a string, str() of anything else, cut to `limit` characters with the length said."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return "an integer of %d bits" % value.bit_length()  # str() refuses over 4300 digits
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return "%s... (%d characters)" % (text[:limit], len(text))


def key_path(prefix, key, limit=40):
    """`prefix.key` for an unknown key of the user's: the key is part of the field path, so a
    65,537-character key is cut there as a value would be."""
    name = key if isinstance(key, str) and len(key) <= limit else show(key, limit)
    return "%s.%s" % (prefix, name) if prefix else name


def short(value, limit=SHOW_MAX):
    """`value` itself when small enough to echo back (a module's `value` return), else its shown form."""
    if isinstance(value, (bool, int, float, type(None))):
        return value
    if isinstance(value, str) and len(value) <= limit:
        return value
    return show(value, limit)
