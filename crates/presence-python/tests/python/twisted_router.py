"""A router written against Twisted, as modules of the reference homeserver may be: it awaits
Deferreds (a `deferLater` on the reactor, an already-fired one) next to the module API."""

from twisted.internet import defer, reactor, task

from synapse.events.presence_router import PresenceRouter


class TwistedRouter:
    def __init__(self, config, module_api):
        self._api = module_api
        self._everyone = set(config.get("everyone", []))

    async def get_users_for_states(self, states):
        states = await defer.succeed(list(states))
        await self._api.sleep(0.001)
        return {user: set(states) for user in self._everyone}

    async def get_interested_users(self, user_id):
        if user_id in self._everyone:
            return await task.deferLater(reactor, 0.005, lambda: PresenceRouter.ALL_USERS)
        background = self._api.run_in_background(task.deferLater, reactor, 0.001, lambda: 3)
        if not isinstance(background, defer.Deferred):
            raise AssertionError("run_in_background returns a Deferred under Twisted")
        count = await background
        return {"@seen%d:test" % count}
