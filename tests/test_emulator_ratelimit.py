"""Rate limiting of the emulator (CONTRACT §4): groups, limits, headers, 429 penalty restart."""

from __future__ import annotations

import contextlib
import time
from typing import AsyncIterator

import httpx
import pytest

from conftest import basic_auth, build_config, login
from rcfs.emulator import seed
from rcfs.emulator.app import Emulator
from rcfs.emulator.config import EmulatorConfig
from rcfs.emulator.ratelimit import RateLimiter

EXT = "/restapi/v1.0/account/~/extension/~"
ACCT = "/restapi/v1.0/account/~"
SINCE = {"dateFrom": "2000-01-01T00:00:00Z"}


class FakeClock:
    """Monotonic seconds under test control."""

    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make(clock: FakeClock, **options) -> Emulator:
    config = build_config(**options)
    return Emulator(config, seed.build_store(config), clock=clock)


class Api:
    """A logged-in in-process client plus ids of seeded objects to hit."""

    def __init__(self, emu: Emulator, client: httpx.AsyncClient, token: str) -> None:
        self.emu, self.client, self.token = emu, client, token
        store = emu.store
        self.fax = next(m for m in store.messages.values() if m.type == "Fax")
        self.recording = next(iter(store.recordings.values()))
        self.call = next(iter(store.calls.values()))
        self.greeting = next(iter(store.greetings.values()))

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call_op(self, op: str) -> httpx.Response:
        emu, c, h = self.emu, self.client, self.auth
        fax = self.fax
        if op == "list":
            return await c.get(EXT + "/message-store", params=SINCE, headers=h)
        if op == "get":
            return await c.get(f"{EXT}/message-store/{fax.id}", headers=h)
        if op == "put":
            return await c.put(f"{EXT}/message-store/{fax.id}", json={"readStatus": "Read"}, headers=h)
        if op == "patch":
            return await c.patch(f"{EXT}/message-store/{fax.id}", json={"readStatus": "Unread"}, headers=h)
        if op == "delete":
            return await c.delete(f"{EXT}/message-store/{fax.id}", headers=h)
        if op == "content":
            return await c.get(emu.attachment_uri(fax.id, fax.attachments[0].id), headers=h)
        if op == "sync":
            return await c.get(EXT + "/message-sync", params={"syncType": "FSync"}, headers=h)
        if op == "call-log":
            return await c.get(EXT + "/call-log", headers=h)
        if op == "account-call-log":
            return await c.get(ACCT + "/call-log", headers=h)
        if op == "call-record":
            return await c.get(f"{EXT}/call-log/{self.call.id}", headers=h)
        if op == "recording":
            return await c.get(f"{ACCT}/recording/{self.recording.id}", headers=h)
        if op == "recording-content":
            return await c.get(emu.recording_content_uri(self.recording.id), headers={**h, "Range": "bytes=0-9"})
        if op == "greeting-content":
            return await c.get(f"{emu.media_base}{emu.extension_path}/greeting/{self.greeting.id}/content",
                               headers={**h, "Range": "bytes=0-9"})
        if op == "greeting-get":
            return await c.get(f"{EXT}/greeting/{self.greeting.id}", headers=h)
        if op == "token":
            return await c.post("/restapi/oauth/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                                              "assertion": emu.config.jwt},
                                headers={"Authorization": basic_auth(emu.config.client_id, emu.config.client_secret)})
        if op in ("fax", "sms", "mms", "greeting"):
            # The body is irrelevant here: the group is charged before the handler parses it.
            return await c.post(f"{EXT}/{op}", content=b"{}", headers={**h, "Content-Type": "application/json"})
        raise AssertionError(op)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@contextlib.asynccontextmanager
async def open_api(emu: Emulator, emulator_client) -> AsyncIterator[Api]:
    async with emulator_client(emu) as client:
        token = (await login(client, emu))["access_token"]
        yield Api(emu, client, token)


GROUP_OF = {
    "list": "light", "get": "light", "sync": "light",
    "put": "medium", "patch": "medium", "delete": "medium", "content": "medium", "greeting-get": "medium",
    "sms": "medium", "mms": "medium",
    "call-log": "heavy", "account-call-log": "heavy", "call-record": "heavy", "recording": "heavy",
    "recording-content": "heavy", "greeting-content": "heavy", "fax": "heavy", "greeting": "heavy",
    "token": "auth",
}


@pytest.mark.parametrize("op", sorted(GROUP_OF))
async def test_every_operation_is_charged_to_its_contract_group(clock, emulator_client, op):
    emu = make(clock)
    async with open_api(emu, emulator_client) as api:
        r = await api.call_op(op)
    assert r.headers["x-rate-limit-group"] == GROUP_OF[op], (op, r.status_code, r.text[:200])
    group = GROUP_OF[op].capitalize()
    assert r.headers["x-rate-limit-limit"] == str(getattr(emu.config, f"limit_{GROUP_OF[op]}"))
    assert r.headers["x-rate-limit-window"] == "60"
    assert emu.stats.groups[group] >= 1


