"""Call log and call-recording metadata of the emulator (CONTRACT §8), in-process over ASGI."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from conftest import build_config, login, api_client
from rcfs.emulator import media
from rcfs.emulator.app import Emulator
from rcfs.emulator.store import UTC, CallRecord, Party, Recording, Store, iso

EXT = "/restapi/v1.0/account/~/extension/~"
ACCT = "/restapi/v1.0/account/~"
NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def emu() -> Emulator:
    """12 calls in the last day (every 2nd recorded, alternately Automatic/OnDemand,
    every 3rd outbound, every 4th a fax) and one recorded call three days ago."""
    store = Store(now=lambda: NOW)

    def add(i: int, when: dt.datetime, recorded: bool, rec_type: str, direction: str, kind: str) -> None:
        rec = None
        if recorded:
            data = b"RIFF" + bytes(40 + i)
            rec = Recording(id=f"R{i:03d}", media=media.from_bytes(data, "audio/wav"), duration=30 + i, type=rec_type)
        store.add_call(CallRecord(
            id=f"C{i:03d}", session_id=f"S{i}", start_time=when, duration=30 + i, type=kind,
            direction=direction, action="Phone Call" if kind == "Voice" else "Incoming Fax",
            result="Accepted", from_=Party(phone_number="+14155550100", name="Caller"),
            to=Party(phone_number="+16505550100", extension_number="101"), recording=rec))

    for i in range(12):
        add(i, NOW - dt.timedelta(minutes=5 + 60 * i), i % 2 == 0, "Automatic" if i % 4 == 0 else "OnDemand",
            "Outbound" if i % 3 == 0 else "Inbound", "Fax" if i % 4 == 3 else "Voice")
    add(99, NOW - dt.timedelta(days=3), True, "Automatic", "Inbound", "Voice")
    return Emulator(build_config(), store)




def ids(body: dict) -> list[str]:
    return [r["id"] for r in body["records"]]


async def test_default_window_and_date_from(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        default = await c.get(EXT + "/call-log")
        wide = (await c.get(EXT + "/call-log", params={"dateFrom": iso(NOW - dt.timedelta(days=7))})).json()
    assert default.status_code == 200
    assert default.headers["x-rate-limit-group"] == "heavy"
    body = default.json()
    assert ids(body) == [f"C{i:03d}" for i in range(12)]  # newest first
    assert parse_qs(urlsplit(body["uri"]).query)["dateFrom"] == [iso(NOW - dt.timedelta(hours=24))]
    assert "C099" in ids(wide) and len(ids(wide)) == 13


@pytest.mark.parametrize("params, expected", [
    ({"withRecording": "true"}, [0, 2, 4, 6, 8, 10]),
    ({"recordingType": "Automatic"}, [0, 4, 8]),
    ({"recordingType": "OnDemand"}, [2, 6, 10]),
    ({"recordingType": "All", "withRecording": "false"}, [0, 2, 4, 6, 8, 10]),
    ({"type": "Fax"}, [3, 7, 11]),
    ({"direction": "Outbound"}, [0, 3, 6, 9]),
    ({"direction": "Outbound", "withRecording": "true"}, [0, 6]),
])
async def test_filters(emu, emulator_client, params, expected):
    async with api_client(emu, emulator_client) as c:
        body = (await c.get(EXT + "/call-log", params=params)).json()
    assert ids(body) == [f"C{i:03d}" for i in expected]


async def test_record_shape_has_recording_links_but_no_size(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        body = (await c.get(EXT + "/call-log", params={"withRecording": "true"})).json()
    ext_id, acct_id = emu.store.extension_id, emu.store.account_id
    for rec in body["records"]:
        assert rec["uri"] == f"{emu.platform_base}/restapi/v1.0/account/{acct_id}/extension/{ext_id}/call-log/{rec['id']}"
        for key in ("sessionId", "startTime", "duration", "type", "direction", "action", "result", "from", "to"):
            assert key in rec
        recording = rec["recording"]
        assert set(recording) == {"id", "uri", "type", "contentUri"}
        assert recording["uri"] == f"{emu.platform_base}/restapi/v1.0/account/{acct_id}/recording/{recording['id']}"
        assert recording["contentUri"] == f"{emu.media_base}/restapi/v1.0/account/{acct_id}/recording/{recording['id']}/content"
        assert "size" not in str(rec)


async def test_paging_and_per_page_rules(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        pages = []
        r = await c.get(EXT + "/call-log", params={"perPage": 5})
        while True:
            body = r.json()
            pages.append(body)
            nxt = body["navigation"].get("nextPage")
            if not nxt:
                break
            r = await c.get(nxt["uri"])
        maximum = (await c.get(EXT + "/call-log", params={"perPage": "max"})).json()
        clamped = (await c.get(EXT + "/call-log", params={"perPage": 5000})).json()
        zero = await c.get(EXT + "/call-log", params={"perPage": 0})
        bad_type = await c.get(EXT + "/call-log", params={"recordingType": "Sometimes"})
    assert [len(p["records"]) for p in pages] == [5, 5, 2]
    assert pages[-1]["paging"] == {"page": 3, "perPage": 5, "pageStart": 10, "pageEnd": 11,
                                   "totalPages": 3, "totalElements": 12}
    assert "previousPage" not in pages[0]["navigation"] and "nextPage" not in pages[-1]["navigation"]
    assert sum((ids(p) for p in pages), []) == [f"C{i:03d}" for i in range(12)]
    assert maximum["paging"]["perPage"] == 1000 and clamped["paging"]["perPage"] == 1000
    assert zero.status_code == 400 and zero.json()["errors"][0]["parameterName"] == "perPage"
    assert bad_type.status_code == 400


async def test_account_level_call_log_and_single_records(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        account = (await c.get(ACCT + "/call-log")).json()
        single = await c.get(EXT + "/call-log/C002")
        single_acct = await c.get(ACCT + "/call-log/C002")
        missing = await c.get(EXT + "/call-log/nope")
    assert ids(account) == [f"C{i:03d}" for i in range(12)]
    assert "/extension/" not in account["records"][0]["uri"]
    assert single.status_code == 200 and single.json()["recording"]["id"] == "R002"
    assert single.headers["x-rate-limit-group"] == "heavy"
    assert single_acct.json()["uri"].endswith(f"/account/{emu.store.account_id}/call-log/C002")
    assert missing.status_code == 404 and missing.json()["errors"][0]["errorCode"] == "CMN-102"


async def test_recording_metadata(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        meta = await c.get(ACCT + "/recording/R004")
        missing = await c.get(ACCT + "/recording/R999")
        content = await c.get(meta.json()["contentUri"])
    assert meta.status_code == 200
    assert meta.headers["x-rate-limit-group"] == "heavy"
    assert meta.json() == {
        "id": "R004",
        "contentUri": f"{emu.media_base}/restapi/v1.0/account/{emu.store.account_id}/recording/R004/content",
        "contentType": "audio/wav",
        "duration": 34,
    }
    assert missing.status_code == 404
    assert content.status_code == 200 and content.content == b"RIFF" + bytes(44)
    assert content.headers["content-type"] == "audio/wav"


async def test_media_is_not_served_by_the_platform_host(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        r = await c.get(ACCT + "/recording/R004/content")
    assert r.status_code == 404
    assert r.json()["errors"][0]["errorCode"]
