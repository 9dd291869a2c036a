"""The RingCentral API client package: typed calls, tokens, rate-limit pacing, retries.

Nothing above `rcfs.api` sees httpx: every failure is an `rcfs.api.errors.ApiError`.
"""

from __future__ import annotations

from .auth import TokenManager, TokenSet, TokenStore
from .client import Chunk, ClientStats, Credentials, RingCentralClient, Stream, SyncResult, classify
from .errors import (
    ApiError,
    AuthError,
    BadResponse,
    NetworkError,
    NotFound,
    PermissionDenied,
    RangeNotSatisfiable,
    RateLimited,
    RateLimitWaitExceeded,
    Rejected,
    ServerError,
    UntrustedURL,
)
from .governor import Budget, Group, Priority, RateGovernor
from .retry import RetryPolicy

__all__ = [
    "ApiError",
    "AuthError",
    "BadResponse",
    "Budget",
    "Chunk",
    "ClientStats",
    "Credentials",
    "Group",
    "NetworkError",
    "NotFound",
    "PermissionDenied",
    "Priority",
    "RangeNotSatisfiable",
    "RateGovernor",
    "RateLimited",
    "RateLimitWaitExceeded",
    "Rejected",
    "RetryPolicy",
    "RingCentralClient",
    "ServerError",
    "Stream",
    "SyncResult",
    "TokenManager",
    "TokenSet",
    "TokenStore",
    "UntrustedURL",
    "classify",
]
