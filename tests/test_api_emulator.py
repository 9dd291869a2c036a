"""The API client against the real emulator: in-process (ASGI apps routed by host with
`mounts=`) and over real loopback HTTP (hypercorn serving both hosts on 127.0.0.1:0).

Rate-limit windows are scaled down to about a second so pacing and penalties are
exercised for real without slowing the suite.
"""

from __future__ import annotations

import contextlib
import logging
import math
from functools import partial
from typing import AsyncIterator

import httpx
import pytest
import trio

from rcfs.api import (
    AuthError,
    Credentials,
    NetworkError,
    NotFound,
    Priority,
    RangeNotSatisfiable,
    RetryPolicy,
    RingCentralClient,
    ServerError,
    TokenStore,
)
from rcfs.api.governor import Group
from conftest import TEST_DEFAULTS
from rcfs.emulator import seed
from rcfs.emulator.app import Emulator
from rcfs.emulator.config import EmulatorConfig
from rcfs.emulator.server import serve

FAST = RetryPolicy(attempts=4, base_delay=0.02, max_delay=0.1, total=10.0)
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def make_emu(*, faults: dict | None = None, **config) -> Emulator:
    cfg = EmulatorConfig(**{**TEST_DEFAULTS, **config})
    for key, value in (faults or {}).items():
        setattr(cfg.faults, key, value)
    return Emulator(cfg, seed.build_store(cfg))


def creds(emu: Emulator) -> Credentials:
    c = emu.config
    # media_url: served on loopback, the media host is another port (in process, the twin)
    return Credentials(server_url=emu.platform_base, client_id=c.client_id, client_secret=c.client_secret, jwt=c.jwt,
                       media_url=emu.media_base)


def asgi_client(emu: Emulator, **kw) -> RingCentralClient:
    mounts = {
        emu.platform_base: httpx.ASGITransport(app=emu.platform_app),
        emu.media_base: httpx.ASGITransport(app=emu.media_app),
    }
    kw.setdefault("retry", FAST)
    return RingCentralClient(creds(emu), mounts=mounts, **kw)


@contextlib.asynccontextmanager
async def served(emu: Emulator) -> AsyncIterator[None]:
    """Serve `emu` on two loopback ports for the duration of the block."""
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, emu, host="127.0.0.1"))
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


def http_client(emu: Emulator, **kw) -> RingCentralClient:
    kw.setdefault("retry", FAST)
    kw.setdefault("timeout", 5.0)
    return RingCentralClient(creds(emu), **kw)


def token_grants(emu: Emulator) -> int:
    return emu.stats.requests["oauth-token"]


def alive(emu: Emulator, kind: str) -> list:
    return [m for m in emu.store.messages.values() if m.type == kind and m.availability == "Alive"]


def first_fax_attachment(emu: Emulator):
    msg = max(alive(emu, "Fax"), key=lambda m: m.attachments[0].media.size)
    att = msg.attachments[0]
    return emu.attachment_uri(msg.id, att.id), att.media.read(0, att.media.size)


# -- in-process (ASGI) ---------------------------------------------------------------------


async def test_list_messages_pages_to_the_end_in_process():
    emu = make_emu()
    expected = {m.id for m in alive(emu, "Fax")}
    async with asgi_client(emu) as rc:
        msgs = await rc.list_messages("Fax", per_page=7)
    assert {m["id"] for m in msgs} == expected
    assert len(msgs) == len(expected)  # no duplicates across pages
    assert emu.stats.requests["message-list"] == math.ceil(len(expected) / 7)


async def test_date_window_is_explicit():
    emu = make_emu()
    everything = alive(emu, "VoiceMail")
    recent_cut = emu.store.now() - __import__("datetime").timedelta(days=1)
    async with asgi_client(emu) as rc:
        all_vm = await rc.list_messages("VoiceMail")
        recent = await rc.list_messages("VoiceMail", date_from=recent_cut)
    assert len(all_vm) == len(everything)
    assert len(recent) == len([m for m in everything if m.creation_time >= recent_cut]) < len(everything)


