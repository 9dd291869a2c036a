"""Answering rules and their greetings in the emulator: rules carry custom greetings and
presets, greeting metadata and content (Range) are served, and an applied upload
replaces the rule's greeting of that type."""

from __future__ import annotations

import httpx

from conftest import api_client
from rcfs.emulator import greetings, media

EXT = "/restapi/v1.0/account/~/extension/~"


async def _rules(c: httpx.AsyncClient, **params) -> dict:
    r = await c.get(EXT + "/answering-rule", params={"view": "Detailed", **params})
    assert r.status_code == 200, r.text
    return r.json()


def _custom(rule: dict) -> dict[str, str]:
    return {g["type"]: g["custom"]["id"] for g in rule["greetings"] if "custom" in g}


async def test_rules_carry_custom_greetings_and_presets(emulator_app, emulator_client):
    emu = emulator_app
    async with api_client(emu, emulator_client) as c:
        body = await _rules(c)
        by_id = {r["id"]: r for r in body["records"]}
        assert set(by_id) == {greetings.BUSINESS_HOURS_RULE, greetings.AFTER_HOURS_RULE,
                              greetings.CUSTOM_RULE}
        assert sorted(r["type"] for r in by_id.values()) == ["AfterHours", "BusinessHours", "Custom"]
        assert body["paging"]["totalElements"] == 3
        customs = {rid: _custom(r) for rid, r in by_id.items()}
        assert set(customs[greetings.BUSINESS_HOURS_RULE]) == {"Voicemail"}
        assert set(customs[greetings.AFTER_HOURS_RULE]) == {"Voicemail"}
        assert set(customs[greetings.CUSTOM_RULE]) == {"Introductory", "Voicemail"}
        presets = [g for r in by_id.values() for g in r["greetings"] if "preset" in g]
        assert presets and all(g["preset"]["id"] and g["preset"]["name"] for g in presets)
        assert by_id[greetings.CUSTOM_RULE]["callers"]
        for g in presets:  # every preset a rule names resolves in the dictionary
            got = (await c.get(g["preset"]["uri"])).json()
            assert (got["id"], got["name"], got["type"]) == (g["preset"]["id"], g["preset"]["name"], g["type"])

        # Each custom greeting: metadata, then its content on the media host.
        for rid, kinds in customs.items():
            for gtype, gid in kinds.items():
                meta = (await c.get(f"{EXT}/greeting/{gid}")).json()
                assert (meta["id"], meta["type"]) == (gid, gtype)
                assert meta["answeringRule"]["id"] == rid
                assert meta["contentUri"].startswith(emu.media_base)
                whole = await c.get(meta["contentUri"])
                assert whole.status_code == 200
                assert whole.headers["content-type"] == meta["contentType"]
                stored = emu.store.greetings[gid].media
                assert whole.content == stored.read(0, stored.size)
                part = await c.get(meta["contentUri"], headers={"Range": "bytes=100-199"})
                assert part.status_code == 206 and part.content == whole.content[100:200]

        simple = (await c.get(EXT + "/answering-rule")).json()["records"]
        assert all("greetings" not in r for r in simple)
        only = (await c.get(EXT + "/answering-rule", params={"type": "Custom"})).json()
        assert [r["id"] for r in only["records"]] == [greetings.CUSTOM_RULE]
        one = await c.get(f"{EXT}/answering-rule/{greetings.AFTER_HOURS_RULE}")
        assert one.status_code == 200 and one.json() == by_id[greetings.AFTER_HOURS_RULE]
        assert one.headers["x-rate-limit-group"].lower() == "light"
        assert (await c.get(f"{EXT}/answering-rule/nope")).status_code == 404


async def test_applied_upload_replaces_the_rules_greeting(emulator_app, emulator_client):
    emu = emulator_app
    wav = media.audio_wav(77, 2).read(0, 10**7)
    mp3 = media.audio_mp3(78, 2).read(0, 10**7)
    async with api_client(emu, emulator_client) as c:
        before = _custom(next(r for r in (await _rules(c))["records"]
                              if r["id"] == greetings.AFTER_HOURS_RULE))
        r = await c.post(EXT + "/greeting", data={"type": "Voicemail",
                                                  "answeringRuleId": greetings.AFTER_HOURS_RULE},
                         files={"binary": ("new.wav", wav, "audio/wav")})
        assert r.status_code == 200, r.text
        new = r.json()
        after = _custom(next(r for r in (await _rules(c))["records"]
                             if r["id"] == greetings.AFTER_HOURS_RULE))
        assert after["Voicemail"] == new["id"] != before["Voicemail"]
        served = await c.get(new["contentUri"])
        assert served.content == wav and served.headers["content-type"] == "audio/wav"

        # A type the rule played a preset for becomes custom (multipart/mixed with JSON).
        import json
        r = await c.post(EXT + "/greeting", files=[
            ("json", ("request.json", json.dumps({"type": "HoldMusic", "answeringRule":
                                                  {"id": greetings.BUSINESS_HOURS_RULE}}),
                      "application/json")),
            ("binary", ("music.mp3", mp3, "audio/mpeg"))])
        assert r.status_code == 200, r.text
        business = next(r for r in (await _rules(c))["records"]
                        if r["id"] == greetings.BUSINESS_HOURS_RULE)
        assert _custom(business)["HoldMusic"] == r.json()["id"]

        # apply=false stores the greeting but leaves every rule as it was.
        snapshot = await _rules(c)
        r = await c.post(EXT + "/greeting", params={"apply": "false"},
                         data={"type": "Voicemail", "answeringRuleId": greetings.CUSTOM_RULE},
                         files={"binary": ("x.mp3", mp3, "audio/mpeg")})
        assert r.status_code == 200 and "answeringRule" not in r.json()
        assert await _rules(c) == snapshot

        r = await c.post(EXT + "/greeting", data={"type": "Voicemail", "answeringRuleId": "no-such-rule"},
                         files={"binary": ("x.mp3", mp3, "audio/mpeg")})
        assert r.status_code == 404 and r.json()["errors"][0]["errorCode"] == "CMN-102"
