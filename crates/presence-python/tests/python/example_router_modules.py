"""The example router in the `modules:` form.

Same routing as `example_router.ExamplePresenceRouter`; the constructor takes the parsed
config and the module API positionally and registers the two callbacks.
"""

from example_router import ExamplePresenceRouter


class ExamplePresenceRouterModule(ExamplePresenceRouter):
    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_presence_router_callbacks(
            get_users_for_states=self.get_users_for_states,
            get_interested_users=self.get_interested_users,
        )
