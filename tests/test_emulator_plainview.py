"""The emulator's plain HTTP view (benchmarks only): off by default; when on, index pages
with the names rcfs shows and files with the API's bytes, Range, latency and budget."""

from __future__ import annotations

import hashlib
import html.parser
import os
import urllib.parse
from pathlib import Path

import httpx
import pytest

from fusehelp import fuse_required, mounted

EXT = "/restapi/v1.0/account/~/extension/~"
SINCE = {"dateFrom": "2000-01-01T00:00:00Z", "perPage": 1000}
TIMEOUT = 30.0


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links += [urllib.parse.unquote(v) for k, v in attrs if k == "href" and v]


def links(url: str) -> list[str]:
    r = httpx.get(url, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    parser = _Links()
    parser.feed(r.text)
    return parser.links


def tree(base: str) -> dict[str, list[str]]:
    """kind -> names (MMS folders as `folder/part`)."""
    out = {}
    for kind in links(base + "/plain/"):
        names = []
        for name in links(f"{base}/plain/{kind}"):
            if name.endswith("/"):
                names += [name + part for part in links(f"{base}/plain/{kind}{name}")]
            else:
                names.append(name)
        out[kind.rstrip("/")] = names
    return out


def test_off_by_default(start_emulator):
    srv = start_emulator()
    for path in ("/plain/", "/plain/faxes/", "/plain/voicemail/x.mp3"):
        assert httpx.get(srv.media + path, timeout=TIMEOUT).status_code == 404


def test_same_bytes_as_the_api_and_ranges(start_emulator):
    srv = start_emulator(plain_view=True)
    token = srv.token()
    auth = {"Authorization": "Bearer " + token}
    view = tree(srv.media)
    assert sorted(view) == ["faxes", "mms", "recordings", "voicemail"]
    assert all(view.values())

    # A voicemail's audio under its rcfs name is the API attachment's content.
    body = httpx.get(srv.platform + EXT + "/message-store", params={**SINCE, "messageType": "VoiceMail"},
                     headers=auth, timeout=TIMEOUT).json()
    msg = body["records"][0]
    audio = next(a for a in msg["attachments"] if a["type"] == "AudioRecording")
    name = next(n for n in view["voicemail"] if n.endswith(f"_{msg['id']}" + os.path.splitext(n)[1])
                and not n.endswith(".txt"))
    api = httpx.get(audio["uri"], headers=auth, timeout=TIMEOUT)
    plain = httpx.get(f"{srv.media}/plain/voicemail/{urllib.parse.quote(name)}", timeout=TIMEOUT)
    assert plain.status_code == 200 and api.status_code == 200
    assert plain.content == api.content and len(plain.content) > 1000
    assert plain.headers["content-type"] == api.headers["content-type"]
    assert plain.headers["accept-ranges"] == "bytes"
    assert "last-modified" in plain.headers

    # Ranges: 206 with Content-Range, the exact slice; HEAD tells the size.
    url = f"{srv.media}/plain/voicemail/{urllib.parse.quote(name)}"
    size = len(api.content)
    part = httpx.get(url, headers={"Range": "bytes=100-4195"}, timeout=TIMEOUT)
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-4195/{size}"
    assert part.content == api.content[100:4196]
    tail = httpx.get(url, headers={"Range": "bytes=-10"}, timeout=TIMEOUT)
    assert tail.status_code == 206 and tail.content == api.content[-10:]
    assert httpx.get(url, headers={"Range": f"bytes={size}-"}, timeout=TIMEOUT).status_code == 416
    head = httpx.head(url, timeout=TIMEOUT)
    assert head.status_code == 200 and int(head.headers["content-length"]) == size and head.content == b""

    # A recording: same digest as the API's content URL (the Heavy route).
    calls = httpx.get(srv.platform + EXT + "/call-log", params={**SINCE, "recordingType": "All"},
                      headers=auth, timeout=TIMEOUT).json()["records"]
    rec = calls[0]["recording"]
    rec_name = next(n for n in view["recordings"] if f"_{rec['id']}." in n)
    api_rec = httpx.get(rec["contentUri"], headers=auth, timeout=TIMEOUT).content
    plain_rec = httpx.get(f"{srv.media}/plain/recordings/{urllib.parse.quote(rec_name)}", timeout=TIMEOUT)
    assert plain_rec.headers["x-rate-limit-group"] == "heavy"
    assert hashlib.sha256(plain_rec.content).digest() == hashlib.sha256(api_rec).digest()

    # A directory asked for without its slash is redirected; unknown names are 404.
    mms_dir = next(n for n in view["mms"]).split("/")[0]
    r = httpx.get(f"{srv.media}/plain/mms/{urllib.parse.quote(mms_dir)}", timeout=TIMEOUT)
    assert r.status_code == 301 and r.headers["location"].endswith("/")
    assert httpx.get(f"{srv.media}/plain/faxes/nope.pdf", timeout=TIMEOUT).status_code == 404

    counted = srv.stats()["requests"]
    assert counted.get("plain-file", 0) >= 5 and counted.get("plain-recording") == 1


def test_budget_answers_429_with_retry_after(start_emulator):
    srv = start_emulator(plain_view=True, limit_medium=3, limit_light=50, window=60)
    name = links(srv.media + "/plain/faxes/")[0]
    url = f"{srv.media}/plain/faxes/{urllib.parse.quote(name)}"
    statuses = [httpx.head(url, timeout=TIMEOUT).status_code for _ in range(3)]
    statuses.append(httpx.get(url, timeout=TIMEOUT).status_code)
    assert statuses == [200, 200, 200, 429]
    r = httpx.get(url, timeout=TIMEOUT)
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
    assert r.headers["x-rate-limit-group"] == "medium"
    assert srv.stats()["rate_limited"] == 2


@fuse_required
def test_names_match_an_rcfs_mount(start_emulator, tmp_path: Path):
    srv = start_emulator(plain_view=True)
    view = tree(srv.media)
    mp = tmp_path / "rc"
    with mounted(mp, server_url=srv.platform, client_id=srv.client_id, client_secret=srv.client_secret,
                 jwt=srv.jwt, state_dir=tmp_path / "state"):
        shown = {}
        for kind in view:
            names = []
            for entry in sorted(os.listdir(mp / kind)):
                if (mp / kind / entry).is_dir():
                    names += [f"{entry}/{part}" for part in os.listdir(mp / kind / entry)]
                else:
                    names.append(entry)
            shown[kind] = names
        # Same bytes through the mount and through the view, for one file of each kind.
        for kind in ("faxes", "voicemail", "mms"):
            name = sorted(shown[kind])[0]
            plain = httpx.get(f"{srv.media}/plain/{kind}/{urllib.parse.quote(name)}", timeout=TIMEOUT).content
            assert (mp / kind / name).read_bytes() == plain
    for kind in ("faxes", "voicemail", "mms"):
        assert sorted(shown[kind]) == sorted(view[kind]), kind
    # rcfs names a recording `.mp3` until it has learned the real type; the stems agree.
    stem = lambda n: n.rsplit(".", 1)[0]  # noqa: E731
    assert sorted(map(stem, shown["recordings"])) == sorted(map(stem, view["recordings"]))
