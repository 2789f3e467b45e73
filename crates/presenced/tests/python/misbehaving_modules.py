"""The misbehaving routers of the presence-python tests, in the `modules:` form, so that one
server can load several of them next to a healthy router."""

import misbehaving


def _modules_form(cls):
    class Module(cls):
        def __init__(self, config, api):
            super().__init__(config, api)
            api.register_presence_router_callbacks(
                get_users_for_states=self.get_users_for_states,
                get_interested_users=self.get_interested_users,
            )

    Module.__name__ = Module.__qualname__ = cls.__name__
    return Module


Raises = _modules_form(misbehaving.Raises)
WrongTypes = _modules_form(misbehaving.WrongTypes)
Hangs = _modules_form(misbehaving.Hangs)
Spins = _modules_form(misbehaving.Spins)
