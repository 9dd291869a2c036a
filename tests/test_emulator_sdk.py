"""The official Python SDK (`ringcentral==0.9.2`) against the emulator subprocess over real
loopback HTTP: JWT login, API calls with the SDK's raw query strings and its
`Content-Type: application/json` on GETs, refresh, ranged content downloads through
absolute media URLs, fax sending with the SDK's multipart builder (form-data and the
multipart/mixed variant), and logout (revoke).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from rcfs.emulator import seed
from rcfs.emulator.config import EmulatorConfig

ringcentral = pytest.importorskip("ringcentral")

EXT = "/restapi/v1.0/account/~/extension/~"
SINCE = "2000-01-01T00:00:00.000Z"
SEND_DELAY = 0.2


@pytest.fixture
def server(start_emulator):
    return start_emulator(send_delay=SEND_DELAY)


@pytest.fixture
def sdk(server):
    return ringcentral.SDK(server.client_id, server.client_secret, server.platform)


@pytest.fixture
def platform(sdk, server):
    platform = sdk.platform()
    platform.login(jwt=server.jwt)
    yield platform
    if platform.logged_in():
        platform.logout()


def token_works(server, token: str) -> int:
    """Status of a plain API call made with `token` (outside the SDK)."""
    r = httpx.get(server.platform + EXT + "/message-store", params={"dateFrom": SINCE},
                  headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return r.status_code


def test_login_list_refresh_and_logout(server, platform):
    assert platform.logged_in()
    first = platform.auth().data()
    assert first["token_type"].lower() == "bearer" and first["refresh_token"]

    # dateFrom goes out unencoded (the SDK pastes values raw); lists become repeated keys.
    page = platform.get(EXT + "/message-store", {"dateFrom": SINCE, "perPage": 1000,
                                                  "messageType": ["Fax", "VoiceMail"]}).json_dict()
    types = {r["type"] for r in page["records"]}
    assert types == {"Fax", "VoiceMail"}
    local = seed.build_store(EmulatorConfig(send_delay=SEND_DELAY))
    expected = {m.id for m in local.messages.values()
                if m.type in types and m.availability == "Alive"}
    assert {r["id"] for r in page["records"]} == expected

    platform.refresh()
    second = platform.auth().data()
    assert second["access_token"] != first["access_token"]
    assert token_works(server, first["access_token"]) == 401  # refresh killed the old one
    assert token_works(server, second["access_token"]) == 200
    extension = platform.get(EXT).json_dict()
    assert str(extension["id"]) == local.extension_id

    platform.logout()
    assert not platform.logged_in()
    assert token_works(server, second["access_token"]) == 401
    r = httpx.post(server.platform + "/restapi/oauth/token", timeout=10,
                   auth=(server.client_id, server.client_secret),
                   data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
    assert r.status_code == 400  # the whole session is gone, refresh token included


def test_ranged_content_through_absolute_media_urls(server, platform):
    page = platform.get(EXT + "/message-store", {"dateFrom": SINCE, "messageType": "Fax",
                                                  "perPage": 1000}).json_dict()
    record = page["records"][0]
    att = record["attachments"][0]
    assert att["uri"].startswith(server.media + "/")
    local = seed.build_store(EmulatorConfig(send_delay=SEND_DELAY)).messages[record["id"]]
    media = next(a for a in local.attachments if a.id == att["id"]).media

    whole = platform.get(att["uri"]).response()
    assert whole.status_code == 200 and whole.content == media.read(0, media.size)
    part = platform.get(att["uri"], headers={"Range": "bytes=100-1123"}).response()
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-1123/{media.size}"
    assert part.content == media.read(100, 1024)
    tail = platform.get(att["uri"], headers={"Range": "bytes=-10"}).response()
    assert tail.content == media.read(media.size - 10, 10)
    with pytest.raises(ringcentral.http.api_exception.ApiException) as info:
        platform.get(att["uri"], headers={"Range": f"bytes={media.size}-"})
    assert "416" in str(info.value)


def sdk_fax(sdk, *, mixed: bool, docs: list[tuple[Any, ...]]) -> dict:
    platform = sdk.platform()
    builder = sdk.create_multipart_builder()
    builder.set_body({"to": [{"phoneNumber": "+15551230001", "name": "SDK"}],
                      "faxResolution": "High", "coverIndex": 0})
    for doc in docs:
        builder.add(doc)
    builder.set_multipart_mixed(mixed)
    return platform.send_request(builder.request(EXT + "/fax")).json_dict()


@pytest.mark.parametrize("mixed", [False, True], ids=["form-data", "multipart-mixed"])
def test_send_fax_with_the_sdk_multipart_builder(server, sdk, platform, mixed):
    from rcfs.emulator import media
    pdf = media.fax_pdf(5, 2)
    pdf_bytes = pdf.read(0, pdf.size)
    text = b"Hello from the official SDK\n" * 3
    sent = sdk_fax(sdk, mixed=mixed,
                   docs=[("letter.pdf", pdf_bytes, "application/pdf"),
                         ("notes.txt", text)])  # no MIME type: a part without Content-Type
    assert (sent["messageStatus"], sent["faxPageCount"]) == ("Queued", 0)
    assert [(a["filename"], a["contentType"]) for a in sent["attachments"]] == [
        ("letter.pdf", "application/pdf"), ("notes.txt", "text/plain")]

    deadline = time.monotonic() + 10
    while True:
        msg = platform.get(sent["uri"]).json_dict()
        if msg["messageStatus"] != "Queued" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (msg["messageStatus"], msg["faxPageCount"]) == ("Sent", 3)  # 2 PDF pages + 1 text
    assert msg["to"][0]["name"] == "SDK"
    for att, data in zip(msg["attachments"], (pdf_bytes, text)):
        assert platform.get(att["uri"]).response().content == data
