"""`rcfs.reader` over the real client and the emulator on loopback HTTP (hypercorn).

Request counts are taken from the emulator's own counters, so they are what reached
the server, retries and all.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import asynccontextmanager
from functools import partial
from typing import AsyncIterator

import pytest
import trio
import trio.testing

from rcfs.api import Credentials, NetworkError, Priority, RetryPolicy, RingCentralClient
from conftest import TEST_DEFAULTS
from rcfs.emulator import media, seed
from rcfs.emulator.app import Emulator
from rcfs.emulator.config import EmulatorConfig
from rcfs.emulator.server import serve
from rcfs.reader import Reader, Source

KiB = 2**10
MiB = 2**20
RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, total=10.0)


def make_emu(*, faults: dict | None = None, **config: object) -> Emulator:
    # Rate-limit windows scaled down so pacing is real but never slows the suite.
    config.setdefault("window", 2.0)
    cfg = EmulatorConfig(**{**TEST_DEFAULTS, **config})  # type: ignore[arg-type]
    for key, value in (faults or {}).items():
        setattr(cfg.faults, key, value)
    return Emulator(cfg, seed.build_store(cfg))


@asynccontextmanager
async def stack(emu: Emulator, **reader_kw: object) -> AsyncIterator[tuple[Reader, RingCentralClient]]:
    """Serve `emu` on loopback, log a client in, and run a Reader on it."""
    c = emu.config
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, emu, host="127.0.0.1"))
        creds = Credentials(emu.platform_base, c.client_id, c.client_secret, c.jwt, media_url=emu.media_base)
        async with RingCentralClient(creds, retry=RETRY, timeout=5.0) as rc:
            reader_kw.setdefault("block_size", 256 * KiB)
            reader_kw.setdefault("small_file_max", 2 * MiB)
            reader_kw.setdefault("read_timeout", 20.0)
            reader = Reader(rc, **reader_kw)  # type: ignore[arg-type]
            await nursery.start(reader.run)
            try:
                yield reader, rc
            finally:
                nursery.cancel_scope.cancel()


def recordings(emu: Emulator) -> list[tuple[str, str, bytes]]:
    """(key, content URL, bytes) of every recording, largest first."""
    out = []
    for rec in sorted(emu.store.recordings.values(), key=lambda r: -r.media.size):
        out.append((f"rec:{rec.id}", emu.recording_content_uri(rec.id), rec.media.read(0, rec.media.size)))
    return out


async def read_all(reader: Reader, h: int, step: int = 128 * KiB) -> bytes:
    out = bytearray()
    while True:
        piece = await reader.read(h, len(out), step)
        if not piece:
            return bytes(out)
        out += piece


def media_requests(emu: Emulator) -> int:
    return sum(n for name, n in emu.stats.requests.items() if "content" in name)


async def test_sequential_read_of_a_recording_is_one_request() -> None:
    emu = make_emu()
    learned: dict[str, int] = {}
    async with stack(emu, on_size=learned.__setitem__) as (reader, rc):
        key, url, data = recordings(emu)[0]
        h = await reader.open(Source(key, url, None))  # recordings never carry a size
        assert learned == {key: len(data)} and reader.known_size(key) == len(data)
        assert media_requests(emu) == 1
        got = await read_all(reader, h)
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert media_requests(emu) == 1
        assert rc.stats.requests.get("heavy") == 1
        reader.close(h)
        h = await reader.open(Source(key, url, None))  # the size is remembered
        assert await read_all(reader, h) == data  # and the bytes are cached
        assert media_requests(emu) == 1
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert reader.stats.active_streams == 0


async def test_attachments_of_known_and_unknown_size_cost_one_request_each() -> None:
    emu = make_emu(hide_sizes=0.5)
    async with stack(emu) as (reader, _):
        atts = [
            (msg, att)
            for msg in emu.store.messages.values()
            if msg.type == "Fax" and msg.availability == "Alive"
            for att in msg.attachments
        ][:6]
        assert atts
        for i, (msg, att) in enumerate(atts):
            data = att.media.read(0, att.media.size)
            size = len(data) if i % 2 else None
            h = await reader.open(Source(f"msg:{msg.id}:{att.id}", emu.attachment_uri(msg.id, att.id), size))
            assert await read_all(reader, h, step=96 * KiB) == data
            reader.close(h)
        assert media_requests(emu) == len(atts)


async def test_byte_capped_answers_are_continued() -> None:
    cap = 700_000
    emu = make_emu(max_bytes_per_response=cap, window=1.0)
    async with stack(emu) as (reader, _):
        key, url, data = recordings(emu)[-1]
        h = await reader.open(Source(key, url, len(data)))
        assert await read_all(reader, h) == data
        assert media_requests(emu) == math.ceil(len(data) / cap)


async def test_dropped_and_truncated_streams_resume_to_exact_bytes() -> None:
    emu = make_emu(faults={"reset_rate": 0.5, "truncate_rate": 0.3, "seed": 3})
    async with stack(emu) as (reader, _):
        key, url, data = recordings(emu)[1]
        h = await reader.open(Source(key, url, None))
        assert await read_all(reader, h) == data
        faults = sum(emu.stats.faults.values())
        assert faults > 0 and reader.stats.resumes > 0
        # Every request after the first is a resume after a fault, nothing more.
        assert media_requests(emu) == 1 + reader.stats.resumes
        assert reader.stats.resumes <= faults


async def test_persistent_resets_end_in_an_error_not_a_hang() -> None:
    # Every answer is cut before its first byte: no attempt can make progress.
    emu = make_emu(faults={"reset_rate": 1.0, "cut_at": 0.0})
    async with stack(emu, progress_timeout=3.0) as (reader, _):
        key, url, data = recordings(emu)[0]
        h = await reader.open(Source(key, url, len(data)))
        with trio.fail_after(15):
            with pytest.raises(NetworkError):
                await read_all(reader, h)


async def test_random_reads_and_single_flight_over_http() -> None:
    emu = make_emu(faults={"latency_ms": 20})
    bs = 256 * KiB
    async with stack(emu, block_size=bs) as (reader, _):
        key, url, data = recordings(emu)[0]
        handles = [await reader.open(Source(key, url, len(data))) for _ in range(5)]
        for h in handles:  # move every handle away from offset 0: the next read is a seek
            assert await reader.read(h, 100, 10) == data[100:110]
        before = media_requests(emu)
        # far from each other and from the stream handle 0 started at offset 0
        offsets = [20 * bs + 17, 16 * bs + 4000, 30 * bs + 1]
        results: dict[tuple[int, int], bytes] = {}

        async def one(h: int, off: int) -> None:
            results[(h, off)] = await reader.read(h, off, 5000)

        for off in offsets:
            async with trio.open_nursery() as n:
                for h in handles:
                    n.start_soon(one, h, off)
        assert all(v == data[off : off + 5000] for (h, off), v in results.items())
        assert media_requests(emu) - before == len(offsets)
        for h in handles:
            reader.close(h)


async def test_close_stops_the_http_stream() -> None:
    emu = make_emu()
    rec = max(emu.store.recordings.values(), key=lambda r: r.media.size)
    rec.media = media.audio_mp3_sized(7, 64 * MiB)
    async with stack(emu, cache_bytes=4 * MiB) as (reader, rc):
        key, url = f"rec:{rec.id}", emu.recording_content_uri(rec.id)
        data = rec.media.read(0, rec.media.size)
        h = await reader.open(Source(key, url, len(data)))
        assert await reader.read(h, 0, 128 * KiB) == data[: 128 * KiB]
        await trio.sleep(0.2)
        served = emu.stats.bytes_served
        # Paced: beyond the 2 MiB read-ahead budget only socket buffers fill up.
        assert served < 16 * MiB
        reader.close(h)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert reader.stats.active_streams == 0
        # The connection pool is healthy: another read goes through.
        h = await reader.open(Source(key, url, len(data)), priority=Priority.FOREGROUND)
        off = len(data) - 1000
        assert await reader.read(h, off, 5000) == data[off:]


async def test_a_streamed_body_comes_from_the_socket_past_h11_and_the_connection_is_reused(monkeypatch) -> None:
    """rcfs.api.tuning.RawBody: after its first piece, a media body is read from the socket
    directly (h11 is asked for events only at the start and the end, not once per piece),
    the bytes are exact, and the connection goes back to the pool for the next request.
    A body cut short still ends in NetworkError, and the next request still works."""
    import h11

    emu = make_emu()
    rec = max(emu.store.recordings.values(), key=lambda r: r.media.size)
    rec.media = media.audio_mp3_sized(11, 24 * MiB)
    data = rec.media.read(0, rec.media.size)
    events = {"n": 0}
    next_event = h11.Connection.next_event

    def counting(self):  # type: ignore[no-untyped-def]
        events["n"] += 1
        return next_event(self)

    monkeypatch.setattr(h11.Connection, "next_event", counting)
    async with stack(emu) as (reader, rc):
        url = emu.recording_content_uri(rec.id)  # (the emulator knows its address once serving)
        assert (await rc.fetch(url, start=0, end=9)).data == data[:10]  # logs in: its events are not counted
        for start in (0, 5 * MiB + 7):
            events["n"] = 0
            got, pieces = bytearray(), 0
            async with rc.stream(url, start=start) as s:
                async for piece in s.aiter_bytes():
                    got += piece
                    pieces += 1
            assert bytes(got) == data[start:]
            # Many socket reads, and h11 asked about the headers, the first piece and the end
            # (waiting for data included), not about every piece.
            assert events["n"] <= 10 < pieces, (events, pieces)
        from urllib.parse import urlsplit

        media_port = urlsplit(emu.media_base).port
        media_conns = [c for c in rc._http._transport._pool.connections if c._origin.port == media_port]
        assert len(media_conns) == 1  # the fetch and both streams ran on one kept-alive connection

        emu.config.faults.truncate_rate = 1.0
        with pytest.raises(NetworkError):
            async with rc.stream(url, start=0) as s:
                async for piece in s.aiter_bytes():
                    pass
        emu.config.faults.truncate_rate = 0.0
        async with rc.stream(url, start=len(data) - 1000) as s:
            assert b"".join([p async for p in s.aiter_bytes()]) == data[-1000:]
