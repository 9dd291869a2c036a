"""Message store and message sync of the emulator (CONTRACT §6, §7), in-process over ASGI."""

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
from rcfs.emulator.store import UTC, Attachment, Message, Party, Store, iso

EXT = "/restapi/v1.0/account/~/extension/~"
NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ME = Party(phone_number="+16505550100", extension_number="101")


def fax(store: Store, when: dt.datetime, *, direction: str = "Inbound", read: str = "Unread",
        expose_size: bool = True) -> Message:
    mid = store.new_id()
    doc = media.from_bytes(b"%PDF-1.4 fake fax " + str(mid).encode(), "application/pdf")
    return store.add_message(Message(
        id=mid, type="Fax", direction=direction, creation_time=when, from_=Party(phone_number="+14155550111"),
        to=[ME], attachments=[Attachment(id=store.new_id(), type="RenderedDocument", media=doc,
                                         expose_size=expose_size)],
        read_status=read, fax_page_count=1, fax_resolution="High"))


def voicemail(store: Store, when: dt.datetime) -> Message:
    mid = store.new_id()
    audio = media.from_bytes(b"ID3" + bytes(200), "audio/mpeg")
    return store.add_message(Message(
        id=mid, type="VoiceMail", direction="Inbound", creation_time=when,
        from_=Party(phone_number="+14155550122", name="Caller"), to=[ME],
        attachments=[Attachment(id=mid, type="AudioRecording", media=audio, vm_duration=12, expose_size=False)],
        vm_transcription_status="NotAvailable"))


def sms(store: Store, when: dt.datetime, text: str) -> Message:
    mid = store.new_id()
    att = Attachment(id=store.new_id(), type="Text", media=media.text_plain(text), text=text)
    pic = Attachment(id=store.new_id(), type="MmsAttachment", file_name="cat.jpg",
                     media=media.from_bytes(b"\xff\xd8\xff\xe0 jpeg", "image/jpeg"))
    return store.add_message(Message(
        id=mid, type="SMS", direction="Outbound", creation_time=when, from_=ME,
        to=[Party(phone_number="+14155550133")], attachments=[att, pic], subject=text,
        message_status="Delivered", conversation_id=8031152018338945839))


@pytest.fixture
def emu() -> Emulator:
    """25 faxes in the last day, one two days old, a voicemail and an MMS; time frozen."""
    store = Store(now=lambda: NOW)
    for i in range(25):
        fax(store, NOW - dt.timedelta(minutes=10 + 30 * i), read="Read" if i % 5 == 0 else "Unread",
            direction="Outbound" if i % 4 == 0 else "Inbound", expose_size=i % 2 == 0)
    fax(store, NOW - dt.timedelta(days=2))
    voicemail(store, NOW - dt.timedelta(hours=3, seconds=7))
    sms(store, NOW - dt.timedelta(hours=1, seconds=3), "See you at 5")
    return Emulator(build_config(), store)




def query_of(uri: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(uri).query)


async def test_default_window_is_the_last_24_hours(emu, emulator_client):
    old = next(m for m in emu.store.messages.values() if m.creation_time < NOW - dt.timedelta(days=1))
    async with api_client(emu, emulator_client) as c:
        default = (await c.get(EXT + "/message-store", params={"messageType": "Fax"})).json()
        widened = (await c.get(EXT + "/message-store", params={
            "messageType": "Fax", "dateFrom": iso(NOW - dt.timedelta(days=3))})).json()
    assert old.id not in {r["id"] for r in default["records"]}
    assert default["paging"]["totalElements"] == 25
    assert old.id in {r["id"] for r in widened["records"]}
    assert widened["paging"]["totalElements"] == 26
    q = query_of(default["uri"])
    assert q["dateFrom"] == [iso(NOW - dt.timedelta(hours=24))]
    assert q["availability"] == ["Alive"]
    assert q["messageType"] == ["Fax"]
    assert (q["page"], q["perPage"]) == (["1"], ["100"])
    assert "dateTo" not in q


