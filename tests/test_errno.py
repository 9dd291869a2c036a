"""`errno_for`: the errno a program reading the mount sees for each domain error.

The table is the contract with the tools on the other side (cp, rsync, file managers):
ENOENT makes them skip a file that vanished, EACCES tells the user to act, EAGAIN means
"try again", EINVAL a request that can never work, EIO everything else.
"""

from __future__ import annotations

import errno
import inspect

import pytest

from rcfs.api import errors
from rcfs.api.errors import (ApiError, AuthError, BadResponse, NetworkError, NotFound, PermissionDenied,
                             RangeNotSatisfiable, RateLimited, RateLimitWaitExceeded, Rejected, ServerError,
                             UntrustedURL)
from rcfs.fs import errno_for

TABLE = [
    (NotFound("gone", status=404, code="CMN-102"), errno.ENOENT),
    (AuthError("session revoked", status=401, code="OAU-213"), errno.EACCES),
    (PermissionDenied("the app lacks ReadCallRecording", permission="ReadCallRecording"), errno.EACCES),
    (RateLimited("Heavy group exhausted", status=429, code="CMN-301"), errno.EAGAIN),
    (RateLimitWaitExceeded("waited 300 s for the Heavy group"), errno.EIO),
    (UntrustedURL("attachment URI on a foreign host"), errno.EIO),
    (Rejected("bad request", status=400, code="CMN-101"), errno.EINVAL),
    (ServerError("503 after retries", status=503), errno.EIO),
    (NetworkError("connection reset"), errno.EIO),
    (BadResponse("malformed JSON", status=200), errno.EIO),
    (RangeNotSatisfiable("past the end", total=10), errno.EIO),
    (ApiError("something else", status=418), errno.EIO),
]


@pytest.mark.parametrize("exc, expected", TABLE, ids=lambda v: type(v).__name__ if isinstance(v, Exception)
                         else errno.errorcode[v])
def test_each_domain_error_has_its_errno(exc, expected):
    assert errno_for(exc) == expected


def test_every_error_class_of_rcfs_api_is_in_the_table():
    # A new error class must get a deliberate row here, not a silent EIO.
    classes = {cls for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, ApiError) and cls.__module__ == errors.__name__}
    assert classes == {type(exc) for exc, _ in TABLE}


def test_subclasses_map_like_their_base():
    class Expired(AuthError):
        pass

    class Gone(NotFound):
        pass

    assert errno_for(Expired("x")) == errno.EACCES
    assert errno_for(Gone("x")) == errno.ENOENT


@pytest.mark.parametrize("exc", [ValueError("bug"), OSError(errno.ENOSPC, "disk full"), KeyError("k")])
def test_anything_that_is_not_a_domain_error_is_eio(exc):
    assert errno_for(exc) == errno.EIO
