"""The block-cache reader: serves FUSE reads of remote media with few HTTP requests.

The FUSE adapter opens a `Source` (cache key, content URL, size if known), reads byte
ranges through the returned handle, and closes it. Underneath:

* Content lives in a `cachetools.LRUCache` bounded in bytes, keyed `(key, block index)`;
  every cached block is complete (`block_size` bytes, or up to the end of the file).
* A block being downloaded is a `_Pending`, registered in its file's `pending` map so a
  second reader of the same bytes waits for it (single-flight). It fills from its
  start, and readers are answered as soon as the bytes they asked for are in.
* Producers are background tasks in `Reader.run()`'s nursery: a *fetch* (one ranged
  GET, continued when the answer is short) for small files and random access, or a
  *stream* (`Range: bytes=N-`) per sequentially-read handle. A stream is paced by its
  reader: it stops pulling from the socket once it is `window` bytes ahead (the window
  doubles as the reader keeps going, and all streams share one read-ahead budget), and
  is dropped when its reader seeks away, closes, or stays idle too long.
* Size: a known size never costs a request at open; an unknown one is learned from the
  headers of the stream that `open()` starts at offset 0 and then keeps for the reader.
  When the server says no size at all (a chunked 200, a `Content-Range` total of `*`),
  that stream runs on to the end of the file while `open()` waits (blocks go to the
  byte-bounded cache as usual), so the file never looks empty; the end is a 200's clean
  end, or a 416 at the end. Like every read, that wait is bounded by `read_timeout`.
* Flaky links: a producer whose body drops, is cut short or is answered 5xx continues
  from the byte it reached, backing off between attempts (up to 2 s). Transient
  failures never end a download that still makes progress, however many there are: it
  gives up only after `progress_timeout` seconds (60 by default) in which no new byte
  arrived, waits for rate-limit slots included (a count of attempts would run out while
  each retry waits for its slot, on a link that is slow but working). A `read()` waits
  as long as the download it waits on makes progress; `read_timeout` seconds (90 by
  default) after that download's last byte it ends in an error (EIO) even if the
  download has not given up: a net under the producers' own bound, never reached while
  bytes arrive.
* Prefetch (`prefetch()`): a caller that predicts the next opens (a folder owner that
  sees `cp -r`, `rsync` or `tar` read a folder's files one after another) asks for small
  files of known size ahead of their open. Each is one ranged GET, like the first read
  of a small file, at READAHEAD priority, whose blocks are claimed like any other: the
  open and read that follow find them cached or join the request in flight (never a
  second request). At most `prefetch_depth` such requests and `prefetch_bytes` bytes are
  in flight, and one is only started while its rate-limit group has room beyond the
  reserve kept for foreground reads, so it is sent at once and a reader that joins it
  never waits behind the reserve. A prefetch that fails is forgotten: only a reader's
  own failure makes the next reads of the file fail fast.
* Rate limits: a producer whose request met a rate-limited group (`RateLimited`) waits
  for the group and tries again instead of failing its readers, for at most
  `rate_limit_patience` seconds (default `read_timeout`); then its readers get
  `RateLimitWaitExceeded` (EIO, not EAGAIN: a blocking read must not be told to retry).

Concurrency invariants (all code runs on one trio loop, no threads): claims and block
state changes happen without an `await` in between, so a block is never claimed twice;
a producer that ends releases every block it still holds (failed with its error, or
abandoned so waiting readers plan again), so no reader waits on a dead producer.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import itertools
import logging
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Callable, NoReturn, Protocol

import cachetools
import trio

from rcfs.api.client import Chunk, Priority, Stream
from rcfs.api.governor import Group, slot_wait_meter
from rcfs.api.errors import (
    ApiError,
    BadResponse,
    NetworkError,
    RangeNotSatisfiable,
    RateLimited,
    RateLimitWaitExceeded,
    ServerError,
)

__all__ = ["Bytes", "ContentClient", "Reader", "ReaderStats", "Source"]

# Failures a later attempt can get past: a dropped, cut or stalled connection, a 5xx.
# Retried for as long as the download keeps making progress (`progress_timeout`).
TRANSIENT = (NetworkError, ServerError)

log = logging.getLogger(__name__)

KiB = 2**10
MiB = 2**20


Bytes = bytes | bytearray | memoryview  # what reads return: bytes-like, never copied needlessly


def _piece(block: bytes | bytearray | None, start: int, stop: int) -> Bytes:
    """`block[start:stop]` as a view (the whole block as itself)."""
    assert block is not None
    if start == 0 and stop >= len(block):
        return block
    return memoryview(block)[start:stop]


class ContentClient(Protocol):
    """The part of `RingCentralClient` the reader uses."""

    async def fetch(self, url: str, *, start: int, end: int, priority: Priority,
                    on_piece: Callable[[int, bytes], None] | None = None) -> Chunk:
        """One ranged GET of bytes `start..end` (inclusive); `on_piece(offset, piece)`
        sees the body's pieces as they arrive."""
        ...

    def stream(
        self, url: str, *, start: int, priority: Priority
    ) -> AbstractAsyncContextManager[Stream]:
        """An open-ended streaming GET from `start`."""
        ...


@dataclasses.dataclass
class Source:
    """What the FUSE side knows about one file."""

    key: str  # stable cache key, e.g. "msg:123:456" or "rec:789"
    url: str  # absolute content URL (media host)
    size: int | None  # exact size, or None when unknown


@dataclasses.dataclass
class ReaderStats:
    """Counters of a `Reader` (a snapshot when read through `Reader.stats`)."""

    requests: int = 0  # HTTP requests issued (fetches + stream opens, resumes included)
    fetches: int = 0  # ranged GETs
    streams: int = 0  # streaming GETs opened (first opens and re-opens)
    resumes: int = 0  # retries after a transient failure (drop, cut, 5xx)
    bytes_fetched: int = 0  # body bytes received
    cache_hits: int = 0  # block lookups answered from the cache
    cache_misses: int = 0  # block lookups that started a download
    waits: int = 0  # block lookups that joined a download already in flight
    cache_bytes: int = 0  # bytes held by the block cache now
    cache_blocks: int = 0  # blocks held by the block cache now
    buffered_bytes: int = 0  # bytes held by blocks still downloading now
    peak_buffered_bytes: int = 0  # highest buffered_bytes seen
    active_streams: int = 0  # stream tasks alive now
    prefetches: int = 0  # small files fetched ahead of their open (`Reader.prefetch`)
    prefetches_used: int = 0  # ... of which a later open found cached or in flight
    prefetching: int = 0  # prefetch requests in flight now
    reads: int = 0  # read() calls (with FUSE: the kernel's read requests, each one round trip)
    read_bytes: int = 0  # bytes they asked for
    largest_read: int = 0  # the largest one asked for


