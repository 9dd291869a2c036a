"""One rate-limit budget and one login for a fleet of mounts, kept in Redis (issue 18).

RingCentral counts requests per (user, app, group) however many machines send them, and
ends the oldest session when one user opens more than about five. Several rcfs mounts of
one account therefore share, through one Redis (or Valkey) server:

* per rate-limit group, a **sliding-window log with reservations** (one Lua script, timed
  by Redis's own `TIME`, so the machines' clocks never matter):
  `fly` holds reservations not yet answered (each blocks a slot until its answer), `log`
  holds answered requests scored by the Redis time their answer was reported (the server
  saw them before that, so a slot frees `window + margin` after it: exact, not guessed).
  A new request gets the earliest time at which the window holds fewer than `limit`
  requests; it sleeps until then (a relative `trio.sleep`) and sends.
* a group's **penalty** (a 429 seen by any mount: `Retry-After`) and **block** (the server
  counted more than the log: `X-Rate-Limit-Remaining` 0 from someone we do not know), as
  keys with a TTL that every mount's next reservation obeys;
* the **learned limits** (`X-Rate-Limit-Limit`/`-Window`), so a new mount starts right;
* the **live mounts** (a heartbeat into a sorted set), for the fallback share;
* the **token pair**, refreshed by one mount at a time under a lock (`SharedTokens`).

Not a token bucket or GCRA with a burst of N: against a sliding-window server those let
nearly 2N through one window.

Every Redis call runs under a short deadline of its own (`timeout`, 0.5 s by default).
Any failure marks Redis unhealthy; the governor then paces on its own at its share of the
limit (rcfs.api.governor) while `probe_due()` lets a call through at growing intervals
(0.25 s doubling to 4 s, jittered); the first one that succeeds makes the fleet shared again.

Client library: redis-py (sync) in a worker thread (`trio.to_thread.run_sync` with its own
CapacityLimiter, abandoned on cancel, retries off, socket timeouts = the deadline); see
scripts/bench_redis_client for the cost against coredis and the reasons.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import random
import secrets
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import trio

from ..atomic import write_atomic

log = logging.getLogger(__name__)

__all__ = ["SharedBudget", "SharedTokens", "Reservation", "FleetError", "parse_url", "scope_of"]

PREFIX = "rcfs:v1"  # versioned: an rcfs with another key layout never shares a key with this one
DEFAULT_TIMEOUT = 0.5
HEARTBEAT = 1.0  # seconds between a mount's heartbeats
PEER_TTL = 5.0  # a mount not heard from for this long no longer counts as live
POLL = 0.05  # seconds between looks while every slot waits for an answer
HOLD = 120.0  # an unanswered reservation older than this (its mount died) counts as answered
PROBE_MIN, PROBE_MAX = 0.25, 4.0


class FleetError(Exception):
    """The shared-budget URL or its settings are unusable (the message says why)."""


def parse_url(url: str) -> str:
    """Check a `--shared-budget` URL: redis://HOST[:PORT][/DB], rediss://..., unix:///path.

    A password in the URL is refused: URLs end up in `ps`, fstab and logs. It comes from
    the config file (`shared_budget_password`) or `RCFS_REDIS_PASSWORD` instead.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise FleetError(f"shared budget: {url!r} is not a redis://, rediss:// or unix:// URL")
    if parts.password is not None:
        raise FleetError("shared budget: no password in the URL (it would show in ps and fstab); put "
                         "shared_budget_password in the config file or set RCFS_REDIS_PASSWORD")
    if parts.scheme == "unix":
        if not parts.path:
            raise FleetError(f"shared budget: {url!r} names no socket path (unix:///path/to/redis.sock)")
    elif not parts.hostname:
        raise FleetError(f"shared budget: {url!r} names no host")
    return url.strip()


def safe_url(url: str) -> str:
    """The URL for logs and `rcfs status`: no user name, no query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scope_of(server_url: str, client_id: str, jwt: str) -> str:
    """The fleet's key scope: one per (server, app, user credential), never the secrets."""
    raw = f"{server_url.rstrip('/')}\0{client_id}\0{jwt}".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


