"""RingCentral-style rate limiting ("usage plan groups") for the emulator.

Model (CONTRACT §4): every request of a throttled operation belongs to one group
(Light, Medium, Heavy, Auth). Requests are counted per (user, app) per group over a
sliding window of `config.window` seconds. When a request would exceed the group's
limit it is rejected with 429 and the group is blocked for a penalty of one window;
every request rejected during the penalty restarts it (the "429 trap").

The limiter reads the window and limits from the live `EmulatorConfig` on every
check, so `POST /_emulator/config` takes effect at once. `config.rate_limits=False`
turns enforcement off but the headers are still computed and sent. `faults.force_429`
makes the next N checks fail as if the budget were spent (they start the penalty too,
so a client that ignores Retry-After keeps getting 429s).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from typing import Callable, Hashable

from .config import EmulatorConfig

log = logging.getLogger(__name__)

GROUPS = ("Light", "Medium", "Heavy", "Auth")


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of one check: whether to serve, and the header values to send."""

    allowed: bool
    group: str
    limit: int
    remaining: int
    window: float
    retry_after: int = 0  # whole seconds, only meaningful when not allowed
    forced: bool = False

    def headers(self) -> dict[str, str]:
        """The `X-Rate-Limit-*` headers (plus `Retry-After` on a rejection)."""
        window = self.window
        out = {
            "X-Rate-Limit-Group": self.group.lower(),
            "X-Rate-Limit-Limit": str(self.limit),
            "X-Rate-Limit-Remaining": str(self.remaining),
            # Integral windows print as "60"; scaled-down test windows keep their fraction.
            "X-Rate-Limit-Window": str(int(window)) if float(window).is_integer() else f"{window:g}",
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


@dataclasses.dataclass
class _Bucket:
    """Accepted-request timestamps of one (key, group) and its penalty deadline."""

    hits: collections.deque[float] = dataclasses.field(default_factory=collections.deque)
    blocked_until: float = 0.0


class RateLimiter:
    """Sliding-window limiter with penalty restart, keyed by (user, app) and group.

    `clock` returns seconds (monotonic by default); tests may inject their own.
    """

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._buckets: dict[tuple[Hashable, str], _Bucket] = {}

    def limit_of(self, group: str) -> int:
        """The configured limit of `group` (requests per window)."""
        return int(getattr(self.config, f"limit_{group.lower()}"))

    def reset(self) -> None:
        """Forget all counts and penalties (used by the admin endpoint and tests)."""
        self._buckets.clear()

    def check(self, key: Hashable, group: str) -> Decision:
        """Count one request of `group` for `key` and decide whether it may be served."""
        now = self.clock()
        window = float(self.config.window)
        limit = self.limit_of(group)
        bucket = self._buckets.setdefault((key, group), _Bucket())
        while bucket.hits and bucket.hits[0] <= now - window:
            bucket.hits.popleft()

        faults = self.config.faults
        if faults.force_429 > 0:
            faults.force_429 -= 1
            return self._reject(bucket, group, limit, window, now, forced=True)

        enforce = self.config.rate_limits
        if enforce and (now < bucket.blocked_until or len(bucket.hits) >= limit):
            return self._reject(bucket, group, limit, window, now)

        bucket.hits.append(now)
        remaining = max(0, limit - len(bucket.hits))
        return Decision(True, group, limit, remaining, window)

    def _reject(self, bucket: _Bucket, group: str, limit: int, window: float, now: float,
                *, forced: bool = False) -> Decision:
        # Each rejection restarts the penalty: the client must go quiet for a full window.
        bucket.blocked_until = now + window
        retry_after = max(1, math.ceil(window))
        log.debug("rate limit: %s group rejected (forced=%s), penalty %.3fs", group, forced, window)
        return Decision(False, group, limit, 0, window, retry_after, forced)
