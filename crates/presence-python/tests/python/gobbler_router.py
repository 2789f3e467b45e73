"""A router in the style of the reference homeserver's presence router tests.

The configured `users_who_should_receive_all_presence` receive every presence update and are
interested in everybody; nobody else gets anything from the router. `GobblerRouterLegacy` is
loaded from `presence.presence_router`, `GobblerRouterModule` from `modules:`.
"""

from typing import Dict, Iterable, List, Set, Union

from synapse.api.presence import UserPresenceState
from synapse.events.presence_router import PresenceRouter
from synapse.module_api import ModuleApi


class GobblerConfig:
    def __init__(self, users: List[str]):
        self.users_who_should_receive_all_presence = users


def _parse(config_dict: dict) -> GobblerConfig:
    users = config_dict.get("users_who_should_receive_all_presence")
    assert isinstance(users, list), "users_who_should_receive_all_presence must be a list"
    return GobblerConfig(users)


class GobblerRouterLegacy:
    def __init__(self, config: GobblerConfig, module_api: ModuleApi):
        self._config = config
        self._module_api = module_api

    @staticmethod
    def parse_config(config_dict: dict) -> GobblerConfig:
        return _parse(config_dict)

    async def get_users_for_states(
        self, state_updates: Iterable[UserPresenceState]
    ) -> Dict[str, Set[UserPresenceState]]:
        return {
            user_id: set(state_updates)
            for user_id in self._config.users_who_should_receive_all_presence
        }

    async def get_interested_users(self, user_id: str) -> Union[Set[str], str]:
        if user_id in self._config.users_who_should_receive_all_presence:
            return PresenceRouter.ALL_USERS
        return set()


class GobblerRouterModule:
    def __init__(self, config: GobblerConfig, api: ModuleApi):
        self._config = config
        self._module_api = api
        api.register_presence_router_callbacks(
            get_users_for_states=self.get_users_for_states,
            get_interested_users=self.get_interested_users,
        )

    @staticmethod
    def parse_config(config_dict: dict) -> GobblerConfig:
        return _parse(config_dict)

    async def get_users_for_states(self, state_updates):
        return {
            user_id: set(state_updates)
            for user_id in self._config.users_who_should_receive_all_presence
        }

    async def get_interested_users(self, user_id):
        if user_id in self._config.users_who_should_receive_all_presence:
            return PresenceRouter.ALL_USERS
        return set()
