"""A router that leaks: every `get_interested_users` call for `@leak:test` keeps 200,000
new objects for ever, the way a cache without a bound does."""

from typing import Dict, Iterable, Set, Union

_kept = []


class LeakyRouter:
    def __init__(self, config: dict, module_api) -> None:
        pass

    @staticmethod
    def parse_config(config: dict) -> dict:
        return config

    async def get_users_for_states(self, state_updates: Iterable) -> Dict[str, Set]:
        return {}

    async def get_interested_users(self, user_id: str) -> Union[Set[str], str]:
        if user_id == "@leak:test":
            _kept.append([object() for _ in range(200_000)])
        return set()
