"""rcfs.push without a mount: the channel against the emulator's gateway over loopback,
with stand-in folder owners that record what they are asked to do."""

from __future__ import annotations

import logging

import httpx
import pytest
import trio

from rcfs.api.client import Credentials, RingCentralClient
from rcfs.push import PushChannel, notice_from

EXT = "/restapi/v1.0/account/~/extension/~"
WAIT = 30.0


class Owner:
    """What rcfs.push needs of a folder owner, recording its calls."""

    def __init__(self, name: str, filters: list[str], kinds: set[str], extension: str | None = None) -> None:
        self.name = name
        self.extension = extension  # set: only events about that mailbox (`~`: the user's)
        self.filters = filters
        self.kinds = kinds
        self.notices: list = []
        self.resyncs = 0
        self.trusted = lambda started: False
        self.arrived = trio.Event()

    def push_filters(self):
        return tuple(self.filters)

    def wants(self, notice) -> bool:
        return bool(self.kinds & notice.message_types) and (self.extension is None
                                                             or notice.for_extension(self.extension))

    async def pushed(self, notices):
        self.notices += notices
        self.arrived.set()

    async def resync(self):
        self.resyncs += 1


def creds(srv) -> Credentials:
    return Credentials(server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret,
                       jwt=srv.jwt)


async def admin(srv, method: str, path: str, body=None):
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.request(method, srv.platform + path, json=body)
    assert r.is_success, r.text
    return r.json() if r.content else None


async def until(predicate, what: str):
    with trio.fail_after(WAIT):
        while not predicate():
            await trio.sleep(0.02)


async def test_events_reach_the_owners_that_want_them_and_filters_can_change(start_emulator, caplog):
    srv = start_emulator(window=1.0)
    caplog.set_level(logging.DEBUG)
    faxes = Owner("faxes", [EXT + "/message-store"], {"Fax"})
    voicemail = Owner("voicemail", [EXT + "/message-store"], {"VoiceMail"})
    async with RingCentralClient(creds(srv)) as client:
        channel = PushChannel(client, [faxes, voicemail])
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            await until(lambda: channel.healthy, "channel up")
            assert faxes.trusted(trio.current_time()) and voicemail.trusted(trio.current_time())
            assert not faxes.trusted(0.0)  # a listing from before the subscription
            assert channel.filters == [EXT + "/message-store"]  # one filter for both
            assert faxes.resyncs == voicemail.resyncs == 1  # a fresh subscription: one each

            fax = await admin(srv, "POST", "/_emulator/messages", {"type": "Fax"})
            with trio.fail_after(WAIT):
                await faxes.arrived.wait()
            assert [n.body["changes"][0]["newMessageIds"] for n in faxes.notices] == [[fax["id"]]]
            assert voicemail.notices == []

            # Company mode widens the filter list: the live subscription is updated (PUT).
            voicemail.filters = [EXT + "/message-store", EXT + "/voicemail"]
            channel.filters_changed()
            await until(lambda: len(channel.filters) == 2, "filters updated")
            gw = await admin(srv, "GET", "/_emulator/push")
            (conn,) = gw["connections"]
            assert len(conn["eventFilters"]) == 2 and conn["subscription"] == channel.subscription_id
            stats = await admin(srv, "GET", "/_emulator/stats")
            assert stats["requests"]["ws-subscription-update"] == 1
            assert stats["requests"]["ws-subscription-create"] == 1
            nursery.cancel_scope.cancel()
        token = channel._token[0]["ws_access_token"]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in text and "access_token=" not in text  # never logged
    assert channel.stats.ws_tokens == 1


async def test_a_refused_login_ends_in_a_log_line_a_reason_and_no_hot_loop(start_emulator, caplog):
    srv = start_emulator(window=1.0)
    owner = Owner("faxes", [EXT + "/message-store"], {"Fax"})
    async with RingCentralClient(creds(srv)) as client:
        channel = PushChannel(client, [owner])
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            await until(lambda: channel.healthy, "channel up")
            # The user's JWT is revoked and every session ends (an admin logout): the socket
            # is closed, the ws token and the refresh are refused, and so is the JWT grant.
            await admin(srv, "POST", "/_emulator/config", {"jwt": "revoked"})
            await admin(srv, "POST", "/_emulator/stats/reset")
            await admin(srv, "POST", "/_emulator/sessions/end", {"which": "all"})
            await until(lambda: channel.status()["final"] and "login was refused" in (channel.why_down or ""),
                        "channel down for good")
            assert not owner.trusted(trio.current_time())  # the TTLs apply again
            assert "login was refused" in channel.why_down and "JWT" in channel.why_down
            attempts = channel.stats.attempts
            await trio.sleep(3)  # a bound: a hot loop would make hundreds of attempts here
            assert channel.stats.attempts - attempts <= 1
            assert channel.state == "down"
            nursery.cancel_scope.cancel()
    stats = await admin(srv, "GET", "/_emulator/stats")
    # One ws token refused (401), one refresh refused, one JWT grant refused; nothing after.
    assert stats["requests"]["oauth-token"] == 2 and stats["requests"]["oauth-wstoken"] == 1
    text = [r.getMessage() for r in caplog.records]
    assert sum("push channel down" in t for t in text) == 1  # said once, not per attempt
    assert any("credentials rejected" in t and r.levelno == logging.ERROR for t, r in zip(text, caplog.records))


