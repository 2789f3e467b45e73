"""`synapse.api.presence`: the presence record of one user.

`UserPresenceState` is immutable and compared and hashed by value over its seven fields, like
the reference's, so routers can put records in sets and dicts. It is built on a tuple rather
than an `attrs` class: a router handles every state of every batch, and a tuple is several
times cheaper to build and to hash. `copy_and_replace` is the way to derive a changed record
(`attr.evolve` does not apply to it).
"""

from operator import itemgetter

from synapse.api.constants import PresenceState

_FIELDS = (
    "user_id",
    "state",
    "last_active_ts",
    "last_federation_update_ts",
    "last_user_sync_ts",
    "status_msg",
    "currently_active",
)


class UserPresenceState(tuple):
    """The presence of one user, local or remote.

    Fields: `user_id`, `state` (a `PresenceState` string), `last_active_ts`,
    `last_federation_update_ts`, `last_user_sync_ts` (milliseconds, 0 for never),
    `status_msg` (a string or None) and `currently_active` (a bool). `state_key` is another
    name for `user_id`.
    """

    __slots__ = ()

    def __new__(
        cls,
        user_id,
        state,
        last_active_ts,
        last_federation_update_ts,
        last_user_sync_ts,
        status_msg,
        currently_active,
    ):
        return tuple.__new__(
            cls,
            (
                user_id,
                state,
                last_active_ts,
                last_federation_update_ts,
                last_user_sync_ts,
                status_msg,
                currently_active,
            ),
        )

    # Builds a record from a 7-tuple without going through __new__'s argument parsing; the
    # host uses it to turn a batch into records quickly.
    _make = classmethod(tuple.__new__)

    user_id = property(itemgetter(0), doc="Whose presence this is.")
    state_key = property(itemgetter(0), doc="Another name for `user_id`.")
    state = property(itemgetter(1), doc="The presence state string.")
    last_active_ts = property(itemgetter(2), doc="When the user last did something (ms).")
    last_federation_update_ts = property(
        itemgetter(3), doc="When this state was last sent or received over federation (ms)."
    )
    last_user_sync_ts = property(itemgetter(4), doc="When a sync of this user last finished (ms).")
    status_msg = property(itemgetter(5), doc="The status message, or None.")
    currently_active = property(itemgetter(6), doc="Whether the user is active right now.")

    def __eq__(self, other):
        # Equal only to records, never to a plain tuple holding the same values (returning
        # NotImplemented would let the tuple's own comparison answer True).
        return type(other) is type(self) and tuple.__eq__(self, other)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = tuple.__hash__

    def __getnewargs__(self):
        return tuple(self)

    def __repr__(self):
        return "UserPresenceState(%s)" % ", ".join(
            "%s=%r" % (name, value) for name, value in zip(_FIELDS, self)
        )

    def as_dict(self):
        """The fields as a dict."""
        return dict(zip(_FIELDS, self))

    @classmethod
    def from_dict(cls, d):
        """A record from a dict of the seven fields."""
        return cls(**d)

    def copy_and_replace(self, **kwargs):
        """A copy of this record with some fields replaced."""
        values = dict(zip(_FIELDS, self))
        for name in kwargs:
            if name not in values:
                raise TypeError("UserPresenceState has no field %r" % (name,))
        values.update(kwargs)
        return type(self)(**values)

    @classmethod
    def default(cls, user_id):
        """The record of a user nothing is known about: offline, never active."""
        return cls(
            user_id=user_id,
            state=PresenceState.OFFLINE,
            last_active_ts=0,
            last_federation_update_ts=0,
            last_user_sync_ts=0,
            status_msg=None,
            currently_active=False,
        )
