"""The emulated account as a company (rcfs/emulator/company.py): extensions, their own
mailboxes, the account call log over all of them, and what a regular user may reach."""

from __future__ import annotations

import contextlib

import pytest

from rcfs.emulator import company, seed
from rcfs.emulator.config import EmulatorConfig

from conftest import api_client, login

ACCT = "/restapi/v1.0/account/~"
SINCE = {"dateFrom": "2000-01-01T00:00:00.000Z"}


@contextlib.asynccontextmanager
async def _as_user(emu, emulator_client):
    """A client signed in with the regular user's credential."""
    async with emulator_client(emu) as client:
        token = (await login(client, emu, assertion=emu.config.user_jwt))["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def test_the_demo_company_has_every_kind_of_extension_and_keeps_the_users_own_mailbox():
    alone = seed.build_store(EmulatorConfig())
    store = seed.build_store(EmulatorConfig())
    exts = list(store.company.extensions.values())
    assert len(exts) == 1 + len(company.DEMO_EXTENSIONS)
    assert exts[0].store is store and exts[0].admin
    assert {e.type for e in exts} >= {"User", "FaxUser", "Department"}
    assert {e.status for e in exts} >= {"Enabled", "Disabled", "Unassigned"}
    assert any(e.number is None for e in exts)
    assert any("/" in e.name or "\x07" in e.name for e in exts)
    # Every other extension has its own messages and recorded calls, ids apart from the user's.
    for ext in exts[1:]:
        assert ext.store.messages and ext.store is not store
        assert all(mid >= 8_000_000_001 for mid in ext.store.messages)
    assert sum(1 for e in exts[1:] for c in e.store.calls.values() if c.recording) >= 10
    # The signed-in user's mailbox is what a one-extension account had.
    assert sorted(store.messages) == sorted(alone.messages)
    assert len(store.recordings) == seed.RECORDED_CALLS


def test_company_scale_is_big_enough_for_the_benchmarks():
    store = seed.build_store(EmulatorConfig(scale="company"))
    exts = store.company.extensions
    assert len(exts) >= 200
    recorded = {c.recording.id for e in exts.values() for c in e.store.calls.values() if c.recording}
    assert len(recorded) >= 20_000


async def test_extension_list_pages_filters_and_names_every_extension(make_emulator, emulator_client):
    emu = make_emulator(rate_limits=False)
    async with api_client(emu, emulator_client) as c:
        ids = []
        url, params = f"{ACCT}/extension", {"perPage": 3}
        while url:
            r = await c.get(url, params=params)
            assert r.status_code == 200 and r.headers["x-rate-limit-group"].lower() == "medium"
            body = r.json()
            ids += [e["id"] for e in body["records"]]
            url, params = body["navigation"].get("nextPage", {}).get("uri"), None
        assert ids == [int(i) for i in emu.company.extensions]
        disabled = (await c.get(f"{ACCT}/extension", params={"status": "Disabled"})).json()["records"]
        assert [e["name"] for e in disabled] == ["Carol White"]
        faxers = (await c.get(f"{ACCT}/extension", params={"type": "FaxUser"})).json()["records"]
        assert [e["extensionNumber"] for e in faxers] == ["104"]
        bad = await c.get(f"{ACCT}/extension", params={"status": "Sleeping"})
        assert bad.status_code == 400


async def test_an_admin_reads_any_mailbox_and_the_company_call_log(make_emulator, emulator_client):
    emu = make_emulator(rate_limits=False)
    alice = emu.company.by_number("102")
    async with api_client(emu, emulator_client) as c:
        listing = (await c.get(f"{ACCT}/extension/{alice.id}/message-store", params=SINCE)).json()
        assert sorted(m["id"] for m in listing["records"]) == sorted(alice.store.messages)
        assert {m["extensionId"] for m in listing["records"]} == {alice.id}
        att = next(a for m in listing["records"] for a in m["attachments"] if a["type"] != "Text")
        content = await c.get(att["uri"])
        assert content.status_code == 200 and f"/extension/{alice.id}/" in att["uri"]
        log = (await c.get(f"{ACCT}/call-log", params={**SINCE, "recordingType": "All", "perPage": 1000})).json()
        by_ext = {r["extension"]["id"] for r in log["records"]}
        assert int(alice.id) in by_ext and int(emu.main_store.extension_id) in by_ext
        rec = next(r["recording"] for r in log["records"] if r["extension"]["id"] == int(alice.id))
        audio = await c.get(rec["contentUri"])
        assert audio.status_code == 200 and audio.content == emu.company.recording(rec["id"]).media.read(0, 1 << 30)
        profile = (await c.get(f"{ACCT}/extension/~/authz-profile")).json()
        scopes = {p["permission"]["id"]: p["scopes"] for p in profile["permissions"]}
        assert scopes["ReadMessages"] == ["Account"] and "FullCompanyCallLog" in scopes


async def test_a_regular_user_reaches_only_their_own_mailbox(make_emulator, emulator_client):
    emu = make_emulator(rate_limits=False)
    bob = emu.company.by_number("103")
    async with _as_user(emu, emulator_client) as c:
        me = (await c.get(f"{ACCT}/extension/~")).json()
        assert me["extensionNumber"] == company.REGULAR_USER_NUMBER
        own = (await c.get(f"{ACCT}/extension/~/message-store", params=SINCE)).json()["records"]
        assert sorted(m["id"] for m in own) == sorted(emu.company.by_number("102").store.messages)
        other = await c.get(f"{ACCT}/extension/{bob.id}/message-store", params=SINCE)
        assert other.status_code == 403
        body = other.json()
        assert body["errorCode"] == "CMN-408" and body["permissionName"] == "ReadMessages"
        assert body["errors"][0]["permissionName"] == "ReadMessages"
        log = await c.get(f"{ACCT}/call-log", params=SINCE)
        assert log.status_code == 403 and log.json()["permissionName"] == "FullCompanyCallLog"
        profile = (await c.get(f"{ACCT}/extension/~/authz-profile")).json()
        scopes = {p["permission"]["id"]: p["scopes"] for p in profile["permissions"]}
        assert scopes["ReadMessages"] == ["Self"] and "FullCompanyCallLog" not in scopes
        check = (await c.get(f"{ACCT}/extension/~/authz-profile/check",
                             params={"permissionId": "ReadMessages", "targetExtensionId": bob.id})).json()
        assert check["successful"] is False
        report = await c.post(f"{ACCT}/message-store-report", json={})
        assert report.status_code == 403 and report.json()["permissionName"] == "Users"


async def test_a_denied_or_deleted_extension(make_emulator, emulator_client):
    emu = make_emulator(rate_limits=False)
    bob, carol = emu.company.by_number("103"), emu.company.by_number("106")
    emu.config.denied_extensions = (bob.id,)
    async with api_client(emu, emulator_client) as c:
        denied = await c.get(f"{ACCT}/extension/{bob.id}/message-store", params=SINCE)
        assert denied.status_code == 403 and denied.json()["permissionName"] == "ReadMessages"
        assert (await c.get(f"{ACCT}/extension/{carol.id}/message-store", params=SINCE)).status_code == 200
        assert emu.company.remove(carol.id)
        gone = await c.get(f"{ACCT}/extension/{carol.id}/message-store", params=SINCE)
        assert gone.status_code == 404
        listed = (await c.get(f"{ACCT}/extension", params={"perPage": 1000})).json()["records"]
        assert int(carol.id) not in {e["id"] for e in listed}