async def test_other_mailboxes_join_and_leave_the_subscription_within_the_cap(start_emulator, caplog):
    srv = start_emulator(window=1.0)
    caplog.set_level(logging.INFO)
    async with RingCentralClient(creds(srv)) as client:
        ids = {str(e.get("extensionNumber")): str(e["id"]) async for page in client.extension_pages() for e in page}
        mailbox = lambda number: f"/restapi/v1.0/account/~/extension/{ids[number]}/message-store"  # noqa: E731
        mine = Owner("faxes", [EXT + "/message-store"], {"Fax"}, extension="~")
        alice = Owner("alice", [mailbox("102")], {"Fax"}, extension=ids["102"])
        bob = Owner("bob", [mailbox("103")], {"Fax"}, extension=ids["103"])
        carol = Owner("carol", [mailbox("106")], {"Fax"}, extension=ids["106"])
        channel = PushChannel(client, [mine])
        channel.max_filters = 2
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            await until(lambda: channel.healthy, "channel up")
            before_put = trio.current_time()
            channel.add_owner(alice)
            await until(lambda: len(channel.filters) == 2, "Alice's mailbox added (PUT)")
            assert alice.trusted(trio.current_time()) and not alice.trusted(before_put)
            assert mine.trusted(before_put)  # the user's own filter was live long before
            channel.add_owner(bob)  # beyond the cap: left out, polls by its TTL
            channel.add_owner(carol)
            await until(lambda: len(channel.left_out) == 2, "Bob and Carol left out")
            assert channel.filters == [EXT + "/message-store", mailbox("102")]
            assert not bob.trusted(trio.current_time()) and not carol.trusted(trio.current_time())
            assert channel.status()["filters_left_out"] == 2

            # An event reaches the mailbox it is about, not the user's own folder.
            fax = await admin(srv, "POST", "/_emulator/messages", {"type": "Fax", "extension": "102"})
            with trio.fail_after(WAIT):
                await alice.arrived.wait()
            assert [n.body["changes"][0]["newMessageIds"] for n in alice.notices] == [[fax["id"]]]
            own = await admin(srv, "POST", "/_emulator/messages", {"type": "Fax"})
            with trio.fail_after(WAIT):
                await mine.arrived.wait()
            assert [n.body["changes"][0]["newMessageIds"] for n in mine.notices] == [[own["id"]]]
            assert len(alice.notices) == 1 and bob.notices == []

            # Alice's extension leaves the account: Bob's mailbox takes her place.
            channel.remove_owner(alice)
            await until(lambda: channel.filters == [EXT + "/message-store", mailbox("103")], "Bob in")
            assert channel.left_out == [mailbox("106")]
            await until(lambda: bob.trusted(trio.current_time()), "Bob trusted")
            gw = await admin(srv, "GET", "/_emulator/push")
            assert sorted(gw["connections"][0]["eventFilters"]) == sorted(
                [f.replace("/account/~", f"/account/{(await admin(srv, 'GET', '/_emulator/info'))['account_id']}")
                 .replace("/extension/~", f"/extension/{(await admin(srv, 'GET', '/_emulator/info'))['extension_id']}")
                 for f in channel.filters])
            stats = await admin(srv, "GET", "/_emulator/stats")
            assert stats["requests"]["ws-subscription-create"] == 1
            assert stats["requests"]["ws-subscription-update"] == 2  # Alice in, then Bob for Alice
            nursery.cancel_scope.cancel()
    said = [r for r in caplog.records if "at most 2 event filters" in r.getMessage()]
    assert len(said) == 1  # once, however many are left out


