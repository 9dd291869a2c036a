"""RateGovernor unit tests on trio's virtual clock (autojump: minutes pass instantly).

A simulated server applies the contract's sliding-window rule to *receive* times, with
random network delays in both directions, and the tests assert the governor never lets
it answer 429 while still using the budget (the runs take as long as pacing requires).
"""

from __future__ import annotations

import random

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from rcfs.api.governor import Group, Priority, RateGovernor


def headers(limit: int, window: float, remaining: int | None = None, group: str = "light", **extra: str) -> dict[str, str]:
    h = {"x-rate-limit-group": group, "x-rate-limit-limit": str(limit), "x-rate-limit-window": str(window)}
    if remaining is not None:
        h["x-rate-limit-remaining"] = str(remaining)
    h.update(extra)
    return h


class SimServer:
    """Sliding-window limiter on receive times, like the real API (CONTRACT §4.1)."""

    def __init__(self, limit: int, window: float, rng: random.Random, max_delay: float = 0.3) -> None:
        self.limit, self.window, self.rng, self.max_delay = limit, window, rng, max_delay
        self.received: list[float] = []
        self.rejected = 0

    async def call(self, gov: RateGovernor, group: Group, priority: Priority = Priority.FOREGROUND) -> float:
        ticket = await gov.acquire(group, priority)
        sent = trio.current_time()
        await trio.sleep(self.rng.uniform(0, self.max_delay))
        now = trio.current_time()
        recent = [t for t in self.received if t > now - self.window]
        if len(recent) >= self.limit:
            self.rejected += 1
            status, remaining = 429, 0
        else:
            self.received.append(now)
            status, remaining = 200, self.limit - len(recent) - 1
        await trio.sleep(self.rng.uniform(0, self.max_delay))
        gov.observe(ticket, status, headers(self.limit, self.window, remaining, group.value))
        return sent


async def test_burst_of_three_times_the_limit_is_paced_without_429(autojump_clock):
    gov = RateGovernor()
    server = SimServer(limit=10, window=60, rng=random.Random(1))
    sent: list[float] = []

    async def one() -> None:
        sent.append(await server.call(gov, Group.HEAVY))

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(one)
    assert server.rejected == 0
    assert len(server.received) == 30
    # 30 requests at 10 per 60 s: the last batch cannot start before two windows passed.
    assert max(sent) - min(sent) >= 120


@settings(max_examples=25, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=12),
    n=st.integers(min_value=1, max_value=40),
    seed=st.integers(min_value=0, max_value=10_000),
    max_delay=st.floats(min_value=0.0, max_value=3.0),
)
def test_random_workloads_never_see_429(limit, n, seed, max_delay):
    async def main() -> None:
        gov = RateGovernor(limits={Group.MEDIUM: limit})
        rng = random.Random(seed)
        server = SimServer(limit=limit, window=10, rng=rng, max_delay=max_delay)

        async def one(delay: float, prio: Priority) -> None:
            await trio.sleep(delay)
            await server.call(gov, Group.MEDIUM, prio)

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one, rng.uniform(0, 30), rng.choice(list(Priority)))
        assert server.rejected == 0
        assert len(server.received) == n

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_unlearned_group_sends_one_at_a_time(autojump_clock):
    gov = RateGovernor()
    first = await gov.acquire(Group.LIGHT)
    with trio.move_on_after(5) as scope:
        await gov.acquire(Group.LIGHT)
    assert scope.cancelled_caught  # no headers seen yet: the second waits for the first answer
    gov.observe(first, 200, headers(50, 60, 49))
    with trio.fail_after(0.1):
        await gov.acquire(Group.LIGHT)


async def test_answer_without_headers_ends_the_probe(autojump_clock):
    gov = RateGovernor()
    first = await gov.acquire(Group.MEDIUM)
    gov.observe(first, 503, {})  # e.g. a proxy's answer: no rate-limit headers
    assert not gov.budget(Group.MEDIUM).learned
    with trio.fail_after(0.1):
        for _ in range(39):  # the default Medium limit, minus the answered one
            await gov.acquire(Group.MEDIUM)
    with trio.move_on_after(30) as scope:
        await gov.acquire(Group.MEDIUM)
    assert scope.cancelled_caught


async def test_headers_teach_limit_and_window(autojump_clock):
    gov = RateGovernor()
    t = await gov.acquire(Group.HEAVY)
    gov.observe(t, 200, headers(3, 2.0, 2, "heavy"))
    b = gov.budget(Group.HEAVY)
    assert (b.limit, b.window, b.learned, b.used, b.free) == (3, 2.0, True, 1, 2)
    start = trio.current_time()
    for _ in range(5):
        gov.observe(await gov.acquire(Group.HEAVY), 200, headers(3, 2.0, None, "heavy"))
    # 6 requests at 3 per 2 s: the 4th must wait for the 1st answer's slot to expire.
    assert trio.current_time() - start >= 2.0


