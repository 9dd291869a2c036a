"""OAuth of the emulator: grants, TTLs, token use, refresh rotation, revoke (CONTRACT §2)."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from conftest import JWT_GRANT, basic_auth, build_config, login
from rcfs.emulator import seed
from rcfs.emulator.app import Emulator

EXT = "/restapi/v1.0/account/~/extension/~"


class FakeClock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu(clock: FakeClock) -> Emulator:
    config = build_config()
    return Emulator(config, seed.build_store(config), clock=clock)


def client_headers(emu: Emulator) -> dict[str, str]:
    return {"Authorization": basic_auth(emu.config.client_id, emu.config.client_secret)}


async def token_request(client: httpx.AsyncClient, emu: Emulator, data: dict, headers: dict | None = None):
    return await client.post("/restapi/oauth/token", data=data,
                             headers=client_headers(emu) if headers is None else headers)


async def get_ext(client: httpx.AsyncClient, token: str, scheme: str = "Bearer") -> httpx.Response:
    return await client.get(EXT, headers={"Authorization": f"{scheme} {token}"})


async def test_jwt_grant_returns_a_complete_token_body(emu, emulator_client):
    async with emulator_client(emu) as client:
        r = await token_request(client, emu, {"grant_type": JWT_GRANT, "assertion": emu.config.jwt})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token_expires_in"] == 604800
    assert body["owner_id"] == emu.store.extension_id
    for key in ("access_token", "refresh_token", "scope", "session_id", "endpoint_id"):
        assert isinstance(body[key], str) and body[key], key
    assert body["access_token"] != body["refresh_token"]
    assert r.headers["x-rate-limit-group"] == "auth"


@pytest.mark.parametrize("requested, expected", [("100", 600), ("1800", 1800), ("99999", 3600)])
async def test_requested_ttl_is_clamped(emu, emulator_client, requested, expected):
    async with emulator_client(emu) as client:
        body = await login(client, emu, access_token_ttl=requested, refresh_token_ttl="9999999")
    assert body["expires_in"] == expected
    assert body["refresh_token_expires_in"] == 2592000


async def test_configured_ttl_wins_even_below_600(make_emulator, emulator_client):
    emu = make_emulator(access_token_ttl=2, refresh_token_ttl=5)
    async with emulator_client(emu) as client:
        body = await login(client, emu, access_token_ttl="3600")
    assert (body["expires_in"], body["refresh_token_expires_in"]) == (2, 5)


async def test_token_endpoint_takes_only_form_bodies(emu, emulator_client):
    async with emulator_client(emu) as client:
        r = await client.post("/restapi/oauth/token", headers=client_headers(emu),
                              content=json.dumps({"grant_type": JWT_GRANT, "assertion": emu.config.jwt}),
                              )
        assert r.status_code == 415
        r2 = await client.post("/restapi/oauth/token", headers={**client_headers(emu), "Content-Type": "application/json"},
                               content=json.dumps({"grant_type": JWT_GRANT, "assertion": emu.config.jwt}))
    assert r2.status_code == 415
    assert r2.json()["errors"][0]["errorCode"]


@pytest.mark.parametrize("headers, code", [
    ({}, "OAU-123"),
    ({"Authorization": "Basic !!!notbase64"}, "OAU-123"),
    ({"Authorization": basic_auth("rcfs-demo-client", "wrong-secret")}, "OAU-146"),
    ({"Authorization": basic_auth("someone-else", "rcfs-demo-secret")}, "OAU-146"),
])
async def test_bad_client_authentication_is_401_invalid_client(emu, emulator_client, headers, code):
    async with emulator_client(emu) as client:
        r = await token_request(client, emu, {"grant_type": JWT_GRANT, "assertion": emu.config.jwt}, headers)
    assert r.status_code == 401
    body = r.json()
    assert body["error"] == "invalid_client"
    assert body["errors"][0]["errorCode"] == code


async def test_wrong_jwt_and_unknown_grant_are_refused(emu, emulator_client):
    async with emulator_client(emu) as client:
        bad = await token_request(client, emu, {"grant_type": JWT_GRANT, "assertion": "not-the-jwt"})
        unknown = await token_request(client, emu, {"grant_type": "client_credentials"})
        missing = await token_request(client, emu, {"grant_type": JWT_GRANT})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    assert unknown.status_code == 400 and unknown.json()["error"] == "unsupported_grant_type"
    assert missing.status_code == 400 and missing.json()["errors"][0]["parameterName"] == "assertion"


async def test_password_grant_and_its_switch(emu, emulator_client):
    form = {"grant_type": "password", "username": emu.store.main_number, "password": emu.config.jwt,
            "extension": emu.store.extension_number}
    async with emulator_client(emu) as client:
        ok = await token_request(client, emu, form)
        wrong = await token_request(client, emu, {**form, "password": "nope"})
        emu.config.password_grant = False
        off = await token_request(client, emu, form)
    assert ok.status_code == 200 and ok.json()["refresh_token"]
    assert wrong.status_code == 400
    assert off.status_code == 401 and off.json()["error"] == "unauthorized_client"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_bearer_scheme_is_case_insensitive(emu, emulator_client, scheme):
    async with emulator_client(emu) as client:
        token = (await login(client, emu))["access_token"]
        r = await get_ext(client, token, scheme)
    assert r.status_code == 200
    assert r.json()["id"] == int(emu.store.extension_id)


async def test_missing_and_invalid_tokens(emu, emulator_client):
    async with emulator_client(emu) as client:
        missing = await client.get(EXT)
        garbage = await get_ext(client, "definitely-not-a-token")
        basic = await client.get(EXT, headers=client_headers(emu))
    assert missing.status_code == 401
    assert missing.json()["errorCode"] == "AGW-401"
    assert missing.json()["errors"][0]["errorCode"] == "AGW-401"
    assert garbage.status_code == 401
    assert garbage.json()["errors"][0]["errorCode"] == "OAU-149"
    assert basic.status_code == 401


async def test_access_token_expires_on_time(make_emulator, emulator_client, clock):
    config = build_config(access_token_ttl=30)
    emu = Emulator(config, seed.build_store(config), clock=clock)
    async with emulator_client(emu) as client:
        token = (await login(client, emu))["access_token"]
        clock.advance(29.5)
        assert (await get_ext(client, token)).status_code == 200
        clock.advance(1)
        r = await get_ext(client, token)
    assert r.status_code == 401
    assert r.json()["errorCode"] == "TokenExpired"
    assert r.json()["errors"][0]["errorCode"] == "OAU-128"


async def test_refresh_rotates_and_kills_the_old_access_token(emu, emulator_client):
    emu.tokens.refresh_grace = 0
    async with emulator_client(emu) as client:
        first = await login(client, emu)
        r = await token_request(client, emu, {"grant_type": "refresh_token",
                                              "refresh_token": first["refresh_token"]})
        assert r.status_code == 200
        second = r.json()
        assert second["access_token"] != first["access_token"]
        assert second["refresh_token"] != first["refresh_token"]
        assert second["session_id"] == first["session_id"]
        old = await get_ext(client, first["access_token"])
        new = await get_ext(client, second["access_token"])
        again = await token_request(client, emu, {"grant_type": "refresh_token",
                                                  "refresh_token": first["refresh_token"]})
    assert old.status_code == 401 and old.json()["errors"][0]["errorCode"] == "OAU-149"
    assert new.status_code == 200
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


async def test_refresh_grace_returns_the_same_pair_until_ten_seconds_after_first_use(emu, emulator_client, clock):
    assert emu.tokens.refresh_grace == 10
    async with emulator_client(emu) as client:
        first = await login(client, emu)
        refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        second = (await token_request(client, emu, refresh)).json()
        clock.advance(120)  # unused new pair: the old refresh token still answers
        repeat = (await token_request(client, emu, refresh)).json()
        assert repeat["access_token"] == second["access_token"]
        assert repeat["refresh_token"] == second["refresh_token"]
        assert (await get_ext(client, second["access_token"])).status_code == 200
        clock.advance(9)
        assert (await token_request(client, emu, refresh)).status_code == 200
        clock.advance(2)
        late = await token_request(client, emu, refresh)
    assert late.status_code == 400


async def test_expired_refresh_token_is_refused(clock, emulator_client):
    config = build_config(refresh_token_ttl=60)
    emu = Emulator(config, seed.build_store(config), clock=clock)
    async with emulator_client(emu) as client:
        first = await login(client, emu)
        clock.advance(61)
        r = await token_request(client, emu, {"grant_type": "refresh_token",
                                              "refresh_token": first["refresh_token"]})
    assert r.status_code == 400
    assert r.json()["errors"][0]["errorCode"] == "OAU-128"


@pytest.mark.parametrize("which", ["access_token", "refresh_token"])
async def test_revoke_ends_the_whole_session_only(emu, emulator_client, which):
    async with emulator_client(emu) as client:
        doomed = await login(client, emu)
        other = await login(client, emu)
        r = await client.post("/restapi/oauth/revoke", data={"token": doomed[which]}, headers=client_headers(emu))
        assert r.status_code == 200
        access = await get_ext(client, doomed["access_token"])
        refresh = await token_request(client, emu, {"grant_type": "refresh_token",
                                                    "refresh_token": doomed["refresh_token"]})
        survivor = await get_ext(client, other["access_token"])
        unknown = await client.post("/restapi/oauth/revoke", data={"token": "unknown"}, headers=client_headers(emu))
        noauth = await client.post("/restapi/oauth/revoke", data={"token": other["access_token"]})
    assert access.status_code == 401
    assert refresh.status_code == 400
    assert survivor.status_code == 200
    assert unknown.status_code == 200
    assert noauth.status_code == 401


async def test_access_token_query_is_for_the_media_host_only(emu, emulator_client):
    async with emulator_client(emu) as client:
        token = (await login(client, emu))["access_token"]
        platform = await client.get(EXT, params={"access_token": token})
        listing = await client.get(EXT + "/message-store", params={"dateFrom": "2000-01-01T00:00:00Z"},
                                   headers={"Authorization": f"Bearer {token}"})
        uri = listing.json()["records"][0]["attachments"][0]["uri"]
        media = await client.get(uri, params={"access_token": token})
        media_bad = await client.get(uri, params={"access_token": "nope"})
    assert platform.status_code == 401 and platform.json()["errorCode"] == "AGW-401"
    assert media.status_code == 200
    assert media_bad.status_code == 401


async def test_tokens_never_reach_the_logs(emu, emulator_client, caplog):
    caplog.set_level(logging.DEBUG)
    async with emulator_client(emu) as client:
        first = await login(client, emu)
        second = (await token_request(client, emu, {"grant_type": "refresh_token",
                                                    "refresh_token": first["refresh_token"]})).json()
        await get_ext(client, second["access_token"])
        await get_ext(client, first["access_token"])
        await client.post("/restapi/oauth/revoke", data={"token": second["access_token"]},
                          headers=client_headers(emu))
    secrets = {first["access_token"], first["refresh_token"], second["access_token"],
               second["refresh_token"], emu.config.jwt, emu.config.client_secret}
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records, "expected some log output to check"
    for secret in secrets:
        assert secret not in text


def test_real_token_expiry_over_loopback(start_emulator):
    srv = start_emulator(access_token_ttl=1)
    token = srv.token()
    url = srv.platform + EXT
    assert httpx.get(url, headers={"Authorization": f"bearer {token}"}, timeout=5).status_code == 200
    time.sleep(1.2)
    r = httpx.get(url, headers={"Authorization": f"bearer {token}"}, timeout=5)
    assert r.status_code == 401
    assert r.json()["errors"][0]["errorCode"] == "OAU-128"


def test_official_python_sdk_logs_in_refreshes_and_logs_out(emulator_server):
    sdk_mod = pytest.importorskip("ringcentral")
    sdk = sdk_mod.SDK(emulator_server.client_id, emulator_server.client_secret, emulator_server.platform)
    platform = sdk.platform()
    platform.login(jwt=emulator_server.jwt)
    ext = platform.get("/restapi/v1.0/account/~/extension/~").json_dict()
    assert ext["id"] == int(ext["uri"].rsplit("/", 1)[1])
    old_access = platform.auth().access_token()
    platform.refresh()
    assert platform.auth().access_token() != old_access
    listing = platform.get("/restapi/v1.0/account/~/extension/~/message-store",
                           {"messageType": ["Fax", "VoiceMail"], "dateFrom": "2000-01-01T00:00:00.000Z",
                            "perPage": 5}).json_dict()
    assert len(listing["records"]) == 5
    assert {r["type"] for r in listing["records"]} <= {"Fax", "VoiceMail"}
    new_access = platform.auth().access_token()
    platform.logout()
    r = httpx.get(emulator_server.platform + EXT, headers={"Authorization": f"Bearer {new_access}"}, timeout=5)
    assert r.status_code == 401
