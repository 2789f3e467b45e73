"""`synapse.module_api.errors`: the exceptions modules are allowed to use."""

from synapse.api.errors import Codes, SynapseError
from synapse.config._base import ConfigError

__all__ = ["Codes", "ConfigError", "SynapseError"]