async def test_429_blocks_the_group_for_retry_after(autojump_clock):
    gov = RateGovernor()
    t = await gov.acquire(Group.MEDIUM)
    gov.observe(t, 200, headers(40, 60, 39, "medium"))
    t = await gov.acquire(Group.MEDIUM)
    start = trio.current_time()
    gov.observe(t, 429, headers(40, 60, 0, "medium", **{"retry-after": "7"}))
    assert gov.budget(Group.MEDIUM).blocked_for >= 7
    other = await gov.acquire(Group.LIGHT)  # other groups are not affected
    assert trio.current_time() == start
    gov.release(other)
    await gov.acquire(Group.MEDIUM, Priority.FOREGROUND)
    assert trio.current_time() - start >= 7


async def test_429_without_retry_after_waits_a_window(autojump_clock):
    gov = RateGovernor()
    t = await gov.acquire(Group.LIGHT)
    gov.observe(t, 200, headers(50, 4, 49))
    t = await gov.acquire(Group.LIGHT)
    start = trio.current_time()
    gov.observe(t, 429, headers(50, 4, 0))
    await gov.acquire(Group.LIGHT)
    assert trio.current_time() - start >= 4


async def test_remaining_zero_is_honoured_even_if_we_sent_little(autojump_clock):
    gov = RateGovernor()
    t = await gov.acquire(Group.LIGHT)
    start = trio.current_time()
    gov.observe(t, 200, headers(50, 30, 0))  # someone else used the whole budget
    assert gov.budget(Group.LIGHT).free == 0
    await gov.acquire(Group.LIGHT)
    assert trio.current_time() - start >= 30


async def test_foreground_goes_before_readahead(autojump_clock):
    gov = RateGovernor()
    t = await gov.acquire(Group.HEAVY)
    gov.observe(t, 200, headers(2, 10, 1, "heavy"))
    gov.observe(await gov.acquire(Group.HEAVY), 200, headers(2, 10, 0, "heavy"))
    order: list[str] = []

    async def want(name: str, prio: Priority) -> None:
        ticket = await gov.acquire(Group.HEAVY, prio)
        order.append(name)
        gov.observe(ticket, 200, headers(2, 10, None, "heavy"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(want, "ra1", Priority.READAHEAD)
        nursery.start_soon(want, "bg", Priority.BACKGROUND)
        await trio.sleep(1)
        nursery.start_soon(want, "fg1", Priority.FOREGROUND)
        nursery.start_soon(want, "fg2", Priority.FOREGROUND)
    assert set(order[:2]) == {"fg1", "fg2"}
    assert order.index("ra1") < order.index("bg")


async def test_readahead_leaves_a_reserve_for_foreground(autojump_clock):
    gov = RateGovernor()
    t = await gov.acquire(Group.HEAVY)
    gov.observe(t, 200, headers(10, 60, 9, "heavy"))
    assert gov.reserve(Group.HEAVY) == 2
    start = trio.current_time()
    granted = 1
    with trio.move_on_after(30):
        while True:
            gov.observe(await gov.acquire(Group.HEAVY, Priority.READAHEAD), 200, headers(10, 60, None, "heavy"))
            granted += 1
    assert granted == 8  # read-ahead stopped with 2 of 10 slots left
    await gov.acquire(Group.HEAVY, Priority.FOREGROUND)
    assert trio.current_time() - start == pytest.approx(30)  # the reader got a slot at once


async def test_cancelled_waiter_does_not_block_the_queue(autojump_clock):
    gov = RateGovernor()
    t = await gov.acquire(Group.AUTH)
    gov.observe(t, 200, headers(1, 5, 0, "auth"))
    with trio.move_on_after(1):
        await gov.acquire(Group.AUTH)
    with trio.fail_after(10):
        await gov.acquire(Group.AUTH)


def test_retry_after_parsing():
    assert RateGovernor.retry_after({"retry-after": "12"}) == 12
    assert RateGovernor.retry_after({}) is None
    assert RateGovernor.retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0
    assert RateGovernor.retry_after({"retry-after": "soon"}) is None


def test_group_from_header():
    assert Group.from_header("Heavy") is Group.HEAVY
    assert Group.from_header("light") is Group.LIGHT
    assert Group.from_header("weird") is None


async def test_fleet_fallback_share_below_one_request_spaces_the_sends(autojump_clock):
    """A fleet larger than the limit, Redis down: one request per (mounts / limit) windows."""

    from rcfs.api.shared_budget import SharedBudget

    # A real client of a Redis that is not there; it had last seen 20 live mounts.
    fleet = SharedBudget("unix:///nonexistent/redis.sock", scope="t")
    fleet.healthy = False
    fleet.live_mounts = 20
    gov = RateGovernor(limits={Group.HEAVY: 10}, window=60.0, margin=0.0, shared=fleet)
    sent = []
    for _ in range(3):
        t = await gov.acquire(Group.HEAVY)
        sent.append(trio.current_time())
        gov.observe(t, 200, {"x-rate-limit-group": "heavy", "x-rate-limit-limit": "10",
                             "x-rate-limit-window": "60", "x-rate-limit-remaining": "5"})
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert all(g >= 120.0 for g in gaps)  # 20 mounts / 10 per window: one per 2 windows each