async def test_call_log_lists_only_recorded_calls():
    emu = make_emu()
    recorded = {c.id for c in emu.store.calls.values() if c.recording is not None}
    assert 0 < len(recorded) < len(emu.store.calls)
    async with asgi_client(emu) as rc:
        calls = await rc.list_call_log(per_page=5)
        assert {c["id"] for c in calls} == recorded
        rec = await rc.get_recording(calls[0]["recording"]["id"])
        assert rec["contentUri"] == calls[0]["recording"]["contentUri"]
        with pytest.raises(NotFound):
            await rc.get_recording("no-such-recording")


async def test_sync_full_then_incremental():
    emu = make_emu()
    async with asgi_client(emu) as rc:
        full = await rc.sync_messages("SMS")
        assert full.sync_type == "FSync" and full.records
        msg = next(m for m in alive(emu, "SMS"))
        msg.read_status = "Read"
        emu.store.touch(msg)
        inc = await rc.sync_messages(sync_token=full.sync_token)
        assert inc.sync_type == "ISync"
        assert [r["id"] for r in inc.records] == [msg.id] and inc.records[0]["readStatus"] == "Read"
        with pytest.raises(Exception) as info:
            await rc.sync_messages(sync_token="garbage")
        assert getattr(info.value, "code", None) == "MSG-333"


async def test_fetch_and_stream_bytes_match_the_emulator():
    emu = make_emu()
    url, data = first_fax_attachment(emu)
    async with asgi_client(emu) as rc:
        chunk = await rc.fetch(url, 10, 109)
        assert (chunk.start, chunk.total, chunk.data) == (10, len(data), data[10:110])
        whole = await rc.fetch(url)
        assert whole.data == data and whole.content_type in ("application/pdf", "image/tiff")
        async with rc.stream(url, start=len(data) // 2) as s:
            assert s.start == len(data) // 2 and s.total == len(data)
            got = b"".join([p async for p in s.aiter_bytes()])
        assert got == data[len(data) // 2 :]
        with pytest.raises(RangeNotSatisfiable) as info:
            await rc.fetch(url, len(data), None)
        assert info.value.total == len(data)
        with pytest.raises(RangeNotSatisfiable):
            async with rc.stream(url, start=len(data) + 10):
                pass
    assert rc.stats.requests["medium"] == 5


async def test_byte_cap_gives_short_206():
    emu = make_emu(max_bytes_per_response=1000)
    url, data = first_fax_attachment(emu)
    assert len(data) > 3000
    async with asgi_client(emu) as rc:
        chunk = await rc.fetch(url, 500, 2999)
        assert (chunk.start, len(chunk.data), chunk.total) == (500, 1000, len(data))
        assert chunk.data == data[500:1500]
        async with rc.stream(url, start=2000) as s:
            got = b"".join([p async for p in s.aiter_bytes()])
        assert got == data[2000:3000] and s.total == len(data)


async def test_tokens_persisted_and_reused_by_a_second_client(tmp_path):
    emu = make_emu()
    path = tmp_path / "cfg" / "tokens.json"
    async with asgi_client(emu, token_store=TokenStore(path)) as rc:
        await rc.get_message(alive(emu, "Fax")[0].id)
    assert (path.stat().st_mode & 0o777) == 0o600
    async with asgi_client(emu, token_store=TokenStore(path)) as rc2:
        await rc2.get_message(alive(emu, "Fax")[0].id)
    assert token_grants(emu) == 1


async def test_proactive_refresh_uses_the_refresh_grant():
    emu = make_emu()
    clock = [1e9]
    async with asgi_client(emu, wall_clock=lambda: clock[0]) as rc:
        mid = alive(emu, "Fax")[0].id
        await rc.get_message(mid)
        clock[0] += 3600 - 30  # within the last minute of the token's life
        await rc.get_message(mid)
        assert rc.auth.refreshes == 1 and rc.auth.logins == 1
    assert token_grants(emu) == 2
    assert emu.stats.statuses.get(401, 0) == 0  # refreshed before the server had to say so


async def test_concurrent_callers_share_one_refresh():
    emu = make_emu()
    clock = [1e9]
    async with asgi_client(emu, wall_clock=lambda: clock[0]) as rc:
        mid = alive(emu, "Fax")[0].id
        await rc.get_message(mid)
        clock[0] += 3590
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(rc.get_message, mid)
        assert rc.auth.refreshes == 1
    assert token_grants(emu) == 2


async def test_401_refreshes_once_then_succeeds():
    emu = make_emu(access_token_ttl=1)
    clock = [1e9]
    async with asgi_client(emu, wall_clock=lambda: clock[0]) as rc:
        mid = alive(emu, "Fax")[0].id
        await rc.get_message(mid)
        clock[0] -= 100  # our clock is late: we believe the token is still fresh
        await trio.sleep(1.2)  # the server's token expired
        assert (await rc.get_message(mid))["id"] == mid
        assert rc.auth.refreshes == 1
    assert emu.stats.statuses[401] == 1


async def test_revoked_session_raises_auth_error_without_looping(caplog):
    emu = make_emu()
    async with asgi_client(emu) as rc:
        mid = alive(emu, "Fax")[0].id
        await rc.get_message(mid)
        # Someone revokes the session (e.g. the user logged this app out elsewhere).
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emu.platform_app)) as raw:
            resp = await raw.post(
                f"{emu.platform_base}/restapi/oauth/revoke",
                data={"token": rc.auth.current()},
                auth=(emu.config.client_id, emu.config.client_secret),
            )
            assert resp.status_code == 200
        emu.config.jwt = "a-new-credential"  # ... and the JWT with it: the re-login fails too
        with trio.fail_after(5):
            with pytest.raises(AuthError) as info:
                await rc.get_message(mid)
            with pytest.raises(AuthError):
                await rc.list_messages("Fax")
    assert "session ended, credentials rejected" in str(info.value)
    assert token_grants(emu) == 3  # the login, one refresh attempt, one JWT grant, nothing more
    assert sum(1 for r in caplog.records if "session ended" in r.getMessage()) == 1


