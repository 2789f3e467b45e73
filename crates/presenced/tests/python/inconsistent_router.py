"""A buddy-list router whose two methods disagree, for `presenced routers check` to catch.

Config: `watcher`, `friend` and `nosy` user IDs. The watcher is interested in the friend, but
`get_users_for_states` sends the watcher only the friend's *online* states (so the watcher is
never woken when the friend goes away or offline), and it also sends every state of the
friend to `nosy`, who is not interested in anybody.
"""

from typing import Dict, Iterable, Set, Union


class InconsistentRouter:
    def __init__(self, config: dict, module_api) -> None:
        self._watcher = config["watcher"]
        self._friend = config["friend"]
        self._nosy = config["nosy"]

    @staticmethod
    def parse_config(config: dict) -> dict:
        config = config or {}
        for key in ("watcher", "friend", "nosy"):
            if not isinstance(config.get(key), str):
                raise ValueError("%s must be a user ID" % key)
        return config

    async def get_users_for_states(self, state_updates: Iterable) -> Dict[str, Set]:
        states = [s for s in state_updates if s.user_id == self._friend]
        return {
            self._watcher: {s for s in states if s.state == "online"},
            self._nosy: set(states),
        }

    async def get_interested_users(self, user_id: str) -> Union[Set[str], str]:
        if user_id == self._watcher:
            return {self._friend}
        return set()


class InconsistentRouterModule(InconsistentRouter):
    """The same router in the `modules:` form."""

    def __init__(self, config, api) -> None:
        super().__init__(config, api)
        api.register_presence_router_callbacks(
            get_users_for_states=self.get_users_for_states,
            get_interested_users=self.get_interested_users,
        )
