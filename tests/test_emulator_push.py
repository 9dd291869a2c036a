"""The emulator's WebSocket gateway over real loopback sockets (rcfs/emulator/gateway.py),
driven by the `websockets` client the official Python SDK uses, and by that SDK itself
(`ringcentral==0.9.2`): the wire of PUSH-AND-ADMIN.md §A, frame by frame.

The tests are plain functions running their own asyncio loop (the SDK and `websockets`
are asyncio libraries); every receive has a timeout.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

websockets = pytest.importorskip("websockets")

from conftest import JWT_GRANT, basic_auth  # noqa: E402

SUB = "/restapi/v1.0/subscription/"
EXT_FILTER = "/restapi/v1.0/account/~/extension/~"
RECV_TIMEOUT = 10.0


def login(server, jwt: str | None = None) -> str:
    r = httpx.post(server.platform + "/restapi/oauth/token", timeout=10,
                   data={"grant_type": JWT_GRANT, "assertion": jwt or server.jwt},
                   headers={"Authorization": basic_auth(server.client_id, server.client_secret)})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def ws_token(server, access_token: str, **kw: Any) -> dict:
    r = httpx.post(server.platform + "/restapi/oauth/wstoken", timeout=10,
                   headers={"Authorization": f"bearer {access_token}", **kw.pop("headers", {})}, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["x-rate-limit-group"].lower() == "auth"
    return r.json()


async def recv(sock) -> list:
    frame = json.loads(await asyncio.wait_for(sock.recv(), RECV_TIMEOUT))
    assert isinstance(frame, list) and 1 <= len(frame) <= 2 and isinstance(frame[0], dict)
    return frame


async def recv_type(sock, kind: str) -> list:
    """The next frame of type `kind`, skipping others (bounded by the receive timeout)."""
    while True:
        frame = await recv(sock)
        if frame[0]["type"] == kind:
            return frame


async def subscribe(sock, filters: list[str], path: str = SUB) -> list:
    mid = str(uuid.uuid4())
    await sock.send(json.dumps([{"type": "ClientRequest", "messageId": mid, "method": "POST", "path": path},
                                {"eventFilters": filters, "deliveryMode": {"transportType": "WebSocket"}}]))
    reply = await recv_type(sock, "ClientRequest")
    assert reply[0]["messageId"] == mid
    return reply


def admin(server, method: str, path: str, body: Any = None) -> Any:
    r = httpx.request(method, server.platform + path, json=body, timeout=10)
    assert r.is_success, r.text
    return r.json() if r.content else None


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def server(start_emulator):
    # window 1: the gateway's timeouts are production's / 60 (recovery 3 s, idle 30 s).
    return start_emulator(window=1.0, send_delay=0.3)


def test_wstoken_takes_any_empty_body_and_connection_details_come_first(server):
    at = login(server)
    # Python SDK 0.9.2 (JSON, empty), @rc-ex/core (form, empty), and no content type at all.
    tokens = [ws_token(server, at, headers={"Content-Type": "application/json"}, content=b""),
              ws_token(server, at, headers={"Content-Type": "application/x-www-form-urlencoded"}, content=b""),
              ws_token(server, at)]
    assert len({t["ws_access_token"] for t in tokens}) == 3
    for t in tokens:
        assert t["uri"].startswith("ws://127.0.0.1:") and t["uri"].endswith("/ws") and "?" not in t["uri"]
        assert t["expires_in"] == 10  # 600 s scaled by window 1/60

    async def go():
        # The same token twice (reuse until expiry, as @rc-ex/ws does).
        for _ in range(2):
            async with websockets.connect(f"{tokens[0]['uri']}?access_token={tokens[0]['ws_access_token']}") as s:
                meta, details = await recv(s)
                assert meta["type"] == "ConnectionDetails" and meta["status"] == 200
                assert meta["wsc"]["sequence"] == 1 and meta["wsc"]["token"]
                assert details["recoveryTimeout"] == 3 and details["idleTimeout"] == 30
                assert details["absoluteTimeout"] == 1440 and details["recoveryBufferSize"] == 100
                assert details["maxConnectionsPerSession"] == 50 and details["maxActiveRequests"] == 10
                assert "recoveryState" not in details  # no wsc asked: no recovery field at all
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await websockets.connect(f"{tokens[0]['uri']}?access_token=forged")
        assert refused.value.response.status_code == 401

    run(go())
    r = httpx.post(server.platform + "/restapi/oauth/wstoken", timeout=10)
    assert r.status_code == 401  # the Bearer header is required


def test_subscription_over_the_socket_and_the_real_event_bodies(server):
    at = login(server)
    info = admin(server, "GET", "/_emulator/info")
    acct, ext = info["account_id"], info["extension_id"]
    t = ws_token(server, at)

    async def go():
        async with websockets.connect(f"{t['uri']}?access_token={t['ws_access_token']}") as s:
            await recv(s)
            # @rc-ex/ws spelling (no trailing slash) first; it is replaced by the second POST.
            first = await subscribe(s, [EXT_FILTER + "/presence"], path=SUB.rstrip("/"))
            assert first[0]["status"] == 200
            reply = await subscribe(s, [EXT_FILTER + "/message-store", EXT_FILTER + "/fax?direction=Inbound",
                                        EXT_FILTER + "/voicemail", EXT_FILTER + "/message-store/instant?type=SMS",
                                        "/restapi/v1.0/account/~/telephony/sessions"])
            meta, sub = reply
            assert meta["status"] == 200 and "WSG-SubscriptionId" not in meta["headers"]
            assert {"Content-Type", "RCRequestId", "Date", "Server"} <= set(meta["headers"])
            assert sub["id"] != first[1]["id"] and sub["uri"] == f"/restapi/v1.0/subscription/{sub['id']}"
            assert sub["eventFilters"][0] == f"/restapi/v1.0/account/{acct}/extension/{ext}/message-store"
            assert all("~" not in f for f in sub["eventFilters"])
            assert sub["expiresIn"] == 86399 and sub["deliveryMode"] == {"transportType": "WebSocket",
                                                                         "encryption": False}
            assert len(admin(server, "GET", "/_emulator/push")["connections"]) == 1

            fax = admin(server, "POST", "/_emulator/messages", {"type": "Fax", "pages": 2})
            events = {}
            for _ in range(2):
                m, env = await recv_type(s, "ServerNotification")
                assert m["messageId"] == env["uuid"] and env["subscriptionId"] == sub["id"]
                events[env["event"]] = env["body"]
            store_body = events[f"/restapi/v1.0/account/{acct}/extension/{ext}/message-store"]
            assert store_body["changes"] == [{"type": "Fax", "newCount": 1, "newMessageIds": [fax["id"]]}]
            assert str(store_body["extensionId"]) == ext
            fax_body = events[f"/restapi/v1.0/account/{acct}/extension/{ext}/fax?direction=Inbound"]
            assert fax_body["id"] == fax["id"] and fax_body["faxPageCount"] == 2
            assert fax_body["attachments"][0]["uri"].startswith("http")

            sms = admin(server, "POST", "/_emulator/messages", {"type": "SMS", "text": "hello push"})
            got = [await recv_type(s, "ServerNotification") for _ in range(2)]
            instant = [env["body"] for _, env in got if env["event"].endswith("instant?type=SMS")][0]
            assert instant["id"] == sms["id"] and instant["subject"] == "hello push"
            assert instant["eventType"] == "Create"
            assert all("uri" not in a for a in instant["attachments"] if a["type"] == "Text")

            vm = admin(server, "POST", "/_emulator/messages", {"type": "VoiceMail", "seconds": 3})
            got = [await recv_type(s, "ServerNotification") for _ in range(2)]
            body = [env["body"] for _, env in got if env["event"].endswith("/voicemail")][0]
            assert body["id"] == vm["id"] and body["attachments"][0]["type"] == "AudioRecording"

            call = admin(server, "POST", "/_emulator/calls/live", {"from": "+16175550100", "seconds": 31})
            codes = []
            for _ in range(3):
                _, env = await recv_type(s, "ServerNotification")
                assert env["event"] == f"/restapi/v1.0/account/{acct}/telephony/sessions"
                assert env["body"]["telephonySessionId"] == call["telephonySessionId"]
                party = env["body"]["parties"][0]
                codes.append((party["status"]["code"], party.get("recordings")))
            assert codes == [("Setup", None), ("Answered", [{"id": call["recordingId"], "active": True}]),
                             ("Disconnected", [{"id": call["recordingId"], "active": False}])]
            # ... and the call log has it, found by its telephony session id.
            r = httpx.get(server.platform + "/restapi/v1.0/account/~/extension/~/call-log", timeout=10,
                          params={"telephonySessionId": call["telephonySessionId"], "recordingType": "All"},
                          headers={"Authorization": f"Bearer {at}"})
            assert [c["recording"]["id"] for c in r.json()["records"]] == [call["recordingId"]]

    run(go())


def test_an_admin_subscribes_to_other_mailboxes_and_the_accounts_calls_a_user_may_not(server):
    info = admin(server, "GET", "/_emulator/info")
    acct, me = info["account_id"], info["extension_id"]
    at = login(server)
    r = httpx.get(server.platform + "/restapi/v1.0/account/~/extension", timeout=10, params={"perPage": 100},
                  headers={"Authorization": f"Bearer {at}"})
    ids = {str(e.get("extensionNumber")): str(e["id"]) for e in r.json()["records"]}
    alice, bob = ids["102"], ids["103"]
    t = ws_token(server, at)
    account_calls = "/restapi/v1.0/account/~/telephony/sessions?statusCode=Disconnected&withRecordings=true"

    async def as_admin():
        async with websockets.connect(f"{t['uri']}?access_token={t['ws_access_token']}") as s:
            await recv(s)
            meta, sub = await subscribe(s, [EXT_FILTER + "/message-store",
                                            f"/restapi/v1.0/account/~/extension/{alice}/message-store",
                                            account_calls])
            assert meta["status"] == 200, sub
            assert sub["eventFilters"][1] == f"/restapi/v1.0/account/{acct}/extension/{alice}/message-store"
            fax = admin(server, "POST", "/_emulator/messages", {"type": "Fax", "extension": "102"})
            _, env = await recv_type(s, "ServerNotification")  # only Alice's filter matches
            assert env["event"] == f"/restapi/v1.0/account/{acct}/extension/{alice}/message-store"
            assert str(env["body"]["extensionId"]) == alice and env["ownerId"] == me
            assert env["body"]["changes"] == [{"type": "Fax", "newCount": 1, "newMessageIds": [fax["id"]]}]
            # Bob's recorded call: the account's filter (Disconnected, with recordings) only.
            call = admin(server, "POST", "/_emulator/calls/live", {"extension": "103", "seconds": 31})
            _, env = await recv_type(s, "ServerNotification")
            assert env["event"] == f"/restapi/v1.0/account/{acct}{account_calls[len('/restapi/v1.0/account/~'):]}"
            party = env["body"]["parties"][0]
            assert env["body"]["telephonySessionId"] == call["telephonySessionId"]
            assert party["extensionId"] == bob and party["status"]["code"] == "Disconnected"
            assert party["recordings"] == [{"id": call["recordingId"], "active": False}]
            with pytest.raises(asyncio.TimeoutError):  # Setup/Answered were not asked for
                await asyncio.wait_for(recv_type(s, "ServerNotification"), 1.0)
            # ... and the company call log has it by that session (Bob's leg).
            r = httpx.get(server.platform + "/restapi/v1.0/account/~/call-log", timeout=10,
                          params={"telephonySessionId": call["telephonySessionId"], "recordingType": "All"},
                          headers={"Authorization": f"Bearer {at}"})
            assert [(c["recording"]["id"], str(c["extension"]["id"])) for c in r.json()["records"]] == \
                [(call["recordingId"], bob)]

    run(as_admin())
    user = login(server, server.user_jwt)  # extension 102 (Alice), a regular user
    tu = ws_token(server, user)

    async def as_user():
        async with websockets.connect(f"{tu['uri']}?access_token={tu['ws_access_token']}") as s:
            await recv(s)
            for filters in ([account_calls], [f"/restapi/v1.0/account/~/extension/{me}/message-store"],
                            [EXT_FILTER + "/message-store", account_calls]):
                meta, body = await subscribe(s, filters)
                assert meta["status"] == 403 and body["errorCode"] == "SUB-405", (filters, body)
            meta, sub = await subscribe(s, [EXT_FILTER + "/message-store"])  # `~`: the user's own
            assert meta["status"] == 200
            assert sub["eventFilters"] == [f"/restapi/v1.0/account/{acct}/extension/{alice}/message-store"]
            fax = admin(server, "POST", "/_emulator/messages", {"type": "Fax", "extension": "102"})
            _, env = await recv_type(s, "ServerNotification")
            assert env["body"]["changes"][0]["newMessageIds"] == [fax["id"]] and env["ownerId"] == alice

    run(as_user())


def test_outbox_send_is_pushed_when_sent_and_when_it_settles(server):
    at = login(server)
    t = ws_token(server, at)

    async def go():
        async with websockets.connect(f"{t['uri']}?access_token={t['ws_access_token']}") as s:
            await recv(s)
            await subscribe(s, [EXT_FILTER + "/message-store?type=SMS"])
            r = httpx.post(server.platform + "/restapi/v1.0/account/~/extension/~/sms", timeout=10,
                           headers={"Authorization": f"Bearer {at}"},
                           json={"from": {"phoneNumber": "+16505550100"}, "to": [{"phoneNumber": "+14155550123"}],
                                 "text": "out"})
            assert r.status_code == 200, r.text
            sent_id = r.json()["id"]
            _, env = await recv_type(s, "ServerNotification")
            assert env["body"]["changes"] == [{"type": "SMS", "newCount": 1, "newMessageIds": [sent_id]}]
            # Queued -> Sent happens with no request at all: the gateway pushes it.
            _, env = await recv_type(s, "ServerNotification")
            assert env["body"]["changes"] == [{"type": "SMS", "updatedCount": 1}]
            # A Fax arriving is filtered out by ?type=SMS: the next frame is the heartbeat.
            admin(server, "POST", "/_emulator/messages", {"type": "Fax"})
            await s.send(json.dumps([{"type": "Heartbeat", "messageId": "hb-1"}]))
            assert await recv(s) == [{"type": "Heartbeat", "messageId": "hb-1"}]

    run(go())


def test_idle_and_absolute_timeouts(start_emulator):
    server = start_emulator(window=1.0, ws_idle_timeout=1, ws_absolute_timeout=4)
    at = login(server)
    t = ws_token(server, at)

    async def go():
        async with websockets.connect(f"{t['uri']}?access_token={t['ws_access_token']}") as s:
            await recv(s)
            meta, body = await recv(s)  # no client frame for 1 s
            assert meta["type"] == "Error" and body["errorCode"] == "WSG-902"
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(s.recv(), RECV_TIMEOUT)
        async with websockets.connect(f"{t['uri']}?access_token={t['ws_access_token']}") as s:
            await recv(s)
            heartbeats = 0
            while True:  # heartbeats keep it from idling; the absolute timeout still ends it
                try:
                    await s.send(json.dumps([{"type": "Heartbeat", "messageId": f"h{heartbeats}"}]))
                except websockets.exceptions.ConnectionClosed:
                    pass  # closed meanwhile: the Error frame is still there to read
                meta, *rest = await recv(s)
                if meta["type"] == "Error":
                    assert rest[0]["errorCode"] == "WSG-903"
                    break
                assert meta["type"] == "Heartbeat"
                heartbeats += 1
                await asyncio.sleep(0.4)
                assert heartbeats < 100
            assert heartbeats >= 3  # it outlived several idle timeouts

    run(go())


def test_recovery_successful_replays_missed_events_failed_and_malformed(server):
    at = login(server)
    t = ws_token(server, at)
    url = f"{t['uri']}?access_token={t['ws_access_token']}"

    async def go():
        async with websockets.connect(url) as s:
            meta, _ = await recv(s)
            wsc = meta["wsc"]["token"]
            _, sub = await subscribe(s, [EXT_FILTER + "/message-store"])
            assert admin(server, "POST", "/_emulator/push", {"drop": True})["dropped"] == 1
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                while True:
                    await asyncio.wait_for(s.recv(), RECV_TIMEOUT)
        missed = [admin(server, "POST", "/_emulator/messages", {"type": "Fax"})["id"] for _ in range(3)]
        async with websockets.connect(f"{url}&wsc={wsc}") as s:
            meta, details = await recv(s)
            assert details.get("recoveryState") == "Successful", (meta, details)
            replayed = []
            for _ in range(3):
                m, env = await recv_type(s, "ServerNotification")
                assert env["subscriptionId"] == sub["id"]
                replayed += env["body"]["changes"][0]["newMessageIds"]
                assert m["wsc"]["sequence"] > meta["wsc"]["sequence"] - 1
            assert replayed == missed  # in order, none lost
            wsc = meta["wsc"]["token"]
            admin(server, "POST", "/_emulator/push", {"fail_recoveries": 1})
            admin(server, "POST", "/_emulator/push", {"drop": True})
        async with websockets.connect(f"{url}&wsc={wsc}") as s:
            _, details = await recv(s)
            assert details["recoveryState"] == "Failed" and details["recoveryErrorCode"] == "WSG-1005"
            # The same socket stays usable: subscribe again, events flow.
            await subscribe(s, [EXT_FILTER + "/message-store"])
            new = admin(server, "POST", "/_emulator/messages", {"type": "VoiceMail"})["id"]
            _, env = await recv_type(s, "ServerNotification")
            assert env["body"]["changes"][0]["newMessageIds"] == [new]
        # A session without a subscription cannot be recovered either.
        async with websockets.connect(url) as s:
            meta, _ = await recv(s)
            bare = meta["wsc"]["token"]
        async with websockets.connect(f"{url}&wsc={bare}") as s:
            _, details = await recv(s)
            assert (details["recoveryState"], details["recoveryErrorCode"]) == ("Failed", "WSG-1005")
        # Another OAuth session's ws token: WSG-1003.
        async with websockets.connect(url) as s:
            meta, _ = await recv(s)
            await subscribe(s, [EXT_FILTER + "/message-store"])
            theirs = meta["wsc"]["token"]
        other = ws_token(server, login(server))
        async with websockets.connect(f"{other['uri']}?access_token={other['ws_access_token']}&wsc={theirs}") as s:
            _, details = await recv(s)
            assert (details["recoveryState"], details["recoveryErrorCode"]) == ("Failed", "WSG-1003")
        # A wsc the gateway never issued: WSG-400, then the socket is closed.
        async with websockets.connect(f"{url}&wsc=bm90LWEtd3Nj") as s:
            meta, body = await recv(s)
            assert meta["type"] == "Error" and body == {"errorCode": "WSG-400",
                                                        "message": "Malformed WebSocket session context token"}
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(s.recv(), RECV_TIMEOUT)

    run(go())


def revoke(server, token: str) -> None:
    r = httpx.post(server.platform + "/restapi/oauth/revoke", data={"token": token}, timeout=10,
                   headers={"Authorization": basic_auth(server.client_id, server.client_secret)})
    assert r.status_code == 200, r.text


def test_an_ended_oauth_session_takes_its_sockets_and_ws_tokens_with_it(start_emulator):
    """A revoke (or an admin's logout) ends the OAuth session: the sockets opened with its ws
    tokens get an Error (401, OAU-149) and are closed, those tokens are refused at the
    upgrade, a recovery of its gateway session fails; another session's socket lives on."""
    server = start_emulator(window=1.0, limit_auth=20)  # three logins and three ws tokens
    mine, theirs = login(server), login(server)
    t, other = ws_token(server, mine), ws_token(server, theirs)
    url = f"{t['uri']}?access_token={t['ws_access_token']}"

    async def go():
        async with websockets.connect(url) as s, \
                websockets.connect(f"{other['uri']}?access_token={other['ws_access_token']}") as o:
            meta, _ = await recv(s)
            wsc = meta["wsc"]["token"]
            await recv(o)
            await subscribe(s, [EXT_FILTER + "/message-store"])
            await subscribe(o, [EXT_FILTER + "/message-store"])
            revoke(server, mine)
            meta, body = await recv(s)
            assert meta["type"] == "Error" and meta["status"] == 401 and meta["wsc"] is None
            assert body["errorCode"] == "OAU-149"
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await asyncio.wait_for(s.recv(), RECV_TIMEOUT)
            assert closed.value.rcvd.code == 1008
            # The other session's socket still carries events.
            fax = admin(server, "POST", "/_emulator/messages", {"type": "Fax"})["id"]
            _, env = await recv_type(o, "ServerNotification")
            assert env["body"]["changes"][0]["newMessageIds"] == [fax]
            # The dead session's ws token opens nothing, neither fresh nor as a recovery.
            for attempt in (url, f"{url}&wsc={wsc}"):
                with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                    async with websockets.connect(attempt):
                        pass
                assert refused.value.response.status_code == 401
            # A new login's ws token asking for the dead session back: Failed, subscribe again.
            fresh = ws_token(server, login(server))
            async with websockets.connect(f"{fresh['uri']}?access_token={fresh['ws_access_token']}&wsc={wsc}") as n:
                _, details = await recv(n)
                assert (details["recoveryState"], details["recoveryErrorCode"]) == ("Failed", "WSG-1005")
            # An admin ending every session closes the other socket the same way.
            assert admin(server, "POST", "/_emulator/sessions/end", {"which": "all"})["ended"] >= 1
            meta, body = await recv_type(o, "Error")
            assert (meta["status"], body["errorCode"]) == (401, "OAU-149")
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(o.recv(), RECV_TIMEOUT)

    run(go())
    counts = admin(server, "GET", "/_emulator/push")["counts"]
    assert counts["closed_session_ended"] == 2 and counts["refused_upgrades"] == 2


def test_recovery_replays_at_most_100_events(start_emulator):
    # A recovery window far beyond what 105 admin requests take on a loaded machine: this
    # test is about the buffer, not the clock (the window has its own test below).
    server = start_emulator(window=1.0, ws_recovery_timeout=300, ws_token_ttl=600)
    at = login(server)
    t = ws_token(server, at)
    url = f"{t['uri']}?access_token={t['ws_access_token']}"

    async def go():
        async with websockets.connect(url) as s:
            meta, _ = await recv(s)
            wsc = meta["wsc"]["token"]
            await subscribe(s, [EXT_FILTER + "/message-store"])
            admin(server, "POST", "/_emulator/push", {"drop": True})
        ids = [admin(server, "POST", "/_emulator/messages", {"type": "SMS"})["id"] for _ in range(105)]
        async with websockets.connect(f"{url}&wsc={wsc}") as s:
            meta, details = await recv(s)
            assert details["recoveryState"] == "Successful"
            got = []
            for _ in range(100):
                _, env = await recv_type(s, "ServerNotification")
                got += env["body"]["changes"][0]["newMessageIds"]
            assert got == ids[5:]  # at most 100, the oldest dropped

    run(go())


def test_recovery_fails_once_the_recovery_window_has_passed(start_emulator):
    server = start_emulator(window=1.0, ws_recovery_timeout=2, ws_token_ttl=600)
    at = login(server)
    t = ws_token(server, at)
    url = f"{t['uri']}?access_token={t['ws_access_token']}"

    async def go():
        async with websockets.connect(url) as s:
            meta, _ = await recv(s)
            wsc = meta["wsc"]["token"]
            await subscribe(s, [EXT_FILTER + "/message-store"])
        await asyncio.sleep(3)  # beyond recoveryTimeout (2 s): however slow the machine, it has passed
        async with websockets.connect(f"{url}&wsc={wsc}") as s:
            _, details = await recv(s)
            assert (details.get("recoveryState"), details.get("recoveryErrorCode")) == ("Failed", "WSG-1005"), details

    run(go())


def test_malformed_frames_and_delete(server):
    at = login(server)
    t = ws_token(server, at)

    async def go():
        async with websockets.connect(f"{t['uri']}?access_token={t['ws_access_token']}") as s:
            await recv(s)
            await s.send("{not json")
            meta, body = await recv(s)
            assert meta["type"] == "Error" and meta["status"] == 400 and body["errorCode"] == "WSG-808"
            _, sub = await subscribe(s, [EXT_FILTER + "/message-store"])
            # RingCentral.Net's old `[meta, null]` DELETE: 400 WSG-808.
            await s.send(json.dumps([{"type": "ClientRequest", "messageId": "d1", "method": "DELETE",
                                      "path": SUB + sub["id"]}, None]))
            meta, body = await recv(s)
            assert meta["status"] == 400 and body["errorCode"] == "WSG-808"
            await s.send(json.dumps([{"type": "ClientRequest", "messageId": "d2", "method": "DELETE",
                                      "path": SUB + sub["id"]}]))
            assert (await recv(s))[0]["status"] == 204
            admin(server, "POST", "/_emulator/messages", {"type": "Fax"})
            await s.send(json.dumps([{"type": "Heartbeat", "messageId": "after"}]))
            assert (await recv(s))[0] == {"type": "Heartbeat", "messageId": "after"}  # no notification

    run(go())
    stats = admin(server, "GET", "/_emulator/stats")
    assert stats["requests"]["ws-subscription-create"] == 1 and stats["requests"]["ws-subscription-delete"] == 2


def test_official_python_sdk_subscribes_and_receives(server):
    ringcentral = pytest.importorskip("ringcentral")
    from ringcentral.websocket.events import WebSocketEvents

    # With the header switch, 0.9.2's `subscriptionCreated` fires (production never sends it).
    admin(server, "POST", "/_emulator/push", {"subscription_id_header": True})
    sdk = ringcentral.SDK(server.client_id, server.client_secret, server.platform)
    platform = sdk.platform()
    platform.login(jwt=server.jwt)
    seen: dict[str, list] = {"created": [], "notifications": []}

    async def go():
        client = sdk.create_web_socket_client()
        connected = asyncio.Event()
        got = asyncio.Event()
        client.on(WebSocketEvents.connectionCreated, lambda c: connected.set())
        client.on(WebSocketEvents.subscriptionCreated, lambda sub: seen["created"].append(sub))

        def notified(message):
            seen["notifications"].append(message)
            got.set()

        client.on(WebSocketEvents.receiveSubscriptionNotification, notified)
        task = asyncio.create_task(client.create_new_connection())
        await asyncio.wait_for(connected.wait(), RECV_TIMEOUT)
        details = json.loads(client.get_connection_info()["connection_details"])
        assert details[0]["type"] == "ConnectionDetails"
        await client.create_subscription([EXT_FILTER + "/voicemail"])
        for _ in range(100):  # the SDK attaches its listener after sending: wait for the reply
            if seen["created"]:
                break
            await asyncio.sleep(0.05)
        assert len(seen["created"]) == 1
        vm = await asyncio.to_thread(admin, server, "POST", "/_emulator/messages", {"type": "VoiceMail"})
        await asyncio.wait_for(got.wait(), RECV_TIMEOUT)
        await client.close_connection()
        with pytest.raises(Exception):
            await asyncio.wait_for(task, RECV_TIMEOUT)
        return vm

    vm = run(go())
    (meta, envelope), = seen["notifications"]
    assert meta["type"] == "ServerNotification" and envelope["body"]["id"] == vm["id"]
    assert envelope["event"].endswith("/voicemail")
    platform.logout()


def test_every_wsc_token_the_gateway_issues_names_its_session(make_emulator):
    """The token is the session id, a dot and a 12-byte MAC; the MAC's bytes may include a
    dot (about one token in 20), which once made the gateway call its own token "malformed"
    (WSG-400) and failed a recovery at random."""
    gateway = make_emulator(window=1.0).gateway
    ids = [uuid.uuid4().hex[:24] for _ in range(2000)]
    assert [gateway._wsc_session_id(gateway._wsc_token(sid)) for sid in ids] == ids
    real = gateway._wsc_token("someone-else")
    forged = real[:-2] + ("AA" if not real.endswith("AA") else "BB")
    assert gateway._wsc_session_id(forged) is None