async def test_wrong_jwt_is_auth_error():
    emu = make_emu()
    bad = Credentials(server_url=emu.platform_base, client_id=emu.config.client_id,
                      client_secret=emu.config.client_secret, jwt="not-the-jwt")
    mounts = {emu.platform_base: httpx.ASGITransport(app=emu.platform_app)}
    async with RingCentralClient(bad, mounts=mounts, retry=FAST) as rc:
        with pytest.raises(AuthError) as info:
            await rc.list_messages("Fax")
    assert "credentials rejected" in str(info.value) and "not-the-jwt" not in str(info.value)
    assert token_grants(emu) == 1


async def test_logout_revokes_the_session(tmp_path):
    emu = make_emu()
    store = TokenStore(tmp_path / "tokens.json")
    async with asgi_client(emu, token_store=store) as rc:
        await rc.list_messages("Fax")
        token = rc.auth.current()
        await rc.logout()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emu.platform_app)) as raw:
        resp = await raw.get(
            f"{emu.platform_base}/restapi/v1.0/account/~/extension/~/message-store",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert resp.status_code == 401
    assert store.load(TokenStore.key(emu.platform_base, emu.config.client_id, emu.config.jwt)) is None


async def test_force_429_blocks_the_group_for_retry_after():
    emu = make_emu(window=1.0)
    mid = alive(emu, "Fax")[0].id
    async with asgi_client(emu) as rc:
        await rc.get_message(mid)
        emu.config.faults.force_429 = 1
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rc.get_message, mid)
            with trio.fail_after(5):
                while rc.stats.rate_limited == 0:
                    await trio.sleep(0.01)
            for _ in range(4):
                nursery.start_soon(rc.get_message, mid)
        elapsed = trio.current_time() - start
        assert rc.stats.rate_limited == 1
    # Nothing else was sent into the blocked group: a request during the penalty would
    # have been rejected (and restarted the penalty) and counted here.
    assert emu.stats.rate_limited == 1
    assert elapsed >= 1.0  # Retry-After: 1


# -- real loopback HTTP ----------------------------------------------------------------------


