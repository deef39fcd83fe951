"""The one exception type the engine raises.

Modules turn it into fail_json(msg=...); the CLI prints it. `field` and `value` say which input was
wrong so a caller can point at it without parsing the message.
"""


class EngineError(Exception):
    def __init__(self, msg, field=None, value=None):
        super().__init__(msg)
        self.msg = msg
        self.field = field
        self.value = value
