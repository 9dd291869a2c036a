"""Unit tests of `rcfs.reader` against an in-memory content client.

`FakeClient` implements exactly the `fetch`/`stream` interface of the real client
(`rcfs.api.client`) with switches for the answers a media host may give: short 206s,
200 instead of 206, 416 at the end, dropped connections, byte-capped bodies, missing
totals, latency, and a gate that holds a stream after its first piece. Every request is
recorded so tests can count them.
"""

from __future__ import annotations

import dataclasses
import math
import random
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from rcfs.api.client import Chunk, Priority, Stream
from rcfs.api.governor import Group, RateGovernor
from rcfs.api.errors import ApiError, NetworkError, RangeNotSatisfiable, ServerError
from rcfs.reader import Reader, Source

KiB = 2**10
MiB = 2**20
URL = "https://media.example.test/restapi/v1.0/account/1/recording/7/content"


def content(size: int, seed: int = 1) -> bytes:
    """Deterministic pseudo-random bytes (a wrong offset cannot go unnoticed)."""
    return random.Random(seed).randbytes(size)


@dataclasses.dataclass
class Req:
    kind: str  # "fetch" or "stream"
    url: str
    start: int
    end: int | None
    priority: Priority


class _FakeStream(Stream):
    """What `FakeClient.stream` yields: headers plus a paced body iterator."""

    def __init__(self, client: FakeClient, data: bytes, start: int, body_from: int, total: int | None):
        self.start = body_from
        self.total = total
        self.content_type = "audio/mpeg"
        self._client = client
        self._data = data
        self._pos = body_from
        self._end = len(data) if client.stream_cap is None else min(len(data), start + client.stream_cap)
        self._dropping = False
        self._first = True

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self

    def batch(self, nbytes: int, boundary: int | None = None) -> None:
        self._client.hints.append((self._pos, nbytes, boundary))

    def __aiter__(self) -> _FakeStream:
        return self

    async def __anext__(self) -> bytes:
        c = self._client
        if self._dropping:
            raise NetworkError("connection dropped")
        if not self._first and c.gate is not None:
            await c.gate.wait()
        self._first = False
        if c.piece_latency:
            await trio.sleep(c.piece_latency)
        else:
            await trio.lowlevel.checkpoint()
        if self._pos >= self._end:
            raise StopAsyncIteration
        stop = min(self._pos + c.piece, self._end)
        for d in sorted(c.drop_at):
            if self._pos < d <= stop:
                c.drop_at.remove(d)
                stop = d
                self._dropping = True
                break
        if c.drop_every and self._pos + c.piece >= self._next_drop():
            self._dropping = True
        piece = self._data[self._pos : stop]
        self._pos = stop
        c.pulled_to = max(c.pulled_to, stop)
        return piece

    def _next_drop(self) -> int:
        assert self._client.drop_every
        return (self._pos // self._client.drop_every + 1) * self._client.drop_every


class FakeClient:
    """In-memory media host implementing the client's `fetch`/`stream` interface."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[Req] = []
        self.short: int | None = None  # 206 answers carry at most this many bytes
        self.ignore_range = False  # answer 200 with the whole body
        self.omit_total = False  # no Content-Range total / Content-Length
        self.stream_cap: int | None = None  # stream bodies end after this many bytes
        self.drop_at: list[int] = []  # absolute offsets where a stream connection drops (once)
        self.drop_every: int | None = None  # drop every stream after ~this many bytes
        self.fail_with: ApiError | None = None  # every request raises this
        self.latency = 0.0  # per request, before headers
        self.piece_latency = 0.0  # per body piece
        self.piece = 64 * KiB
        self.gate: trio.Event | None = None  # when set, bodies stall after their first piece
        self.open_streams = 0
        self.pulled_to = 0  # furthest offset any stream body handed out
        self.hints: list[tuple[int, int, int | None]] = []  # Stream.batch calls: (body at, nbytes, boundary)

    def count(self, kind: str | None = None) -> int:
        return sum(1 for r in self.requests if kind is None or r.kind == kind)

    async def _answer(self, req: Req) -> tuple[bytes, int | None]:
        """Log the request, wait the latency, and fail it as configured: (data, total)."""
        self.requests.append(req)
        await trio.sleep(self.latency)
        if self.fail_with is not None:
            raise self.fail_with
        data = self.files[req.url]
        total = None if self.omit_total else len(data)
        if req.start >= len(data):
            raise RangeNotSatisfiable("range not satisfiable", total=total)
        return data, total

    async def fetch(self, url: str, *, start: int, end: int, priority: Priority,
                    on_piece: Callable[[int, bytes], None] | None = None) -> Chunk:
        data, total = await self._answer(Req("fetch", url, start, end, priority))
        if self.ignore_range:
            return Chunk(data, 0, len(data), "audio/mpeg")
        stop = min(end + 1, len(data))
        if self.short is not None:
            stop = min(stop, start + self.short)
        if on_piece is not None:  # (the whole answer as one piece)
            on_piece(start, data[start:stop])
        return Chunk(data[start:stop], start, total, "audio/mpeg")

    @asynccontextmanager
    async def stream(self, url: str, *, start: int, priority: Priority) -> AsyncIterator[_FakeStream]:
        data, total = await self._answer(Req("stream", url, start, None, priority))
        body_from = 0 if self.ignore_range else start
        self.open_streams += 1
        try:
            yield _FakeStream(self, data, start, body_from, total)
        finally:
            self.open_streams -= 1


@asynccontextmanager
async def running(reader: Reader) -> AsyncIterator[Reader]:
    async with trio.open_nursery() as nursery:
        await nursery.start(reader.run)
        try:
            yield reader
        finally:
            nursery.cancel_scope.cancel()


def make(size: int, seed: int = 1, **kw: object) -> tuple[FakeClient, Reader, bytes]:
    data = content(size, seed)
    client = FakeClient({URL: data})
    kw.setdefault("block_size", 1 * MiB)
    kw.setdefault("cache_bytes", 64 * MiB)
    kw.setdefault("small_file_max", 4 * MiB)
    reader = Reader(client, **kw)  # type: ignore[arg-type]
    return client, reader, data


async def read_all(reader: Reader, h: int, size: int, step: int = 128 * KiB) -> bytes:
    out = bytearray()
    for off in range(0, size + step, step):
        out += await reader.read(h, off, step)
    return bytes(out)


# ----------------------------------------------------------------- request economy


async def test_small_file_is_one_request_and_reread_is_free() -> None:
    client, reader, data = make(3 * MiB + 123)
    async with running(reader):
        h = await reader.open(Source("msg:1:1", URL, len(data)))
        assert client.count() == 0  # a known size costs nothing at open
        assert await read_all(reader, h, len(data)) == data
        assert client.count() == 1
        r = client.requests[0]
        assert (r.kind, r.start, r.end, r.priority) == ("fetch", 0, len(data) - 1, Priority.FOREGROUND)
        reader.close(h)
        h2 = await reader.open(Source("msg:1:1", URL, len(data)))
        assert await read_all(reader, h2, len(data), step=100_000) == data
        assert client.count() == 1
        st = reader.stats
        assert st.requests == 1 and st.bytes_fetched == len(data) and st.cache_hits > 0


async def test_sequential_read_of_large_file_is_one_streaming_request() -> None:
    client, reader, data = make(40 * MiB + 5)
    async with running(reader):
        h = await reader.open(Source("rec:1", URL, len(data)))
        assert await read_all(reader, h, len(data)) == data
        assert [(r.kind, r.start) for r in client.requests] == [("stream", 0)]
        reader.close(h)
        h = await reader.open(Source("rec:1", URL, len(data)))
        assert await read_all(reader, h, len(data)) == data
        assert client.count() == 1  # re-read from the cache


async def test_kernel_style_out_of_order_reads_keep_the_stream() -> None:
    client, reader, data = make(24 * MiB)
    step = 128 * KiB
    offsets = list(range(0, len(data), step))
    rng = random.Random(5)
    # The kernel's async reads arrive slightly out of order: shuffle within groups of 4.
    shuffled = []
    for i in range(0, len(offsets), 4):
        group = offsets[i : i + 4]
        rng.shuffle(group)
        shuffled += group
    async with running(reader):
        h = await reader.open(Source("rec:2", URL, len(data)))
        for off in shuffled:
            assert await reader.read(h, off, step) == data[off : off + step]
        assert client.count() == 1


async def test_concurrent_kernel_reads_on_one_handle() -> None:
    client, reader, data = make(16 * MiB)
    client.piece_latency = 0.0005
    step = 128 * KiB
    got: dict[int, bytes] = {}
    async with running(reader):
        h = await reader.open(Source("rec:3", URL, len(data)))

        async def one(off: int) -> None:
            got[off] = await reader.read(h, off, step)

        for base in range(0, len(data), 4 * step):
            async with trio.open_nursery() as n:
                for off in range(base, min(base + 4 * step, len(data)), step):
                    n.start_soon(one, off)
        assert b"".join(got[o] for o in sorted(got)) == data
        assert client.count() == 1


async def test_random_access_fetches_aligned_single_blocks() -> None:
    bs = 256 * KiB
    client, reader, data = make(20 * MiB, block_size=bs, small_file_max=bs)
    rng = random.Random(9)
    blocks = rng.sample(range(len(data) // bs), 12)
    async with running(reader):
        h = await reader.open(Source("rec:4", URL, len(data)))
        for b in blocks:
            off = b * bs + rng.randrange(bs - 4096)
            assert await reader.read(h, off, 4096) == data[off : off + 4096]
        fetches = [r for r in client.requests if r.kind == "fetch"]
        assert len(fetches) == len(client.requests) == len(blocks)
        for r, b in zip(fetches, blocks):
            assert (r.start, r.end) == (b * bs, (b + 1) * bs - 1)
        # A read across a block boundary is one request for the two blocks.
        b = next(i for i in range(1, 70) if i not in blocks and i - 1 not in blocks)
        off = b * bs - 1000
        assert await reader.read(h, off, 2000) == data[off : off + 2000]
        assert (client.requests[-1].start, client.requests[-1].end) == ((b - 1) * bs, (b + 1) * bs - 1)


async def test_seek_then_sequential_switches_back_to_streaming() -> None:
    client, reader, data = make(32 * MiB)
    async with running(reader):
        h = await reader.open(Source("rec:5", URL, len(data)))
        assert await reader.read(h, 0, 128 * KiB) == data[: 128 * KiB]
        await trio.testing.wait_all_tasks_blocked()
        assert client.open_streams == 1
        off = 20 * MiB + 4096
        # Seek far away: the first stream is dropped and the block fetched with one range.
        for o in range(off, off + 3 * MiB, 128 * KiB):
            assert await reader.read(h, o, 128 * KiB) == data[o : o + 128 * KiB]
        await trio.testing.wait_all_tasks_blocked()
        kinds = [(r.kind, r.start) for r in client.requests]
        assert kinds == [("stream", 0), ("fetch", 20 * MiB), ("stream", 21 * MiB)]
        assert client.open_streams == 1
        reader.close(h)


async def test_open_with_unknown_size_costs_one_request_that_is_reused() -> None:
    learned: list[tuple[str, int]] = []
    client, reader, data = make(9 * MiB + 77, on_size=lambda k, n: learned.append((k, n)))
    async with running(reader):
        h = await reader.open(Source("rec:6", URL, None))
        assert learned == [("rec:6", len(data))]
        assert reader.known_size("rec:6") == len(data)
        assert client.count() == 1
        assert await read_all(reader, h, len(data)) == data
        assert client.count() == 1  # the open's stream served the sequential read
        reader.close(h)
        h = await reader.open(Source("rec:6", URL, None))  # size remembered now
        assert client.count() == 1


async def test_unknown_size_small_file_is_one_request() -> None:
    learned: list[int] = []
    client, reader, data = make(700 * KiB, on_size=lambda k, n: learned.append(n))
    async with running(reader):
        h = await reader.open(Source("msg:2:2", URL, None))
        assert await reader.read(h, 600 * KiB, 200 * KiB) == data[600 * KiB :]
        assert await reader.read(h, 0, 10) == data[:10]
        assert learned == [len(data)] and client.count() == 1


async def test_unknown_size_without_total_finds_the_end_with_416() -> None:
    client, reader, data = make(2 * MiB + 10)
    client.omit_total = True
    async with running(reader):
        h = await reader.open(Source("rec:7", URL, None))
        # open() waited for the end: a size unknown at open would read as an empty file
        assert reader.known_size("rec:7") == len(data)
        assert await read_all(reader, h, len(data)) == data
        assert reader.known_size("rec:7") == len(data)
        assert await reader.read(h, len(data), 10) == b""
        # one stream to the end of its body, then one answer 416 at EOF
        assert [r.kind for r in client.requests] == ["stream", "stream"]


async def test_empty_file_of_unknown_size() -> None:
    client, reader, _ = make(0)
    async with running(reader):
        h = await reader.open(Source("rec:8", URL, None))
        assert reader.known_size("rec:8") == 0
        assert await reader.read(h, 0, 4096) == b""
        assert client.count() == 1


async def test_reads_at_and_past_eof() -> None:
    client, reader, data = make(5 * MiB + 3)
    async with running(reader):
        h = await reader.open(Source("rec:9", URL, len(data)))
        assert await reader.read(h, len(data) - 2, 100) == data[-2:]
        assert await reader.read(h, len(data), 100) == b""
        assert await reader.read(h, len(data) + 5 * MiB, 100) == b""
        assert await reader.read(h, 0, 0) == b""


# ----------------------------------------------------------------- partial answers


async def test_short_206_answers_are_continued() -> None:
    client, reader, data = make(3 * MiB)
    client.short = 100_000
    async with running(reader):
        h = await reader.open(Source("msg:3:3", URL, len(data)))
        assert await reader.read(h, 2 * MiB + 5, 900_000) == data[2 * MiB + 5 : 2 * MiB + 900_005]
        assert await read_all(reader, h, len(data)) == data
        assert client.count() == math.ceil(len(data) / 100_000)
        starts = [r.start for r in client.requests]
        assert starts == list(range(0, len(data), 100_000))


async def test_capped_stream_bodies_are_continued() -> None:
    client, reader, data = make(12 * MiB)
    client.stream_cap = 5 * MiB
    async with running(reader):
        h = await reader.open(Source("rec:10", URL, len(data)))
        assert await read_all(reader, h, len(data)) == data
        assert [r.start for r in client.requests] == [0, 5 * MiB, 10 * MiB]


async def test_200_instead_of_206() -> None:
    client, reader, data = make(10 * MiB)
    client.ignore_range = True
    async with running(reader):
        h = await reader.open(Source("rec:11", URL, len(data)))
        off = 7 * MiB + 99
        assert await reader.read(h, off, 5000) == data[off : off + 5000]  # random: fetch
        h2 = await reader.open(Source("rec:11", URL, len(data)))
        assert await read_all(reader, h2, len(data)) == data
        # The whole body of the first answer was small enough to keep: nothing more needed.
        assert client.count() == 1


async def test_200_to_a_stream_resume_skips_what_is_known() -> None:
    client, reader, data = make(40 * MiB, cache_bytes=16 * MiB)
    client.ignore_range = True
    client.drop_at = [6 * MiB + 1000]
    async with running(reader):
        h = await reader.open(Source("rec:12", URL, len(data)))
        assert await read_all(reader, h, len(data)) == data
        assert [r.start for r in client.requests] == [0, 6 * MiB + 1000]


# ----------------------------------------------------------------- failures


async def test_dropped_streams_resume_from_the_last_byte() -> None:
    client, reader, data = make(30 * MiB)
    client.drop_at = [5 * MiB + 12345, 17 * MiB]
    async with running(reader):
        h = await reader.open(Source("rec:13", URL, len(data)))
        assert await read_all(reader, h, len(data)) == data
        assert [r.start for r in client.requests] == [0, 5 * MiB + 12345, 17 * MiB]
        assert reader.stats.resumes == 2


async def test_drops_that_each_move_forward_never_end_the_download(autojump_clock: trio.abc.Clock) -> None:
    client, reader, data = make(30 * MiB, progress_timeout=5.0)
    client.drop_every = 1 * MiB  # thirty drops, each after a new MiB
    client.piece_latency = 0.2  # the whole download takes far longer than progress_timeout
    async with running(reader):
        h = await reader.open(Source("rec:14", URL, len(data)))
        t0 = trio.current_time()
        assert await read_all(reader, h, len(data)) == data
        assert trio.current_time() - t0 > 5 * 5.0
        assert reader.stats.resumes >= 29
        assert client.count() == 1 + reader.stats.resumes


async def test_failures_between_progress_never_end_the_download(autojump_clock: trio.abc.Clock) -> None:
    # Runs of five failures in a row, each run spanning well over the old count budget,
    # with a little progress between them: the download goes on to the end.
    client, reader, data = make(8 * MiB, progress_timeout=5.0)
    client.stream_cap = 256 * KiB  # every answer ends after 256 KiB: the next is a new request
    failing = [0]
    real_stream = client.stream

    @asynccontextmanager
    async def flaky_stream(url, *, start, priority):
        if failing[0] < 5:
            failing[0] += 1
            await trio.sleep(0.5)
            raise ServerError("service unavailable", status=503)
        failing[0] = 0
        async with real_stream(url, start=start, priority=priority) as s:
            yield s

    client.stream = flaky_stream  # type: ignore[method-assign]
    async with running(reader):
        h = await reader.open(Source("rec:18", URL, len(data)))
        assert await read_all(reader, h, len(data)) == data
        assert client.count() == 32  # one answer per 256 KiB ...
        assert reader.stats.resumes == 5 * 32  # ... each after five failures


async def test_transient_failures_without_progress_end_the_read_after_progress_timeout(
        autojump_clock: trio.abc.Clock) -> None:
    client, reader, data = make(30 * MiB, progress_timeout=20.0)
    async with running(reader):
        h = await reader.open(Source("rec:14", URL, len(data)))
        assert await reader.read(h, 0, 1000) == data[:1000]
        client.drop_at = [2 * MiB]
        client.fail_with = NetworkError("connection reset")  # every resume dies before a byte
        t0 = trio.current_time()
        with pytest.raises(NetworkError):
            await read_all(reader, h, len(data))
        # retried, backing off (50 ms doubling to 2 s), for 20 s after the last byte; no longer
        assert 20.0 <= trio.current_time() - t0 < 22.0
        assert 15 <= reader.stats.resumes <= 25
        assert client.count() == 1 + reader.stats.resumes


async def test_a_server_error_is_retried_until_progress_timeout_then_raised(autojump_clock: trio.abc.Clock) -> None:
    client, reader, data = make(2 * MiB, failure_ttl=5.0, progress_timeout=10.0)
    client.fail_with = ServerError("bad gateway", status=502)
    async with running(reader):
        h = await reader.open(Source("msg:4:4", URL, len(data)))
        t0 = trio.current_time()
        with pytest.raises(ServerError):
            await reader.read(h, 0, 4096)
        assert 10.0 <= trio.current_time() - t0 < 12.0
        tries = client.count()
        assert tries > 3
        client.fail_with = None
        with pytest.raises(ServerError):  # fails fast for a moment: no request
            await reader.read(h, 0, 4096)
        assert client.count() == tries
        await trio.sleep(6)  # then a read tries again
        assert await reader.read(h, 0, 4096) == data[:4096]
        assert client.count() == tries + 1


@pytest.mark.parametrize("kind", ["small", "stream"])
async def test_waiting_for_a_rate_limit_slot_is_not_time_without_progress(
        autojump_clock: trio.abc.Clock, kind: str) -> None:
    """A Heavy slot 25 s away (a whole window, as in production) before every try, a 10 s
    progress_timeout, and 502s for the first four tries: the download is waiting its turn,
    not stuck, so the read gets every byte. (Counting the slot waits ended it at the first
    retry: 25 s "without a new byte" > 10 s.)"""
    size = 2 * MiB if kind == "small" else 30 * MiB
    client, reader, data = make(size, progress_timeout=10.0)
    governor = RateGovernor(limits={Group.HEAVY: 1}, window=25.0)
    answer = client._answer
    failures_left = [4]

    async def paced_answer(req: Req) -> tuple[bytes, int | None]:
        ticket = await governor.acquire(Group.HEAVY, req.priority)
        governor.release(ticket)
        if failures_left[0] > 0:
            failures_left[0] -= 1
            client.requests.append(req)
            raise ServerError("bad gateway", status=502)
        return await answer(req)

    client._answer = paced_answer  # type: ignore[method-assign]
    async with running(reader):
        h = await reader.open(Source("rec:25", URL, len(data)))
        t0 = trio.current_time()
        assert await read_all(reader, h, len(data)) == data
        assert failures_left[0] == 0
        assert trio.current_time() - t0 >= 4 * 25.0  # every try waited for its slot


async def test_a_server_error_that_clears_is_invisible_to_the_reader(autojump_clock: trio.abc.Clock) -> None:
    client, reader, data = make(2 * MiB)
    client.fail_with = ServerError("bad gateway", status=502)
    async with running(reader):
        h = await reader.open(Source("msg:4:5", URL, len(data)))
        async with trio.open_nursery() as nursery:
            async def heal() -> None:
                await trio.sleep(8)
                client.fail_with = None

            nursery.start_soon(heal)
            assert await reader.read(h, 0, len(data)) == data


async def test_stop_ends_a_read_waiting_on_a_retrying_download_at_once(autojump_clock: trio.abc.Clock) -> None:
    # Unmounting while the server is gone: the FUSE loop waits for every read in flight,
    # so a read must not go on retrying for progress_timeout.
    client, reader, data = make(30 * MiB, progress_timeout=60.0)
    async with running(reader):
        h = await reader.open(Source("rec:19", URL, len(data)))
        assert await reader.read(h, 0, 4096) == data[:4096]
        client.drop_at = [2 * MiB]
        client.fail_with = NetworkError("connection refused")
        async with trio.open_nursery() as nursery:
            async def stop_soon() -> None:
                await trio.sleep(5)
                reader.stop()

            nursery.start_soon(stop_soon)
            t0 = trio.current_time()
            with pytest.raises(NetworkError):
                await read_all(reader, h, len(data))
            assert trio.current_time() - t0 < 6  # at the stop, not 60 s later
            requests = client.count()
        with pytest.raises(NetworkError):
            await reader.read(h, 20 * MiB, 4096)  # nothing new is fetched
        assert client.count() == requests


async def test_stalled_stream_times_out(autojump_clock: trio.abc.Clock) -> None:
    client, reader, data = make(20 * MiB, read_timeout=5.0)
    client.gate = trio.Event()  # never set: the body stalls after its first piece
    async with running(reader):
        h = await reader.open(Source("rec:15", URL, len(data)))
        assert await reader.read(h, 0, 4096) == data[:4096]
        with pytest.raises(NetworkError):
            await reader.read(h, 2 * MiB, 4096)
        reader.close(h)
        await trio.testing.wait_all_tasks_blocked()
        assert client.open_streams == 0


async def test_open_fails_cleanly_when_the_size_request_fails(autojump_clock: trio.abc.Clock) -> None:
    client, reader, _ = make(2 * MiB, progress_timeout=10.0)
    client.fail_with = ServerError("down", status=503)
    async with running(reader):
        with pytest.raises(ServerError):
            await reader.open(Source("rec:16", URL, None))
        assert reader.stats.active_streams == 0


# ----------------------------------------------------------------- streams and memory


async def test_read_is_answered_before_its_block_is_complete() -> None:
    client, reader, data = make(20 * MiB)
    client.gate = trio.Event()
    async with running(reader):
        h = await reader.open(Source("rec:17", URL, len(data)))
        with trio.fail_after(2):
            assert await reader.read(h, 0, 4096) == data[:4096]
        assert client.pulled_to == client.piece  # only the first 64 KiB had arrived
        client.gate.set()
        assert await reader.read(h, 4096, 2 * MiB) == data[4096 : 4096 + 2 * MiB]


async def test_batches_end_at_block_ends_and_a_waiting_reader_shrinks_the_batch() -> None:
    client, reader, data = make(20 * MiB)
    client.gate = trio.Event()  # the body stalls after its first 64 KiB piece
    async with running(reader):
        h = await reader.open(Source("rec:17", URL, len(data)))
        assert await reader.read(h, 0, 4096) == data[:4096]
        await trio.testing.wait_all_tasks_blocked()
        # read-ahead: the stream asks for the rest of the block, and no piece past its end
        assert client.hints[-1] == (64 * KiB, 1 * MiB, 1 * MiB - 64 * KiB)
        async with trio.open_nursery() as nursery:
            async def read_more() -> None:
                assert await reader.read(h, 64 * KiB, 4096) == data[64 * KiB : 64 * KiB + 4096]

            nursery.start_soon(read_more)
            await trio.testing.wait_all_tasks_blocked()
            # a reader now waits for 4 KiB: the stream is told to wake once those are in
            assert client.hints[-1] == (64 * KiB, 4096, 1 * MiB - 64 * KiB)
            client.gate.set()


async def test_close_stops_the_stream_task() -> None:
    client, reader, data = make(20 * MiB)
    async with running(reader):
        h = await reader.open(Source("rec:18", URL, len(data)))
        assert await reader.read(h, 0, 128 * KiB) == data[: 128 * KiB]
        await trio.testing.wait_all_tasks_blocked()
        assert client.open_streams == 1 and reader.stats.active_streams == 1
        pulled = client.pulled_to
        assert pulled <= 3 * MiB  # paced by the reader, not racing to the end
        reader.close(h)
        await trio.testing.wait_all_tasks_blocked()
        assert client.open_streams == 0 and reader.stats.active_streams == 0
        assert client.pulled_to == pulled


async def test_idle_stream_is_dropped(autojump_clock: trio.abc.Clock) -> None:
    client, reader, data = make(20 * MiB, stream_idle_timeout=10.0)
    async with running(reader):
        h = await reader.open(Source("rec:19", URL, len(data)))
        assert await reader.read(h, 0, 128 * KiB) == data[: 128 * KiB]
        await trio.sleep(5)
        assert client.open_streams == 1
        await trio.sleep(10)
        assert client.open_streams == 0
        # The reader comes back: a new stream picks up where the cache ends.
        assert await read_all(reader, h, len(data)) == data
        assert client.count() == 2


async def test_memory_stays_bounded_during_a_long_sequential_read() -> None:
    cache = 4 * MiB
    client, reader, data = make(48 * MiB, cache_bytes=cache)
    async with running(reader):
        h = await reader.open(Source("rec:20", URL, len(data)))
        step = 128 * KiB
        for off in range(0, len(data), step):
            assert await reader.read(h, off, step) == data[off : off + step]
            await trio.testing.wait_all_tasks_blocked()  # a slow reader: let the stream run
            st = reader.stats
            assert st.cache_bytes <= cache
            assert st.buffered_bytes <= 2 * MiB
            # read-ahead budget is half the cache; one piece may overshoot it
            assert client.pulled_to - (off + step) <= cache // 2 + client.piece
        assert client.count() == 1  # read-ahead never outran the cache
        assert reader.stats.peak_buffered_bytes <= 2 * MiB


async def test_drop_behind_a_sequential_reader_of_a_file_larger_than_the_cache() -> None:
    """Blocks more than `seek_tolerance` behind a sequential reader of a file larger than
    the cache are let go; a small file cached before stays; a file that fits keeps its
    blocks (LRU as before)."""
    cache = 8 * MiB
    data, small = content(24 * MiB), content(512 * KiB, seed=2)
    client = FakeClient({URL: data, URL + "/small": small})
    reader = Reader(client, block_size=1 * MiB, cache_bytes=cache, small_file_max=1 * MiB)  # type: ignore[arg-type]
    async with running(reader):
        s = await reader.open(Source("msg:small", URL + "/small", len(small)))
        assert await reader.read(s, 0, len(small)) == small
        reader.close(s)
        h = await reader.open(Source("rec:big", URL, len(data)))
        step = 128 * KiB
        for off in range(0, len(data), step):
            assert await reader.read(h, off, step) == data[off : off + step]
            # never more than the 2 MiB of seek tolerance (+ the block being read) behind
            held = [b for (key, b) in reader._cache.keys() if key == "rec:big"]
            assert not held or min(held) >= (off - 2 * MiB) // MiB - 1, (off, held)
        reader.close(h)
        assert ("msg:small", 0) in reader._cache  # the other file was not pushed out
        s = await reader.open(Source("msg:small", URL + "/small", len(small)))
        before = client.count()
        assert await reader.read(s, 0, len(small)) == small
        assert client.count() == before  # still cached: no request


async def test_no_drop_behind_while_another_handle_reads_the_file() -> None:
    client, reader, data = make(24 * MiB, cache_bytes=16 * MiB)
    async with running(reader):
        a = await reader.open(Source("rec:23", URL, len(data)))
        b = await reader.open(Source("rec:23", URL, len(data)))
        step = 128 * KiB
        for off in range(0, 12 * MiB, step):
            assert await reader.read(a, off, step) == data[off : off + step]
        # b has not started: every block a passed is still there for it
        assert all(("rec:23", i) in reader._cache for i in range(12))
        for off in range(0, 12 * MiB, step):
            assert await reader.read(b, off, step) == data[off : off + step]
        assert client.count() == 1


async def test_many_streams_share_the_readahead_budget() -> None:
    cache = 8 * MiB
    files = {f"{URL}/{i}": content(16 * MiB, seed=i) for i in range(4)}
    client = FakeClient(files)
    reader = Reader(client, cache_bytes=cache, block_size=1 * MiB, small_file_max=1 * MiB)
    async with running(reader):
        handles = [await reader.open(Source(f"rec:{i}", u, 16 * MiB)) for i, u in enumerate(files)]
        step = 128 * KiB
        for off in range(0, 16 * MiB, step):
            for h, (u, d) in zip(handles, files.items()):
                assert await reader.read(h, off, step) == d[off : off + step]
            await trio.testing.wait_all_tasks_blocked()
            assert client.pulled_to <= off + step + cache // 2 // len(files) + client.piece
            assert reader.stats.cache_bytes <= cache
            assert reader.stats.buffered_bytes <= 4 * MiB
        assert client.count() == 4


async def test_single_flight_for_concurrent_readers() -> None:
    bs = 1 * MiB
    client, reader, data = make(20 * MiB)
    client.latency = 0.01
    async with running(reader):
        handles = [await reader.open(Source("rec:21", URL, len(data))) for _ in range(6)]
        results: list[bytes] = []
        off = 11 * bs + 5

        async def one(h: int) -> None:
            await reader.read(h, 300, 10)  # make each handle's next read a seek
            results.append(await reader.read(h, off, 5000))

        await reader.read(handles[0], 300, 10)
        # Block 0 complete before the race: otherwise handle 0's seek may drop its stream
        # while block 0 is still filling, and a second handle restarts it (a third request).
        assert await reader.read(handles[0], 0, bs) == data[:bs]
        async with trio.open_nursery() as n:
            for h in handles:
                n.start_soon(one, h)
        assert results == [data[off : off + 5000]] * 6
        assert client.count() == 2, client.requests  # block 0 (stream of handle 0), block 11 once
        assert reader.stats.waits >= 5


async def test_second_handle_joins_the_first_handles_stream() -> None:
    client, reader, data = make(24 * MiB)
    client.piece_latency = 0.0002
    async with running(reader):
        a = await reader.open(Source("rec:22", URL, len(data)))
        b = await reader.open(Source("rec:22", URL, len(data)))
        outs = {a: bytearray(), b: bytearray()}

        async def reader_task(h: int, delay: float) -> None:
            await trio.sleep(delay)
            for off in range(0, len(data), 128 * KiB):
                outs[h] += await reader.read(h, off, 128 * KiB)

        async with trio.open_nursery() as n:
            n.start_soon(reader_task, a, 0)
            n.start_soon(reader_task, b, 0.001)
        assert outs[a] == data and outs[b] == data
        assert client.count() == 1


async def test_small_file_concurrent_opens_share_one_request() -> None:
    client, reader, data = make(2 * MiB)
    client.latency = 0.01
    got: list[bytes] = []
    async with running(reader):

        async def one() -> None:
            h = await reader.open(Source("msg:5:5", URL, None))
            got.append(await read_all(reader, h, len(data)))
            reader.close(h)

        async with trio.open_nursery() as n:
            for _ in range(5):
                n.start_soon(one)
        assert got == [data] * 5
        assert client.count() == 1


async def test_priorities() -> None:
    client, reader, data = make(20 * MiB)
    client.drop_at = [MiB + 64 * KiB]
    async with running(reader):
        h = await reader.open(Source("rec:23", URL, len(data)))
        assert await reader.read(h, 0, 128 * KiB) == data[: 128 * KiB]
        await trio.testing.wait_all_tasks_blocked()
        # the read someone waits on is FOREGROUND; the resume nobody waits on is READAHEAD
        assert [(r.start, r.priority) for r in client.requests] == [
            (0, Priority.FOREGROUND),
            (MiB + 64 * KiB, Priority.READAHEAD),
        ]
        h2 = await reader.open(Source("rec:23", URL, len(data)), priority=Priority.BACKGROUND)
        assert await reader.read(h2, 15 * MiB, 10) == data[15 * MiB : 15 * MiB + 10]
        assert client.requests[-1].priority == Priority.BACKGROUND


async def test_requires_run() -> None:
    _, reader, data = make(10)
    with pytest.raises(RuntimeError):
        await reader.open(Source("x", URL, 10))


# ----------------------------------------------------------------- property-based


@dataclasses.dataclass
class Faults:
    short: int | None
    ignore_range: bool
    stream_cap: int | None
    drops: list[int]


reads_strategy = hs.lists(
    hs.tuples(hs.integers(0, 3 * 2**20), hs.integers(0, 600 * KiB), hs.booleans()),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=hs.integers(0, 3 * 2**20),
    known=hs.booleans(),
    reads=reads_strategy,
    short=hs.sampled_from([None, 50_000, 300_000]),
    ignore_range=hs.booleans(),
    stream_cap=hs.sampled_from([None, 700_000]),
    drops=hs.lists(hs.integers(1, 3 * 2**20), max_size=3),
    block=hs.sampled_from([64 * KiB, 256 * KiB]),
)
def test_any_read_pattern_returns_exact_bytes(
    size: int,
    known: bool,
    reads: list[tuple[int, int, bool]],
    short: int | None,
    ignore_range: bool,
    stream_cap: int | None,
    drops: list[int],
    block: int,
) -> None:
    data = content(size, seed=size)
    client = FakeClient({URL: data})
    client.short, client.ignore_range, client.stream_cap = short, ignore_range, stream_cap
    client.drop_at = sorted(set(drops))
    client.piece = 40_000
    cache = 16 * block
    reader = Reader(client, cache_bytes=cache, block_size=block, small_file_max=4 * block)

    async def main() -> None:
        async with running(reader):
            h = await reader.open(Source("k", URL, size if known else None))
            pos = 0
            for off, length, sequential in reads:
                off = pos if sequential else off
                got = await reader.read(h, off, length)
                assert got == data[off : off + length]
                pos = off + len(got)
                assert reader.stats.cache_bytes <= cache
            reader.close(h)
            await trio.testing.wait_all_tasks_blocked()
            assert client.open_streams == 0

    trio.run(main)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=hs.integers(1, 2 * 2**20),
    known=hs.booleans(),
    patterns=hs.lists(reads_strategy, min_size=2, max_size=4),
    drops=hs.lists(hs.integers(1, 2 * 2**20), max_size=3),
    short=hs.sampled_from([None, 70_000]),
    reopen_every=hs.sampled_from([0, 3]),
)
def test_concurrent_handles_return_exact_bytes(
    size: int,
    known: bool,
    patterns: list[list[tuple[int, int, bool]]],
    drops: list[int],
    short: int | None,
    reopen_every: int,
) -> None:
    data = content(size, seed=size + 1)
    client = FakeClient({URL: data})
    client.drop_at = sorted(set(drops))
    client.short = short
    client.piece = 30_000
    client.piece_latency = 0.0001
    block = 64 * KiB
    cache = 12 * block
    reader = Reader(client, cache_bytes=cache, block_size=block, small_file_max=3 * block)

    async def one(reads: list[tuple[int, int, bool]]) -> None:
        h = await reader.open(Source("k", URL, size if known else None))
        pos = 0
        for i, (off, length, sequential) in enumerate(reads):
            if reopen_every and i % reopen_every == reopen_every - 1:
                reader.close(h)
                h = await reader.open(Source("k", URL, size if known else None))
            off = pos if sequential else off % (size + 10)
            got = await reader.read(h, off, length)
            assert got == data[off : off + length]
            pos = off + len(got)
            assert reader.stats.cache_bytes <= cache
        reader.close(h)

    async def main() -> None:
        async with running(reader):
            async with trio.open_nursery() as n:
                for reads in patterns:
                    n.start_soon(one, reads)
            await trio.testing.wait_all_tasks_blocked()
            assert client.open_streams == 0 and reader.stats.active_streams == 0
            assert reader.stats.buffered_bytes == 0

    trio.run(main)


@pytest.mark.parametrize("delta", [-300_000, 5000])
async def test_a_wrong_announced_size_is_corrected_by_the_server(delta: int) -> None:
    learned: list[int] = []
    client, reader, data = make(6 * MiB + 11, on_size=lambda k, n: learned.append(n))
    async with running(reader):
        h = await reader.open(Source("rec:24", URL, len(data) + delta))
        got = await read_all(reader, h, len(data) + max(delta, 0))
        assert got == data
        assert learned == [len(data)] and reader.known_size("rec:24") == len(data)


async def _read_along(reader: Reader, a: int, b: int, data: bytes, until: int, step: int) -> tuple[bytes, bytes]:
    """Handles a and b read the same bytes in lockstep (b just behind a) up to `until`."""
    got_a, got_b = bytearray(), bytearray()
    for off in range(0, until, step):
        got_a += await reader.read(a, off, step)
        got_b += await reader.read(b, off, step)
    return bytes(got_a), bytes(got_b)


@pytest.mark.parametrize("how", ["seek", "close"])
async def test_a_stream_is_handed_to_the_handle_reading_along_when_its_own_leaves(how) -> None:
    """Handle a's stream also serves handle b. When a seeks far away or closes, b
    inherits the stream: b reads on to the end with no second streaming request."""
    # A read-ahead window well short of 20 MiB: a's read there is a real seek.
    client, reader, data = make(24 * MiB, max_window=4 * MiB)
    client.piece_latency = 0.0002
    async with running(reader):
        a = await reader.open(Source("rec:31", URL, len(data)))
        b = await reader.open(Source("rec:31", URL, len(data)))
        got_a, got_b = await _read_along(reader, a, b, data, 4 * MiB, 128 * KiB)
        assert got_a == got_b == data[: 4 * MiB]
        if how == "seek":
            assert await reader.read(a, 20 * MiB, 4096) == data[20 * MiB : 20 * MiB + 4096]
        else:
            reader.close(a)
        rest = bytearray()
        for off in range(4 * MiB, len(data), 128 * KiB):
            rest += await reader.read(b, off, 128 * KiB)
        assert bytes(rest) == data[4 * MiB :]
        assert client.count("stream") == 1, client.requests
        assert client.count("fetch") == (1 if how == "seek" else 0), client.requests