# -- Lua ------------------------------------------------------------------------------
# Times are Redis milliseconds. KEYS of every group script: log, fly, pen, blk, cfg.

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function keep(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
"""

# KEYS[6]: peers, KEYS[7]: the group's waiters (score: priority, then arrival), KEYS[8]: when
# each waiter last asked. ARGV: limit, window_ms, margin_ms, max_wait_ms, member, hold_ms,
# poll_ms, reserve_share, low, peer_ttl_ms, waiter, priority
# -> {granted 0/1, wait_ms, why (0 granted, 1 penalty/block, 2 not its turn or all in flight,
#     3 too far), limit, live mounts}
# Waiters are served in (priority, arrival) order across the fleet; each mount queues only
# the head of its own queue, so a `cat` on one mount waits behind at most one waiter of each
# other mount. A waiter that stopped asking (cancelled, its mount gone) drops out after 2 s.
ACQUIRE = _NOW + """
local live = redis.call('ZCOUNT', KEYS[6], now - tonumber(ARGV[10]), '+inf')
local waiter = ARGV[11]
local gone = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', now - 2000)
for i = 1, #gone do
  redis.call('ZREM', KEYS[7], gone[i])
  redis.call('ZREM', KEYS[8], gone[i])
end
redis.call('ZADD', KEYS[7], 'NX', tonumber(ARGV[12]) * 10000000000 + now % 10000000000, waiter)
redis.call('ZADD', KEYS[8], now, waiter)
keep(KEYS[7], 60000)
keep(KEYS[8], 60000)
local limit = tonumber(redis.call('HGET', KEYS[5], 'limit') or ARGV[1])
local win = tonumber(redis.call('HGET', KEYS[5], 'window') or ARGV[2])
local margin, max_wait, member = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local hold, poll = tonumber(ARGV[6]), tonumber(ARGV[7])
local blocked = math.max(redis.call('PTTL', KEYS[3]), redis.call('PTTL', KEYS[4]))
if blocked > 0 then return {0, blocked, 1, limit, live} end
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - hold)
for i = 1, #stale do
  redis.call('ZREM', KEYS[2], stale[i])
  redis.call('ZADD', KEYS[1], now, stale[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win - margin)
local allowed = limit
if ARGV[9] == '1' then
  -- read-ahead and background leave a reserve for requests somebody waits for
  allowed = limit - math.min(math.max(1, math.ceil(tonumber(ARGV[8]) * limit)), math.max(0, limit - 1))
end
local fly = redis.call('ZCARD', KEYS[2])
local rank = redis.call('ZRANK', KEYS[7], waiter)
if fly >= allowed or (rank and rank >= allowed - fly) then return {0, poll, 2, limit, live} end
local at = now
local e = redis.call('ZREVRANGE', KEYS[1], allowed - fly - 1, allowed - fly - 1, 'WITHSCORES')
if e[2] then at = math.max(now, tonumber(e[2]) + win + margin) end
if at - now > max_wait then return {0, at - now, 3, limit, live} end
redis.call('ZREM', KEYS[7], waiter)
redis.call('ZREM', KEYS[8], waiter)
redis.call('ZADD', KEYS[2], at, member)
keep(KEYS[2], at - now + hold + win)
keep(KEYS[1], at - now + hold + 2 * win + margin)
return {1, at - now, 0, limit, live}
"""

# ARGV: member, window_ms, margin_ms, hold_ms. The request was answered (or failed): its
# slot now frees window+margin after this moment.
COMMIT = _NOW + """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  keep(KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]) + tonumber(ARGV[4]))
end
return 1
"""

# ARGV: ms. The longest penalty wins.
PENALIZE = _NOW + """
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[1])
end
return 1
"""

# ARGV: limit, remaining, window_ms, margin_ms, member prefix, ttl_ms.
# The server's count corrects ours: requests we never logged (a mount without Redis, a
# script with the same app) become entries answered now; "remaining 0" from such a
# stranger blocks the group for a window.
HEADERS = _NOW + """
local limit, remaining, win = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local margin = tonumber(ARGV[4])
if limit > 0 and win > 0 then
  redis.call('HSET', KEYS[5], 'limit', limit, 'window', win)
  keep(KEYS[5], tonumber(ARGV[6]))