async def test_date_to_limits_and_is_echoed(emu, emulator_client):
    date_to = NOW - dt.timedelta(hours=2)
    async with api_client(emu, emulator_client) as c:
        body = (await c.get(EXT + "/message-store", params={"dateTo": iso(date_to)})).json()
    assert body["records"]
    assert all(r["creationTime"] <= iso(date_to) for r in body["records"])
    q = query_of(body["uri"])
    assert q["dateTo"] == [iso(date_to)]
    assert q["dateFrom"] == [iso(date_to - dt.timedelta(hours=24))]


async def test_paging_to_the_last_page_by_navigation_links(emu, emulator_client):
    seen: list[int] = []
    pages = []
    async with api_client(emu, emulator_client) as c:
        r = await c.get(EXT + "/message-store", params={"messageType": "Fax", "perPage": 10})
        while True:
            assert r.status_code == 200
            body = r.json()
            pages.append(body)
            seen += [rec["id"] for rec in body["records"]]
            nxt = body["navigation"].get("nextPage")
            if nxt is None:
                break
            assert nxt["uri"].startswith(emu.platform_base)
            r = await c.get(nxt["uri"])
    assert len(pages) == 3
    first, last = pages[0], pages[-1]
    assert first["paging"] == {"page": 1, "perPage": 10, "pageStart": 0, "pageEnd": 9,
                               "totalPages": 3, "totalElements": 25}
    assert set(first["navigation"]) == {"firstPage", "nextPage", "lastPage"}
    assert last["paging"] == {"page": 3, "perPage": 10, "pageStart": 20, "pageEnd": 24,
                              "totalPages": 3, "totalElements": 25}
    assert set(last["navigation"]) == {"firstPage", "previousPage", "lastPage"}
    assert query_of(last["navigation"]["previousPage"]["uri"])["page"] == ["2"]
    assert query_of(first["navigation"]["lastPage"]["uri"])["page"] == ["3"]
    # The links freeze the computed dateFrom, so following them cannot shift the window.
    assert query_of(last["uri"])["dateFrom"] == query_of(first["uri"])["dateFrom"]
    assert len(seen) == len(set(seen)) == 25
    times = [emu.store.messages[i].creation_time for i in seen]
    assert times == sorted(times, reverse=True)


