"""`synapse.api.errors`: the error types modules raise or catch."""


class Codes:
    """The Matrix error codes modules commonly use."""

    UNKNOWN = "M_UNKNOWN"
    INVALID_PARAM = "M_INVALID_PARAM"
    FORBIDDEN = "M_FORBIDDEN"
    NOT_FOUND = "M_NOT_FOUND"


class CodeMessageException(RuntimeError):
    """An error with an HTTP status code and a message."""

    def __init__(self, code, msg, headers=None):
        super().__init__("%d: %s" % (code, msg))
        self.code = int(code)
        self.msg = msg
        self.headers = headers


class SynapseError(CodeMessageException):
    """An error with an HTTP status code, a message and a Matrix error code."""

    def __init__(self, code, msg, errcode=Codes.UNKNOWN, additional_fields=None, headers=None):
        super().__init__(code, msg, headers)
        self.errcode = errcode
        self._additional_fields = dict(additional_fields or {})

    def error_dict(self, config=None):
        return dict(self._additional_fields, errcode=self.errcode, error=self.msg)
