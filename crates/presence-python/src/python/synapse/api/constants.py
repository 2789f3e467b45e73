"""`synapse.api.constants`: the presence state strings."""


class PresenceState:
    """The presence states, as their wire strings."""

    OFFLINE = "offline"
    UNAVAILABLE = "unavailable"
    ONLINE = "online"
    # MSC3026.
    BUSY = "org.matrix.msc3026.busy"