end
if remaining < 0 then return 0 end
local ours = redis.call('ZCOUNT', KEYS[1], now - win - margin, '+inf') + redis.call('ZCARD', KEYS[2])
local extra = (limit - remaining) - ours
if extra <= 0 then return 0 end
for i = 1, extra do redis.call('ZADD', KEYS[1], now, ARGV[5] .. ':' .. i) end
keep(KEYS[1], win + margin + tonumber(ARGV[6]))
if remaining == 0 then
  if redis.call('PTTL', KEYS[4]) < win then redis.call('SET', KEYS[4], '1', 'PX', win) end
end
return extra
"""

# ARGV: ages_ms... (how long ago each request sent without the fleet was answered):
# put them into the log so the fleet counts what this mount did alone.
PUSH = _NOW + """
local n = 0
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now - tonumber(ARGV[i]), ARGV[1] .. ':' .. i)
  n = n + 1
end
keep(KEYS[1], 600000)
return n
"""

# ARGV: window_ms (default), margin_ms -> {used (answered in window + in flight), limit, window, penalty_ms}
SNAPSHOT = _NOW + """
local win = tonumber(redis.call('HGET', KEYS[5], 'window') or ARGV[1])
local limit = tonumber(redis.call('HGET', KEYS[5], 'limit') or '-1')
local used = redis.call('ZCOUNT', KEYS[1], now - win - tonumber(ARGV[2]), '+inf') + redis.call('ZCARD', KEYS[2])
local blocked = math.max(redis.call('PTTL', KEYS[3]), redis.call('PTTL', KEYS[4]), 0)
return {used, limit, win, blocked}
"""

# KEYS: peers. ARGV: mount id, ttl_ms, info json -> live count (this mount included)
HEARTBEAT_LUA = _NOW + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
local all = redis.call('HKEYS', KEYS[2])
local alive = {}
for i = 1, #live do alive[live[i]] = true end
for i = 1, #all do if not alive[all[i]] then redis.call('HDEL', KEYS[2], all[i]) end end
keep(KEYS[1], tonumber(ARGV[2]) * 4)
keep(KEYS[2], tonumber(ARGV[2]) * 4)
return #live
"""

# KEYS: peers. ARGV: mount id -> leaves the fleet at unmount
LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclasses.dataclass(frozen=True)
class Reservation:
    """The answer of one `acquire`: go after `wait` seconds (granted), or look again then."""

    granted: bool
    wait: float  # seconds
    why: str  # "" granted, "penalty", "in-flight", "too-far"
    member: str
    limit: int


_WHY = {0: "", 1: "penalty", 2: "in-flight", 3: "too-far"}