def _fresh(exc: ApiError) -> ApiError:
    """A copy of an error several readers raise, so they do not share one traceback."""
    return copy.copy(exc)


class _Replan(Exception):
    """Internal: the producer of a block went away without error; plan the read again."""


class _Stalled(Exception):
    """Internal: the producer of a block brought no byte for the reader's whole timeout."""


class _State(enum.Enum):
    FILLING = "filling"
    DONE = "done"
    FAILED = "failed"
    ABANDONED = "abandoned"


class _Pending:
    """One block being downloaded. Filled from its first byte on, readable as it fills."""

    def __init__(self, index: int, length: int, claims: dict[int, _Pending], owner: _Fetch | _Stream) -> None:
        self.index = index
        self.length = length  # expected bytes (block_size, less for the last block)
        self.claims = claims  # the producer's map of blocks it still has to fill
        self.owner: _Fetch | _Stream = owner  # the producer filling it
        self.buf: bytearray | None = None
        self.data: bytes | bytearray | None = None
        self.filled = 0
        self.state = _State.FILLING
        self.error: ApiError | None = None
        self._changed = trio.Event()

    def notify(self) -> None:
        """Wake every reader waiting on this block."""
        self._changed.set()
        self._changed = trio.Event()

    def view(self, start: int, stop: int) -> Bytes:
        """Bytes `start..stop` of the block (clipped to what is filled).

        A finished block is shared without a copy; a filling one is copied, because its
        buffer may still be resized (a learned size) and must not be exported.
        """
        stop = min(stop, self.filled)
        if start >= stop:
            return b""
        if self.data is not None:
            return _piece(self.data, start, stop)
        assert self.buf is not None
        return bytes(memoryview(self.buf)[start:stop])

    async def wait_for(self, need: int, began: float, timeout: float) -> None:
        """Return once `need` bytes are in or the block is final; raise if it failed.

        Raises `_Replan` when the producer abandoned the block, and `_Stalled` once
        `timeout` seconds passed since the later of `began` and the producer's last
        byte (the producer may be filling an earlier block: that is progress too).
        """
        while self.filled < need:
            if self.state is _State.DONE:
                return
            if self.state is _State.FAILED:
                assert self.error is not None
                raise _fresh(self.error)
            if self.state is _State.ABANDONED:
                raise _Replan()
            deadline = max(began, self.owner.progress_at) + timeout
            if trio.current_time() >= deadline:
                raise _Stalled()
            with trio.move_on_at(deadline):
                await self._changed.wait()


class _SlotWaitCredit:
    """Time a request spent waiting for its rate-limit slot is not time without progress.

    `progress_timeout` bounds how long a download may go without a new byte. In production a
    Heavy slot can be a whole 60 s window away, so a failed attempt that first waited for its
    slot would otherwise end a download that was only waiting its turn. Made before a request
    and applied when it failed transiently: if no byte arrived meanwhile, the owner's last
    progress moves forward by the slot wait the governor measured for this task (never past
    now), which also moves a waiting read's backstop.
    """

    __slots__ = ("owner", "progress_at", "waited_before", "meter")

    def __init__(self, owner: "_Fetch | _Stream") -> None:
        meter = slot_wait_meter.get()
        if meter is None:  # one meter per download task (each task has its own context)
            meter = [0.0]
            slot_wait_meter.set(meter)
        self.meter = meter
        self.owner = owner
        self.progress_at = owner.progress_at
        self.waited_before = meter[0]

    def apply(self) -> None:
        waited = self.meter[0] - self.waited_before
        if waited > 0 and self.owner.progress_at == self.progress_at:
            self.owner.progress_at = min(trio.current_time(), self.progress_at + waited)


class _File:
    """Per-key state shared by every handle open on the same content."""

    def __init__(self, key: str, url: str, size: int | None) -> None:
        self.key = key
        self.url = url
        self.size = size
        self.pending: dict[int, _Pending] = {}
        self.streams: set[_Stream] = set()
        self.handles = 0
        self.probe: _Stream | None = None  # the stream learning the size for open()
        self.content_type_told = False
        self.failure: ApiError | None = None  # the last download that gave up ...
        self.failed_at = 0.0  # ... and when (trio clock)
        self._news = trio.Event()  # set when the size is learned or a stream ends

    def notify(self) -> None:
        self._news.set()
        self._news = trio.Event()

    async def news(self) -> None:
        """Wait until the size is learned or one of its streams ends."""
        await self._news.wait()


class _Handle:
    """One open() of a file: its access pattern and its read-ahead stream."""

    def __init__(self, hid: int, file: _File, priority: Priority, streak: int) -> None:
        self.id = hid
        self.file = file
        self.priority = priority
        self.pos = 0  # where the previous read ended
        self.streak = streak  # bytes read contiguously since the last seek
        self.stream: _Stream | None = None
        self.behind = 0  # drop-behind: this sequential run let go of the blocks below this index


class _Fetch:
    """Owner of blocks filled by ranged GETs: when it last received a byte."""

    __slots__ = ("progress_at",)

    def __init__(self) -> None:
        self.progress_at = trio.current_time()  # its start, then its last new byte


