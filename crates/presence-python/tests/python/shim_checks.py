"""Checks of the `synapse` compatibility package, run inside the embedded interpreter.

Loading `ShimChecks` runs the checks that need no event loop (a failure stops the load with
its message); `get_interested_users("@async:test")` runs those that do and answers
`{"@passed:test"}`.
"""

import asyncio
import copy
import pickle

import synapse.handlers.presence
from synapse.api.constants import PresenceState
from synapse.api.presence import UserPresenceState
from synapse.config import ConfigError
from synapse.events.presence_router import PresenceRouter
from synapse.module_api import PRESENCE_ALL_USERS, ModuleApi
from synapse.module_api.errors import SynapseError
from synapse.types import UserID


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def static_checks():
    check(PRESENCE_ALL_USERS == "ALL" and PresenceRouter.ALL_USERS == "ALL", "ALL_USERS")
    check(synapse.handlers.presence.UserPresenceState is UserPresenceState, "same class")
    check(
        (PresenceState.ONLINE, PresenceState.UNAVAILABLE, PresenceState.OFFLINE, PresenceState.BUSY)
        == ("online", "unavailable", "offline", "org.matrix.msc3026.busy"),
        "state strings",
    )
    s = UserPresenceState(
        user_id="@a:test",
        state="online",
        last_active_ts=5,
        last_federation_update_ts=6,
        last_user_sync_ts=7,
        status_msg="hi",
        currently_active=True,
    )
    check(s.state_key == s.user_id == "@a:test", "state_key")
    check(s.last_user_sync_ts == 7 and s.currently_active is True, "fields")
    t = s.copy_and_replace(state="unavailable")
    check(t.state == "unavailable" and t.status_msg == "hi" and s.state == "online", "copy")
    check(t != s and s.copy_and_replace() == s, "equality by value")
    check(hash(s.copy_and_replace()) == hash(s), "hash by value")
    check(len({s, s.copy_and_replace(), t}) == 2, "set of records")
    check(s != tuple(s), "a record is not a plain tuple")
    for attempt in (lambda: setattr(s, "state", "offline"), lambda: setattr(s, "other", 1)):
        try:
            attempt()
        except AttributeError:
            pass
        else:
            raise AssertionError("a record is immutable")
    try:
        s.copy_and_replace(colour="blue")
    except TypeError:
        pass
    else:
        raise AssertionError("copy_and_replace refuses unknown fields")
    d = UserPresenceState.default("@b:test")
    check((d.state, d.last_active_ts, d.status_msg, d.currently_active) == ("offline", 0, None, False), "default")
    check(UserPresenceState.from_dict(s.as_dict()) == s, "as_dict round trip")
    check(copy.copy(s) == s and pickle.loads(pickle.dumps(s)) == s, "copy and pickle")
    check("state='online'" in repr(s), "repr")
    check(UserID.from_string("@x:y").domain == "y" and str(UserID("x", "y")) == "@x:y", "UserID")
    try:
        UserID.from_string("nope")
    except SynapseError:
        pass
    else:
        raise AssertionError("UserID.from_string refuses non-IDs")
    check(issubclass(ConfigError, Exception), "ConfigError")


class ShimChecks:
    @staticmethod
    def parse_config(config):
        static_checks()
        return config

    def __init__(self, config, module_api):
        check(isinstance(module_api, ModuleApi), "a ModuleApi")
        api = module_api
        check(api.server_name == "test", "server_name")
        check(api.is_mine("@me:test") and not api.is_mine("@me:elsewhere"), "is_mine")
        check(api.is_mine(UserID("me", "test")), "is_mine(UserID)")
        check(api.get_qualified_user_id("bob") == "@bob:test", "get_qualified_user_id")
        check(api.get_qualified_user_id("@bob:other") == "@bob:other", "qualified passthrough")
        check(api.worker_name is None, "worker_name")
        try:
            api._hs
        except AttributeError as exc:
            check("not available" in str(exc), "unsupported member message")
        else:
            raise AssertionError("ModuleApi._hs must not exist")
        self._api = api
        self.ticks = 0
        self.delayed = []
        api.looping_background_call(self._tick, 5)
        self._cancelled = api.delayed_background_call(10, self.delayed.append, "cancelled")
        self._cancelled.cancel()
        api.delayed_background_call(10, self.delayed.append, "fired")

    def _tick(self):
        self.ticks += 1

    async def get_users_for_states(self, states):
        return {}

    async def get_interested_users(self, user_id):
        if user_id != "@async:test":
            return set()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._api.sleep(0.05)
        check(loop.time() - start >= 0.04, "sleep waits")

        order = []

        async def background(x):
            order.append("started")
            await asyncio.sleep(0)
            return x * 2

        running = self._api.run_in_background(background, 21)
        # Like the reference, run_in_background runs the function until its first await.
        check(order == ["started"], "run_in_background starts at once")
        check(await running == 42, "run_in_background result")

        async def failing():
            raise RuntimeError("background failure")

        check(await self._api.run_as_background_process("failing", failing) is None, "swallowed")
        check(self.ticks >= 3, "looping_background_call ticks: %d" % self.ticks)
        check(self.delayed == ["fired"], "delayed_background_call: %r" % (self.delayed,))
        try:
            await self._api.send_local_online_presence_to("@single:test")
        except TypeError:
            pass
        else:
            raise AssertionError("a single string is refused")
        return {"@passed:test"}