async def test_filters_the_service_refuses_leave_the_users_own_mailbox_pushed(start_emulator, caplog):
    """A role that reaches other mailboxes may still not subscribe to them (or to the
    account's calls): the service answers 403; the user's own mailbox stays pushed and
    the folders that asked for more poll by their TTL. (Here a regular user's credential,
    which the emulator refuses both with SUB-405.)"""
    srv = start_emulator(window=1.0)
    caplog.set_level(logging.INFO)
    info = await admin(srv, "GET", "/_emulator/info")
    account_calls = Owner("company/recordings", ["/restapi/v1.0/account/~/telephony/sessions"], set())
    mine = Owner("faxes", [EXT + "/message-store"], {"Fax"}, extension="~")
    admins = Owner("admin", [f"/restapi/v1.0/account/~/extension/{info['extension_id']}/message-store"], {"Fax"},
                   extension=info["extension_id"])
    async with RingCentralClient(Credentials(server_url=srv.platform, client_id=srv.client_id,
                                             client_secret=srv.client_secret, jwt=srv.user_jwt)) as client:
        channel = PushChannel(client, [mine, account_calls])
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            await until(lambda: channel.healthy, "channel up")
            assert channel.filters == [EXT + "/message-store"]
            assert mine.trusted(trio.current_time()) and not account_calls.trusted(trio.current_time())
            subscription = channel.subscription_id
            channel.add_owner(admins)  # another user's mailbox: the PUT is refused
            await until(lambda: any("refused 1" in r.getMessage() for r in caplog.records), "the PUT refused")
            assert channel.healthy and channel.subscription_id == subscription
            assert channel.filters == [EXT + "/message-store"] and not admins.trusted(trio.current_time())
            fax = await admin(srv, "POST", "/_emulator/messages", {"type": "Fax", "extension": "102"})
            with trio.fail_after(WAIT):
                await mine.arrived.wait()
            assert [n.body["changes"][0]["newMessageIds"] for n in mine.notices] == [[fax["id"]]]
            stats = await admin(srv, "GET", "/_emulator/stats")
            assert stats["requests"]["ws-subscription-create"] == 2  # refused, then without it
            assert stats["requests"]["ws-subscription-update"] == 1  # refused; not asked again
            assert stats["statuses"]["403"] == 2 and channel.stats.connects == 1
            nursery.cancel_scope.cancel()
    assert [r.levelname for r in caplog.records if "refused" in r.getMessage()] == ["WARNING", "WARNING"]


def test_notices_classify_the_real_bodies():
    n = notice_from({"event": "/restapi/v1.0/account/1/extension/2/message-store",
                     "body": {"changes": [{"type": "Fax", "newCount": 1}, {"type": "SMS", "updatedCount": 1}]}})
    assert n.kind == "message-store" and n.message_types == {"Fax", "SMS"}
    n = notice_from({"event": "/restapi/v1.0/account/1/telephony/sessions",
                     "body": {"telephonySessionId": "s-1", "parties": [
                         {"status": {"code": "Disconnected"}, "extensionId": "7",
                          "recordings": [{"id": "9", "active": False}]}, {"extensionId": 8}]}})
    assert (n.kind, n.telephony_session_id, n.status, n.recording_ids) == ("telephony", "s-1", "Disconnected", ("9",))
    assert n.account_level and n.extension_id is None  # the account's calls (company mode)
    assert n.party_extension_ids == ("7", "8")
    n = notice_from({"event": "/restapi/v1.0/account/1/extension/2/telephony/sessions?statusCode=Disconnected",
                     "body": {}})
    assert not n.account_level and n.extension_id == "2" and n.for_extension("2") and not n.for_extension("3")
    n = notice_from({"event": "/restapi/v1.0/account/1/extension/2/presence", "body": "odd"})
    assert n.kind == "other" and n.body == {}


async def test_a_new_login_moves_the_channel_to_the_new_oauth_session(start_emulator, caplog):
    """The auth module logged in again (say an API request met the session's end first):
    the socket belongs to the old OAuth session, which a gateway may stop serving without a
    word, so the channel moves over at once: new ws token, recovery refused for another
    session (WSG-1003), a new subscription and one resync per owner."""
    srv = start_emulator(window=1.0, limit_auth=20)
    owner = Owner("faxes", [EXT + "/message-store"], {"Fax"})
    async with RingCentralClient(creds(srv)) as client:
        channel = PushChannel(client, [owner])
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            await until(lambda: channel.healthy and owner.resyncs == 1, "channel up")
            await client.auth._login()  # what a refused refresh leads to (rcfs.api.auth)
            await until(lambda: channel.stats.new_logins == 1 and channel.healthy and owner.resyncs == 2,
                        "channel on the new session")
            gw = await admin(srv, "GET", "/_emulator/push")
            assert gw["counts"]["recoveries_failed"] == 1 and len(gw["connections"]) == 1
            assert channel.stats.ws_tokens == 2 and channel.stats.attempts == 2
            fax = await admin(srv, "POST", "/_emulator/messages", {"type": "Fax"})
            await until(lambda: any(n.body["changes"][0]["newMessageIds"] == [fax["id"]] for n in owner.notices),
                        "the fax by push on the new socket")
            nursery.cancel_scope.cancel()
    assert any("OAuth session behind the socket ended" in r.getMessage() for r in caplog.records)


