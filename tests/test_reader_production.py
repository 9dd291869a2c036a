"""The reader over real loopback HTTP against what production does sometimes (issue 9):
media answers without a size, flaky links, rate limits met by a blocking read."""

from __future__ import annotations

import hashlib
import tracemalloc

import pytest
import trio

from conftest import build_config
from rcfs.api import Credentials, NetworkError, RateLimited, RateLimitWaitExceeded, RingCentralClient
from rcfs.emulator import seed
from rcfs.reader import Reader, Source
from test_reader_emulator import RETRY, KiB, MiB, make_emu, media_requests, read_all, recordings, stack


def every_file(emu) -> list[tuple[str, str, bytes]]:
    """(key, URL, bytes) of every attachment and recording of the account."""
    out = []
    for msg in emu.store.messages.values():
        if msg.availability == "Purged":
            continue
        for att in msg.attachments:
            if att.media is not None:
                out.append((f"msg:{msg.id}:{att.id}", emu.attachment_uri(msg.id, att.id),
                            att.media.read(0, att.media.size)))
    return out + recordings(emu)


# -- 4. media answers without a size ---------------------------------------------------------

@pytest.mark.parametrize("mode", [
    {"chunked_media": True},  # 200/206 without Content-Length (206 still says its total)
    {"chunked_media": True, "unknown_media_total": True},  # no size anywhere until a 416
    {"chunked_media": True, "ignore_range": True},  # a chunked 200 with the whole body
])
async def test_files_without_a_size_open_with_their_exact_size(mode) -> None:
    emu = make_emu(hide_sizes=1.0, window=1.0, limit_medium=500, limit_heavy=500, **mode)
    async with stack(emu) as (reader, _):
        files = every_file(emu)
        for key, url, data in files[::5]:
            h = await reader.open(Source(key, url, None))
            # what the FUSE side shows from now on: an unknown size would be an empty file
            assert reader.known_size(key) == len(data), key
            got = await read_all(reader, h, step=96 * KiB)
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), key
            reader.close(h)


async def test_a_200_to_a_range_request_never_holds_the_whole_body(start_emulator) -> None:
    # The emulator runs in its own process: only rcfs' memory is traced here.
    srv = start_emulator(ignore_range=True, chunked_media=True, window=1.0, limit_heavy=100)
    store = seed.build_store(build_config())
    creds = Credentials(srv.platform, srv.client_id, srv.client_secret, srv.jwt, media_url=srv.media)
    async with RingCentralClient(creds, retry=RETRY, timeout=5.0) as rc, trio.open_nursery() as nursery:
        bound = 6 * MiB
        reader = Reader(rc, cache_bytes=bound, block_size=256 * KiB, small_file_max=256 * KiB)
        await nursery.start(reader.run)
        calls = await rc.list_call_log()
        rec = max((c["recording"] for c in calls), key=lambda r: store.recordings[r["id"]].media.size)
        media = store.recordings[rec["id"]].media
        data = media.read(0, media.size)
        assert len(data) > 8 * MiB
        h = await reader.open(Source(f"rec:{rec['id']}", rec["contentUri"], len(data)))
        tracemalloc.start()
        try:
            for off in (len(data) - 300 * KiB, len(data) // 2, len(data) - 5000):
                assert await reader.read(h, off, 4096) == data[off:off + 4096]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert srv.stats()["statuses"]["200"] >= 3  # the server really sent whole bodies
        # Within the cache bound plus what one socket read may hold on its way into the
        # cache (the stream's low-water mark is up to 1 MiB, and the piece may be sliced once:
        # 2 MiB); the whole body alone is over 8 MiB = bound + 2 MiB (an older fetch held it
        # twice over). The bound without that allowance failed about one run in three: what
        # is in flight at the moment of the peak depends on the scheduling.
        in_flight = 2 * MiB
        assert len(data) > bound + in_flight
        assert peak < bound + in_flight, peak
        nursery.cancel_scope.cancel()


# -- 5. flaky links ----------------------------------------------------------------------------

async def test_every_file_arrives_exactly_over_a_link_that_fails_a_third_of_the_time() -> None:
    # reset, truncation or 503 on about a third of the media answers, 64 KiB at most each
    emu = make_emu(window=1.0, limit_medium=1000, limit_heavy=1000, max_bytes_per_response=64 * KiB,
                   faults={"reset_rate": 0.15, "truncate_rate": 0.15, "error_rate": 0.06, "seed": 5})
    async with stack(emu) as (reader, _):
        files = every_file(emu)
        for key, url, data in files:
            h = await reader.open(Source(key, url, None))
            got = await read_all(reader, h, step=128 * KiB)
            assert len(got) == len(data) and hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), key
            reader.close(h)
        faults = emu.stats.faults
        answers = media_requests(emu)
        assert faults["reset"] + faults["truncate"] + faults["error"] > answers / 4
        # every fault was retried through, none ended a read (the bytes above are all right);
        # a count in proportion to the faults, not to the number of files, which the demo
        # account's seed changes (more small texts and MMS, fewer resumes per file). That no
        # count per download ends a read is test_mount_read_faults' job.
        injected = faults["reset"] + faults["truncate"] + faults["error"]
        assert reader.stats.resumes > injected / 2


async def test_a_read_that_cannot_progress_fails_within_the_bound() -> None:
    emu = make_emu(window=1.0, faults={"reset_rate": 1.0, "cut_at": 0.0})
    async with stack(emu, progress_timeout=4.0, read_timeout=20.0) as (reader, _):
        key, url, data = recordings(emu)[0]
        h = await reader.open(Source(key, url, len(data)))
        t0 = trio.current_time()
        with pytest.raises(NetworkError):
            await read_all(reader, h)
        # progress_timeout after the read began (no byte ever came), never read_timeout
        assert 4.0 <= trio.current_time() - t0 < 20.0
        assert reader.stats.resumes >= 6


# -- 8. rate limits seen by a blocking reader ------------------------------------------------------

async def test_a_blocking_read_waits_out_a_rate_limited_group() -> None:
    emu = make_emu(window=1.0)
    async with stack(emu) as (reader, rc):
        await rc.list_messages("Fax")  # logged in before the 429s start
        key, url, data = recordings(emu)[0]
        emu.config.faults.force_429 = 6  # more than one call waits out (RetryPolicy.max_429 = 3)
        h = await reader.open(Source(key, url, len(data)))
        assert await read_all(reader, h) == data
        assert emu.stats.rate_limited == 6


async def test_a_read_rate_limited_beyond_its_patience_is_an_io_error_not_eagain() -> None:
    emu = make_emu(window=0.5)
    async with stack(emu, rate_limit_patience=3.0, failure_ttl=0.0) as (reader, rc):
        await rc.list_messages("Fax")
        key, url, data = recordings(emu)[0]
        emu.config.faults.force_429 = 10_000
        h = await reader.open(Source(key, url, len(data)))
        t0 = trio.current_time()
        with pytest.raises(RateLimitWaitExceeded) as info:
            await reader.read(h, 0, 4096)
        assert not isinstance(info.value, RateLimited)  # EIO, not EAGAIN
        assert trio.current_time() - t0 < 15