async def test_pacing_keeps_a_burst_of_twice_the_limit_free_of_429():
    emu = make_emu(window=1.0, limit_light=8, limit_heavy=3)
    mid = alive(emu, "Fax")[0].id
    async with served(emu):
        async with http_client(emu) as rc:
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(16):
                    nursery.start_soon(rc.get_message, mid)
                for _ in range(6):
                    nursery.start_soon(partial(rc.list_call_log, per_page=1000))
            elapsed = trio.current_time() - start
            assert rc.stats.rate_limited == 0
            assert rc.stats.requests["light"] == 16 and rc.stats.requests["heavy"] == 6
            b = rc.governor.budget(Group.LIGHT)
            assert (b.limit, b.window, b.learned) == (8, 1.0, True)
    assert emu.stats.rate_limited == 0
    assert elapsed >= 1.0  # the second half of each burst really waited for the window


async def test_priority_foreground_overtakes_readahead_over_http():
    emu = make_emu(window=1.0, limit_medium=5)
    order: list[str] = []

    async def get(name: str, prio: Priority) -> None:
        chunk = await rc.fetch(url, 0, 99, priority=prio)
        assert chunk.data == data[:100]
        order.append(name)

    async with served(emu):
        url, data = first_fax_attachment(emu)  # URLs carry the real ports once served
        async with http_client(emu) as rc:
            await rc.fetch(url, 0, 0)  # learn the group's limits
            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(get, f"ra{i}", Priority.READAHEAD)
                await trio.sleep(0.05)
                nursery.start_soon(get, "fg", Priority.FOREGROUND)
    assert emu.stats.rate_limited == 0
    # Read-ahead kept a reserve: the reader's fetch got through before most of it.
    assert order.index("fg") <= 3


async def test_retries_503_and_gives_up_after_bounded_attempts():
    emu = make_emu(window=1.0)
    async with served(emu):
        async with http_client(emu) as rc:
            await rc.list_messages("Fax")  # logged in; the fault below hits API calls only
            emu.config.faults.error_rate = 1.0
            before = emu.stats.requests["message-list"]
            with pytest.raises(ServerError) as info:
                await rc.list_messages("Fax")
            assert info.value.status == 503 and info.value.code == "CMN-201"
            assert emu.stats.requests["message-list"] - before == FAST.attempts
            emu.config.faults.error_rate = 0.3
            rc.retry = RetryPolicy(attempts=10, base_delay=0.01, max_delay=0.05, total=10.0)
            msgs = await rc.list_messages("Fax", per_page=5)
            assert len(msgs) == len(alive(emu, "Fax"))
            assert rc.stats.retries > 0 and emu.stats.statuses[503] > FAST.attempts