async def test_a_suspend_seen_on_the_boot_clock_probes_the_socket_at_once(start_emulator, monkeypatch):
    """trio's clock stands still while the machine sleeps; the boot clock does not. Here the
    boot clock jumps 10 minutes while the gateway has gone silent (a black hole, as a socket
    whose server side is gone): the channel probes at once instead of at its next regular
    heartbeat (a minute away with this idle timeout), finds it dead and recovers."""
    import rcfs.push as push

    monkeypatch.setattr(push, "WAKE_TICK", 0.2)
    monkeypatch.setattr(push, "WAKE_PROBE", 1.0)
    srv = start_emulator(window=1.0, ws_idle_timeout=3600, ws_recovery_timeout=60, ws_token_ttl=600)
    owner = Owner("faxes", [EXT + "/message-store"], {"Fax"})
    slept = [0.0]
    async with RingCentralClient(creds(srv)) as client:
        channel = PushChannel(client, [owner], boot_clock=lambda: push.boot_clock() + slept[0])
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            await until(lambda: channel.healthy and owner.resyncs == 1, "channel up")
            await admin(srv, "POST", "/_emulator/push", {"stall": 120})
            fax = await admin(srv, "POST", "/_emulator/messages", {"type": "Fax"})
            slept[0] = 600.0  # the machine slept ten minutes
            await until(lambda: channel.stats.recovered == 1 and owner.notices, "recovered after the wake-up")
            assert [n.body["changes"][0]["newMessageIds"] for n in owner.notices] == [[fax["id"]]]
            assert channel.stats.wakeups == 1 and owner.resyncs == 1  # replayed: nothing to resync
            # The ws token is 10 minutes old on the boot clock (8 minutes is its reuse limit):
            # a new one, rather than one the gateway would refuse after a real sleep.
            assert channel.stats.ws_tokens == 2
            gw = await admin(srv, "GET", "/_emulator/push")
            assert gw["counts"]["frames_lost_in_stall"] == 1  # the one probe, into the black hole
            assert gw["counts"].get("heartbeats", 0) == 0  # no regular heartbeat was due
            nursery.cancel_scope.cancel()


def test_status_says_whether_push_is_up_since_when_and_if_not_why_and_what_next():
    from rcfs.status import _push_lines

    base = {"notifications": 3, "syncs": 2, "connects": 2, "recovered": 1, "recovery_failed": 0,
            "heartbeats": 7, "attempts": 2, "new_logins": 0, "wakeups": 0, "final": False, "since": 1000.0,
            "last_event": 1100.0}
    up = _push_lines({**base, "state": "up", "why": None}, now=1160.0)
    assert up == ["push               up for 2 min: listings trusted, changes arrive as events",
                  "                   3 events (last 60 s ago), 2 syncs, 2 connects (1 recovered, 0 not), "
                  "7 heartbeats",
                  "push filters       0 in the subscription"]
    down = _push_lines({**base, "state": "down", "why": "the gateway closed the socket (code 1011)", "attempts": 5,
                        "wakeups": 1}, now=1042.0)
    assert down[0] == ("push               DOWN for 42 s (the gateway closed the socket (code 1011)): listings "
                       "re-checked on look after their TTL; reconnecting (5 attempts so far)")
    assert down[1].endswith("7 heartbeats, 1 wake-ups after sleep")
    final = _push_lines({**base, "state": "down", "why": "the account's login was refused: …", "final": True,
                         "new_logins": 1}, now=4600.0)
    assert final[0].endswith("not retrying: remount once the credentials are fixed")
    assert "DOWN for 60 min" in final[0] and final[1].endswith(", 1 new logins")


async def test_an_unreachable_gateway_is_a_clear_reason_and_a_capped_backoff(start_emulator, caplog):
    srv = start_emulator(window=1.0)
    owner = Owner("faxes", [EXT + "/message-store"], {"Fax"})
    async with RingCentralClient(creds(srv)) as client:
        channel = PushChannel(client, [owner])
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            await until(lambda: channel.healthy, "channel up")
            srv.stop()  # the service (or the network to it) is gone
            reasons: list[str] = []

            def seen() -> bool:
                if channel.why_down and channel.why_down not in reasons:
                    reasons.append(channel.why_down)
                return any("Connection refused" in r for r in reasons)

            await until(seen, "a reason naming the refused connection")
            start = channel.stats.attempts
            await trio.sleep(4)  # a bound: backoff 0.5, 1, 2, 4 s... (jittered) allows at most 4 here
            assert channel.stats.attempts - start <= 4
            assert not owner.trusted(trio.current_time())
            nursery.cancel_scope.cancel()
    assert reasons[0].startswith("the gateway socket was lost") or reasons[0].startswith("the gateway socket was closed")
    assert any(r.startswith("cannot connect to the gateway (") and "Connection refused" in r for r in reasons)
    text = [r.getMessage() for r in caplog.records if r.name == "rcfs.push"]
    assert sum(t.startswith("push channel down") for t in text) == 1