async def test_single_page_has_only_first_and_last_links(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        body = (await c.get(EXT + "/message-store", params={"messageType": "VoiceMail"})).json()
    assert len(body["records"]) == 1
    assert set(body["navigation"]) == {"firstPage", "lastPage"}
    assert body["paging"]["totalPages"] == 1


async def test_empty_result_and_per_page_clamp(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        empty = (await c.get(EXT + "/message-store", params={"messageType": "Pager"})).json()
        big = (await c.get(EXT + "/message-store", params={"perPage": 5000})).json()
    assert empty["records"] == []
    assert "pageStart" not in empty["paging"] and empty["paging"]["totalElements"] == 0
    assert set(empty["navigation"]) == {"firstPage", "lastPage"}
    assert big["paging"]["perPage"] == 1000


async def test_filters_combine(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        both = (await c.get(EXT + "/message-store", params=[("messageType", "Fax"), ("messageType", "VoiceMail")])).json()
        outbound_read = (await c.get(EXT + "/message-store", params={
            "messageType": "Fax", "direction": "Outbound", "readStatus": "Read"})).json()
    assert {r["type"] for r in both["records"]} == {"Fax", "VoiceMail"}
    assert both["paging"]["totalElements"] == 26
    expected = [m.id for m in emu.store.query_messages(types=["Fax"], directions=["Outbound"], read_status=["Read"],
                                                       date_from=NOW - dt.timedelta(days=1))]
    assert [r["id"] for r in outbound_read["records"]] == expected and expected


@pytest.mark.parametrize("params", [
    {"messageType": "Bogus"}, {"dateFrom": "yesterday"}, {"perPage": "abc"}, {"page": "0"},
    {"availability": "Gone"},
])
async def test_invalid_parameters_are_400_cmn_101(emu, emulator_client, params):
    async with api_client(emu, emulator_client) as c:
        r = await c.get(EXT + "/message-store", params=params)
    assert r.status_code == 400
    assert r.json()["errors"][0]["errorCode"] == "CMN-101"
    assert r.json()["errors"][0]["parameterName"] == next(iter(params))


async def test_unencoded_plus_in_an_offset_is_accepted(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        # The official SDK pastes values raw: "+00:00" reaches the server as " 00:00".
        r = await c.get(EXT + "/message-store?messageType=Fax&dateFrom=2026-02-20T00:00:00 00:00")
    assert r.status_code == 200
    assert r.json()["paging"]["totalElements"] == 26


async def test_record_shape(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        body = (await c.get(EXT + "/message-store", params={"perPage": 1000})).json()
        by_type = {r["type"]: r for r in body["records"]}
        sms_rec = by_type["SMS"]
        text_att = next(a for a in sms_rec["attachments"] if a["type"] == "Text")
        text = await c.get(text_att["uri"])
    ext_id, acct_id = emu.store.extension_id, emu.store.account_id
    for rec in body["records"]:
        assert rec["uri"] == f"{emu.platform_base}/restapi/v1.0/account/{acct_id}/extension/{ext_id}/message-store/{rec['id']}"
        assert rec["creationTime"].endswith("Z") and len(rec["creationTime"]) == 24
        for att in rec["attachments"]:
            assert att["uri"].startswith(emu.media_base + "/restapi/v1.0/")
            assert att["uri"].endswith(f"/message-store/{rec['id']}/content/{att['id']}")
            msg_att = next(a for a in emu.store.messages[rec["id"]].attachments if a.id == att["id"])
            assert ("size" in att) == msg_att.expose_size
            assert ("fileName" in att) == (msg_att.file_name is not None)
    sizes = [("size" in a) for r in body["records"] if r["type"] == "Fax" for a in r["attachments"]]
    assert True in sizes and False in sizes
    vm = by_type["VoiceMail"]
    assert vm["attachments"][0]["vmDuration"] == 12
    assert vm["attachments"][0]["contentType"] == "audio/mpeg"
    assert by_type["Fax"]["faxPageCount"] == 1 and by_type["Fax"]["faxResolution"] == "High"
    assert sms_rec["conversationId"] == 8031152018338945839
    assert sms_rec["to"][0]["messageStatus"] == "Delivered"
    assert {a["fileName"] for a in sms_rec["attachments"] if "fileName" in a} == {"cat.jpg"}
    assert text.status_code == 200 and text.text == "See you at 5"
    assert text.headers["content-type"].startswith("text/plain")


async def test_single_get_and_unknown_ids(emu, emulator_client):
    msg = next(iter(emu.store.messages.values()))
    async with api_client(emu, emulator_client) as c:
        one = await c.get(f"{EXT}/message-store/{msg.id}")
        numeric = await c.get(f"/restapi/v1.0/account/{emu.store.account_id}/extension/{emu.store.extension_id}"
                              f"/message-store/{msg.id}")
        missing = await c.get(f"{EXT}/message-store/123")
        junk = await c.get(f"{EXT}/message-store/abc")
        other_ext = await c.get(f"/restapi/v1.0/account/~/extension/999/message-store/{msg.id}")
    assert one.status_code == 200 and one.json() == emu.render_message(msg)
    assert numeric.json() == one.json()
    for r in (missing, junk):
        assert r.status_code == 404
        assert r.json()["errors"][0]["errorCode"] == "CMN-102"
    assert other_ext.status_code == 404


async def test_put_read_status(emu, emulator_client):
    msg = next(m for m in emu.store.messages.values() if m.read_status == "Unread")
    before = msg.last_modified
    emu.store.now = lambda: NOW + dt.timedelta(seconds=5)
    async with api_client(emu, emulator_client) as c:
        r = await c.put(f"{EXT}/message-store/{msg.id}", json={"readStatus": "Read"})
        bad = await c.put(f"{EXT}/message-store/{msg.id}", json={"readStatus": "Seen"})
        unparsable = await c.put(f"{EXT}/message-store/{msg.id}", content=b"{nope",
                                 headers={"Content-Type": "application/json"})
        after = (await c.get(f"{EXT}/message-store/{msg.id}")).json()
    assert r.status_code == 200 and r.json()["readStatus"] == "Read"
    assert r.headers["x-rate-limit-group"] == "medium"
    assert after["readStatus"] == "Read"
    assert after["lastModifiedTime"] == iso(NOW + dt.timedelta(seconds=5)) != iso(before)
    assert bad.status_code == 400 and bad.json()["errors"][0]["errorCode"] == "CMN-101"
    assert unparsable.status_code == 400 and unparsable.json()["errors"][0]["errorCode"] == "CMN-103"


async def test_delete_then_purge_and_restore(emu, emulator_client):
    msgs = [m for m in emu.store.messages.values() if m.type == "Fax"][:2]
    a, b = msgs
    content_a = emu.attachment_uri(a.id, a.attachments[0].id)
    async with api_client(emu, emulator_client) as c:
        assert (await c.delete(f"{EXT}/message-store/{a.id}")).status_code == 204
        alive = (await c.get(EXT + "/message-store", params={"perPage": 1000})).json()
        deleted = (await c.get(EXT + "/message-store", params={"availability": "Deleted"})).json()
        still_readable = await c.get(content_a)
        restored = await c.patch(f"{EXT}/message-store/{a.id}", json={"availability": "Alive"})
        await c.delete(f"{EXT}/message-store/{a.id}")
        await c.delete(f"{EXT}/message-store/{a.id}")
        purged_get = (await c.get(f"{EXT}/message-store/{a.id}")).json()
        purged_content = await c.get(content_a)
        assert (await c.delete(f"{EXT}/message-store/{b.id}", params={"purge": "true"})).status_code == 204
        cannot_restore = await c.patch(f"{EXT}/message-store/{b.id}", json={"availability": "Alive"})
    assert a.id not in {r["id"] for r in alive["records"]}
    assert [r["id"] for r in deleted["records"]] == [a.id]
    assert deleted["records"][0]["availability"] == "Deleted"
    assert still_readable.status_code == 200
    assert restored.status_code == 200 and restored.json()["availability"] == "Alive"
    assert purged_get["availability"] == "Purged" and purged_get["attachments"] == []
    assert purged_content.status_code == 404
    assert emu.store.messages[b.id].availability == "Purged"
    assert cannot_restore.status_code == 400


async def test_fsync_then_isync_returns_only_changes_in_the_frame(emu, emulator_client):
    faxes = [m for m in emu.store.messages.values() if m.type == "Fax"]
    async with api_client(emu, emulator_client) as c:
        full = await c.get(EXT + "/message-sync", params={"syncType": "FSync", "messageType": "Fax",
                                                         "dateFrom": iso(NOW - dt.timedelta(days=3))})
        assert full.status_code == 200 and full.headers["x-rate-limit-group"] == "light"
        fbody = full.json()
        token = fbody["syncInfo"]["syncToken"]
        quiet = (await c.get(EXT + "/message-sync", params={"syncType": "ISync", "syncToken": token})).json()

        emu.store.now = lambda: NOW + dt.timedelta(minutes=1)
        await c.put(f"{EXT}/message-store/{faxes[3].id}", json={"readStatus": "Read" if faxes[3].read_status == "Unread" else "Unread"})
        await c.delete(f"{EXT}/message-store/{faxes[4].id}")
        sms_msg = next(m for m in emu.store.messages.values() if m.type == "SMS")
        await c.put(f"{EXT}/message-store/{sms_msg.id}", json={"readStatus": "Unread"})
        new_fax = fax(emu.store, NOW + dt.timedelta(seconds=30))
        inc = (await c.get(EXT + "/message-sync", params={"syncType": "ISync", "syncToken": token})).json()
        again = (await c.get(EXT + "/message-sync", params={"syncType": "ISync",
                                                            "syncToken": inc["syncInfo"]["syncToken"]})).json()
    assert len(fbody["records"]) == 26
    assert fbody["syncInfo"]["syncType"] == "FSync"
    assert fbody["syncInfo"]["olderRecordsExist"] is False
    assert fbody["syncInfo"]["syncTime"] == iso(NOW)
    assert quiet["records"] == [] and quiet["syncInfo"]["syncType"] == "ISync"
    by_id = {r["id"]: r for r in inc["records"]}
    assert set(by_id) == {faxes[3].id, faxes[4].id, new_fax.id}
    assert by_id[faxes[4].id] == {"id": faxes[4].id, "availability": "Deleted"}
    assert by_id[faxes[3].id]["readStatus"] == faxes[3].read_status
    assert by_id[new_fax.id]["type"] == "Fax"
    assert again["records"] == []


async def test_fsync_record_count_and_default_window(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        limited = (await c.get(EXT + "/message-sync", params={"syncType": "FSync", "messageType": "Fax",
                                                             "recordCount": 4})).json()
        everything = (await c.get(EXT + "/message-sync", params={"syncType": "FSync"})).json()
    assert len(limited["records"]) == 4
    assert limited["syncInfo"]["olderRecordsExist"] is True
    newest = sorted((m for m in emu.store.messages.values() if m.type == "Fax"),
                    key=lambda m: m.creation_time, reverse=True)[:4]
    assert [r["id"] for r in limited["records"]] == [m.id for m in newest]
    # 24 h default: the two-day-old fax is outside the frame.
    assert len(everything["records"]) == 27


@pytest.mark.parametrize("token", ["garbage", "eyJzIjoxfQ.deadbeef", ""])
async def test_bad_sync_token_is_msg_333(emu, emulator_client, token):
    async with api_client(emu, emulator_client) as c:
        good = (await c.get(EXT + "/message-sync", params={"syncType": "FSync"})).json()["syncInfo"]["syncToken"]
        tampered = good[:-1] + ("0" if good[-1] != "0" else "1")
        r = await c.get(EXT + "/message-sync", params={"syncType": "ISync", "syncToken": token or tampered})
    assert r.status_code == 400
    assert r.json()["errors"][0]["errorCode"] == "MSG-333"


async def test_admin_injected_message_shows_up_in_isync(make_emulator, emulator_client):
    emu = make_emulator()
    async with api_client(emu, emulator_client) as c:
        token = (await c.get(EXT + "/message-sync", params={"syncType": "FSync", "messageType": "SMS"})
                 ).json()["syncInfo"]["syncToken"]
        created = await c.post("/_emulator/messages", json={"type": "SMS", "from": "+14155550999", "text": "ping"})
        assert created.status_code == 201, created.text
        inc = (await c.get(EXT + "/message-sync", params={"syncType": "ISync", "syncToken": token})).json()
        listed = (await c.get(EXT + "/message-store", params={"messageType": "SMS"})).json()
    new_id = created.json()["id"]
    assert [r["id"] for r in inc["records"]] == [new_id]
    assert inc["records"][0]["subject"] == "ping"
    assert new_id == listed["records"][0]["id"]


async def test_one_conversation_id_for_seeded_sent_and_injected_texts(make_emulator, emulator_client):
    """Production gives every text between the same numbers one conversationId, whichever
    way it went; a group text and another of the user's numbers are other conversations."""
    emu = make_emulator()
    seeded = next(m for m in emu.store.messages.values() if m.type == "SMS" and m.direction == "Inbound"
                  and len(m.to) == 1 and m.to[0].phone_number == emu.store.main_number)
    other = seeded.from_.phone_number
    async with api_client(emu, emulator_client) as c:
        sent = (await c.post(EXT + "/sms", json={"from": {"phoneNumber": emu.store.main_number},
                                                 "to": [{"phoneNumber": other}], "text": "reply"})).json()
        inbound = (await c.post("/_emulator/messages", json={"type": "SMS", "from": other, "text": "again"})).json()
        group = (await c.post("/_emulator/messages", json={"type": "SMS", "from": other, "text": "all",
                                                           "also": ["+14155550998"]})).json()
        support = (await c.post("/_emulator/messages", json={"type": "SMS", "from": other, "text": "hi",
                                                             "toNumber": "+16505550101"})).json()
    assert sent["conversationId"] == inbound["conversationId"] == seeded.conversation_id
    assert sent["conversation"]["id"] == str(seeded.conversation_id)
    assert len({seeded.conversation_id, group["conversationId"], support["conversationId"]}) == 3
    assert [p["phoneNumber"] for p in group["to"]] == [emu.store.main_number, "+14155550998"]
    assert support["to"][0]["phoneNumber"] == "+16505550101"
