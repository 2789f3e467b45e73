"""Routers that break the contract in every way the tests need.

All are legacy-form classes unless said otherwise. `@ok:test` is what a healthy call answers.
"""

import asyncio
import sys
import threading
import time

from synapse.api.presence import UserPresenceState
from synapse.config import ConfigError

OK = {"@ok:test"}


class Raises:
    def __init__(self, config, module_api):
        pass

    async def get_users_for_states(self, states):
        raise ValueError("boom in get_users_for_states")

    def get_interested_users(self, user_id):
        raise KeyError(user_id)


class WrongTypes:
    """`config.mode` picks the mistake."""

    def __init__(self, config, module_api):
        self._mode = config["mode"]

    async def get_users_for_states(self, states):
        states = list(states)
        if self._mode == "list":
            # One good entry first: it must not be merged either.
            return {"@a:test": set(states), "@b:test": list(states)}
        if self._mode == "not_dict":
            return set(states)
        if self._mode == "item":
            return {"@a:test": {states[0], "@someone:test"}}
        if self._mode == "key":
            return {42: set(states)}
        return None

    async def get_interested_users(self, user_id):
        if self._mode == "list":
            return ["@a:test"]
        if self._mode == "item":
            return {"@a:test", 7}
        if self._mode == "key":
            return "everyone"
        return None


class Hangs:
    """Never answers for `@hang:test` (or a batch holding it); counts its cancellations, which
    `get_interested_users("@count:test")` reports as `{"@cancelled<n>:test"}`."""

    def __init__(self, config, module_api):
        self.cancelled = 0

    async def _forever(self):
        try:
            await asyncio.Future()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def get_users_for_states(self, states):
        states = list(states)
        if any(s.user_id == "@hang:test" for s in states):
            await self._forever()
        await asyncio.sleep(0.001)
        return {"@ok:test": set(states)}

    async def get_interested_users(self, user_id):
        if user_id == "@hang:test":
            await self._forever()
        if user_id == "@count:test":
            return {"@cancelled%d:test" % self.cancelled}
        await asyncio.sleep(0.001)
        return OK


class Spins:
    """Spins for `@spin:test`, swallowing every `Exception` while it does."""

    def __init__(self, config, module_api):
        pass

    def get_users_for_states(self, states):
        return {"@ok:test": set(states)}

    def get_interested_users(self, user_id):
        if user_id == "@spin:test":
            while True:
                try:
                    pass
                except Exception:
                    pass
        return OK


def recurse_through_c(depth):
    """Recursion that costs C stack on every level (a builtin calling back into Python),
    unlike a plain Python call, which CPython 3.11+ runs without growing the C stack."""
    return max(map(recurse_through_c, [depth + 1]))


class Recurses:
    """For `@deep:test`, raises the recursion limit to `config.limit` and recurses through C
    until `RecursionError`, as a router with deep recursion would."""

    def __init__(self, config, module_api):
        self._limit = config["limit"]

    def get_users_for_states(self, states):
        return {}

    def get_interested_users(self, user_id):
        if user_id == "@deep:test":
            old = sys.getrecursionlimit()
            sys.setrecursionlimit(self._limit)
            try:
                recurse_through_c(0)
            except RecursionError:
                pass
            finally:
                sys.setrecursionlimit(old)
        return OK


class Sleeps:
    """Blocks the thread in `time.sleep(config.seconds)` for `@sleep:test`."""

    def __init__(self, config, module_api):
        self._seconds = config["seconds"]

    def get_users_for_states(self, states):
        return {}

    def get_interested_users(self, user_id):
        if user_id == "@sleep:test":
            time.sleep(self._seconds)
        return OK


class Invents:
    """Answers with altered and rebuilt records, and with keys that are not user IDs."""

    def __init__(self, config, module_api):
        pass

    async def get_users_for_states(self, states):
        states = list(states)
        altered = {s.copy_and_replace(status_msg="altered") for s in states}
        rebuilt = {UserPresenceState(**states[0].as_dict())}
        return {
            "@r:test": altered | rebuilt,
            "@all:test": set(states),
            "not a user": set(states),
        }

    async def get_interested_users(self, user_id):
        return {"@a:test", "bogus"}


class Plain:
    """Plain (not async) methods work too; so does a frozenset."""

    def __init__(self, config, module_api):
        pass

    def get_users_for_states(self, states):
        return {"@ok:test": frozenset(states)}

    def get_interested_users(self, user_id):
        return frozenset(OK)


class OnlyUsersForStates:
    """A legacy router with one of the two methods: refused at startup."""

    def __init__(self, config, module_api):
        pass

    async def get_users_for_states(self, states):
        return {}


class RegistersOne:
    """A `modules:` entry registering one callback: refused at startup."""

    def __init__(self, config, api):
        api.register_presence_router_callbacks(get_interested_users=self.get_interested_users)

    async def get_interested_users(self, user_id):
        return set()


class NotARouter:
    """A `modules:` entry that is some other kind of module."""

    def __init__(self, config, api):
        api.register_spam_checker_callbacks(check_event_for_spam=self.check)

    async def check(self, event):
        return "NOT_SPAM"


class RegistersTwice:
    """A `modules:` entry registering two routers: their answers are merged."""

    def __init__(self, config, api):
        api.register_presence_router_callbacks(
            get_users_for_states=self.first_states, get_interested_users=self.first_users
        )
        api.register_presence_router_callbacks(
            get_users_for_states=self.second_states, get_interested_users=self.second_users
        )

    async def first_states(self, states):
        return {"@a:test": set(states)}

    async def second_states(self, states):
        return {"@b:test": set(list(states)[:1])}

    async def first_users(self, user_id):
        return {"@x:test"}

    def second_users(self, user_id):
        return {"@y:test"}


class BadConfig:
    @staticmethod
    def parse_config(config):
        users = config.get("users", [])
        for i, user in enumerate(users):
            if not user.startswith("@"):
                raise ConfigError("%r is not a user ID" % (user,), path=["users", str(i)])
        return users

    def __init__(self, config, module_api):
        pass


class ParseFails:
    @staticmethod
    def parse_config(config):
        raise ValueError("always_send_to_users must be a list")


class UsesInternals:
    def __init__(self, config, module_api):
        self._store = module_api._hs.get_datastores()


class NoParseConfig:
    """Without `parse_config`, the raw block is the config (an absent one is `{}`)."""

    def __init__(self, config, module_api):
        assert isinstance(config, dict), config
        self._users = set(config.get("users", []))

    async def get_users_for_states(self, states):
        return {}

    async def get_interested_users(self, user_id):
        return set(self._users)


class SpinsInAThread:
    """Starts a thread that, after half a second, holds the GIL in C (calls of about a
    second) for `config.seconds`, then stops; `get_interested_users("@done:test")` answers
    `{"@done:test"}` once it has."""

    def __init__(self, config, module_api):
        self._seconds = config["seconds"]
        self.done = threading.Event()
        threading.Thread(target=self._spin, name="spinner", daemon=True).start()

    def _spin(self):
        time.sleep(0.5)
        end = time.monotonic() + self._seconds
        while time.monotonic() < end:
            sum(range(80_000_000))
        self.done.set()

    def get_users_for_states(self, states):
        return {}

    def get_interested_users(self, user_id):
        if user_id == "@done:test" and self.done.is_set():
            return {"@done:test"}
        return OK
