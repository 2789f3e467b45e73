"""`synapse.config._base`: `ConfigError`."""


class ConfigError(Exception):
    """A module's configuration is invalid; Presenced does not start.

    `path` is the location of the bad value inside the module's `config:` block, as a list of
    keys (and list indices), for instance `["always_send_to_users", "2"]`.
    """

    def __init__(self, msg, path=None):
        super().__init__(msg)
        self.msg = msg
        self.path = path