@pytest.mark.parametrize("op, limit_name", [
    ("list", "limit_light"), ("content", "limit_medium"), ("recording-content", "limit_heavy"),
    ("call-log", "limit_heavy"), ("token", "limit_auth"),
])
async def test_each_group_allows_its_limit_then_answers_429(clock, emulator_client, op, limit_name):
    emu = make(clock, **{limit_name: 3})
    async with open_api(emu, emulator_client) as api:
        if op == "token":
            emu.limiter.reset()  # the login above was an Auth request too
        answers = [await api.call_op(op) for _ in range(4)]
    assert all(r.status_code < 400 for r in answers[:3]), [r.status_code for r in answers]
    assert [r.headers["x-rate-limit-remaining"] for r in answers] == ["2", "1", "0", "0"]
    rejected = answers[3]
    assert rejected.status_code == 429
    assert rejected.headers["retry-after"] == "60"
    assert rejected.headers["x-rate-limit-group"] == GROUP_OF[op]
    assert rejected.headers["x-rate-limit-limit"] == "3"
    body = rejected.json()
    assert body["errorCode"] == "CMN-301"
    assert body["message"] == "Request rate exceeded"
    assert body["errors"][0]["errorCode"] == "CMN-301"
    assert emu.stats.rate_limited == 1


async def test_every_rejection_restarts_the_penalty(clock, emulator_client):
    emu = make(clock, limit_light=2, window=10.0)
    async with open_api(emu, emulator_client) as api:
        assert (await api.call_op("list")).status_code == 200
        assert (await api.call_op("list")).status_code == 200
        assert (await api.call_op("list")).status_code == 429  # penalty until t+10
        clock.advance(9)
        assert (await api.call_op("list")).status_code == 429  # restarts: until t+19
        clock.advance(9)
        r = await api.call_op("list")
        assert r.status_code == 429  # t+18 < t+19: still blocked, restarts again
        assert r.headers["retry-after"] == "10"
        clock.advance(10.01)
        ok = await api.call_op("list")
    assert ok.status_code == 200
    assert ok.headers["x-rate-limit-remaining"] == "1"


async def test_a_quiet_penalty_ends_after_one_window(clock, emulator_client):
    emu = make(clock, limit_heavy=1, window=5.0)
    async with open_api(emu, emulator_client) as api:
        assert (await api.call_op("call-log")).status_code == 200
        assert (await api.call_op("call-log")).status_code == 429
        clock.advance(5.01)
        assert (await api.call_op("call-log")).status_code == 200


async def test_groups_are_independent(clock, emulator_client):
    emu = make(clock, limit_light=1)
    async with open_api(emu, emulator_client) as api:
        await api.call_op("list")
        assert (await api.call_op("list")).status_code == 429
        assert (await api.call_op("content")).status_code == 200
        assert (await api.call_op("call-log")).status_code == 200


async def test_sessions_of_the_same_user_and_app_share_the_budget(clock, emulator_client):
    emu = make(clock, limit_light=2)
    async with open_api(emu, emulator_client) as api:
        client = api.client
        other = (await login(client, emu))["access_token"]
        await api.call_op("list")
        await client.get(EXT + "/message-store", headers={"Authorization": f"Bearer {other}"})
        assert (await api.call_op("list")).status_code == 429


async def test_disabled_limits_still_send_headers(clock, emulator_client):
    emu = make(clock, limit_light=2, rate_limits=False)
    async with open_api(emu, emulator_client) as api:
        answers = [await api.call_op("list") for _ in range(5)]
    assert [r.status_code for r in answers] == [200] * 5
    assert [r.headers["x-rate-limit-remaining"] for r in answers] == ["1", "0", "0", "0", "0"]


async def test_forced_429_fault(clock, emulator_client):
    emu = make(clock, window=1.0)
    async with open_api(emu, emulator_client) as api:
        emu.config.faults.force_429 = 2
        first, second = await api.call_op("list"), await api.call_op("content")
        clock.advance(1.01)
        later = await api.call_op("list")
    assert (first.status_code, second.status_code) == (429, 429)
    assert first.headers["retry-after"] == "1"
    assert later.status_code == 200
    assert emu.config.faults.force_429 == 0


def test_limiter_sliding_window_unit():
    now = [0.0]
    config = EmulatorConfig(window=10.0, limit_light=3)
    limiter = RateLimiter(config, clock=lambda: now[0])
    for t in (0.0, 4.0, 8.0):
        now[0] = t
        assert limiter.check("k", "Light").allowed
    now[0] = 9.0
    assert not limiter.check("k", "Light").allowed  # penalty until 19
    assert limiter.check("other-user", "Light").allowed
    now[0] = 19.5  # all three hits are older than the window, penalty over
    d = limiter.check("k", "Light")
    assert d.allowed and d.remaining == 2


def test_fractional_window_over_loopback(start_emulator):
    # 1.5 s rather than 0.5 s: on a loaded 2-core CI machine three requests must still
    # land inside one window.
    srv = start_emulator(window=1.5, limit_light=2)
    headers = {"Authorization": f"Bearer {srv.token()}"}
    url = srv.platform + EXT + "/message-store"
    with httpx.Client(timeout=5) as http:
        http.get(srv.platform + "/restapi")  # warm the server up (no rate-limit group)
        answers = [http.get(url, headers=headers) for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert answers[2].headers["retry-after"] == "2"
        assert answers[2].headers["x-rate-limit-window"] == "1.5"
        time.sleep(0.9)
        assert http.get(url, headers=headers).status_code == 429  # restarted at +0.9
        time.sleep(0.9)
        assert http.get(url, headers=headers).status_code == 429  # 1.8 > 1.5 only without restarts
        time.sleep(1.7)
        assert http.get(url, headers=headers).status_code == 200
    assert srv.stats()["rate_limited"] == 3
