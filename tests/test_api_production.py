"""What production does that a friendly server does not (issue 9), client side, over real
loopback HTTP: compressed error bodies, sessions that end without a revoke, 403 for a
missing permission, attachment URIs on a foreign host.

Each test first shows the emulator really behaves that way, then what rcfs makes of it.
"""

from __future__ import annotations

import logging

import httpx
import pytest
import trio

from rcfs.api import (
    AuthError,
    Credentials,
    PermissionDenied,
    Priority,
    Rejected,
    RingCentralClient,
    UntrustedURL,
)
from rcfs.api.errors import ApiError, NotFound, RateLimited
from test_api_emulator import FAST, first_fax_attachment, http_client, make_emu, served, token_grants

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


# -- 1. compressed answers ---------------------------------------------------------------

async def test_gzip_error_bodies_still_show_msg_333_and_invalid_client():
    emu = make_emu()  # the fixtures' default: JSON answers compressed when asked
    assert emu.config.compress_json
    async with served(emu):
        async with httpx.AsyncClient() as raw:  # what goes over the wire
            r = await raw.post(f"{emu.platform_base}/restapi/oauth/token",
                               data={"grant_type": JWT_GRANT, "assertion": "x"}, auth=("nobody", "wrong"))
            assert r.status_code == 401 and r.headers["content-encoding"] == "gzip"
        async with http_client(emu) as rc:
            with pytest.raises(Rejected) as info:
                await rc.sync_messages(sync_token="stale-or-tampered")
            assert info.value.status == 400 and info.value.code == "MSG-333"
        bad = Credentials(emu.platform_base, emu.config.client_id, "wrong-secret", emu.config.jwt)
        async with RingCentralClient(bad, retry=FAST, timeout=5.0) as rc:
            with pytest.raises(AuthError) as info:
                await rc.list_messages("Fax")
            assert info.value.code == "OAU-146"
            assert "Invalid client credentials" in str(info.value)


# -- 2. sessions that end other than by revoke -----------------------------------------------

async def test_session_ended_by_the_server_logs_in_again_once(caplog):
    caplog.set_level(logging.INFO)
    emu = make_emu(window=1.0)
    async with served(emu), http_client(emu) as rc:
        await rc.list_messages("Fax")
        assert rc.auth.logins == 1
        async with httpx.AsyncClient() as raw:
            r = await raw.post(f"{emu.platform_base}/_emulator/sessions/end", json={"which": "all"})
            assert r.json() == {"ended": 1}
        grants = token_grants(emu)
        # 401 -> the refresh is refused (invalid_grant) while the JWT is still good
        assert len(await rc.list_messages("Fax")) > 0
        assert rc.auth.logins == 2 and not rc.auth.failed
        assert token_grants(emu) - grants == 2  # the refused refresh, then one JWT grant
        assert emu.stats.statuses[400] >= 1
        assert "logging in again" in caplog.text
        # Ended again at once: a second new login would only feed a session cap; stop and say why.
        emu.tokens.end_sessions("all")
        with pytest.raises(AuthError) as info:
            await rc.list_messages("Fax")
        assert "session" in str(info.value) and "5" in str(info.value)
        assert rc.auth.failed
        grants = token_grants(emu)
        with pytest.raises(AuthError):
            await rc.list_messages("Fax")
        assert token_grants(emu) == grants  # fails fast afterwards: no loop on the Auth group


async def test_session_cap_ends_the_oldest_session_and_rcfs_recovers():
    emu = make_emu(window=1.0, limit_auth=50, session_cap=5)
    async with served(emu), http_client(emu) as rc:
        await rc.list_messages("Fax")
        old = rc.auth.current()
        async with httpx.AsyncClient() as raw:
            for _ in range(5):  # five more sessions of the same user and app
                r = await raw.post(f"{emu.platform_base}/restapi/oauth/token",
                                   data={"grant_type": JWT_GRANT, "assertion": emu.config.jwt},
                                   auth=(emu.config.client_id, emu.config.client_secret))
                assert r.status_code == 200
            r = await raw.get(f"{emu.platform_base}/restapi/v1.0/account/~/extension/~",
                              headers={"Authorization": f"Bearer {old}"})
            assert r.status_code == 401  # the cap ended rcfs' session
        assert len(emu.tokens.sessions) == 5
        assert len(await rc.list_messages("Fax")) > 0
        assert rc.auth.logins == 2 and rc.auth.current() != old


