"""`synapse.handlers.presence`: where older modules import the presence record from."""

from synapse.api.constants import PresenceState
from synapse.api.presence import UserPresenceState

__all__ = ["PresenceState", "UserPresenceState"]
