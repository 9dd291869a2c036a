"""Domain errors raised by `rcfs.api`. Nothing above `rcfs.api` sees httpx exceptions.

The FUSE adapter maps these to errno values (see `rcfs.fs`). Messages never contain
tokens, JWTs or URLs with query strings.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of every error `rcfs.api` raises.

    `status` is the HTTP status (0 when there was no answer); `code` is the first
    RingCentral `errors[].errorCode` of the body when there was one (e.g. "MSG-348").
    """

    def __init__(self, message: str, *, status: int = 0, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotFound(ApiError):
    """404: the message, attachment or recording does not exist (any more)."""


class AuthError(ApiError):
    """Credentials rejected, session revoked, or a refresh failed: the user must act."""


class PermissionDenied(AuthError):
    """403: the app (or the user) lacks a RingCentral permission, e.g. `ReadCallRecording`.

    A subclass of AuthError because the user must act (add the permission to the app in
    the developer console, or ask the account admin); retrying cannot help. `permission`
    is the server's `permissionName` when it said, else None.
    """

    def __init__(self, message: str, *, permission: str | None = None, **kw) -> None:
        kw.setdefault("status", 403)
        super().__init__(message, **kw)
        self.permission = permission


class RateLimited(ApiError):
    """A 429 that could not be waited out within the caller's patience."""


class RangeNotSatisfiable(ApiError):
    """416: the requested start is at or past the end. `total` is the size when the
    server said (Content-Range: bytes */N)."""

    def __init__(self, message: str, *, total: int | None = None, **kw) -> None:
        super().__init__(message, status=416, **kw)
        self.total = total


class RateLimitWaitExceeded(ApiError):
    """A blocking read waited its documented limit for a rate-limited group and gave up.

    Deliberately not a RateLimited: that one tells the caller to come back later
    (EAGAIN), which `cp` and friends treat as a failure of a blocking read anyway; this
    one is a plain I/O failure (EIO) after an honest wait.
    """


class UntrustedURL(ApiError):
    """The API named a URL rcfs will not send the access token to (not https, or not the
    platform host or a media host of the account). Nothing was sent."""


class Rejected(ApiError):
    """A 4xx with a RingCentral error code that retrying cannot fix (bad input)."""


class ServerError(ApiError):
    """5xx answers that persisted through the bounded retries."""


class NetworkError(ApiError):
    """Timeouts, refused or dropped connections that persisted through the retries."""


class BadResponse(ApiError):
    """The server answered something we cannot understand (malformed JSON, headers)."""
