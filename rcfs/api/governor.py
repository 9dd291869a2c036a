"""Client-side pacing for RingCentral's rate-limit groups (CONTRACT §4).

The server counts requests per (user, app, group) over a sliding window and, once a
group is over its limit, rejects everything in it for a penalty that every rejected
request restarts. The cheapest 429 is the one never provoked, so `RateGovernor` keeps
its own log of requests per group and makes callers wait for a free slot.

How a slot is accounted: a request occupies a slot from the moment it is sent. Its
slot frees `window` seconds after its *answer* arrived (not after it was sent): the
server saw the request somewhere between send and answer, so the answer time is a safe
upper bound whatever the network or server queueing did. A request that never got an
answer (transport error) is treated the same from the moment it failed.

What the server says wins over what we believe: `X-Rate-Limit-Limit`/`-Window` replace
the defaults, `X-Rate-Limit-Remaining` lower than our own count (another client of the
same user+app, a previous mount) adds placeholder entries, and a 429 blocks the whole
group until `Retry-After` has passed. Until a group's headers have been seen once,
only one request of that group is in flight, so a server configured below our defaults
cannot be overrun by an opening burst (a server that sends no such headers at all
is then paced with the defaults).

Priority: waiters of one group are served in (priority, arrival) order, and
READAHEAD/BACKGROUND requests only proceed while more than a reserve of the limit is
free, so speculation never starves a reader that is blocked on data.

A fleet (issue 18, `shared`: rcfs.api.shared_budget): the waiter at the head of a group's
queue also reserves its slot in the fleet's Redis log, sleeps until the slot's time and
sends. Only that head joins the fleet's queue (served in (priority, arrival) order across
all mounts), so a request on one mount waits behind at most one waiter of each other mount.
READAHEAD/BACKGROUND only take a slot that is free now and leave the reserve. While
Redis fails, the mount paces alone at its share (limit / live mounts last seen), after
holding its group for one window (the server's window may be full of the others'
requests); once Redis answers again, it adds what it sent alone to the shared log and
keeps to its share for one more window (peers still alone then are within theirs).
"""

from __future__ import annotations

import bisect
from contextvars import ContextVar
import dataclasses
import email.utils
import enum
import itertools
import logging
import math
import time
from typing import TYPE_CHECKING, Callable, Mapping

import trio

if TYPE_CHECKING:
    from .shared_budget import SharedBudget

log = logging.getLogger(__name__)

__all__ = ["Budget", "Group", "Priority", "RateGovernor", "Ticket", "DEFAULT_LIMITS"]


class Priority(enum.IntEnum):
    """Lower value goes first when a rate-limit group is short of budget."""

    FOREGROUND = 0  # a reader is blocked on this (read(), open(), readdir())
    OUTBOX = 1  # sending what the user wrote: after waiting readers, but uses the whole budget
    READAHEAD = 2  # speculative: yields when the group's budget runs low
    BACKGROUND = 3  # refreshes, probes


class Group(enum.Enum):
    """RingCentral usage-plan groups; the value is the lower-case header spelling."""

    LIGHT = "light"
    MEDIUM = "medium"
    HEAVY = "heavy"
    AUTH = "auth"
    NONE = "nothrottling"  # not rate limited: never paced

    @classmethod
    def from_header(cls, value: str | None) -> Group | None:
        """Map an `X-Rate-Limit-Group` value (any case) to a Group, None if unknown."""
        if not value:
            return None
        v = value.strip().lower()
        for g in cls:
            if g.value == v:
                return g
        return None


DEFAULT_LIMITS: dict[Group, int] = {
    Group.LIGHT: 50,
    Group.MEDIUM: 40,
    Group.HEAVY: 10,
    Group.AUTH: 5,
}
DEFAULT_WINDOW = 60.0


