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
    RangeNotSatisfiable,
    RateLimited,
    Rejected,
    ServerError,
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
    "Priority",
    "RangeNotSatisfiable",
    "RateGovernor",
    "RateLimited",
    "Rejected",
    "RetryPolicy",
    "RingCentralClient",
    "ServerError",
    "Stream",
    "SyncResult",
    "TokenManager",
    "TokenSet",
    "TokenStore",
    "classify",
]
