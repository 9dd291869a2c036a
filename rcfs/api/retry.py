"""Retry policy: which failures are worth another attempt, and how long to wait.

A FUSE request must not hang for minutes, so every policy is bounded twice: by a number
of attempts and by a total time budget for one call (CONTRACT §5: exponential backoff
for 5xx and connectivity errors, honour Retry-After).
"""

from __future__ import annotations

import dataclasses
import random

import httpx

__all__ = ["RetryPolicy", "is_retryable_transport_error", "never_reached_server"]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Bounds for one API call.

    **Parameters:**
    * `attempts`: tries for 5xx answers and transport errors, the first one included.
    * `base_delay` / `max_delay`: exponential backoff (doubling) between tries, with jitter.
    * `total`: seconds one call may spend on backoff and retries before giving up
      (rate-limit pacing waits are not counted: the governor bounds those).
    * `max_429`: 429 answers one call waits out before raising RateLimited.
    * `max_penalty`: a 429 asking for a longer wait than this raises at once.
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    total: float = 45.0
    max_429: int = 3
    max_penalty: float = 180.0

    def backoff(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based).

        `Retry-After` wins when the server sent one; otherwise "equal jitter": half the
        exponential step fixed, half random, so retries of many callers spread out.
        """
        if retry_after is not None:
            return max(0.0, retry_after)
        step = min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1)))
        r = (rng or random).random()
        return step / 2 + r * step / 2


def is_retryable_transport_error(exc: httpx.HTTPError) -> bool:
    """True for failures a second try can fix: timeouts, refused/reset/dropped connections."""
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))


def never_reached_server(exc: httpx.HTTPError) -> bool:
    """True when the request cannot have been processed (safe to retry a non-idempotent POST)."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
