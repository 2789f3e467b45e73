"""`synapse.events.presence_router`: the presence router constants.

Routers use `PresenceRouter.ALL_USERS` as the answer of `get_interested_users` for a user
who receives everybody's presence. Calling and merging the routers is Presenced's business.
"""

from typing import Awaitable, Callable, Dict, Iterable, Set, Union

from synapse.api.presence import UserPresenceState

GET_USERS_FOR_STATES_CALLBACK = Callable[
    [Iterable[UserPresenceState]], Awaitable[Dict[str, Set[UserPresenceState]]]
]
GET_INTERESTED_USERS_CALLBACK = Callable[[str], Awaitable[Union[Set[str], str]]]


class PresenceRouter:
    """Holds the constants routers refer to."""

    ALL_USERS = "ALL"
