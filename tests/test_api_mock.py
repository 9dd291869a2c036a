"""Client and token tests against a small fake RingCentral behind `httpx.MockTransport`.

The fake is deliberately independent of rcfs.emulator: it pins the client's wire
behaviour (headers, ranges, paging, token grants) where the emulator cannot inject a
precise edge case. Emulator tests over ASGI and loopback live in test_api_emulator.py.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from urllib.parse import parse_qs

import httpx
import pytest
import trio

from rcfs.api import (
    AuthError,
    BadResponse,
    Credentials,
    NetworkError,
    NotFound,
    Priority,
    RangeNotSatisfiable,
    RateLimited,
    Rejected,
    RetryPolicy,
    RingCentralClient,
    ServerError,
    TokenStore,
)

SERVER = "https://platform.test"
MEDIA = "https://media.test"
CREDS = Credentials(server_url=SERVER, client_id="cid", client_secret="csecret-XYZ", jwt="JWT-SECRET-ABC")
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, total=5.0)


class FakeRC:
    """A tiny RingCentral: token grants, a paged message list, one media object."""

    def __init__(self, *, media: bytes = bytes(range(256)) * 40, access_ttl: int = 3600) -> None:
        self.media = media
        self.access_ttl = access_ttl
        self.refresh_ttl = 604800
        self.token_requests: list[dict[str, str]] = []
        self.requests: list[httpx.Request] = []
        self.valid_access: set[str] = set()
        self.valid_refresh: set[str] = set()
        self.revoked = False
        self.seq = 0
        self.fail_next: list = []  # statuses, (status, headers) or exception classes  # statuses or exceptions for next API calls
        self.short_206: int | None = None  # cap bytes per 206
        self.ignore_range = False
        self.messages = [{"id": i, "type": "Fax"} for i in range(1, 26)]
        self.token_delay = 0.0
        self.reject_jwt = False

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    def _err(self, status: int, code: str, msg: str, **kw: str) -> httpx.Response:
        body = {"errorCode": code, "message": msg, "errors": [{"errorCode": code, "message": msg}], **kw}
        return self._json(status, body)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/restapi/oauth/token":
            return await self._token(request)
        if path == "/restapi/oauth/revoke":
            form = parse_qs(request.content.decode())
            tok = form["token"][0]
            if tok in self.valid_access:
                self.valid_access.clear()
                self.valid_refresh.clear()
            return httpx.Response(200)
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or auth[7:] not in self.valid_access:
            return self._err(401, "TokenInvalid", "OAuth token is invalid")
        if self.fail_next:
            failure = self.fail_next.pop(0)
            if isinstance(failure, int):
                return self._err(failure, "CMN-201", "Service Temporary Unavailable")
            if isinstance(failure, tuple):
                resp = self._err(failure[0], "CMN-201", "Service Temporary Unavailable")
                resp.headers.update(failure[1])
                return resp
            raise failure("boom")
        if path.endswith("/message-store"):
            return self._list(request)
        if path.endswith("/message-store/404"):
            return self._err(404, "CMN-102", "Resource for parameter [messageId] is not found")
        if path.endswith("/message-store/400"):
            return self._err(400, "CMN-101", "Parameter [x] value is invalid")
        if path.endswith("/message-store/7"):
            return self._json(200, {"id": 7})
        if path.endswith("/message-store/notjson"):
            return httpx.Response(200, content=b"<html>", headers={"content-type": "text/html"})
        if path == "/media/blob":
            return self._media(request)
        if path == "/media/badrange":
            return httpx.Response(206, content=b"abc", headers={"content-range": "bytes nonsense"})
        return self._err(404, "AGW-404", "Resource not found")

    async def _token(self, request: httpx.Request) -> httpx.Response:
        if self.token_delay:
            await trio.sleep(self.token_delay)
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        basic = base64.b64decode(request.headers["authorization"].split()[1]).decode()
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.token_requests.append(form)
        if basic != "cid:csecret-XYZ":
            return self._json(401, {"error": "invalid_client", "errors": [{"errorCode": "OAU-146", "message": "Invalid client"}]})
        if form["grant_type"] == "refresh_token":
            if form["refresh_token"] not in self.valid_refresh:
                return self._json(
                    400,
                    {
                        "error": "invalid_grant",
                        "errors": [{"errorCode": "OAU-211", "message": f"Token not found: {form['refresh_token']}"}],
                    },
                )
            self.valid_refresh.discard(form["refresh_token"])
            self.valid_access.clear()
        elif form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            if self.reject_jwt or form["assertion"] != "JWT-SECRET-ABC":
                return self._json(
                    400, {"error": "invalid_grant", "errors": [{"errorCode": "OAU-140", "message": "Invalid resource owner credentials"}]}
                )
        else:
            return self._json(400, {"error": "unsupported_grant_type", "errors": [{"errorCode": "OAU-250", "message": "no"}]})
        self.seq += 1
        access, refresh = f"AT-{self.seq}-secret", f"RT-{self.seq}-secret"
        self.valid_access.add(access)
        self.valid_refresh.add(refresh)
        return self._json(
            200,
            {
                "access_token": access,
                "token_type": "bearer",
                "expires_in": self.access_ttl,
                "refresh_token": refresh,
                "refresh_token_expires_in": self.refresh_ttl,
                "scope": "ReadMessages",
                "owner_id": "101",
            },
        )

    def _list(self, request: httpx.Request) -> httpx.Response:
        q = parse_qs(request.url.query.decode())
        per = int(q.get("perPage", ["100"])[0])
        page = int(q.get("page", ["1"])[0])
        chunk = self.messages[(page - 1) * per : page * per]
        pages = max(1, -(-len(self.messages) // per))
        base = f"{SERVER}{request.url.path}?dateFrom={q['dateFrom'][0]}&perPage={per}"
        nav = {"firstPage": {"uri": base + "&page=1"}, "lastPage": {"uri": base + f"&page={pages}"}}
        if page < pages:
            nav["nextPage"] = {"uri": base + f"&page={page + 1}"}
        return self._json(200, {"records": chunk, "navigation": nav, "paging": {"page": page, "perPage": per}})

    def _media(self, request: httpx.Request) -> httpx.Response:
        data = self.media
        rng = request.headers.get("range")
        if rng is None or self.ignore_range:
            return httpx.Response(200, content=data, headers={"content-type": "application/pdf"})
        spec = rng.removeprefix("bytes=")
        a_s, b_s = spec.split("-")
        a = int(a_s)
        b = int(b_s) if b_s else len(data) - 1
        if a >= len(data):
            return httpx.Response(
                416, json={"errorCode": "CMN-107", "message": "Range Not Satisfiable", "errors": []},
                headers={"content-range": f"bytes */{len(data)}"},
            )
        b = min(b, len(data) - 1)
        if self.short_206 is not None:
            b = min(b, a + self.short_206 - 1)
        return httpx.Response(
            206, content=data[a : b + 1],
            headers={"content-range": f"bytes {a}-{b}/{len(data)}", "content-type": "application/pdf"},
        )


def client(fake: FakeRC, **kw) -> RingCentralClient:
    kw.setdefault("retry", FAST)
    return RingCentralClient(CREDS, transport=fake.transport(), **kw)


# -- media --------------------------------------------------------------------------------


async def test_fetch_range_206():
    fake = FakeRC()
    async with client(fake) as rc:
        chunk = await rc.fetch(f"{MEDIA}/media/blob", start=100, end=199)
    assert chunk.start == 100 and chunk.total == len(fake.media)
    assert chunk.data == fake.media[100:200]
    assert chunk.content_type == "application/pdf"
    media_req = fake.requests[-1]
    assert media_req.headers["range"] == "bytes=100-199"
    assert media_req.headers["authorization"].startswith("Bearer AT-")
    assert "access_token" not in str(media_req.url)


async def test_fetch_short_206_open_end_and_200():
    fake = FakeRC()
    fake.short_206 = 10
    async with client(fake) as rc:
        chunk = await rc.fetch(f"{MEDIA}/media/blob", start=50, end=999)
        assert (chunk.start, len(chunk.data), chunk.total) == (50, 10, len(fake.media))
        assert chunk.data == fake.media[50:60]
        fake.short_206 = None
        tail = await rc.fetch(f"{MEDIA}/media/blob", start=len(fake.media) - 5)
        assert fake.requests[-1].headers["range"] == f"bytes={len(fake.media) - 5}-"
        assert tail.data == fake.media[-5:]
        fake.ignore_range = True
        whole = await rc.fetch(f"{MEDIA}/media/blob", start=300, end=400)
        # A 200 (whole body) to a range: only the asked bytes are kept (memory bound)
        assert whole.start == 300 and whole.total == len(fake.media) and whole.data == fake.media[300:401]


async def test_fetch_416_reports_total():
    fake = FakeRC()
    async with client(fake) as rc:
        with pytest.raises(RangeNotSatisfiable) as info:
            await rc.fetch(f"{MEDIA}/media/blob", start=len(fake.media))
    assert info.value.total == len(fake.media)
    assert info.value.status == 416 and info.value.code == "CMN-107"


async def test_fetch_malformed_content_range_is_bad_response():
    fake = FakeRC()
    async with client(fake) as rc:
        with pytest.raises(BadResponse):
            await rc.fetch(f"{MEDIA}/media/badrange", start=0, end=10)


async def test_stream_yields_body_and_position():
    fake = FakeRC()
    async with client(fake) as rc:
        async with rc.stream(f"{MEDIA}/media/blob", start=1000) as s:
            assert s.start == 1000 and s.total == len(fake.media)
            got = b"".join([p async for p in s.aiter_bytes()])
        assert got == fake.media[1000:]
        with pytest.raises(RangeNotSatisfiable):
            async with rc.stream(f"{MEDIA}/media/blob", start=len(fake.media) + 1):
                pass
    assert fake.requests[-1].headers["range"] == f"bytes={len(fake.media) + 1}-"


# -- paging and JSON calls ----------------------------------------------------------------


async def test_list_messages_follows_next_page_to_the_end():
    fake = FakeRC()
    async with client(fake) as rc:
        msgs = await rc.list_messages("Fax", date_from="2020-01-01T00:00:00.000Z", per_page=10)
    assert [m["id"] for m in msgs] == list(range(1, 26))
    lists = [r for r in fake.requests if r.url.path.endswith("/message-store")]
    assert len(lists) == 3
    first = parse_qs(lists[0].url.query.decode())
    assert first["messageType"] == ["Fax"] and first["dateFrom"] == ["2020-01-01T00:00:00.000Z"]


async def test_list_messages_always_sends_date_from():
    fake = FakeRC()
    async with client(fake) as rc:
        await rc.list_messages("Fax")
    q = parse_qs(fake.requests[-1].url.query.decode())
    assert q["dateFrom"] == ["1970-01-01T00:00:00.000Z"] and q["perPage"] == ["1000"]


async def test_error_mapping():
    fake = FakeRC()
    async with client(fake) as rc:
        assert (await rc.get_message(7)) == {"id": 7}
        with pytest.raises(NotFound) as nf:
            await rc.get_message(404)
        assert nf.value.code == "CMN-102" and nf.value.status == 404
        with pytest.raises(Rejected) as rj:
            await rc.get_message(400)
        assert rj.value.code == "CMN-101"
        with pytest.raises(BadResponse):
            await rc.get_message("notjson")


# -- retries --------------------------------------------------------------------------------


async def test_retries_503_then_succeeds():
    fake = FakeRC()
    async with client(fake) as rc:
        await rc.get_message(7)
        fake.fail_next = [503, 503]
        assert (await rc.get_message(7)) == {"id": 7}
        assert rc.stats.retries == 2


async def test_persistent_503_gives_server_error_after_bounded_attempts():
    fake = FakeRC()
    async with client(fake) as rc:
        await rc.get_message(7)
        before = len(fake.requests)
        fake.fail_next = [503] * 10
        with pytest.raises(ServerError) as info:
            await rc.get_message(7)
        assert info.value.status == 503
        assert len(fake.requests) - before == FAST.attempts


async def test_retry_after_beyond_the_time_cap_gives_up_at_once(autojump_clock):
    fake = FakeRC()
    async with client(fake) as rc:
        await rc.get_message(7)
        fake.fail_next = [(503, {"retry-after": "2"}), 503]
        assert (await rc.get_message(7)) == {"id": 7}  # 2 s fits the 5 s budget
        fake.fail_next = [(503, {"retry-after": "100"})] * 3
        with trio.fail_after(1):
            with pytest.raises(ServerError):
                await rc.get_message(7)


async def test_long_penalty_raises_rate_limited_instead_of_hanging(autojump_clock):
    fake = FakeRC()
    async with client(fake) as rc:
        await rc.get_message(7)
        fake.fail_next = [(429, {"retry-after": "3600", "x-rate-limit-group": "light"})]
        with trio.fail_after(1):
            with pytest.raises(RateLimited):
                await rc.get_message(7)
            n = len(fake.requests)
            with pytest.raises(RateLimited):  # the group stays blocked: fail fast, send nothing
                await rc.list_messages("Fax")
        assert len(fake.requests) == n


async def test_transport_errors_retry_then_network_error():
    fake = FakeRC()
    async with client(fake) as rc:
        await rc.get_message(7)
        fake.fail_next = [httpx.ReadError, httpx.RemoteProtocolError]
        assert (await rc.get_message(7)) == {"id": 7}
        fake.fail_next = [httpx.ConnectError] * 10
        with pytest.raises(NetworkError) as info:
            await rc.get_message(7)
    assert "ConnectError" in str(info.value)


async def test_post_is_not_retried_after_read_error():
    fake = FakeRC()
    async with client(fake) as rc:
        await rc.get_message(7)
        fake.fail_next = [httpx.ReadError, httpx.ReadError]
        before = len(fake.requests)
        with pytest.raises(NetworkError):
            await rc.send_sms("+15550001111", ["+15550002222"], "hi")
        assert len(fake.requests) - before == 1  # a fax or SMS must never go out twice


async def test_delete_is_not_retried_after_a_lost_answer():
    fake = FakeRC()
    async with client(fake) as rc:
        await rc.get_message(7)
        fake.fail_next = [httpx.ReadError]
        before = len(fake.requests)
        with pytest.raises(NetworkError):
            await rc.delete_message(7)
        assert len(fake.requests) - before == 1  # a second DELETE would purge the message


# -- tokens ---------------------------------------------------------------------------------


async def test_login_once_persisted_0600_and_reused(tmp_path):
    fake = FakeRC()
    path = tmp_path / "state" / "tokens.json"
    async with client(fake, token_store=TokenStore(path)) as rc:
        await rc.get_message(7)
        await rc.get_message(7)
    assert len(fake.token_requests) == 1
    assert fake.token_requests[0] == {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "JWT-SECRET-ABC"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    raw = path.read_text()
    assert "JWT-SECRET-ABC" not in raw and "csecret-XYZ" not in raw
    async with client(fake, token_store=TokenStore(path)) as rc2:
        await rc2.get_message(7)
    assert len(fake.token_requests) == 1  # the second client used the stored session


async def test_proactive_refresh_before_expiry(tmp_path):
    fake = FakeRC(access_ttl=600)
    now = [1_000_000.0]
    async with client(fake, wall_clock=lambda: now[0]) as rc:
        await rc.get_message(7)
        now[0] += 500  # 100 s left: more than the 60 s margin, no refresh
        await rc.get_message(7)
        assert len(fake.token_requests) == 1
        now[0] += 50  # 50 s left: inside the margin
        await rc.get_message(7)
    assert [t["grant_type"] for t in fake.token_requests] == [
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "refresh_token",
    ]
    assert fake.token_requests[1]["refresh_token"] == "RT-1-secret"
    assert not [r for r in fake.requests if r.url.path.endswith("/7") and r.headers["authorization"] == "Bearer AT-1-secret"][2:]


async def test_refresh_token_expired_by_clock_logs_in_again():
    fake = FakeRC(access_ttl=600)
    now = [1_000_000.0]
    async with client(fake, wall_clock=lambda: now[0]) as rc:
        await rc.get_message(7)
        now[0] += fake.refresh_ttl + 1
        await rc.get_message(7)
    grants = [t["grant_type"] for t in fake.token_requests]
    assert grants == ["urn:ietf:params:oauth:grant-type:jwt-bearer"] * 2


async def test_401_refreshes_once_and_retries():
    fake = FakeRC()
    async with client(fake) as rc:
        await rc.get_message(7)
        fake.valid_access.clear()  # server invalidated the access token early
        assert (await rc.get_message(7)) == {"id": 7}
    assert [t["grant_type"] for t in fake.token_requests][-1] == "refresh_token"
    assert len(fake.token_requests) == 2


async def test_persistent_401_is_auth_error_without_loop():
    fake = FakeRC()

    async def always_401(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/restapi/oauth/"):
            return await fake.handle(request)
        fake.requests.append(request)
        return fake._err(401, "TokenInvalid", "OAuth token is invalid")

    async with RingCentralClient(CREDS, transport=httpx.MockTransport(always_401), retry=FAST) as rc:
        with pytest.raises(AuthError):
            await rc.get_message(7)
    api_calls = [r for r in fake.requests if not r.url.path.startswith("/restapi/oauth/")]
    assert len(api_calls) == 2 and len(fake.token_requests) == 2  # login, one refresh


async def test_concurrent_refresh_is_single_flight():
    fake = FakeRC(access_ttl=600)
    fake.token_delay = 0.05
    now = [1_000_000.0]
    async with client(fake, wall_clock=lambda: now[0]) as rc:
        await rc.get_message(7)
        now[0] += 590
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(rc.get_message, 7)
    assert [t["grant_type"] for t in fake.token_requests].count("refresh_token") == 1


async def test_concurrent_401s_trigger_one_refresh():
    fake = FakeRC()
    fake.token_delay = 0.02
    async with client(fake) as rc:
        await rc.get_message(7)
        fake.valid_access.clear()
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(rc.get_message, 7)
    assert len(fake.token_requests) == 2


async def test_revoked_session_is_auth_error_no_hang_no_loop(tmp_path, caplog):
    fake = FakeRC()
    store = TokenStore(tmp_path / "t.json")
    async with client(fake, token_store=store) as rc:
        await rc.get_message(7)
        fake.valid_access.clear()
        fake.valid_refresh.clear()  # the session was revoked elsewhere ...
        fake.reject_jwt = True  # ... and so was the JWT: the one re-login fails too
        with trio.fail_after(5):
            with pytest.raises(AuthError) as info:
                await rc.get_message(7)
        assert "session ended, credentials rejected" in str(info.value) and "RC_JWT" in str(info.value)
        n = len(fake.requests)
        with pytest.raises(AuthError):
            await rc.get_message(7)  # fails fast: no new request, no login loop
        assert len(fake.requests) == n
    assert store.load(TokenStore.key(SERVER, "cid", "JWT-SECRET-ABC")) is None
    jwt = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert [t["grant_type"] for t in fake.token_requests] == [jwt, "refresh_token", jwt]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "session ended" in r.getMessage()]
    assert len(errors) == 1


async def test_bad_jwt_is_auth_error():
    fake = FakeRC()
    fake.reject_jwt = True
    async with client(fake) as rc:
        with pytest.raises(AuthError) as info:
            await rc.list_messages("Fax")
    assert "credentials rejected" in str(info.value) and info.value.code == "OAU-140"
    assert "JWT-SECRET-ABC" not in str(info.value)


async def test_stale_stored_session_falls_back_to_one_jwt_grant(tmp_path):
    fake = FakeRC()
    path = tmp_path / "tokens.json"
    async with client(fake, token_store=TokenStore(path)) as rc:
        await rc.get_message(7)
    fake.valid_access.clear()
    fake.valid_refresh.clear()  # e.g. the server forgot every session
    async with client(fake, token_store=TokenStore(path)) as rc:
        assert (await rc.get_message(7)) == {"id": 7}
    grants = [t["grant_type"] for t in fake.token_requests]
    assert grants == ["urn:ietf:params:oauth:grant-type:jwt-bearer", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"]


async def test_logout_revokes_and_forgets(tmp_path):
    fake = FakeRC()
    store = TokenStore(tmp_path / "tokens.json")
    async with client(fake, token_store=store) as rc:
        await rc.get_message(7)
        await rc.logout()
    revoke = [r for r in fake.requests if r.url.path == "/restapi/oauth/revoke"]
    assert len(revoke) == 1 and parse_qs(revoke[0].content.decode())["token"] == ["AT-1-secret"]
    assert not fake.valid_access
    assert store.load(TokenStore.key(SERVER, "cid", "JWT-SECRET-ABC")) is None


async def test_tokens_never_in_logs_or_errors(caplog):
    caplog.set_level(logging.DEBUG)
    fake = FakeRC()
    errors: list[str] = []
    async with client(fake) as rc:
        await rc.get_message(7)
        fake.valid_access.clear()
        await rc.get_message(7)  # 401 + refresh
        for bad in (404, 400):
            try:
                await rc.get_message(bad)
            except Exception as exc:  # noqa: BLE001 - collecting messages
                errors.append(str(exc))
        fake.valid_refresh.clear()
        fake.valid_access.clear()
        fake.reject_jwt = True
        try:
            await rc.get_message(7)  # refresh rejected (the fake echoes the refresh token), then the JWT
        except AuthError as exc:
            errors.append(str(exc))
            errors.append(repr(exc))
        errors.append(repr(rc.auth))
        errors.append(repr(rc.credentials))
    text = "\n".join(errors + [r.getMessage() for r in caplog.records])
    assert "session ended" in text
    for secret in ("AT-1-secret", "AT-2-secret", "RT-1-secret", "RT-2-secret", "JWT-SECRET-ABC", "csecret-XYZ"):
        assert secret not in text


async def test_stream_releases_connection_when_cancelled():
    fake = FakeRC(media=b"x" * 100_000)
    async with client(fake) as rc:
        with trio.move_on_after(0.2):
            async with rc.stream(f"{MEDIA}/media/blob", start=0, priority=Priority.FOREGROUND) as s:
                async for _ in s.aiter_bytes():
                    await trio.sleep(10)
        # The client is still usable afterwards.
        assert (await rc.get_message(7)) == {"id": 7}


async def test_store_survives_corrupt_file(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text("{not json")
    os.chmod(path, 0o644)
    fake = FakeRC()
    async with client(fake, token_store=TokenStore(path)) as rc:
        await rc.get_message(7)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["version"] == 1


class _StallingBody(httpx.AsyncByteStream):
    """Sends one piece, then nothing ever again (a stalled server)."""

    async def __aiter__(self):
        yield b"first-piece"
        await trio.sleep_forever()

    async def aclose(self) -> None:
        pass


async def test_stalled_stream_raises_network_error(autojump_clock):
    fake = FakeRC()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/restapi/oauth/"):
            return await fake.handle(request)
        return httpx.Response(206, stream=_StallingBody(), headers={"content-range": "bytes 0-99/100"})

    async with RingCentralClient(CREDS, transport=httpx.MockTransport(handler), retry=FAST, timeout=2.0) as rc:
        got = b""
        with trio.fail_after(30):
            with pytest.raises(NetworkError) as info:
                async with rc.stream(f"{MEDIA}/media/blob") as s:
                    async for piece in s.aiter_bytes():
                        got += piece
    assert got == b"first-piece"
    assert "stalled" in str(info.value)
