"""The example presence router, for running the reference homeserver in the benchmarks.

Implements the semantics of the presence router example from the Synapse docs:

* ``always_send_to_users``: list of MXIDs that receive ALL presence updates.
  ``get_interested_users`` returns ``PresenceRouter.ALL_USERS`` for them and
  ``get_users_for_states`` maps each of them to every update that is not
  from a blacklisted user.
* ``blacklisted_users``: updates whose ``user_id`` (state_key) is in this list
  are never routed by this module. Normal shared-room presence is not the
  module's business and is unaffected.

Configured through the legacy ``presence: presence_router:`` block, which
calls ``parse_config`` (static) and then ``__init__(config, module_api)``.
"""

import logging
from typing import Dict, Iterable, List, Set, Union

from synapse.api.presence import UserPresenceState
from synapse.events.presence_router import PresenceRouter
from synapse.module_api import ModuleApi

logger = logging.getLogger(__name__)


class RouterConfig:
    def __init__(self, always_send_to_users: List[str], blacklisted_users: List[str]):
        self.always_send_to_users = list(always_send_to_users)
        self.blacklisted_users = set(blacklisted_users)


class ExamplePresenceRouter:
    def __init__(self, config: RouterConfig, module_api: ModuleApi):
        self._config = config
        self._module_api = module_api
        logger.info(
            "ExamplePresenceRouter loaded: always_send_to_users=%s blacklisted_users=%s",
            self._config.always_send_to_users,
            sorted(self._config.blacklisted_users),
        )

    @staticmethod
    def parse_config(config_dict: dict) -> RouterConfig:
        config_dict = config_dict or {}
        always = config_dict.get("always_send_to_users", []) or []
        black = config_dict.get("blacklisted_users", []) or []
        for name, value in (("always_send_to_users", always), ("blacklisted_users", black)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                # ConfigError would be nicer, but keep the import surface minimal.
                raise ValueError("%s must be a list of user ID strings" % name)
        return RouterConfig(always, black)

    async def get_users_for_states(
        self, state_updates: Iterable[UserPresenceState]
    ) -> Dict[str, Set[UserPresenceState]]:
        routable = {
            s for s in state_updates if s.user_id not in self._config.blacklisted_users
        }
        return {user_id: set(routable) for user_id in self._config.always_send_to_users}

    async def get_interested_users(self, user_id: str) -> Union[Set[str], str]:
        if user_id in self._config.always_send_to_users:
            return PresenceRouter.ALL_USERS
        return set()
