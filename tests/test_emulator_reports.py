"""Message-store reports in the emulator (CONTRACT §12): the task flow, the two-task
limit, failures, and the zip archives generated on demand.

In process (store clock injected, so the status sequence is exact) for the flow; a real
emulator subprocess on loopback for the archives, checked with `unzip -l`, `unzip -t`,
python's zipfile and ranged GETs.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import random
import shutil
import subprocess
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import api_client, build_config
from rcfs.emulator import media, reports, seed
from rcfs.emulator.app import Emulator
from rcfs.emulator.store import UTC
from rcfs.emulator.ziplayout import BytesContent, Member, ZipLayout, archive_size

ACCT = "/restapi/v1.0/account/~"
REPORTS = ACCT + "/message-store-report"
EXT = ACCT + "/extension/~"
T0 = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, t: dt.datetime) -> None:
        self.t = t

    def __call__(self) -> dt.datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += dt.timedelta(seconds=seconds)


@pytest.fixture
def clocked():
    """(emulator over the demo account anchored at T0, its store clock)."""
    config = build_config(report_delay=10.0, rate_limits=False)
    store = seed.build_store(config, T0)
    clock = Clock(T0)
    store.now = clock
    return Emulator(config, store), clock


# ----------------------------------------------------------------------------- zip layout


def _members(n: int, rng: random.Random) -> list[Member]:
    out = []
    for i in range(n):
        size = rng.choice([0, 1, 17, 4096, 70_000])
        out.append(Member(f"dir/{i}/file-{i}.bin", BytesContent(rng.randbytes(size)),
                          T0 + dt.timedelta(seconds=2 * i)))
    return out


def test_zip_layout_is_a_valid_zip_of_exact_size_and_any_range_agrees():
    rng = random.Random(5)
    members = _members(12, rng)
    layout = ZipLayout(members)
    whole = layout.read(0, layout.size)
    assert len(whole) == layout.size == archive_size([(m.name, m.content.size) for m in members])
    zf = zipfile.ZipFile(io.BytesIO(whole))
    assert zf.testzip() is None
    assert zf.namelist() == [m.name for m in members]
    for m in members:
        assert zf.read(m.name) == m.content.read(0, m.content.size)
        info = zf.getinfo(m.name)
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.date_time[:5] == m.modified.timetuple()[:5]
    for _ in range(300):
        start = rng.randrange(layout.size)
        length = rng.randrange(1, 5000)
        assert layout.read(start, length) == whole[start:start + length]
    assert layout.read(layout.size - 3, 100) == whole[-3:]
    assert layout.read(layout.size, 10) == b""


def test_zip_layout_computes_only_the_crcs_a_range_needs():
    members = _members(6, random.Random(9))
    layout = ZipLayout(members)
    # Inside member 2's data: no CRC needed at all.
    data_start = layout._offsets[2] + 30 + len(members[2].name)
    if members[2].content.size:
        assert layout.crcs_for(data_start, data_start + 1) == 0
    # The central directory needs all of them, once.
    assert layout.crcs_for(layout.central_offset, layout.size) == len(members)
    assert layout.crcs_for(0, layout.size) == 0


def test_split_archives_stay_within_the_limit(clocked):
    emu, _ = clocked
    mailboxes = reports.company_messages(emu, T0 - dt.timedelta(days=400), T0, [])
    limit = 2_000_000  # above the biggest demo attachment (a 1.5 MB voicemail)
    archives = reports.build_archives(emu, mailboxes, T0, limit)
    assert len(archives) > 3
    assert max(m.content.size for a in archives[1:] for m in a.members) < limit
    assert all(a.size <= limit for a in archives[1:])
    # Greedy packing: no archive could have taken the next one's first member.
    for a, b in zip(archives[1:], archives[2:]):
        entries = [(m.name, m.content.size) for m in a.members + b.members[:1]]
        assert archive_size(entries) > limit
    names = [m.name for a in archives[1:] for m in a.members]
    assert len(names) == len(set(names))


# ----------------------------------------------------------------------------- the task flow


async def _create(c: httpx.AsyncClient, **body) -> httpx.Response:
    return await c.post(REPORTS, json=body)


async def test_status_goes_accepted_inprogress_completed(clocked, emulator_client):
    emu, clock = clocked
    async with api_client(emu, emulator_client) as c:
        r = await _create(c, dateFrom="2026-01-01T00:00:00Z", dateTo="2026-03-31T23:59:59Z",
                          messageTypes=["Fax", "VoiceMail"])
        assert r.status_code == 202, r.text
        task = r.json()
        assert task["status"] == "Accepted"
        assert task["messageTypes"] == ["Fax", "VoiceMail"]
        assert (task["dateFrom"], task["dateTo"]) == ("2026-01-01T00:00:00.000Z", "2026-03-31T23:59:59.000Z")
        assert task["uri"].endswith(f"/message-store-report/{task['id']}")
        seen = []
        for _ in range(12):
            body = (await c.get(task["uri"])).json()
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
            if body["status"] == "InProgress":
                r = await c.get(task["uri"] + "/archive")
                assert r.status_code == 400 and r.json()["errors"][0]["errorCode"] == "CMN-101"
            clock.advance(1.0)
        assert seen == ["Accepted", "InProgress", "Completed"]
        assert body["startTime"] <= body["finishTime"]
        listing = (await c.get(task["uri"] + "/archive")).json()
        assert [rec["uri"] for rec in listing["records"]] == [
            f"{task['uri']}/archive/{n}" for n in range(len(listing["records"]))]
        assert all(rec["size"] > 0 for rec in listing["records"])


async def test_a_third_running_task_is_refused_until_one_finishes(clocked, emulator_client):
    emu, clock = clocked
    async with api_client(emu, emulator_client) as c:
        first = await _create(c)
        clock.advance(4)
        second = await _create(c)
        assert first.status_code == second.status_code == 202
        third = await _create(c)
        assert third.status_code == 400
        assert third.json()["errors"][0]["errorCode"] == reports.TOO_MANY_TASKS_CODE
        clock.advance(6)  # the first one completes; the second is still running
        assert (await c.get(first.json()["uri"])).json()["status"] == "Completed"
        assert (await c.get(second.json()["uri"])).json()["status"] == "InProgress"
        assert (await _create(c)).status_code == 202
        assert (await _create(c)).status_code == 400


async def test_failure_switch_makes_the_next_task_fail(clocked, emulator_client):
    emu, clock = clocked
    async with api_client(emu, emulator_client) as c:
        r = await c.post("/_emulator/config", json={"report_failures": 1})
        assert r.status_code == 200 and r.json()["report_failures"] == 1
        failing = (await _create(c)).json()
        ok = (await _create(c)).json()
        clock.advance(11)
        failed = (await c.get(failing["uri"])).json()
        assert failed["status"] == "Failed" and "finishTime" in failed
        assert (await c.get(ok["uri"])).json()["status"] == "Completed"
        r = await c.get(failing["uri"] + "/archive")
        assert r.status_code == 400 and "Failed" in r.json()["message"]


async def test_bad_requests_and_unknown_tasks(clocked, emulator_client):
    emu, _ = clocked
    async with api_client(emu, emulator_client) as c:
        for body, param in (({"messageTypes": ["Fax", "Email"]}, "messageTypes"),
                            ({"dateFrom": "yesterday"}, "dateFrom"),
                            ({"dateFrom": "2026-03-01T00:00:00Z", "dateTo": "2026-02-01T00:00:00Z"},
                             "dateFrom")):
            r = await _create(c, **body)
            assert r.status_code == 400, body
            assert r.json()["errors"][0]["parameterName"] == param
        r = await c.post(REPORTS, content=b"[1]", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["errors"][0]["errorCode"] == "CMN-103"
        r = await c.get(REPORTS + "/nope")
        assert r.status_code == 404 and r.json()["errors"][0]["errorCode"] == "CMN-102"
        assert (await c.get(REPORTS + "/nope/archive/0")).status_code == 404


# ----------------------------------------------------------------------------- over real HTTP


def _wait_completed(http: httpx.Client, uri: str) -> dict:
    for _ in range(200):
        body = http.get(uri).raise_for_status().json()
        if body["status"] in ("Completed", "Failed"):
            return body
        import time
        time.sleep(0.05)
    raise AssertionError(f"report never finished: {body}")


def _expected(http: httpx.Client, platform: str, date_from: str, date_to: str,
              types: list[str]) -> list[dict]:
    """The messages the report must hold, from the message-store API itself."""
    r = http.get(platform + EXT + "/message-store",
                 params=[("dateFrom", date_from), ("dateTo", date_to), ("perPage", "1000")]
                 + [("messageType", t) for t in types])
    return r.raise_for_status().json()["records"]


@pytest.mark.skipif(shutil.which("unzip") is None, reason="needs unzip")
def test_archives_hold_exactly_the_range_and_types_asked_for(start_emulator, tmp_path: Path):
    srv = start_emulator(report_delay=0.3, rate_limits=False, report_archive_max_bytes=2_000_000)
    token = srv.token()
    date_from, date_to = "2000-01-01T00:00:00.000Z", "2100-01-01T00:00:00.000Z"
    types = ["Fax", "VoiceMail"]
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        r = http.post(srv.platform + REPORTS,
                      json={"dateFrom": date_from, "dateTo": date_to, "messageTypes": types})
        assert r.status_code == 202, r.text
        task = _wait_completed(http, r.json()["uri"])
        assert task["status"] == "Completed"
        listing = http.get(task["uri"] + "/archive")
        assert listing.headers["x-rate-limit-group"].lower() == "heavy"
        records = listing.json()["records"]
        assert len(records) >= 3  # metadata + attachments split at 2 MB
        files = []
        for n, rec in enumerate(records):
            r = http.get(rec["uri"])
            assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
            assert r.headers["x-rate-limit-group"].lower() == "heavy"
            assert len(r.content) == rec["size"] == int(r.headers["content-length"])
            if n:
                assert rec["size"] <= 2_000_000
            path = tmp_path / f"archive-{n}.zip"
            path.write_bytes(r.content)
            files.append(path)
            test = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True, timeout=60)
            assert test.returncode == 0 and "No errors detected" in test.stdout, test.stdout
            # A range in the middle is the same bytes as the full download.
            mid = rec["size"] // 2
            part = http.get(rec["uri"], headers={"Range": f"bytes={mid}-{mid + 4095}"})
            assert part.status_code == 206
            assert part.content == r.content[mid:mid + 4096]
            assert part.headers["content-range"] == f"bytes {mid}-{min(mid + 4095, rec['size'] - 1)}/{rec['size']}"

        expected = _expected(http, srv.platform, date_from, date_to, types)
        assert expected and {m["type"] for m in expected} == set(types)
        meta_zip = zipfile.ZipFile(files[0])
        # The report covers every extension of the account, the signed-in one first;
        # what follows checks the signed-in one's part against its own message list.
        meta_names = meta_zip.namelist()
        meta_name = "account/400142200026/extension/400142200026/message-store.json"
        assert meta_names[0] == meta_name and len(meta_names) > 1
        assert all(re.fullmatch(r"account/400142200026/extension/\d+/message-store\.json", n) for n in meta_names)
        meta = json.loads(meta_zip.read(meta_name))
        assert [m["id"] for m in meta["records"]] == [m["id"] for m in expected]

        listed = subprocess.run(["unzip", "-Z1", *map(str, files[1:2])], capture_output=True,
                                text=True, timeout=60).stdout.split()
        assert listed == zipfile.ZipFile(files[1]).namelist()
        members: dict[str, bytes] = {}
        for path in files[1:]:
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    if name.startswith("account/400142200026/extension/400142200026/"):
                        members[name] = zf.read(name)
        want = {}
        for m in expected:
            for att in m["attachments"]:
                if att["type"] == "Text":
                    continue
                ext = media.extension_for(att["contentType"])
                want[f"account/400142200026/extension/400142200026/message-store/content/"
                     f"{m['id']}/{att['id']}{ext}"] = att["uri"]
        assert sorted(members) == sorted(want)
        for name in sorted(want)[:8]:  # byte-for-byte against the content endpoint
            assert members[name] == http.get(want[name]).raise_for_status().content, name

        # The archive URL also takes the token as a query parameter, as the guide shows.
        anon = httpx.get(records[0]["uri"], params={"access_token": token}, timeout=30)
        assert anon.status_code == 200 and len(anon.content) == records[0]["size"]


def test_a_large_archive_is_served_by_range_without_being_built(start_emulator):
    """A ~190 MB voicemail: the archive's size is known at once, its central directory
    costs one small ranged GET, and the bytes served are only the bytes asked for."""
    srv = start_emulator(report_delay=0, rate_limits=False)
    minutes = 200  # 128 kbit/s MP3: about 1.9 MB a minute
    srv.admin("POST", "/_emulator/messages", {"type": "VoiceMail", "seconds": minutes * 60,
                                              "from": "+15550001234"})
    token = srv.token()
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        now = dt.datetime.now(UTC)
        r = http.post(srv.platform + REPORTS, json={
            "dateFrom": (now - dt.timedelta(minutes=5)).isoformat(), "messageTypes": ["VoiceMail"]})
        task = _wait_completed(http, r.json()["uri"])
        records = http.get(task["uri"] + "/archive").json()["records"]
        big = max(records[1:], key=lambda rec: rec["size"])
        assert big["size"] > 150 * 2**20
        srv.reset_stats()

        class RangeFile(io.RawIOBase):
            """A seekable file over ranged GETs, counting them."""

            def __init__(self) -> None:
                self.pos, self.requests = 0, 0

            def readable(self) -> bool:
                return True

            def seekable(self) -> bool:
                return True

            def tell(self) -> int:
                return self.pos

            def seek(self, offset: int, whence: int = 0) -> int:
                self.pos = {0: offset, 1: self.pos + offset, 2: big["size"] + offset}[whence]
                return self.pos

            def readinto(self, buf) -> int:
                if self.pos >= big["size"]:
                    return 0
                end = min(big["size"], self.pos + len(buf)) - 1
                self.requests += 1
                data = http.get(big["uri"], headers={"Range": f"bytes={self.pos}-{end}"}).content
                buf[:len(data)] = data
                self.pos += len(data)
                return len(data)

        raw = RangeFile()
        with zipfile.ZipFile(io.BufferedReader(raw, buffer_size=64 * 1024)) as zf:
            infos = zf.infolist()
        assert [i.filename.rsplit("/", 1)[-1].endswith(".mp3") for i in infos] == [True]
        assert infos[0].file_size > 150 * 2**20
        assert raw.requests <= 4
        stats = srv.stats()
        assert stats["bytes_served"] < 1 * 2**20
        assert stats["requests"]["report-archive-content"] == raw.requests
