"""Serving the exported model: a TensorFlow Serving client and a local stand-in server.

``hybrid_tfrs.serving.client`` talks to TensorFlow Serving (or the stand-in) over
gRPC and REST; ``hybrid_tfrs.serving.server`` implements the subset of
TensorFlow Serving's API this model uses. Both share the error contract below:
a canonical gRPC status code name and TensorFlow Serving's HTTP mapping of it.
This module imports neither TensorFlow nor gRPC.
"""

__all__ = ["HTTP_STATUS", "ServingError", "clip", "code_from_http_status"]

# TensorFlow Serving's REST mapping of canonical status codes (others: 500).
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

_CODE_OF_HTTP_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    411: "INVALID_ARGUMENT",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

ECHO_LIMIT = 200  # characters of user input an error message repeats


def code_from_http_status(status):
    """The canonical code name of an HTTP error status ("UNKNOWN" if unmapped)."""
    return _CODE_OF_HTTP_STATUS.get(int(status), "UNKNOWN")


def clip(value, limit=ECHO_LIMIT):
    """``repr``-like text of user input for an error message, at most ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    if len(text) > limit:
        return f"{text[:limit]}... ({len(text)} characters)"
    return text


class ServingError(Exception):
    """A failed serving call.

    Attributes:
        code: canonical gRPC status code name, e.g. ``"INVALID_ARGUMENT"``.
        message: the server's message.
        http_status: the HTTP status (REST; a server may set one more precise
            than the code's, e.g. 413), or None (gRPC).
    """

    def __init__(self, code, message, http_status=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