class _Stream:
    """A streaming GET from `pos` onwards, paced by its handle's reads."""

    def __init__(self, handle: _Handle, start: int, window: int, priority: Priority) -> None:
        self.handle = handle
        self.file = handle.file
        self.pos = start  # next file offset to receive
        self.claim_end = start  # blocks below this index have been considered for claiming
        self.claimed: dict[int, _Pending] = {}
        self.reader_end = start  # furthest offset its handle has read
        self.demand = start  # furthest offset some reader is waiting for
        self.window = window
        self.priority = priority
        self.failures = 0  # transient failures since the last new byte
        self.body: Stream | None = None  # the answer being received, when its pieces align with blocks
        self.progress_at = trio.current_time()  # its start, then its last new byte
        self.dropped = False
        self.done = False
        self.error: ApiError | None = None
        self.scope = trio.CancelScope()
        self.ready = trio.Event()  # headers received, or the stream ended
        self.wake = trio.Event()

    def notify(self) -> None:
        """Tell the stream task its limit may have moved."""
        self.wake.set()
        self.wake = trio.Event()


class Reader:
    """Reads remote content through a byte-bounded LRU block cache.

    Run `run()` in a nursery before opening anything: downloads happen in its tasks.
    Every error raised by `open`/`read` is an `ApiError` subclass.
    """

    def __init__(
        self,
        client: ContentClient,
        *,
        cache_bytes: int = 256 * MiB,
        block_size: int = 1 * MiB,
        small_file_max: int | None = None,
        on_size: Callable[[str, int], None] | None = None,
        on_content_type: Callable[[str, str], None] | None = None,
        readahead_budget: int | None = None,
        max_window: int = 64 * MiB,
        seek_tolerance: int = 2 * MiB,
        read_timeout: float = 90.0,
        progress_timeout: float = 60.0,
        stream_idle_timeout: float = 30.0,
        failure_ttl: float = 5.0,
        rate_limit_patience: float | None = None,
        prefetch_depth: int = 6,
        prefetch_bytes: int = 32 * MiB,
    ) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        if cache_bytes < 2 * block_size:
            raise ValueError("cache_bytes must hold at least two blocks")
        self._client = client
        self._bs = block_size
        self._cache: cachetools.LRUCache[tuple[str, int], bytes | bytearray] = cachetools.LRUCache(
            maxsize=cache_bytes, getsizeof=len
        )
        # A small file must fit in the cache several times over, or fetching it whole
        # would evict itself.
        self._small_max = min(8 * MiB if small_file_max is None else small_file_max, cache_bytes // 4)
        self._on_size = on_size
        self._on_content_type = on_content_type
        self._budget = cache_bytes // 2 if readahead_budget is None else readahead_budget
        self._max_window = max(block_size, min(max_window, self._budget))
        self._seek_tol = seek_tolerance
        self._min_streak = min(256 * KiB, block_size)
        self._read_timeout = read_timeout
        self._idle_timeout = stream_idle_timeout
        self._progress_timeout = progress_timeout
        self._stopping = False
        self._failure_ttl = failure_ttl
        self._rate_patience = read_timeout if rate_limit_patience is None else rate_limit_patience
        self._max_replans = 8
        self._files: dict[str, _File] = {}
        self._sizes: dict[str, int] = {}
        self._handles: dict[int, _Handle] = {}
        self._ids = itertools.count(1)
        self._streams: set[_Stream] = set()
        self._nursery: trio.Nursery | None = None
        self._st = ReaderStats()
        self.prefetch_depth = max(0, prefetch_depth)  # also how far ahead callers look
        self._prefetch_bytes_max = min(prefetch_bytes, self._budget)
        self._prefetch_inflight = 0
        self._prefetch_inflight_bytes = 0
        # Keys prefetched and not opened since (bounded: a scan that stops leaves some).
        self._prefetched: cachetools.LRUCache[str, bool] = cachetools.LRUCache(maxsize=4096)

    # ----------------------------------------------------------------- public API

    @property
    def stats(self) -> ReaderStats:
        """A snapshot of the counters."""
        return dataclasses.replace(
            self._st,
            cache_bytes=int(self._cache.currsize),
            cache_blocks=len(self._cache),
            active_streams=len(self._streams),
            prefetching=self._prefetch_inflight,
        )

    @property
    def block_size(self) -> int:
        return self._bs

    @property
    def cache_limit(self) -> int:
        """The byte bound of the block cache."""
        return int(self._cache.maxsize)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the background downloads until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def downloads(self) -> list[dict]:
        """Files open or downloading now, with how much of each the block cache holds
        (for `rcfs status`; O(cached blocks), so meant for an occasional look)."""
        cached: dict[str, int] = {}
        for (key, _index), block in self._cache.items():
            cached[key] = cached.get(key, 0) + len(block)
        out = []
        for f in self._files.values():
            if not (f.handles or f.pending or f.streams):
                continue
            out.append({"key": f.key, "size": f.size, "cached": cached.get(f.key, 0),
                        "open": f.handles, "streams": len(f.streams), "blocks_in_flight": len(f.pending),
                        "received": max((st.pos for st in f.streams), default=None)})
        return out

    def known_size(self, key: str) -> int | None:
        """The exact size of `key` if it is known (given at open or learned)."""
        f = self._files.get(key)
        if f is not None and f.size is not None:
            return f.size
        return self._sizes.get(key)

    async def open(self, source: Source, *, priority: Priority = Priority.FOREGROUND) -> int:
        """Open `source` and return a handle. Costs a request only when the size is unknown."""
        if self._nursery is None:
            self._not_running()
        f = self._files.get(source.key)
        if f is None:
            f = _File(source.key, source.url, self._sizes.get(source.key, source.size))
            self._files[source.key] = f
        else:
            f.url = source.url
            if f.size is None:
                f.size = source.size
        if f.size is not None:
            self._sizes.setdefault(f.key, f.size)
        if self._prefetched.pop(f.key, None):
            self._st.prefetches_used += 1
        hid = next(self._ids)
        h = _Handle(hid, f, priority, streak=self._min_streak)
        f.handles += 1
        self._handles[hid] = h
        if f.size is None:
            try:
                with trio.fail_after(self._read_timeout):
                    await self._probe_size(h)
            except trio.TooSlowError:
                self.close(hid)
                raise NetworkError(f"timed out learning the size of {f.key}") from None
            except BaseException:
                self.close(hid)
                raise
        return hid

    async def read(self, handle: int, offset: int, length: int) -> Bytes:
        """Return exactly `min(length, size - offset)` bytes at `offset` (b"" at EOF).

        The result is bytes-like (often a view of a cached block, to save a copy per read).

        Raises an `ApiError` subclass when the bytes cannot be had (their download gave
        up after `progress_timeout` without a new byte, or `read_timeout` passed since
        its last byte), ValueError for an unknown handle.
        """
        h = self._handles.get(handle)
        if h is None:
            raise ValueError(f"unknown reader handle {handle}")
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        f = h.file
        st = self._st
        st.reads += 1
        st.read_bytes += length
        if length > st.largest_read:
            st.largest_read = length
        if length == 0 or (f.size is not None and offset >= f.size):
            return b""
        # Access-pattern bookkeeping happens before any await: the kernel sends
        # concurrent reads on one handle and each must see its predecessors.
        if self._nursery is None:
            self._not_running()
        seek = abs(offset - h.pos) > self._seek_tol
        if seek:
            h.streak = 0
            h.behind = offset // self._bs  # blocks before a seek were not passed by this run
        sequential = not seek and h.streak >= self._min_streak
        h.streak += length
        h.pos = offset + length if seek else max(h.pos, offset + length)
        self._follow(h, offset, offset + length)
        if sequential and f.size is not None and f.size > self._cache.maxsize:
            self._drop_behind(h, offset)
        # Fast path: the whole answer lies in one cached block (small reads of cached or
        # streamed data, the common case with direct I/O), so no timeout scope is needed.
        b, within = divmod(offset, self._bs)
        if f.size is not None and within + length <= self._bs:
            block = self._cache.get((f.key, b))
            if block is not None:
                self._st.cache_hits += 1
                return _piece(block, within, min(within + length, len(block)))
        return await self._read_range(h, offset, length, seek, sequential)

    def _drop_behind(self, h: _Handle, offset: int) -> None:
        """A sequential reader of a file larger than the whole cache: let go of the
        blocks it has passed (more than `seek_tolerance` behind it).

        Why: read to its end, such a file evicts its own first blocks (LRU) before a
        re-read could use them, and on its way it evicts every other file's blocks too.
        Let go at once, their memory goes back to the allocator and the next blocks of
        the stream land in the same pages, already mapped and warm in the CPU caches: a
        cold read of 1 GB on a fresh mount no longer faults in the whole cache (with
        256 MiB, 64 page faults per MiB read, about a seventh of rcfs' CPU; bench-results/
        anchors-read.md). Only while this handle is the file's one reader: another
        handle may be reading behind it.
        """
        f = h.file
        upto = (offset - self._seek_tol) // self._bs
        if upto <= h.behind or f.handles != 1:
            return
        for b in range(h.behind, upto):
            self._cache.pop((f.key, b), None)
        h.behind = upto

    def _not_running(self) -> NoReturn:
        if self._stopping:
            raise NetworkError("rcfs is unmounting")
        raise RuntimeError("Reader.run() is not running")

    def stop(self) -> None:
        """Unmounting: end every download now. A read waiting on one fails at once (EIO)
        instead of retrying for up to `progress_timeout` against a server that may be
        gone (the FUSE loop only ends once every request in flight is answered), and so
        does every read after it."""
        self._stopping = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def close(self, handle: int) -> None:
        """Forget `handle` and stop its read-ahead stream. Unknown handles are ignored."""
        h = self._handles.pop(handle, None)
        if h is None:
            return
        if h.stream is not None:
            self._leave_stream(h.stream)
        h.file.handles -= 1
        self._maybe_forget(h.file)

    def prefetch(self, source: Source) -> bool:
        """Fetch small file `source` whole into the cache ahead of its open (a hint).

        Returns True when a request was started. Does nothing (False) when the size is
        not known, the file is not small, every block is already cached or on its way,
        its last download failed moments ago, `prefetch_depth` requests or
        `prefetch_bytes` bytes are already in flight, or its rate-limit group has no
        room beyond the foreground reserve. Never awaits: callers use it from `open`.
        """
        if self._nursery is None or self.prefetch_depth == 0 or self._stopping:
            return False
        f = self._files.get(source.key)
        size = f.size if f is not None and f.size is not None else self._sizes.get(source.key, source.size)
        if size is None or size <= 0 or size > self._small_max:
            return False
        if (self._prefetch_inflight >= self.prefetch_depth
                or self._prefetch_inflight_bytes + size > self._prefetch_bytes_max):
            return False
        if f is not None and f.failure is not None and trio.current_time() - f.failed_at < self._failure_ttl:
            return False
        nblocks = (size - 1) // self._bs + 1
        if f is None:
            if all((source.key, b) in self._cache for b in range(nblocks)):
                return False
        elif not any(self._absent(f, b) for b in range(nblocks)):
            return False
        if not self._room_for_speculation(source.url):
            return False
        if f is None:
            f = _File(source.key, source.url, size)
            self._files[source.key] = f
            self._sizes.setdefault(f.key, size)
        claims: dict[int, _Pending] = {}
        owner = _Fetch()
        for b in range(nblocks):
            self._claim(f, b, claims, owner)
        if not claims:
            self._maybe_forget(f)
            return False
        self._prefetch_inflight += 1
        self._prefetch_inflight_bytes += size
        self._st.prefetches += 1
        self._prefetched[f.key] = True
        self._spawn(self._prefetch_task, f, min(claims), max(claims), claims, size)
        return True

    def _room_for_speculation(self, url: str) -> bool:
        """True when a READAHEAD request for `url` would be sent at once: its group is
        not blocked, nobody queues for it, and it has more free slots than the reserve
        kept for foreground reads plus the prefetches not answered yet. A reader that
        joins a prefetch then never waits for the next window while the reserve idles."""
        budget_for = getattr(self._client, "budget_for", None)
        if budget_for is None:
            return True  # a client without rate-limit pacing
        budget = budget_for(url)
        if budget.group is Group.NONE:
            return True
        if budget.blocked_for > 0 or budget.waiting:
            return False
        governor = getattr(self._client, "governor", None)
        reserve = governor.reserve(budget.group) if governor is not None else 0
        return budget.free - reserve > self._prefetch_inflight

    async def _prefetch_task(
        self, f: _File, first: int, last: int, claims: dict[int, _Pending], size: int
    ) -> None:
        try:
            await self._fetch_task(f, first, last, claims, Priority.READAHEAD, remember_failure=False)
        finally:
            self._prefetch_inflight -= 1
            self._prefetch_inflight_bytes -= size

    # ----------------------------------------------------------------- reading

    async def _read_range(
        self, h: _Handle, offset: int, length: int, seek: bool, sequential: bool
    ) -> Bytes:
        f = h.file
        bs = self._bs
        parts: list[Bytes] = []
        pos = offset
        replans = 0
        began = trio.current_time()
        while True:
            end = offset + length if f.size is None else min(offset + length, f.size)
            if pos >= end:
                break
            b = pos // bs
            within = pos - b * bs
            want = min(end - b * bs, bs)
            block = self._cache.get((f.key, b))
            if block is not None:
                self._st.cache_hits += 1
                piece = _piece(block, within, want)
                if not piece:
                    break  # the cached last block ends here: end of file
                parts.append(piece)
                pos += len(piece)
                continue
            p = f.pending.get(b)
            if p is None:
                self._st.cache_misses += 1
                self._plan(h, b, end, seek, sequential)
                p = f.pending.get(b)
            else:
                self._st.waits += 1
            if p is None:
                # Nothing could be claimed (size moved under us): look again.
                replans += 1
            else:
                if isinstance(p.owner, _Stream):
                    self._raise_demand(p.owner, b * bs + want)
                try:
                    await p.wait_for(want, began, self._read_timeout)
                except _Replan:
                    replans += 1
                except _Stalled:
                    raise NetworkError(
                        f"timed out reading {f.key} at {pos}: no new byte for {self._read_timeout:g} s"
                    ) from None
                else:
                    piece = p.view(within, want)
                    if piece:
                        parts.append(piece)
                        pos += len(piece)
                        continue
                    replans += 1  # final but short: the size was learned; re-clip
            if replans > self._max_replans:
                raise NetworkError(f"could not read {f.key} at {pos}: its downloads kept stopping")
        if len(parts) == 1:
            return parts[0]  # the common case (reads within one block): no copy at all
        return b"".join(parts)

    def _follow(self, h: _Handle, offset: int, end: int) -> None:
        """Move the handle's stream along with its reader (and grow its window)."""
        st = h.stream
        if st is None or st.dropped or end <= st.reader_end:
            return
        if offset > st.pos + self._reach(st):
            return  # far ahead: a miss there decides whether the stream survives
        if end // self._bs > st.reader_end // self._bs:
            st.window = min(st.window * 2, self._max_window)
        st.reader_end = end
        st.notify()

    def _raise_demand(self, st: _Stream, upto: int) -> None:
        if upto > st.demand:
            st.demand = upto
            st.notify()
            if st.body is not None and upto > st.pos:
                # The stream may be waiting for a big batch of read-ahead (up to a block);
                # a reader now waits for less: wake the stream once that much is in, not
                # when the whole batch is (on a slow link, the difference is seconds).
                st.body.batch(upto - st.pos, self._bs - st.pos % self._bs)

    def _reach(self, st: _Stream) -> int:
        return max(st.window, self._seek_tol)

    def _covers(self, st: _Stream, b: int) -> bool:
        """Will this stream deliver block `b` soon without a new request?"""
        if st.dropped or st.done:
            return False
        start = b * self._bs
        return st.pos <= start < max(st.pos + self._reach(st), st.claim_end * self._bs)

    def _plan(self, h: _Handle, b: int, end: int, seek: bool, sequential: bool) -> None:
        """Arrange for absent block `b` to be downloaded (claiming it before returning).

        Raises the last failure of this file if a download gave up moments ago: its
        retries are spent, and starting over at once would only multiply requests.
        """
        f = h.file
        bs = self._bs
        if self._stopping:
            raise NetworkError(f"cannot read {f.key}: rcfs is unmounting")
        if f.failure is not None and trio.current_time() - f.failed_at < self._failure_ttl:
            raise _fresh(f.failure)
        # Any stream on this file that will pass block b soon serves it: its own
        # handle's first, then other handles' (no second request for the same bytes).
        candidates = sorted(f.streams, key=lambda s: s is not h.stream)
        for st in candidates:
            if self._covers(st, b):
                self._claim_for_stream(st, b)
                self._raise_demand(st, end)
                return
        if f.size is not None and f.size <= self._small_max:
            # Small file: everything still missing in one request.
            self._start_fetch(f, 0, (f.size - 1) // bs, h.priority)
            return
        own = h.stream
        if sequential:
            if own is not None:
                self._leave_stream(own)
            self._start_stream(h, b * bs, h.priority, demand=end)
            return
        if own is not None and seek:
            self._leave_stream(own)
        last = (end - 1) // bs
        if f.size is not None:
            last = min(last, (f.size - 1) // bs)
        self._start_fetch(f, b, last, h.priority, contiguous=True)

    # ----------------------------------------------------------------- block state

    def _block_len(self, f: _File, b: int) -> int:
        if f.size is None:
            return self._bs
        return max(0, min(self._bs, f.size - b * self._bs))

    def _absent(self, f: _File, b: int) -> bool:
        return (f.key, b) not in self._cache and b not in f.pending

    def _claim(self, f: _File, b: int, claims: dict[int, _Pending], owner: object) -> bool:
        length = self._block_len(f, b)
        if length == 0 or not self._absent(f, b):
            return False
        p = _Pending(b, length, claims, owner)
        f.pending[b] = p
        claims[b] = p
        return True

    def _write(self, f: _File, offset: int, data: bytes | memoryview) -> None:
        """Copy file bytes `data` at `offset` into the claimed blocks they complete or extend."""
        bs = self._bs
        mv = memoryview(data)
        b = offset // bs
        while True:
            lo = max(offset, b * bs)
            hi = min(offset + len(mv), (b + 1) * bs)
            if lo >= hi:
                break
            p = f.pending.get(b)
            if p is not None and p.state is _State.FILLING:
                base = b * bs
                # Only bytes contiguous with what the block already holds count.
                if lo - base <= p.filled < hi - base:
                    stop = min(hi - base, p.length)
                    src = p.filled + base - offset
                    if p.filled == 0 and stop == p.length:
                        if src == 0 and stop == len(mv) and type(data) is bytes:
                            self._complete(f, p, data)  # the piece is the block: keep it as it is
                        else:
                            self._complete(f, p, bytes(mv[src : src + stop]))  # whole block at once
                    elif p.filled < stop:
                        if p.buf is None:
                            p.buf = bytearray(p.length)
                            self._st.buffered_bytes += p.length
                            self._st.peak_buffered_bytes = max(
                                self._st.peak_buffered_bytes, self._st.buffered_bytes
                            )
                        p.buf[p.filled : stop] = mv[src : src + stop - p.filled]
                        p.filled = stop
                        if p.filled >= p.length:
                            self._complete(f, p)
                        else:
                            p.notify()
            b += 1

    def _complete(self, f: _File, p: _Pending, data: bytes | bytearray | None = None) -> None:
        if data is None:
            # The filled buffer becomes the cached block as it is (nothing writes to
            # it any more, and no view of it was handed out while it filled): no copy.
            buf = p.buf
            assert buf is not None and len(buf) >= p.length
            self._drop_buf(p)  # (accounts for the length it was allocated with)
            if len(buf) > p.length:
                del buf[p.length :]  # the size was learned smaller than the block
            data = buf
        p.data = data
        self._drop_buf(p)
        p.filled = p.length
        p.state = _State.DONE
        self._unregister(f, p)
        self._cache[(f.key, p.index)] = p.data
        p.notify()

    def _drop_buf(self, p: _Pending) -> None:
        if p.buf is not None:
            self._st.buffered_bytes -= len(p.buf)
            p.buf = None

    def _unregister(self, f: _File, p: _Pending) -> None:
        p.claims.pop(p.index, None)
        if f.pending.get(p.index) is p:
            del f.pending[p.index]

    def _release(self, f: _File, claims: dict[int, _Pending], error: ApiError | None,
                 remember_failure: bool = True) -> None:
        """End every block a producer still holds: failed with `error`, else abandoned.

        Readers waiting on them get `error`; `remember_failure` also makes reads of the
        file in the next `failure_ttl` seconds fail fast (not for a prefetch nobody asked for).
        """
        if error is not None and remember_failure:
            f.failure, f.failed_at = error, trio.current_time()
        for p in list(claims.values()):
            if p.filled and p.buf is not None:
                p.data = bytes(memoryview(p.buf)[: p.filled])  # readers already waiting may use the prefix
            self._drop_buf(p)
            p.state = _State.FAILED if error is not None else _State.ABANDONED
            p.error = error
            self._unregister(f, p)
            p.notify()
        claims.clear()
        self._maybe_forget(f)

    def _maybe_forget(self, f: _File) -> None:
        if f.handles == 0 and not f.pending and not f.streams and self._files.get(f.key) is f:
            del self._files[f.key]

    def _learn_content_type(self, f: _File, content_type: str | None) -> None:
        """Tell the owner the real type once per file (recordings' names depend on it)."""
        if f.content_type_told or not content_type or self._on_content_type is None:
            return
        f.content_type_told = True
        try:
            self._on_content_type(f.key, content_type)
        except Exception:
            log.exception("on_content_type callback failed for %s", f.key)

    def _learn_size(self, f: _File, total: int | None) -> None:
        """Record the exact size the server announced and fix up blocks in flight."""
        if total is None or total < 0 or total == f.size:
            return
        old = f.size
        if old is not None:
            log.warning("size of %s is %d, not %d as announced; using the server's", f.key, total, old)
            # A block cached as the last one under the old size may be short.
            stale = self._cache.get((f.key, old // self._bs))
            if stale is not None and len(stale) != self._bs:
                self._cache.pop((f.key, old // self._bs), None)
        f.size = total
        self._sizes[f.key] = total
        for p in list(f.pending.values()):
            length = self._block_len(f, p.index)
            if length == 0:
                self._drop_buf(p)
                p.state = _State.ABANDONED
                self._unregister(f, p)
                p.notify()
                continue
            if p.buf is not None and len(p.buf) < length:
                p.buf.extend(bytes(length - len(p.buf)))
                self._st.buffered_bytes += length - p.length
            p.length = length
            if p.filled >= length and p.buf is not None:
                self._complete(f, p)
        f.notify()
        if self._on_size is not None:
            try:
                self._on_size(f.key, total)
            except Exception:
                log.exception("on_size callback failed for %s", f.key)

    def _spawn(self, fn: Callable[..., object], *args: object) -> None:
        # read()/open() checked that run() is running, and nothing awaited since.
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- fetches

    def _start_fetch(self, f: _File, first: int, last: int, priority: Priority, contiguous: bool = False) -> None:
        """Claim the absent blocks in `first..last` and fetch them with one ranged GET."""
        claims: dict[int, _Pending] = {}
        owner = _Fetch()
        for b in range(first, last + 1):
            if not self._claim(f, b, claims, owner) and contiguous and claims:
                break  # random reads fetch only the run that starts at the missing block
        if not claims:
            return
        self._spawn(self._fetch_task, f, min(claims), max(claims), claims, priority)

    async def _fetch_task(
        self, f: _File, first: int, last: int, claims: dict[int, _Pending], priority: Priority,
        remember_failure: bool = True,
    ) -> None:
        bs = self._bs
        pos = first * bs
        stop = (last + 1) * bs
        error: ApiError | None = None
        owner = next(iter(claims.values())).owner
        assert isinstance(owner, _Fetch)
        failures = stalls = 0
        throttled_since: float | None = None
        try:
            while claims:
                if f.size is not None:
                    stop = min(stop, f.size)
                if pos >= stop:
                    break
                self._st.requests += 1
                self._st.fetches += 1
                credit = _SlotWaitCredit(owner)
                try:
                    chunk = await self._client.fetch(f.url, start=pos, end=stop - 1, priority=priority,
                                                     on_piece=partial(self._fetched_piece, f, owner))
                except RangeNotSatisfiable as exc:
                    self._learn_size(f, exc.total if exc.total is not None and exc.total <= pos else pos)
                    break
                except TRANSIENT as exc:
                    failures += 1
                    credit.apply()
                    await self._retry_pause(f, owner, pos, failures, exc)
                    continue
                except RateLimited as exc:
                    throttled_since = await self._wait_for_rate_limit(f, exc, throttled_since)
                    continue
                throttled_since = None
                self._st.bytes_fetched += len(chunk.data)
                self._learn_size(f, chunk.total)
                self._learn_content_type(f, chunk.content_type)
                if chunk.start > pos:
                    raise BadResponse(f"asked {f.key} from {pos}, got bytes from {chunk.start}")
                got_end = chunk.start + len(chunk.data)
                self._write(f, chunk.start, chunk.data)
                if chunk.start < pos and chunk.start == 0:
                    self._keep_whole_body(f, chunk.data)
                if got_end <= pos:
                    stalls += 1
                    if stalls > 2:
                        raise BadResponse(f"no data for {f.key} at {pos}")
                    continue
                pos = got_end
                failures = 0
                owner.progress_at = trio.current_time()
        except ApiError as exc:
            error = exc
        except Exception:
            log.exception("fetch of %s failed unexpectedly", f.key)
            error = BadResponse(f"internal error fetching {f.key}")
        finally:
            self._release(f, claims, error, remember_failure=remember_failure)

    def _fetched_piece(self, f: _File, owner: _Fetch, offset: int, piece: bytes) -> None:
        """A piece of a fetch's body, as it arrives: the blocks it fills wake their readers
        now, not when the whole range is in (a small file is one fetch of up to
        `small_file_max`: on a slow link, its first byte would wait for its last). The
        Chunk the fetch returns writes the same bytes again, which changes nothing."""
        self._write(f, offset, piece)
        owner.progress_at = trio.current_time()

    async def _retry_pause(self, f: _File, owner: _Fetch | _Stream, pos: int, failures: int,
                           exc: ApiError) -> None:
        """A transient failure at `pos`: re-raise it once `owner` has gone
        `progress_timeout` seconds without a new byte, else back off before the next try.

        The bound is time, not a count: on a slow link every retry may first wait for a
        rate-limit slot, so a run of failures can span minutes while the download still
        moves forward between them. The pause doubles from 50 ms (the first retry goes at
        once: a dropped connection is usually fine on the next try) to 2 s.
        """
        quiet = trio.current_time() - owner.progress_at
        if quiet >= self._progress_timeout:
            log.info("download of %s gives up at %d: no new byte for %.0f s (%d failures): %s",
                     f.key, pos, quiet, failures, exc)
            raise exc
        self._st.resumes += 1
        log.info("download of %s failed at %d (%s); retrying (failure %d, %.0f s without a new byte)",
                 f.key, pos, exc, failures, quiet)
        if failures > 1:
            await trio.sleep(min(2.0, 0.05 * 2 ** (failures - 2), self._progress_timeout - quiet))

    async def _wait_for_rate_limit(self, f: _File, exc: RateLimited, since: float | None) -> float:
        """A request met a rate-limited group: wait and let the caller try again, for at
        most `rate_limit_patience` seconds in a row. The retry's own slot wait in the
        client's governor keeps it from being sent while the group is blocked."""
        now = trio.current_time()
        since = now if since is None else since
        waited = now - since
        if waited >= self._rate_patience:
            raise RateLimitWaitExceeded(
                f"{f.key}: its rate-limit group stayed blocked for {waited:.0f} s; giving up ({exc})",
                status=429, code=exc.code,
            )
        log.info("download of %s is rate limited; waiting for its group (%.0f s so far)", f.key, waited)
        await trio.sleep(min(1.0, self._rate_patience - waited))
        return since

    def _keep_whole_body(self, f: _File, data: bytes) -> None:
        """A 200 answered a Range request with the whole body: keep what we paid for.

        Absent blocks are cached only when the body is small relative to the cache, so
        one unrangeable file cannot wipe it.
        """
        if len(data) > self._budget // 2:
            return
        bs = self._bs
        for b in range((len(data) + bs - 1) // bs):
            if self._absent(f, b):
                block = data[b * bs : (b + 1) * bs]
                if len(block) == self._block_len(f, b):
                    self._cache[(f.key, b)] = block

    # ----------------------------------------------------------------- streams

    def _start_stream(self, h: _Handle, start: int, priority: Priority, demand: int) -> _Stream:
        st = _Stream(h, start, self._bs, priority)
        st.demand = demand
        st.reader_end = max(start, demand)
        h.stream = st
        h.file.streams.add(st)
        self._streams.add(st)
        self._claim_for_stream(st, (max(demand, start + 1) - 1) // self._bs)
        self._spawn(self._stream_task, st)
        return st

    def _claim_for_stream(self, st: _Stream, b: int) -> None:
        """Claim for `st` every absent block up to `b` it has not passed yet."""
        if st.dropped:
            return
        f = st.file
        if b < st.claim_end:
            if b * self._bs >= st.pos:  # its first byte is still ahead of the stream
                self._claim(f, b, st.claimed, st)
            return
        for i in range(st.claim_end, b + 1):
            if i * self._bs >= st.pos:
                self._claim(f, i, st.claimed, st)
        st.claim_end = b + 1

    def _leave_stream(self, st: _Stream) -> None:
        """Its handle no longer wants `st` (it seeked away, or closed).

        If another handle of the same file is reading sequentially along with it (its
        reads are served by this stream, as cache hits or by waiting on its blocks), that
        handle inherits the stream and paces it from now on: pending blocks keep filling
        and no second request goes out for the same bytes. Otherwise the stream is dropped.
        """
        near = self._reach(st) + self._seek_tol
        heirs = [h for h in self._handles.values()
                 if h.file is st.file and h is not st.handle and h.stream is None
                 and h.streak >= self._min_streak and abs(st.pos - h.pos) <= near]
        if st.dropped or st.done or not heirs:
            self._drop_stream(st)
            return
        heir = max(heirs, key=lambda h: h.pos)  # the one reading closest to the stream
        if st.handle.stream is st:
            st.handle.stream = None
        st.handle = heir
        st.priority = heir.priority
        st.reader_end = heir.pos  # paced by the heir's reads from here on
        heir.stream = st
        log.debug("stream of %s handed over at %d", st.file.key, st.pos)
        st.notify()

    def _drop_stream(self, st: _Stream) -> None:
        """Stop a stream now; blocks it held are abandoned so their readers re-plan."""
        if st.dropped:
            return
        st.dropped = True
        st.scope.cancel()
        self._streams.discard(st)  # its task may need a moment to close the connection
        if st.handle.stream is st:
            st.handle.stream = None
        st.file.streams.discard(st)
        if st.file.probe is st:
            st.file.probe = None
        self._release(st.file, st.claimed, None)
        st.ready.set()
        st.file.notify()

    def _limit(self, st: _Stream) -> int:
        f = st.file
        if f.size is None and f.probe is st:
            return 1 << 62  # open() waits for a size the server did not say: on to the end
        if f.size is not None and f.size <= self._small_max:
            return f.size  # a small file is read whole by the request already open
        share = self._budget // max(1, len(self._streams))
        return max(st.demand, st.reader_end + min(st.window, share))

    async def _wait_for_room(self, st: _Stream) -> bool:
        """Pause until the reader needs more; False when it stayed away too long."""
        deadline = trio.current_time() + self._idle_timeout
        waited = False
        while st.pos >= self._limit(st):
            if trio.current_time() >= deadline:
                log.debug("stream of %s idle at %d; dropping it", st.file.key, st.pos)
                return False
            waited = True
            with trio.move_on_at(deadline):
                await st.wake.wait()
        if waited:
            # Paused by its reader, not stuck: the time without progress starts now.
            st.progress_at = max(st.progress_at, trio.current_time())
        return True

    def _stream_priority(self, st: _Stream) -> Priority:
        if st.demand > st.pos:
            return st.priority
        if st.file.probe is st and st.file.size is None:
            return st.priority  # open() is blocked on this request's headers
        return max(st.priority, Priority.READAHEAD)

    async def _probe_size(self, h: _Handle) -> None:
        f = h.file
        for _ in range(3):
            if f.size is not None:
                return
            st = f.probe
            if st is None or st.done or st.dropped:
                st = self._start_stream(h, 0, h.priority, demand=0)
                f.probe = st
            await st.ready.wait()
            while f.size is None and st.error is None and not st.done and not st.dropped:
                await f.news()  # the server did not say: the probe reads on to the end
            if st.error is not None:
                raise st.error
            if f.size is not None:
                return
        if f.size is None:
            raise NetworkError(f"could not learn the size of {f.key}")

    async def _stream_task(self, st: _Stream) -> None:
        f = st.file
        error: ApiError | None = None
        try:
            with st.scope:
                await self._pump(st)
        except ApiError as exc:
            error = exc
            log.info("stream of %s failed at %d: %s", f.key, st.pos, exc)
        except Exception:
            log.exception("stream of %s failed unexpectedly", f.key)
            error = BadResponse(f"internal error streaming {f.key}")
        finally:
            st.done = True
            st.error = error
            self._streams.discard(st)
            f.streams.discard(st)
            if st.handle.stream is st:
                st.handle.stream = None
            if f.probe is st:
                f.probe = None
            self._release(f, st.claimed, error)
            st.ready.set()
            f.notify()

    async def _pump(self, st: _Stream) -> None:
        """Run streaming GETs from `st.pos` until EOF, idleness, or the retry cap."""
        f = st.file
        stalls = 0
        throttled_since: float | None = None
        while f.size is None or st.pos < f.size:
            if st.ready.is_set() and not await self._wait_for_room(st):
                return
            before = st.pos
            self._st.requests += 1
            self._st.streams += 1
            whole_body = False
            credit = _SlotWaitCredit(st)
            try:
                async with self._client.stream(
                    f.url, start=st.pos, priority=self._stream_priority(st)
                ) as s:
                    throttled_since = None
                    self._learn_size(f, s.total)
                    self._learn_content_type(f, s.content_type)
                    if s.start > st.pos:
                        raise BadResponse(f"asked {f.key} from {st.pos}, got bytes from {s.start}")
                    skip = st.pos - s.start  # a 200 answer starts at 0: skip what we have
                    st.ready.set()
                    st.body = s if not skip else None
                    try:
                        async for piece in s.aiter_bytes():
                            self._st.bytes_fetched += len(piece)
                            if skip:
                                if len(piece) <= skip:
                                    skip -= len(piece)
                                    continue
                                piece = piece[skip:]
                                skip = 0
                            if f.size is not None and st.pos + len(piece) > f.size:
                                piece = piece[: f.size - st.pos]
                            if piece:
                                self._claim_for_stream(st, (st.pos + len(piece) - 1) // self._bs)
                                self._write(f, st.pos, piece)
                                st.pos += len(piece)
                                st.progress_at = trio.current_time()
                                st.failures = 0
                            if f.size is not None and st.pos >= f.size:
                                return
                            if not await self._wait_for_room(st):
                                return
                            # A reader waiting for bytes is woken as soon as they are all in;
                            # read-ahead arrives in big pieces (fewer trips through Python),
                            # cut at block ends so that a whole block is cached as it came.
                            s.batch(st.demand - st.pos if st.demand > st.pos else self._bs,
                                    None if skip else self._bs - st.pos % self._bs)
                            if not skip:
                                st.body = s
                    finally:
                        st.body = None  # (a finished answer takes no more hints)
                    whole_body = getattr(s, "whole_file", False) and not skip
            except RangeNotSatisfiable as exc:
                total = exc.total if exc.total is not None and exc.total <= st.pos else st.pos
                self._learn_size(f, total)
                return
            except RateLimited as exc:
                throttled_since = await self._wait_for_rate_limit(f, exc, throttled_since)
                continue
            except TRANSIENT as exc:
                st.failures += 1
                credit.apply()
                await self._retry_pause(f, st, st.pos, st.failures, exc)
                continue
            if whole_body and f.size is None:
                # A 200 ended cleanly: its body was the whole file, so this is the end.
                self._learn_size(f, st.pos)
                return
            # The body ended before the file did (a byte cap, or the end when the size
            # is unknown): the next request continues, or answers 416 at the end.
            if st.pos == before:
                stalls += 1
                if stalls > 2:
                    raise BadResponse(f"no data for {f.key} at {st.pos}")
            else:
                stalls = 0