@dataclasses.dataclass(frozen=True)
class Budget:
    """A snapshot of one group's pacing state, for callers deciding what to ask for."""

    group: Group
    limit: int
    window: float
    used: int  # slots occupied now (in flight + answered within the window)
    free: int  # limit - used, never below 0
    blocked_for: float  # seconds until a 429 penalty ends (0 when not blocked)
    learned: bool  # True once the server's headers for this group were seen
    waiting: int  # callers queued for a slot


class Ticket:
    """One granted slot: hand it back via `observe()` (answer) or `release()` (no answer)."""

    __slots__ = ("group", "sent_at", "done", "member")

    def __init__(self, group: Group, sent_at: float, member: str | None = None) -> None:
        self.group = group
        self.sent_at = sent_at
        self.done = False
        self.member = member  # its reservation in the fleet's log (None: paced alone)

    def __repr__(self) -> str:
        return f"Ticket({self.group.value}, sent_at={self.sent_at:.3f}, done={self.done})"


class _GroupState:
    """Per-group bookkeeping; only `RateGovernor` touches it."""

    def __init__(self, group: Group, limit: int, window: float) -> None:
        self.group = group
        self.limit = limit
        self.window = window
        self.learned = False  # the server's rate-limit headers for this group were seen
        self.probed = False  # at least one answer came back (with or without headers)
        self.in_flight = 0
        self.expiries: list[float] = []  # sorted times at which answered slots free up
        self.blocked_until = -math.inf
        self.waiters: list[tuple[int, int]] = []  # sorted (priority, seq)
        self.changed = trio.Event()
        # fleet (shared budget) only:
        self.hold_until = -math.inf  # Redis just failed: the server's window may be full
        self.grace_until = -math.inf  # Redis just came back: stay within our share a while
        self.alone: list[float] = []  # answer times of requests sent without the fleet
        self.last_sent = -math.inf  # (a fleet larger than the limit spaces its fallback sends)

    def notify(self) -> None:
        """Wake every waiter of this group so it re-evaluates its turn."""
        self.changed.set()
        self.changed = trio.Event()

    def expire(self, now: float) -> None:
        """Drop answered slots whose lifetime has ended."""
        cut = bisect.bisect_right(self.expiries, now)
        if cut:
            del self.expiries[:cut]

    def used(self, now: float) -> int:
        """Slots occupied now: in flight plus answered within the window."""
        self.expire(now)
        return self.in_flight + len(self.expiries)


# Seconds the current task has spent waiting in `acquire`, for callers whose own time limits
# must not count that wait: the reader's "no new byte for progress_timeout" (a Heavy slot can
# be a whole window away, 60 s in production, so a retry after a failure could otherwise end a
# download that was only waiting its turn). A task opts in by setting a one-item list; trio
# gives each task its own context, so concurrent downloads never add to each other's meter.
slot_wait_meter: ContextVar[list[float] | None] = ContextVar("slot_wait_meter", default=None)


