"""A module of the kind a Synapse deployment's shared ``modules:`` list holds besides its
presence routers: a spam checker written against Synapse's internals.

Synapse's processes load it; Presenced, as the deployment's presence writer, cannot import
``synapse.storage`` and must skip it with a warning naming it (tests/it/synapse_writer.rs).
"""

from synapse.module_api import NOT_SPAM, ModuleApi
from synapse.storage.databases.main import DataStore  # noqa: F401  (Synapse's internals)


class InternalsSpamChecker:
    def __init__(self, config: dict, api: ModuleApi):
        api.register_spam_checker_callbacks(check_event_for_spam=self.check_event_for_spam)

    async def check_event_for_spam(self, event) -> str:
        return NOT_SPAM