async def test_fetch_retries_reset_and_truncated_bodies():
    emu = make_emu(faults={"reset_rate": 0.4, "truncate_rate": 0.3, "seed": 7})
    async with served(emu):
        url, data = first_fax_attachment(emu)
        async with http_client(emu, retry=RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.05, total=10)) as rc:
            for start in (0, 100, len(data) // 3):
                chunk = await rc.fetch(url, start, None)
                assert chunk.data == data[start:] and chunk.total == len(data)
            assert rc.stats.transport_errors > 0
            emu.config.faults.reset_rate = 1.0  # every body cut at half: continued, then short
            chunk = await rc.fetch(url, 0, None)
            assert 0 < len(chunk.data) < len(data) and chunk.data == data[: len(chunk.data)]
            emu.config.faults.cut_at = 0.0  # not a byte: nothing to return
            with pytest.raises(NetworkError):
                await rc.fetch(url, 0, None)


async def test_stream_over_loopback_and_dropped_stream():
    emu = make_emu(scale="demo")
    rec = max(emu.store.recordings.values(), key=lambda r: r.media.size)
    data = rec.media.read(0, rec.media.size)
    async with served(emu):
        url = emu.recording_content_uri(rec.id)
        async with http_client(emu) as rc:
            async with rc.stream(url, 1234, priority=Priority.FOREGROUND) as s:
                assert (s.start, s.total) == (1234, len(data))
                assert s.content_type in ("audio/mpeg", "audio/wav", "audio/x-wav")
                got = bytearray()
                async for piece in s.aiter_bytes():
                    got += piece
            assert bytes(got) == data[1234:]
            emu.config.faults.reset_rate = 1.0
            got = bytearray()
            with pytest.raises(NetworkError):
                async with rc.stream(url, 0) as s:
                    async for piece in s.aiter_bytes():
                        got += piece
            assert bytes(got) == data[: len(got)]  # what arrived before the drop is right
            emu.config.faults.reset_rate = 0.0
            # The connection pool is still healthy after the drop and a cancelled stream.
            with trio.move_on_after(0.05):
                async with rc.stream(url, 0) as s:
                    async for _ in s.aiter_bytes():
                        await trio.sleep(1)
            chunk = await rc.fetch(url, 0, 9, priority=Priority.FOREGROUND)
            assert chunk.data == data[:10]


async def test_tokens_never_in_logs_or_errors_over_http(caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    emu = make_emu(access_token_ttl=1)
    texts: list[str] = []
    secrets: set[str] = set()
    clock = [1e9]
    async with served(emu):
        async with http_client(emu, token_store=TokenStore(tmp_path / "t.json"), wall_clock=lambda: clock[0]) as rc:
            mid = alive(emu, "Fax")[0].id
            await rc.get_message(mid)
            secrets.update(rc.auth.secrets())
            clock[0] += 10  # proactive refresh
            await rc.get_message(mid)
            secrets.update(rc.auth.secrets())
            try:
                await rc.get_message(1)
            except NotFound as exc:
                texts.append(str(exc))
            url, _ = first_fax_attachment(emu)
            try:
                await rc.fetch(url, 10**9)
            except RangeNotSatisfiable as exc:
                texts.append(str(exc))
            await rc.logout()
            texts.append(repr(rc.auth))
    client_logs = [r.getMessage() for r in caplog.records if r.name.startswith(("rcfs.api", "httpx", "httpcore"))]
    assert client_logs, "expected some client log output at DEBUG"
    blob = "\n".join(texts + client_logs)
    secrets.discard("")
    assert len(secrets) >= 4  # jwt, client secret, two access tokens, refresh tokens
    for secret in secrets:
        assert secret not in blob


# -- sending (multipart like the official SDK) ----------------------------------------------


def _bytes(media_obj) -> bytes:
    return media_obj.read(0, media_obj.size)


async def test_send_fax_mms_and_greeting_in_process():
    from rcfs.emulator import media

    emu = make_emu(send_delay=0.0)
    pdf = _bytes(media.fax_pdf(5, 2))
    png = _bytes(media.image_png(3))
    mp3 = _bytes(media.audio_mp3(4, 2))
    async with asgi_client(emu) as rc:
        fax = await rc.send_fax(["+15550001234"], [("letter.pdf", pdf, "application/pdf")], cover_index=0)
        assert fax["messageStatus"] == "Queued" and fax["direction"] == "Outbound"
        stored = await rc.get_message(fax["id"])
        assert stored["type"] == "Fax"
        mms = await rc.send_mms(emu.store.main_number, ["+15550004321"], [("pic.png", png, None)], text="look")
        assert mms["type"] == "SMS"
        greeting = await rc.upload_greeting("Voicemail", ("hello.mp3", mp3, "audio/mpeg"), apply=False)
        assert greeting["type"] == "Voicemail" and greeting["contentUri"]
        sms = await rc.send_sms(emu.store.main_number, ["+15550004321"], "plain text")
        assert sms["type"] == "SMS"
    assert rc.stats.requests["heavy"] == 2  # fax + greeting; MMS and SMS are Medium
    assert rc.stats.requests["medium"] == 2


async def test_update_and_delete_message():
    emu = make_emu()
    msg = next(m for m in alive(emu, "Fax") if m.read_status == "Unread")
    async with asgi_client(emu) as rc:
        assert (await rc.update_message(msg.id, "Read"))["readStatus"] == "Read"
        await rc.delete_message(msg.id)
        assert emu.store.messages[msg.id].availability == "Deleted"
        assert msg.id not in {m["id"] for m in await rc.list_messages("Fax")}
        await rc.delete_message(msg.id, purge=True)
        assert emu.store.messages[msg.id].availability == "Purged"
    assert rc.stats.requests["medium"] == 3