class SharedBudget:
    """The fleet's Redis: rate-limit groups, live mounts, tokens. Use `async with`.

    **Parameters:**
    * `url`: checked by `parse_url`; `password`: from the config file or the environment.
    * `scope`: `scope_of(server, client_id, jwt)`: which account's budget this is.
    * `timeout`: deadline of every Redis call (seconds).
    * `margin`: seconds added to every window (timer granularity; the log itself is exact).
    """

    def __init__(self, url: str, *, scope: str, password: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, margin: float = 0.05,
                 clock: Callable[[], float] | None = None, memo: Path | None = None) -> None:
        import redis  # imported here: a mount without --shared-budget never needs it
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = parse_url(url)
        self.scope = scope
        self.timeout = timeout
        self.margin = margin
        self.mount_id = f"{os.uname().nodename[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._clock = clock or trio.current_time
        self._redis = redis.Redis.from_url(
            self.url, password=password, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0, decode_responses=True)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._scripts = {name: self._redis.register_script(src) for name, src in (
            ("acquire", ACQUIRE), ("commit", COMMIT), ("penalize", PENALIZE), ("headers", HEADERS),
            ("push", PUSH), ("snapshot", SNAPSHOT), ("heartbeat", HEARTBEAT_LUA), ("leave", LEAVE),
            ("unlock", UNLOCK))}
        # Redis calls run in threads; a stalled server must not take all of trio's 40.
        self._limiter = trio.CapacityLimiter(4)
        self._seq = itertools.count()
        self._rng = random.Random()
        self.healthy = True
        # The last count of live mounts seen (the fallback share divides by it), kept in
        # `memo` (the state dir) so a mount started while Redis is down still divides.
        self._memo = memo
        self._memo_dirty = False
        self.live_mounts = self._read_memo()
        self.recoveries = 0  # times Redis answered again after failing
        self.failures = 0
        self.deadline_hits = 0
        self.calls = 0
        self._probe_at = -math.inf
        self._probe_step = PROBE_MIN
        self.last_error: str | None = None
        self.snapshot: dict[str, dict[str, Any]] = {}
        self.fleet: list[dict[str, Any]] = []
        self._pending: list[Callable[[], Any]] = []
        self._wake = trio.Event()
        self.on_state_change: Callable[[bool], None] | None = None
        self.info: Callable[[], dict[str, Any]] = lambda: {}

    def __repr__(self) -> str:
        return f"SharedBudget({safe_url(self.url)!r}, {'healthy' if self.healthy else 'down'})"

    def _read_memo(self) -> int:
        try:
            return max(1, int(json.loads(self._memo.read_text())["live_mounts"])) if self._memo else 1
        except (OSError, ValueError, KeyError, TypeError):
            return 1

    def _seen(self, live: int) -> None:
        live = max(1, live)
        if live != self.live_mounts:
            self._memo_dirty = True  # written by the heartbeat task, in a thread
        self.live_mounts = live

    def _write_memo(self) -> None:
        if self._memo is None:
            return
        try:
            write_atomic(self._memo, json.dumps({"live_mounts": self.live_mounts}).encode(), mode=0o600)
        except OSError as exc:
            log.debug("cannot keep the fleet's size in %s: %s", self._memo, exc.strerror)

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> SharedBudget:
        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        await self.heartbeat()
        nursery.start_soon(self._heartbeats)
        nursery.start_soon(self._flusher)
        self._nursery = nursery
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        self._nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            if self.healthy:
                await self._call(self._scripts["leave"], keys=[self._peers, self._peer_info], args=[self.mount_id])
        result = await self._nursery_cm.__aexit__(*exc)
        await trio.to_thread.run_sync(self._redis.close)
        return result

    # -- keys -------------------------------------------------------------------------
    # One {hash tag} per account, so a Redis Cluster keeps one fleet's keys in one slot.

    def _key(self, *parts: str) -> str:
        return ":".join((PREFIX, "{" + self.scope + "}", *parts))

    def _group_keys(self, group: str) -> list[str]:
        return [self._key(kind, group) for kind in ("log", "fly", "pen", "blk", "cfg")]

    def _queue_keys(self, group: str) -> list[str]:
        return [self._key("queue", group), self._key("asked", group)]

    @property
    def _peers(self) -> str:
        return self._key("peers")

    @property
    def _peer_info(self) -> str:
        return self._key("peerinfo")

    # -- health -----------------------------------------------------------------------

    def usable(self) -> bool:
        """True when a Redis call should be tried now: healthy, or a re-probe is due."""
        return self.healthy or self._clock() >= self._probe_at

    async def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run one Redis call in a thread under the deadline; None when it failed."""
        self.calls += 1
        result: Any = None
        failed: str | None = None
        with trio.move_on_after(self.timeout) as scope:
            try:
                result = await trio.to_thread.run_sync(functools.partial(fn, *args, **kw),
                                                       limiter=self._limiter, abandon_on_cancel=True)
            except self._errors as exc:
                failed = type(exc).__name__
        if scope.cancelled_caught:
            self.deadline_hits += 1
            failed = f"no answer within {self.timeout:g} s"
        if failed is not None:
            self._failed(failed)
            return None
        self._answered()
        return result

    def _failed(self, why: str) -> None:
        self.failures += 1
        self.last_error = why
        if self.healthy:
            self.healthy = False
            self._probe_step = PROBE_MIN
            log.warning("shared budget %s unreachable (%s): pacing alone at this mount's share until "
                        "it answers", safe_url(self.url), why)
            if self.on_state_change:
                self.on_state_change(False)
        step = self._probe_step
        self._probe_step = min(PROBE_MAX, self._probe_step * 2)
        self._probe_at = self._clock() + step * (0.5 + self._rng.random() / 2)

    def _answered(self) -> None:
        if not self.healthy:
            self.healthy = True
            self.recoveries += 1
            self.last_error = None
            log.warning("shared budget %s answers again: the fleet shares its budget again",
                        safe_url(self.url))
            if self.on_state_change:
                self.on_state_change(True)

    # -- rate-limit groups ------------------------------------------------------------

    async def acquire(self, group: str, *, limit: int, window: float, max_wait: float,
                      low: bool = False, reserve: float = 0.2, waiter: str = "",
                      priority: int = 0) -> Reservation | None:
        """Reserve the earliest slot of `group` (None: Redis failed; pace locally).

        `waiter` names one waiting request across its repeated asks (its place in the
        fleet's queue); `priority` orders the queue (0 first).
        """
        member = f"{self.mount_id}:{next(self._seq)}"
        waiter = f"{self.mount_id}:{waiter or member}"
        args = [limit, _ms(window), _ms(self.margin), _ms(max_wait), member, _ms(max(HOLD, window)),
                _ms(POLL), reserve, "1" if low else "0", _ms(PEER_TTL), waiter, int(priority)]
        res = await self._call(self._scripts["acquire"],
                               keys=[*self._group_keys(group), self._peers, *self._queue_keys(group)], args=args)
        if res is None:
            return None
        granted, wait_ms, why, eff_limit, live = (int(x) for x in res)
        # Every reservation refreshes the count the fallback share divides by, so a mount
        # that joined a moment ago is counted before Redis can fail.
        self._seen(live)
        return Reservation(bool(granted), max(0, wait_ms) / 1000, _WHY.get(why, "?"), member, eff_limit)

    def commit(self, group: str, member: str, window: float) -> None:
        """The request of `member` was answered (or failed): count it from now (queued)."""
        self._queue(self._scripts["commit"], keys=self._group_keys(group),
                    args=[member, _ms(window), _ms(self.margin), _ms(max(HOLD, window))])

    def cancel(self, group: str, member: str) -> None:
        """A reservation that was not used (cancelled, or a penalty came first) (queued)."""
        self._queue(self._redis.zrem, self._group_keys(group)[1], member)

    def leave(self, group: str, waiter: str) -> None:
        """A waiter that stopped waiting (cancelled) leaves the fleet's queue (queued)."""
        waiter = f"{self.mount_id}:{waiter}"
        for key in self._queue_keys(group):
            self._queue(self._redis.zrem, key, waiter)

    def penalize(self, group: str, seconds: float) -> None:
        """Every mount sends nothing in `group` for `seconds` (queued)."""
        self._queue(self._scripts["penalize"], keys=self._group_keys(group), args=[_ms(seconds)])

    def headers(self, group: str, *, limit: int, remaining: int | None, window: float) -> None:
        """An answer's rate-limit headers correct the shared log (queued)."""
        self._queue(self._scripts["headers"], keys=self._group_keys(group),
                    args=[limit, -1 if remaining is None else remaining, _ms(window), _ms(self.margin),
                          f"{self.mount_id}:h{next(self._seq)}", _ms(max(HOLD, window))])

    async def penalty_left(self, group: str) -> float | None:
        """Seconds of penalty or block left in `group` (None: Redis failed)."""
        keys = self._group_keys(group)
        res = await self._call(lambda: max(self._redis.pttl(keys[2]), self._redis.pttl(keys[3]), 0))
        return None if res is None else res / 1000

    async def push(self, group: str, ages: list[float]) -> bool:
        """Add requests this mount made alone (answered `ages` seconds ago) to the log."""
        if not ages:
            return True
        res = await self._call(self._scripts["push"], keys=self._group_keys(group),
                               args=[f"{self.mount_id}:p{next(self._seq)}", *(_ms(a) for a in ages)])
        return res is not None

    # -- the fleet ----------------------------------------------------------------------

    async def heartbeat(self) -> bool:
        """Say this mount is alive; learn how many are; refresh the status snapshot."""
        info = json.dumps({"host": os.uname().nodename[:64], "pid": os.getpid(), **self.info()})
        live = await self._call(self._scripts["heartbeat"], keys=[self._peers, self._peer_info],
                                args=[self.mount_id, _ms(PEER_TTL), info])
        if live is None:
            return False
        self._seen(int(live))
        snap: dict[str, dict[str, Any]] = {}
        for group in ("light", "medium", "heavy", "auth"):
            res = await self._call(self._scripts["snapshot"], keys=self._group_keys(group),
                                   args=[_ms(60.0), _ms(self.margin)])
            if res is None:
                return False
            used, limit, win, blocked = (int(x) for x in res)
            snap[group] = {"used": used, "limit": limit if limit >= 0 else None,
                           "window": win / 1000, "blocked_for": round(blocked / 1000, 1)}
        self.snapshot = snap
        infos = await self._call(self._redis.hgetall, self._peer_info)
        if infos is not None:
            fleet = []
            for mid, raw in sorted(infos.items()):
                try:
                    item = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(item, dict):
                    fleet.append({"id": str(mid)[:80], **{k: item[k] for k in ("host", "pid", "requests")
                                                          if k in item}})
            self.fleet = fleet
        return True

    async def _heartbeats(self) -> None:
        while True:
            await trio.sleep(HEARTBEAT)
            if self.usable():
                await self.heartbeat()
            if self._memo_dirty:
                self._memo_dirty = False
                await trio.to_thread.run_sync(self._write_memo)

    def _queue(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
        # observe()/release() are synchronous (the client calls them between awaits), so
        # their Redis writes go through this queue; while Redis is down they are dropped
        # (an unanswered reservation frees itself after HOLD; penalties are also kept locally).
        if not self.usable():
            return
        if len(self._pending) < 10_000:
            self._pending.append(functools.partial(fn, *args, **kw))
            self._wake.set()

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._pending:
                op = self._pending.pop(0)
                if await self._call(op) is None:
                    self._pending.clear()
                    break

    async def flush(self) -> None:
        """Wait until the queued writes have gone (tests, unmount)."""
        while self._pending:
            await trio.sleep(0.005)

    def report(self) -> dict[str, Any]:
        """For `rcfs status`: Redis health, live mounts, shared use per group."""
        return {"url": safe_url(self.url), "healthy": self.healthy, "live_mounts": self.live_mounts,
                "mount_id": self.mount_id, "calls": self.calls, "failures": self.failures,
                "deadline_hits": self.deadline_hits, "recoveries": self.recoveries,
                "last_error": self.last_error, "groups": self.snapshot, "mounts": self.fleet[:50]}

    # -- tokens -------------------------------------------------------------------------

    def tokens(self) -> SharedTokens:
        return SharedTokens(self)


class SharedTokens:
    """The fleet's one token pair: read by all, renewed by one mount at a time under a lock.

    Whoever can read this Redis can act as the user until the session ends: the README
    says to keep it private (ACL user, TLS, no other tenants).
    """

    LOCK_TTL = 30.0  # a renewer that died frees the lock after this
    LOCK_WAIT = 40.0  # a mount gives up waiting (and renews on its own) after this

    def __init__(self, budget: SharedBudget) -> None:
        self.budget = budget
        self._key = budget._key("tokens")
        self._lock_key = budget._key("tokens", "lock")

    async def load(self) -> dict[str, Any] | None:
        """The stored token JSON, None if none (or Redis failed)."""
        if not self.budget.usable():
            return None
        raw = await self.budget._call(self.budget._redis.get, self._key)
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def save(self, data: dict[str, Any], ttl: float) -> None:
        if self.budget.usable():
            await self.budget._call(self.budget._redis.set, self._key, json.dumps(data), px=_ms(max(ttl, 60.0)))

    async def forget(self) -> None:
        if self.budget.usable():
            await self.budget._call(self.budget._redis.delete, self._key)

    async def lock(self) -> str | None:
        """Take the renewal lock (waits while another mount renews); None: Redis failed."""
        token = secrets.token_hex(8)
        deadline = trio.current_time() + self.LOCK_WAIT
        while trio.current_time() < deadline:
            if not self.budget.usable():
                return None
            got = await self.budget._call(self.budget._redis.set, self._lock_key, token, nx=True,
                                          px=_ms(self.LOCK_TTL))
            if got:
                return token
            if not self.budget.healthy:
                return None
            await trio.sleep(0.05 + random.random() * 0.05)
        log.warning("token renewal lock still held by another mount after %.0f s; renewing alone",
                    self.LOCK_WAIT)
        return None

    async def unlock(self, token: str) -> None:
        with trio.CancelScope(shield=True):
            await self.budget._call(self.budget._scripts["unlock"], keys=[self._lock_key], args=[token])


def _ms(seconds: float) -> int:
    return max(0, int(math.ceil(seconds * 1000)))
