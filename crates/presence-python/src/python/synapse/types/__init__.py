"""`synapse.types`: the user ID type and `JsonDict`."""

from typing import Any, Dict

from synapse.api.errors import Codes, SynapseError

JsonDict = Dict[str, Any]


class UserID:
    """A user ID split into its localpart and domain."""

    SIGIL = "@"
    __slots__ = ("localpart", "domain")

    def __init__(self, localpart, domain):
        object.__setattr__(self, "localpart", localpart)
        object.__setattr__(self, "domain", domain)

    def __setattr__(self, name, value):
        raise AttributeError("UserID is immutable")

    @classmethod
    def from_string(cls, s):
        """Parses `@localpart:domain`; raises SynapseError (400) otherwise."""
        if not isinstance(s, str) or len(s) < 1 or s[0] != cls.SIGIL:
            raise SynapseError(400, "Expected UserID string to start with '@'", Codes.INVALID_PARAM)
        localpart, sep, domain = s[1:].partition(":")
        if not sep:
            raise SynapseError(400, "Expected ':' in UserID %r" % (s,), Codes.INVALID_PARAM)
        return cls(localpart, domain)

    @classmethod
    def is_valid(cls, s):
        try:
            cls.from_string(s)
            return True
        except Exception:
            return False

    def to_string(self):
        return "%s%s:%s" % (self.SIGIL, self.localpart, self.domain)

    __str__ = to_string

    def __repr__(self):
        return "UserID(%r, %r)" % (self.localpart, self.domain)

    def __eq__(self, other):
        return (
            type(other) is type(self)
            and self.localpart == other.localpart
            and self.domain == other.domain
        )

    def __hash__(self):
        return hash((self.localpart, self.domain))
