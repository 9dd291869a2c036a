"""`rcfs.exports_model` and the report calls of the client, against the emulator on
loopback HTTP (hypercorn), with the archives read through the real Reader.

Request counts come from the emulator's own counters (what reached the server).
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import json
import zipfile
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import AsyncIterator

import pytest
import trio

from rcfs.api import Credentials, RetryPolicy, RingCentralClient
from rcfs.api.client import classify
from rcfs.api.governor import Group
from rcfs.emulator import seed
from rcfs.emulator.app import Emulator
from rcfs.emulator.config import EmulatorConfig
from rcfs.emulator.server import serve
from rcfs.exports_model import (STATE_FILE, ExportError, ExportManager, ExportNameError,
                                TooManyExports, archive_file_name, parse_export_name)
from rcfs.reader import Reader

KiB, MiB = 2**10, 2**20
RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, total=10.0)
UTC = dt.timezone.utc


def make_emu(**config: object) -> Emulator:
    # Report calls and archive reads are all Heavy (10 a minute by default): the client
    # paces itself by the limit the headers announce, so announce a roomy one.
    config.setdefault("limit_heavy", 1000)
    cfg = EmulatorConfig(**config)  # type: ignore[arg-type]
    return Emulator(cfg, seed.build_store(cfg))


@asynccontextmanager
async def stack(emu: Emulator) -> AsyncIterator[tuple[RingCentralClient, Reader]]:
    """Serve `emu` on loopback, log a client in, run a Reader on it."""
    c = emu.config
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, emu, host="127.0.0.1"))
        creds = Credentials(emu.platform_base, c.client_id, c.client_secret, c.jwt, media_url=emu.media_base)
        async with RingCentralClient(creds, retry=RETRY, timeout=10.0) as rc:
            reader = Reader(rc, block_size=256 * KiB, small_file_max=2 * MiB, read_timeout=20.0)
            await nursery.start(reader.run)
            try:
                yield rc, reader
            finally:
                nursery.cancel_scope.cancel()


async def until_done(manager: ExportManager, name: str, limit: int = 400):
    for _ in range(limit):
        export = await manager.poll(name, force=True)
        if not export.running:
            return export
        await trio.sleep(0.02)
    raise AssertionError(f"export {name} still {export.state}")


async def read_source(reader: Reader, source) -> bytes:
    h = await reader.open(source)
    try:
        out = bytearray()
        while True:
            piece = await reader.read(h, len(out), 1 * MiB)
            if not piece:
                return bytes(out)
            out += piece
    finally:
        reader.close(h)


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name, first, last, types, canonical", [
    ("2026-01-01..2026-03-31", "2026-01-01", "2026-03-31", (), "2026-01-01..2026-03-31"),
    ("2026-01-01..2026-03-31+fax+voicemail", "2026-01-01", "2026-03-31", ("Fax", "VoiceMail"),
     "2026-01-01..2026-03-31+fax+voicemail"),
    ("2026-02-14..2026-02-14+VoiceMail+SMS", "2026-02-14", "2026-02-14", ("SMS", "VoiceMail"),
     "2026-02-14..2026-02-14+sms+voicemail"),
    ("2024-02-29..2024-03-01+pager", "2024-02-29", "2024-03-01", ("Pager",),
     "2024-02-29..2024-03-01+pager"),
])
def test_export_names(name, first, last, types, canonical):
    spec = parse_export_name(name)
    assert (spec.first_day.isoformat(), spec.last_day.isoformat(), spec.types) == (first, last, types)
    assert spec.name == canonical
    assert spec.date_from == dt.datetime.fromisoformat(first + "T00:00:00+00:00")
    assert spec.date_to == dt.datetime.fromisoformat(last + "T23:59:59.999+00:00")


@pytest.mark.parametrize("name", [
    "2026-01-01", "2026-01-01..", "..2026-03-31", "2026-03-31..2026-01-01",
    "2026-02-30..2026-03-01", "2026-01-01..2026-03-31+email", "2026-01-01..2026-03-31+fax+fax",
    "2026-01-01..2026-03-31 ", "2026-1-1..2026-3-31", "x2026-01-01..2026-03-31", "",
])
def test_bad_export_names_are_einval(name):
    with pytest.raises(ExportNameError) as info:
        parse_export_name(name)
    assert info.value.errno == errno.EINVAL and str(info.value)


def test_archive_file_names_sort():
    names = [archive_file_name(i, 12) for i in range(12)]
    assert names[:2] == ["00-metadata.zip", "01-attachments.zip"]
    assert sorted(names) == names
    assert archive_file_name(0, 1) == "0-metadata.zip"


def test_archive_urls_are_heavy_like_the_report_endpoints():
    url = "https://platform.ringcentral.com/restapi/v1.0/account/1/message-store-report/t-1/archive/3"
    assert classify("GET", url) == ("message-store-report", Group.HEAVY)
    assert classify("GET", url.rsplit("/", 2)[0] + "/archive")[1] is Group.HEAVY


# ----------------------------------------------------------------------------- the flow


async def test_export_completes_and_its_archives_read_back_through_the_reader(tmp_path: Path):
    emu = make_emu(report_delay=0.3, report_archive_max_bytes=3_000_000)
    async with stack(emu) as (rc, reader):
        exports = ExportManager(rc, tmp_path, poll_min=0.01, poll_max=0.05)
        name = "2000-01-01..2099-12-31+fax+voicemail"
        started = await exports.create(name)
        assert started.state == "Accepted" and started.task_id
        assert exports.names() == [name]
        assert "state: Accepted" in started.status_text()
        export = await until_done(exports, name)
        assert export.state == "Completed" and export.error is None
        files = export.files()
        listing = await rc.list_message_store_report_archives(export.task_id)
        assert [f.size for f in files] == [r["size"] for r in listing]
        assert [f.name for f in files][0].endswith("metadata.zip") and len(files) >= 3

        # Everything through the Reader: exact sizes, valid zips, exactly the messages.
        blobs = [await read_source(reader, f.source) for f in files]
        assert [len(b) for b in blobs] == [f.size for f in files]
        meta = zipfile.ZipFile(io.BytesIO(blobs[0]))
        records = json.loads(meta.read(meta.namelist()[0]))["records"]
        expected = await rc.list_messages(["Fax", "VoiceMail"], export.spec.date_from, export.spec.date_to)
        assert [m["id"] for m in records] == [m["id"] for m in expected]
        members = {}
        for blob in blobs[1:]:
            zf = zipfile.ZipFile(io.BytesIO(blob))
            assert zf.testzip() is None
            # The export covers every extension; the signed-in one's part is checked.
            own = meta.namelist()[0].rsplit("/", 1)[0] + "/"
            members.update({n: zf.read(n) for n in zf.namelist() if n.startswith(own)})
        want = {}
        for m in expected:
            for att in m["attachments"]:
                if att["type"] != "Text":
                    want[att["id"]] = att["uri"]
        assert sorted(int(n.rsplit("/", 1)[1].split(".")[0]) for n in members) == sorted(want)
        by_id = {int(n.rsplit("/", 1)[1].split(".")[0]): data for n, data in members.items()}
        for att_id in sorted(want)[:6]:
            chunk = await rc.fetch(want[att_id])
            assert by_id[att_id] == chunk.data

        # The state file keeps the task id and the result.
        kept = json.loads((tmp_path / STATE_FILE).read_text())
        [item] = kept["exports"]
        assert (item["name"], item["task_id"], item["state"]) == (name, export.task_id, "Completed")
        assert [s for s, _ in item["archives"]] == [f.size for f in files]

        # rmdir forgets it, locally and in the state file.
        exports.forget(name)
        assert exports.names() == [] and json.loads((tmp_path / STATE_FILE).read_text())["exports"] == []
        with pytest.raises(ExportError) as info:
            exports.forget(name)
        assert info.value.errno == errno.ENOENT


async def test_listing_a_large_archive_reads_only_its_tail(tmp_path: Path):
    """`unzip -l` needs the end of central directory and the directory: with a ~150 MB
    archive, that is one or two ranged GETs of the tail through the Reader."""
    emu = make_emu(report_delay=0)
    from rcfs.emulator.admin import inject_message
    inject_message(emu, {"type": "VoiceMail", "seconds": 160 * 60, "from": "+15550001234"})
    async with stack(emu) as (rc, reader):
        exports = ExportManager(rc, tmp_path, poll_min=0.01, poll_max=0.05)
        today = dt.datetime.now(UTC).date()
        day = dt.timedelta(days=1)
        name = f"{(today - day).isoformat()}..{(today + day).isoformat()}+voicemail"
        await exports.create(name)
        export = await until_done(exports, name)
        big = max(export.files(), key=lambda f: f.size)
        assert big.size > 140 * MiB
        emu.stats.reset()
        h = await reader.open(big.source)
        try:
            tail = bytes(await reader.read(h, big.size - 64 * KiB, 64 * KiB))
        finally:
            reader.close(h)
        eocd = tail.rindex(b"PK\x05\x06")
        cd_size = int.from_bytes(tail[eocd + 12:eocd + 16], "little")
        cd_offset = int.from_bytes(tail[eocd + 16:eocd + 20], "little")
        assert cd_offset >= big.size - 64 * KiB  # the directory is inside the tail read
        directory = tail[cd_offset - (big.size - 64 * KiB):][:cd_size]
        assert directory.startswith(b"PK\x01\x02") and b".mp3" in directory
        assert emu.stats.requests["report-archive-content"] <= 2
        assert emu.stats.bytes_served <= 2 * 256 * KiB + 64 * KiB


async def test_a_third_export_is_refused_locally_then_by_the_server(tmp_path: Path):
    emu = make_emu(report_delay=3600)
    async with stack(emu) as (rc, _):
        exports = ExportManager(rc, tmp_path)
        await exports.create("2026-01-01..2026-01-31")
        await exports.create("2026-02-01..2026-02-28")
        with pytest.raises(TooManyExports) as info:
            await exports.create("2026-03-01..2026-03-31")
        assert info.value.errno == errno.EBUSY
        assert emu.stats.requests["report-create"] == 2  # refused without a request
        assert exports.names() == ["2026-01-01..2026-01-31", "2026-02-01..2026-02-28"]
        with pytest.raises(ExportError) as same:
            await exports.create("2026-01-01..2026-01-31+fax+sms+voicemail+pager")
        assert same.value.errno == errno.EEXIST

        # Another mount of the same account (its own state): the server says no.
        other = ExportManager(rc, tmp_path / "other")
        with pytest.raises(TooManyExports):
            await other.create("2026-04-01..2026-04-30")
        assert emu.stats.requests["report-create"] == 3
        assert other.names() == []


async def test_a_failed_report_shows_its_error(tmp_path: Path):
    emu = make_emu(report_delay=0.05, report_failures=1)
    async with stack(emu) as (rc, _):
        exports = ExportManager(rc, tmp_path, poll_min=0.01, poll_max=0.05)
        await exports.create("2026-01-01..2026-03-31+sms")
        export = await until_done(exports, "2026-01-01..2026-03-31+sms")
        assert export.state == "Failed" and export.files() == []
        assert "error: " in export.status_text() and "failed" in export.error
        again = ExportManager(rc, tmp_path)  # the failure survives a remount too
        assert again.get("2026-01-01..2026-03-31+sms").failed


async def test_a_remount_picks_up_a_running_export(tmp_path: Path):
    emu = make_emu(report_delay=0.5)
    async with stack(emu) as (rc, _):
        first = ExportManager(rc, tmp_path, poll_min=10, poll_max=10)
        started = await first.create("2026-01-01..2026-06-30")
        assert started.running
        del first  # "unmount": nothing but the state file remains
        second = ExportManager(rc, tmp_path, poll_min=0.01, poll_max=0.05)
        again = second.get("2026-01-01..2026-06-30")
        assert again is not None and again.task_id == started.task_id and again.running
        done = await until_done(second, "2026-01-01..2026-06-30")
        assert done.state == "Completed" and done.files()


async def test_polling_backs_off_and_caps_and_not_due_costs_nothing(tmp_path: Path):
    emu = make_emu(report_delay=3600)
    now = [1000.0]
    async with stack(emu) as (rc, _):
        exports = ExportManager(rc, tmp_path, poll_min=2, poll_max=30, clock=lambda: now[0])
        name = "2026-01-01..2026-01-31"
        await exports.create(name)
        intervals = []
        for _ in range(7):
            export = exports.get(name)
            now[0] = export.next_poll
            before = emu.stats.requests["report-get"]
            await exports.poll(name)
            assert emu.stats.requests["report-get"] == before + 1
            intervals.append(export.interval)
            await exports.poll(name)  # not due: no request
            assert emu.stats.requests["report-get"] == before + 1
        assert intervals == [4, 8, 16, 30, 30, 30, 30]
        assert await exports.poll_due() == pytest.approx(30)


async def test_run_loop_finishes_exports_in_the_background(tmp_path: Path):
    emu = make_emu(report_delay=0.2)
    async with stack(emu) as (rc, _):
        exports = ExportManager(rc, tmp_path, poll_min=0.05, poll_max=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(exports.run)
            await exports.create("2026-01-01..2026-12-31+fax")
            with trio.fail_after(30):
                while exports.get("2026-01-01..2026-12-31+fax").running:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert exports.get("2026-01-01..2026-12-31+fax").completed


def test_an_unreadable_state_file_is_kept_aside(tmp_path: Path):
    (tmp_path / STATE_FILE).write_text("{not json")

    class NoClient:
        pass

    manager = ExportManager(NoClient(), tmp_path)  # type: ignore[arg-type]
    assert manager.names() == []
    assert (tmp_path / (STATE_FILE + ".bad")).read_text() == "{not json"
