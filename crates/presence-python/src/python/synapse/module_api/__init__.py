"""`synapse.module_api`: the `ModuleApi` a module is built with.

Presenced runs presence routers only, so this `ModuleApi` offers what presence routers use:

- `server_name`, `is_mine(user_id)`, `get_qualified_user_id(localpart)`;
- `register_presence_router_callbacks(get_users_for_states=..., get_interested_users=...)`;
- `await send_local_online_presence_to(users)`, carried out by the Presenced server;
- `run_in_background`, `run_as_background_process`, `looping_background_call`,
  `delayed_background_call` and `await sleep(seconds)`, on Presenced's module event loop.

Registering callbacks of another kind (`register_spam_checker_callbacks`, ...) is accepted and
ignored with a warning, so a module that also does other things still loads. Any other member
of the reference's `ModuleApi`, and its internals (`_hs`, `_store`, ...), raise an
AttributeError that says so.
"""

import logging

from synapse.api.errors import SynapseError
from synapse.types import JsonDict, UserID
from synapse import _presenced
from synapse.logging.context import make_deferred_yieldable, run_in_background

logger = logging.getLogger(__name__)

# The answer of `get_interested_users` for a user who receives everybody's presence.
PRESENCE_ALL_USERS = "ALL"

__all__ = [
    "JsonDict",
    "ModuleApi",
    "PRESENCE_ALL_USERS",
    "UserID",
    "make_deferred_yieldable",
    "run_in_background",
]

_SUPPORTED = (
    "server_name, worker_name, worker_app, is_mine, get_qualified_user_id, "
    "register_presence_router_callbacks, send_local_online_presence_to, "
    "set_presence_for_users, run_in_background, "
    "run_as_background_process, looping_background_call, delayed_background_call, sleep"
)


class ModuleApi:
    """What a module receives at construction to talk to the server."""

    def __init__(self, host, api_id, server_name, module_name):
        self._presenced_host = host
        self._presenced_api_id = api_id
        self._presenced_module = module_name
        self._server_name = server_name
        # (get_users_for_states, get_interested_users) pairs, in registration order.
        self._presenced_callbacks = []
        # Looping and delayed calls, stopped when the module is unloaded.
        self._presenced_timers = []

    @property
    def server_name(self):
        """This server's name."""
        return self._server_name

    # Presenced has no workers: every module runs on the one process.
    worker_name = None
    worker_app = None

    def is_mine(self, id):
        """Whether a user ID (a string or a `UserID`) belongs to this server."""
        if isinstance(id, str):
            id = UserID.from_string(id)
        return id.domain == self._server_name

    def get_qualified_user_id(self, username):
        """`@username:<this server>`; a full user ID is returned unchanged."""
        if username.startswith("@"):
            return username
        return UserID(username, self._server_name).to_string()

    def register_presence_router_callbacks(
        self, *, get_users_for_states=None, get_interested_users=None
    ):
        """Registers a presence router: both callbacks, or neither."""
        if (get_users_for_states is None) != (get_interested_users is None):
            raise RuntimeError(
                "PresenceRouter modules must register neither or both of "
                "get_users_for_states and get_interested_users."
            )
        if get_users_for_states is None:
            return
        if self._presenced_callbacks is None:
            logger.warning(
                "Module %s registered presence router callbacks after it was loaded; "
                "they are ignored (register them in the constructor).",
                self._presenced_module,
            )
            return
        self._presenced_callbacks.append((get_users_for_states, get_interested_users))

    async def send_local_online_presence_to(self, users):
        """Sends the known non-offline presence each target is interested in: local targets
        get it on their next sync, remote ones over federation at once."""
        if isinstance(users, str):
            raise TypeError("users must be an iterable of user IDs, not a single string")
        users = list(users)
        for user in users:
            if not isinstance(user, str):
                raise TypeError("users must be user ID strings, not %s" % type(user).__name__)
        await self._presenced_host.send_presence(self._presenced_api_id, users)

    async def set_presence_for_users(self, users):
        """Sets the presence of local or remote users as the server itself does: `users`
        maps each user ID to a `(presence, status_msg)` pair."""
        states = []
        for user, value in dict(users).items():
            if not isinstance(user, str):
                raise TypeError("users must be keyed by user ID strings, not %s" % type(user).__name__)
            try:
                presence, status_msg = value
            except (TypeError, ValueError):
                raise TypeError(
                    "the presence of %s must be a (presence, status_msg) pair" % user
                ) from None
            if not isinstance(presence, str):
                raise TypeError("the presence of %s must be a string" % user)
            if status_msg is not None and not isinstance(status_msg, str):
                raise TypeError("the status message of %s must be a string or None" % user)
            states.append((user, presence, status_msg))
        await self._presenced_host.set_presence(self._presenced_api_id, states)

    def run_in_background(self, f, *args, **kwargs):
        """Calls `f` now; what it returns finishes in the background. Returns an awaitable
        (a Deferred when Twisted is in use) with its result."""
        return self._presenced_host.run_in_background(f, *args, **kwargs)

    def run_as_background_process(self, desc, func, *args, bg_start_span=True, **kwargs):
        """Like `run_in_background`, but a failure is logged (with `desc`) and swallowed."""
        return self._presenced_host.background_process(desc, func, args, kwargs)

    def looping_background_call(
        self, f, msec, *args, desc=None, run_on_all_instances=False, **kwargs
    ):
        """Calls `f` every `msec` milliseconds (the first call after `msec`), each call as a
        background process. Returns a handle with `stop()`."""
        call = self._presenced_host.looping_call(f, msec, desc, args, kwargs)
        self._presenced_timers.append(call)
        return call

    def delayed_background_call(self, msec, f, *args, desc=None, **kwargs):
        """Calls `f` once after `msec` milliseconds, as a background process. Returns a
        handle with `cancel()` and `active()`."""
        call = self._presenced_host.delayed_call(msec, f, desc, args, kwargs)
        self._presenced_timers.append(call)
        return call

    async def sleep(self, seconds):
        """Waits `seconds` without blocking the event loop."""
        await self._presenced_host.sleep(seconds)

    def __getattr__(self, name):
        if name.startswith("register_") and name.endswith("_callbacks"):
            module = self._presenced_module

            def ignored(*args, **kwargs):
                logger.warning(
                    "Module %s called ModuleApi.%s: Presenced runs presence routers only, "
                    "so these callbacks are ignored.",
                    module,
                    name,
                )

            return ignored
        raise AttributeError(
            "ModuleApi.%s is not available: Presenced runs presence router modules and "
            "supports only these ModuleApi members: %s" % (name, _SUPPORTED)
        )
