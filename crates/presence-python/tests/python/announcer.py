"""A router that announces presence from a looping background call.

Like a router that gives service accounts all presence and, when a new service account
appears, calls `send_local_online_presence_to` so that it receives the current presence at
once. `Announcer` is the legacy form, `AnnouncerModule` the `modules:` form. Config:

- `users_who_should_receive_all_presence`: as in the reference's test router;
- `announce`: batches of user IDs; one batch is sent per tick of a 20 ms looping call, and a
  batch that fails is retried on the next tick;
- `repeat`: start over once every batch was sent;
- `after_file`: send nothing until this file exists (a test's trigger);
- `set_presence`: `{user_id: [presence, status_msg]}`, set with `set_presence_for_users`
  on the first tick allowed to send, before the batches.
"""

import logging
import os

from synapse.events.presence_router import PresenceRouter

logger = logging.getLogger(__name__)


class Announcer:
    def __init__(self, config, module_api):
        self._users = list(config.get("users_who_should_receive_all_presence") or [])
        self._batches = [list(batch) for batch in config.get("announce") or []]
        self._pending = list(self._batches)
        self._repeat = bool(config.get("repeat"))
        self._after_file = config.get("after_file")
        self._set = {u: tuple(v) for u, v in (config.get("set_presence") or {}).items()}
        self._api = module_api
        self._busy = False
        self.failures = 0
        self._loop = module_api.looping_background_call(self._announce, 20, desc="announce")

    async def _announce(self):
        # Ticks do not wait for each other: skip while a batch is on its way.
        if self._busy or not (self._pending or self._set):
            return
        if self._after_file and not os.path.exists(self._after_file):
            return
        self._busy = True
        try:
            if self._set:
                await self._api.set_presence_for_users(self._set)
                self._set = {}
            if not self._pending:
                return
            batch = self._pending[0]
            await self._api.send_local_online_presence_to(batch)
        except Exception as exc:
            self.failures += 1
            logger.info("announcing failed (%s); retrying", exc)
            return
        finally:
            self._busy = False
        self._pending.pop(0)
        if not self._pending and self._repeat:
            self._pending = list(self._batches)

    async def get_users_for_states(self, state_updates):
        return {user: set(state_updates) for user in self._users}

    async def get_interested_users(self, user_id):
        if user_id in self._users:
            return PresenceRouter.ALL_USERS
        return set()


class AnnouncerModule(Announcer):
    def __init__(self, config, api):
        super().__init__(config, api)
        api.register_presence_router_callbacks(
            get_users_for_states=self.get_users_for_states,
            get_interested_users=self.get_interested_users,
        )
