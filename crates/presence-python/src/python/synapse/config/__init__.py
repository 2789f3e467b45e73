"""`synapse.config`: the error a module's `parse_config` raises."""

from synapse.config._base import ConfigError

__all__ = ["ConfigError"]
