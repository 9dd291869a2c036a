"""The emulator's switches for what production does sometimes (issue 9), checked on the
wire (in-process ASGI; httpx decodes bodies, so compression is checked via headers and
`aiter_raw`)."""

from __future__ import annotations

import gzip
import json
import zlib

from conftest import api_client, login


async def _raw(resp) -> bytes:
    return b"".join([piece async for piece in resp.aiter_raw()])


async def test_json_answers_follow_accept_encoding(make_emulator, emulator_client):
    emu = make_emulator()  # the fixtures turn compress_json on
    async with api_client(emu, emulator_client) as client:
        url = f"{emu.platform_base}{emu.extension_path}/message-sync"
        params = {"syncType": "ISync", "syncToken": "bogus"}
        for accept, decode in (("gzip", gzip.decompress), ("deflate", zlib.decompress), ("identity", None)):
            async with client.stream("GET", url, params=params, headers={"Accept-Encoding": accept}) as r:
                body = await _raw(r)
            assert r.status_code == 400
            if decode is None:
                assert "content-encoding" not in r.headers
                doc = json.loads(body)
            else:
                assert r.headers["content-encoding"] == accept and r.headers["vary"] == "Accept-Encoding"
                assert int(r.headers["content-length"]) == len(body)
                doc = json.loads(decode(body))
            assert doc["errors"][0]["errorCode"] == "MSG-333"
    off = make_emulator(compress_json=False)
    async with api_client(off, emulator_client) as client:
        async with client.stream("GET", f"{off.platform_base}{off.extension_path}/message-store",
                                 params={"dateFrom": "2000-01-01T00:00:00Z"}, headers={"Accept-Encoding": "gzip"}) as r:
            assert "content-encoding" not in r.headers and json.loads(await _raw(r))["records"]


async def test_missing_permission_answers_403_cmn_401(make_emulator, emulator_client):
    emu = make_emulator(missing_permissions=("ReadMessages",))
    async with api_client(emu, emulator_client) as client:
        r = await client.get(f"{emu.extension_path}/message-store")
        assert r.status_code == 403
        body = r.json()
        assert body["errorCode"] == "InsufficientPermissions" and body["permissionName"] == "ReadMessages"
        assert body["errors"][0] == {"errorCode": "CMN-401", "message": body["message"], "permissionName": "ReadMessages"}
        assert (await client.get(f"{emu.extension_path}/call-log")).status_code == 200


async def test_media_answers_without_a_size(make_emulator, emulator_client):
    emu = make_emulator(chunked_media=True, unknown_media_total=True)
    rec = next(iter(emu.store.recordings.values()))
    data = rec.media.read(0, rec.media.size)
    url = emu.recording_content_uri(rec.id)
    async with api_client(emu, emulator_client) as client:
        r = await client.get(url, headers={"Range": "bytes=10-99"})
        assert r.status_code == 206 and r.headers["content-range"] == "bytes 10-99/*"
        assert "content-length" not in r.headers and r.content == data[10:100]
        r = await client.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416 and "content-range" not in r.headers
        emu.config.ignore_range = True
        r = await client.get(url, headers={"Range": "bytes=10-99"})
        assert r.status_code == 200 and "content-range" not in r.headers and r.content == data


async def test_sessions_end_by_admin_and_by_the_cap(make_emulator, emulator_client):
    emu = make_emulator(session_cap=2)
    async with emulator_client(emu) as client:
        r = await client.post("/_emulator/config", json={"session_cap": 2, "missing_permissions": ["Faxes"],
                                                          "foreign_media_rate": 0.5, "jwt": "other",
                                                          "faults": {"cut_at": 0.25}})
        assert r.status_code == 200 and r.json()["missing_permissions"] == ["Faxes"]
        assert (await client.post("/_emulator/config", json={"foreign_media_rate": 2})).status_code == 400
        emu.config.jwt = "rcfs-demo-jwt"
        tokens = [await login(client, emu) for _ in range(3)]
        assert len(emu.tokens.sessions) == 2  # the third login ended the first session
        first = await client.get(emu.extension_path, headers={"Authorization": f"Bearer {tokens[0]['access_token']}"})
        assert first.status_code == 401
        r = await client.post("/_emulator/sessions/end", json={"which": "oldest"})
        assert r.json() == {"ended": 1} and len(emu.tokens.sessions) == 1
        refreshed = await client.post("/restapi/oauth/token",
                                      data={"grant_type": "refresh_token", "refresh_token": tokens[1]["refresh_token"]},
                                      auth=(emu.config.client_id, emu.config.client_secret))
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