async def test_rejected_jwt_after_an_ended_session_says_what_to_do():
    emu = make_emu(window=1.0)
    async with served(emu), http_client(emu) as rc:
        await rc.list_messages("Fax")
        emu.tokens.end_sessions("all")
        emu.config.jwt = "a-new-credential"  # the user's JWT was revoked
        with pytest.raises(AuthError) as info:
            await rc.list_messages("Fax")
        text = str(info.value)
        assert "JWT" in text and "RC_JWT" in text
        assert emu.config.jwt not in text


# -- 3. 403 for a missing permission -------------------------------------------------------

async def test_missing_permission_is_permission_denied_naming_it(caplog):
    caplog.set_level(logging.INFO)
    emu = make_emu(window=1.0, missing_permissions=("ReadCallRecording",))
    rec = next(iter(emu.store.recordings.values()))
    async with served(emu), http_client(emu) as rc:
        await rc.list_messages("Fax")  # ReadMessages is there
        with pytest.raises(PermissionDenied) as info:
            await rc.fetch(emu.recording_content_uri(rec.id), 0, 99)
        err = info.value
        assert isinstance(err, AuthError) and not isinstance(err, Rejected)
        assert err.status == 403 and err.code == "CMN-401" and err.permission == "ReadCallRecording"
        assert "ReadCallRecording" in str(err)
        assert any("ReadCallRecording" in r.getMessage() and r.levelno >= logging.WARNING for r in caplog.records)
        assert not rc.auth.failed  # the session itself is fine
        assert len(await rc.list_messages("Fax")) > 0


# -- 6. URLs from the API -------------------------------------------------------------------

class _Listener:
    """A loopback TCP listener that only counts connections (a foreign host stand-in)."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()

        async def handle(stream) -> None:
            self.connections += 1
            await stream.aclose()

        await trio.serve_listeners(handle, listeners)


async def test_token_goes_only_to_the_platform_and_media_hosts(caplog):
    caplog.set_level(logging.INFO)
    listener = _Listener()
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        # "localhost" is loopback too, but not the host rcfs was configured with.
        emu = make_emu(window=1.0, foreign_media_rate=0.5, foreign_media_base=f"http://localhost:{listener.port}")
        async with served(emu), http_client(emu) as rc:
            msgs = await rc.list_messages(["Fax", "VoiceMail", "SMS"])
            uris = [a["uri"] for m in msgs for a in m.get("attachments", [])]
            foreign = [u for u in uris if u.startswith("http://localhost:")]
            assert foreign and len(foreign) < len(uris)
            with pytest.raises(UntrustedURL) as info:
                await rc.fetch(foreign[0], 0, 99)
            err = info.value
            assert isinstance(err, ApiError)
            assert not isinstance(err, (AuthError, NotFound, RateLimited, Rejected))  # -> EIO
            assert "localhost" in str(err) and rc.auth.current() not in str(err)
            with pytest.raises(UntrustedURL):
                async with rc.stream(foreign[0], 0, priority=Priority.FOREGROUND):
                    pass
            with pytest.raises(UntrustedURL):  # https or loopback http only, even for a known host
                await rc.fetch(emu.media_base.replace("127.0.0.1", "example.com"), 0, 9)
            assert listener.connections == 0  # not even a connection, let alone a token
            assert any("refusing" in r.getMessage() and "localhost" in r.getMessage() for r in caplog.records)
            url, data = first_fax_attachment(emu)  # (its own URI on the media host)
            assert (await rc.fetch(url, 0, 99)).data == data[:100]  # the media host still works
        nursery.cancel_scope.cancel()


async def test_a_relogin_that_could_not_be_sent_does_not_count_as_the_one_relogin(autojump_clock):
    # (the Auth group paces these grants at 5 a minute: the mock clock skips the waits)
    from test_api_mock import FakeRC, client

    class FlakyTokens(FakeRC):
        jwt_503 = 0

        async def _token(self, request):
            if self.jwt_503 and b"jwt-bearer" in request.content:
                self.jwt_503 -= 1
                return self._err(503, "CMN-201", "Service Temporarily Unavailable")
            return await super()._token(request)

    fake = FlakyTokens()
    async with client(fake) as rc:
        await rc.get_message(7)
        fake.valid_access.clear()
        fake.valid_refresh.clear()  # the server ended the session ...
        fake.jwt_503 = 100  # ... and its token endpoint is down for a moment
        with pytest.raises(ApiError) as info:
            await rc.get_message(7)
        assert not isinstance(info.value, AuthError) and info.value.status == 503
        fake.jwt_503 = 0
        assert await rc.get_message(7) == {"id": 7}  # the login went through now
        fake.valid_access.clear()
        fake.valid_refresh.clear()  # ended again: the first re-login is still to be had
        assert await rc.get_message(7) == {"id": 7}
        assert rc.auth.logins == 3 and not rc.auth.failed