class RateGovernor:
    """Paces requests per rate-limit group so that a normal workload never sees a 429.

    Usage (the client does this around every HTTP request):

        ticket = await governor.acquire(Group.MEDIUM, Priority.FOREGROUND)
        try:
            response = await send()
        except TransportError:
            governor.release(ticket)
            raise
        governor.observe(ticket, response.status_code, response.headers)

    **Parameters:**
    * `limits`: starting limit per group until the server's headers say otherwise.
    * `window`: starting window in seconds (60).
    * `reserve`: share of the limit that READAHEAD/BACKGROUND requests leave untouched.
    * `margin`: extra seconds (plus 1 % of the window) added to every slot's lifetime and
      to every 429 penalty, for timer granularity.
    * `clock`: monotonic time source (defaults to `trio.current_time`, so MockClock works).
    """

    def __init__(
        self,
        *,
        limits: Mapping[Group, int] | None = None,
        window: float = DEFAULT_WINDOW,
        reserve: float = 0.2,
        margin: float = 0.02,
        clock: Callable[[], float] | None = None,
        shared: SharedBudget | None = None,
    ) -> None:
        merged = dict(DEFAULT_LIMITS)
        if limits:
            merged.update(limits)
        self._reserve_share = reserve
        self._margin = margin
        self._clock = clock or trio.current_time
        self._seq = itertools.count()
        self._groups = {
            g: _GroupState(g, merged[g], window) for g in Group if g is not Group.NONE
        }
        self._warned_headers = False
        self.shared = shared
        if shared is not None:
            # (Redis down from the start: no hold, which would stall the mount's login and
            # first listing for a default window of 60 s; it paces at its share at once.)
            shared.on_state_change = self._shared_state

    # -- public API ---------------------------------------------------------------

    async def acquire(self, group: Group, priority: Priority = Priority.FOREGROUND) -> Ticket:
        """Wait until a request of `group` may be sent now, and count it as sent."""
        if group is Group.NONE:
            return Ticket(group, self._clock())
        st = self._groups[group]
        wait_began = self._clock()
        key = (int(priority), next(self._seq))
        bisect.insort(st.waiters, key)
        st.notify()  # a waiter behind us may now be behind a better one
        member: str | None = None
        try:
            while True:
                delay = self._delay(st, key, priority, self._clock())
                if delay > 0:
                    event = st.changed
                    with trio.move_on_after(delay):
                        await event.wait()
                    continue
                if self.shared is None or not self.shared.usable():
                    break
                member = await self._reserve_shared(st, priority, f"w{key[1]}")
                if member is not None:
                    break
        except BaseException:
            if self.shared is not None:
                self.shared.leave(group.value, f"w{key[1]}")
                if member is not None:
                    self.shared.cancel(group.value, member)
            raise
        finally:
            st.waiters.remove(key)
            st.notify()
        st.in_flight += 1
        st.last_sent = self._clock()
        meter = slot_wait_meter.get()
        if meter is not None:
            meter[0] += st.last_sent - wait_began
        return Ticket(group, self._clock(), member)

    async def _reserve_shared(self, st: _GroupState, priority: Priority, waiter: str) -> str | None:
        """The head waiter's turn in the fleet: a reservation's member, or None to look again
        (after waiting for what Redis said, or at once when Redis failed: then `_delay`
        paces alone)."""
        shared = self.shared
        assert shared is not None
        group = st.group.value
        if st.alone and shared.healthy and not await self._push_alone(st):
            return None
        low = priority >= Priority.READAHEAD
        # Somebody waits for a FOREGROUND/OUTBOX request: reserve the next slot, however
        # far. Speculation takes only a slot that is free now (and leaves the reserve).
        max_wait = 0.0 if low else 4 * max(st.window, DEFAULT_WINDOW)
        res = await shared.acquire(group, limit=st.limit, window=st.window, max_wait=max_wait,
                                   low=low, reserve=self._reserve_share, waiter=waiter, priority=int(priority))
        if res is None:
            return None
        if res.limit > 0 and res.limit != st.limit and not st.learned:
            st.limit = res.limit  # another mount learned it from the server
        if res.granted:
            if res.wait <= 0:
                return res.member
            await trio.sleep(res.wait)
            # A 429 may have come in (here or elsewhere) while we slept.
            left = await shared.penalty_left(group)
            if self._clock() >= st.blocked_until and not left:
                return res.member
            shared.cancel(group, res.member)
            if left:
                self._block(st, left)
            return None
        if res.why == "penalty":
            self._block(st, res.wait)
            return None
        event = st.changed
        # At most a second between asks: a waiter that stops asking loses its place.
        with trio.move_on_after(min(res.wait, 1.0)):
            await event.wait()
        return None

    async def _push_alone(self, st: _GroupState) -> bool:
        assert self.shared is not None
        now = self._clock()
        live = [now - t for t in st.alone if now - t < st.window + self._slack(st)]
        if not await self.shared.push(st.group.value, live):
            return False
        st.alone.clear()
        return True

    def _shared_state(self, healthy: bool) -> None:
        """Redis failed or answers again (called by the SharedBudget)."""
        now = self._clock()
        for st in self._groups.values():
            if healthy:
                st.grace_until = now + st.window + self._slack(st)
            else:
                st.hold_until = max(st.hold_until, now + st.window + self._slack(st))
            st.notify()

    def _block(self, st: _GroupState, seconds: float) -> None:
        until = self._clock() + max(0.0, seconds)
        if until > st.blocked_until:
            st.blocked_until = until
            st.notify()

    def observe(self, ticket: Ticket, status: int, headers: Mapping[str, str]) -> None:
        """Hand back `ticket` with the answer's status and headers; learn from them.

        Returns nothing; a 429 blocks the answering group until Retry-After has passed
        (the caller decides whether to retry, and its retry then waits in `acquire`).
        """
        now = self._clock()
        group = Group.from_header(headers.get("x-rate-limit-group")) or ticket.group
        if group is Group.NONE:
            self._finish(ticket, now)
            return
        st = self._groups[group]
        limit = self._int_header(headers, "x-rate-limit-limit")
        window = self._float_header(headers, "x-rate-limit-window")
        remaining = self._int_header(headers, "x-rate-limit-remaining")
        if limit is not None and limit > 0:
            if limit != st.limit:
                log.debug("rate group %s: limit %d -> %d", group.value, st.limit, limit)
            st.limit = limit
            st.learned = True
        if window is not None and window > 0:
            if window != st.window:
                log.debug("rate group %s: window %.3g -> %.3g s", group.value, st.window, window)
            st.window = window
            st.learned = True
        # After learning: the answered slot lives for the server's window, not our default.
        self._finish(ticket, now)
        if self.shared is not None and limit is not None and limit > 0 and status != 429:
            self.shared.headers(group.value, limit=st.limit, remaining=remaining, window=st.window)
        st.probed = True
        if ticket.group is not group and ticket.group is not Group.NONE:
            self._groups[ticket.group].probed = True
            self._groups[ticket.group].notify()
        if remaining is not None and status != 429:
            if self.shared is None:
                self._reconcile(st, remaining, now)
            elif remaining <= 0 and ticket.member is None:
                # Alone in a fleet: the others' requests fill the server's window too.
                self._block(st, st.window + self._slack(st))
        if status == 429:
            wait = self.retry_after(headers)
            if wait is None:
                # Contract §4.3: no Retry-After means "wait at least 30 s" on the real API;
                # a learned window (tests scale it down) is the better guess when we have one.
                wait = st.window if st.learned else 30.0
            self.penalize(group, wait)
        st.notify()

    def release(self, ticket: Ticket) -> None:
        """Hand back `ticket` for a request that got no answer (it may have arrived)."""
        now = self._clock()
        self._finish(ticket, now)
        if ticket.group is not Group.NONE:
            self._groups[ticket.group].notify()

    def penalize(self, group: Group, seconds: float) -> None:
        """Send nothing in `group` for `seconds` (a 429's Retry-After)."""
        if group is Group.NONE:
            return
        st = self._groups[group]
        until = self._clock() + max(0.0, seconds) + self._slack(st)
        if until > st.blocked_until:
            st.blocked_until = until
        if self.shared is not None:
            self.shared.penalize(group.value, max(0.0, seconds) + self._slack(st))
        log.warning("rate group %s: 429, sending nothing for %.1f s", group.value, seconds)
        st.notify()

    def budget(self, group: Group) -> Budget:
        """A snapshot of `group`'s state (free slots, penalty, learned limits)."""
        if group is Group.NONE:
            return Budget(group, 0, 0.0, 0, 0, 0.0, True, 0)
        st = self._groups[group]
        now = self._clock()
        used = st.used(now)
        return Budget(
            group=group,
            limit=st.limit,
            window=st.window,
            used=used,
            free=max(0, st.limit - used),
            blocked_for=max(0.0, st.blocked_until - now),
            learned=st.learned,
            waiting=len(st.waiters),
        )

    def reserve(self, group: Group) -> int:
        """Slots READAHEAD/BACKGROUND requests of `group` leave free for FOREGROUND."""
        return self._reserve_of(self._groups[group])

    @staticmethod
    def retry_after(headers: Mapping[str, str]) -> float | None:
        """Seconds from a `Retry-After` header (delta-seconds or HTTP date), None if absent."""
        raw = headers.get("retry-after")
        if raw is None:
            return None
        raw = raw.strip()
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        return max(0.0, when.timestamp() - time.time())

    # -- internals -----------------------------------------------------------------

    def _slack(self, st: _GroupState) -> float:
        return self._margin + 0.01 * st.window

    def _reserve_of(self, st: _GroupState) -> int:
        return min(max(1, math.ceil(self._reserve_share * st.limit)), max(0, st.limit - 1))

    def _limit_now(self, st: _GroupState, now: float) -> int:
        """The limit this mount paces to: the group's, or its share of it when the fleet's
        Redis failed (or answered again only lately)."""
        shared = self.shared
        if shared is None or (shared.healthy and now >= st.grace_until):
            return st.limit
        return max(1, st.limit // max(1, shared.live_mounts))

    def _delay(self, st: _GroupState, key: tuple[int, int], priority: Priority, now: float) -> float:
        """Seconds until `key` may go (0: now; inf: until something changes)."""
        if now < st.blocked_until:
            return st.blocked_until - now
        if self.shared is not None and not self.shared.healthy and now < st.hold_until:
            return st.hold_until - now
        if st.waiters[0] != key:
            return math.inf
        if not st.probed and st.in_flight > 0:
            return math.inf
        shared = self.shared
        if shared is not None and not shared.healthy and shared.live_mounts > st.limit:
            # More mounts than slots: a share below one request per window is one request
            # per (mounts / limit) windows.
            gap = st.window * shared.live_mounts / st.limit + self._slack(st)
            if now < st.last_sent + gap:
                return st.last_sent + gap - now
        used = st.used(now)
        limit = self._limit_now(st, now)
        reserve = min(self._reserve_of(st), max(0, limit - 1)) if priority >= Priority.READAHEAD else 0
        allowed = limit - reserve  # this request may go while used < allowed
        if used < allowed:
            return 0.0
        need = used - allowed + 1  # slots that must free up first
        if need <= len(st.expiries):
            return max(st.expiries[need - 1] - now, 0.001)
        return math.inf  # waits for in-flight requests to be answered

    def _finish(self, ticket: Ticket, now: float) -> None:
        if ticket.done or ticket.group is Group.NONE:
            ticket.done = True
            return
        ticket.done = True
        st = self._groups[ticket.group]
        st.in_flight = max(0, st.in_flight - 1)
        bisect.insort(st.expiries, now + st.window + self._slack(st))
        if self.shared is not None:
            if ticket.member is not None:
                self.shared.commit(ticket.group.value, ticket.member, st.window)
            else:
                st.alone.append(now)
                del st.alone[:-1000]

    def _reconcile(self, st: _GroupState, remaining: int, now: float) -> None:
        """Add placeholder entries when the server has counted more than we have."""
        server_used = st.limit - max(0, remaining)
        ours = st.used(now)
        extra = server_used - ours
        if extra > 0:
            log.debug(
                "rate group %s: server counts %d, we count %d; holding %d more slots",
                st.group.value, server_used, ours, extra,
            )
            until = now + st.window + self._slack(st)
            for _ in range(extra):
                bisect.insort(st.expiries, until)

    def _int_header(self, headers: Mapping[str, str], name: str) -> int | None:
        raw = headers.get(name)
        if raw is None:
            return None
        try:
            return int(raw.strip())
        except ValueError:
            self._warn_header(name)
            return None

    def _float_header(self, headers: Mapping[str, str], name: str) -> float | None:
        raw = headers.get(name)
        if raw is None:
            return None
        try:
            value = float(raw.strip())
        except ValueError:
            self._warn_header(name)
            return None
        return value if math.isfinite(value) else None

    def _warn_header(self, name: str) -> None:
        if not self._warned_headers:
            self._warned_headers = True
            log.warning("ignoring malformed rate-limit header %s", name)
