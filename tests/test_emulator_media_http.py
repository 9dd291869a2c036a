"""Media host of the emulator: ranges, byte cap, disposition, streaming and faults (CONTRACT §13)."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import time
from typing import AsyncIterator

import httpx
import pytest

from conftest import build_config, login, api_client
from rcfs.emulator import media
from rcfs.emulator.app import Emulator
from rcfs.emulator.media_routes import parse_range
from rcfs.emulator.store import Recording, Store

ACCT = "/restapi/v1.0/account/~"
EXT = ACCT + "/extension/~"
DATA = bytes((i * 7 + 3) % 251 for i in range(1000))
SINCE = {"dateFrom": "2000-01-01T00:00:00Z", "perPage": 1000}


@pytest.fixture
def emu() -> Emulator:
    """One 1000-byte recording with known bytes."""
    store = Store()
    store.recordings["R1"] = Recording(id="R1", media=media.from_bytes(DATA, "audio/mpeg"), duration=5)
    store.recordings["EMPTY"] = Recording(id="EMPTY", media=media.from_bytes(b"", "audio/mpeg"), duration=0)
    return Emulator(build_config(), store)




async def fetch(emu: Emulator, client: httpx.AsyncClient, rng: str | None = None, rec: str = "R1",
                **params: str) -> httpx.Response:
    headers = {"Range": rng} if rng is not None else {}
    return await client.get(emu.recording_content_uri(rec), headers=headers, params=params)


@pytest.mark.parametrize("header, start, end", [
    ("bytes=0-0", 0, 0),            # first byte
    ("bytes=100-199", 100, 199),    # middle
    ("bytes=999-999", 999, 999),    # last byte
    ("bytes=900-", 900, 999),       # open-ended
    ("bytes=-10", 990, 999),        # suffix
    ("bytes=-5000", 0, 999),        # suffix longer than the object
    ("bytes=990-5000", 990, 999),   # end past the end is clipped
    ("bytes=0-9,20-29", 0, 9),      # multi-range: the first range only
])
async def test_single_ranges(emu, emulator_client, header, start, end):
    async with api_client(emu, emulator_client) as c:
        r = await fetch(emu, c, header)
    assert r.status_code == 206
    assert r.content == DATA[start:end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/1000"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "audio/mpeg"
    assert r.headers["x-rate-limit-group"] == "heavy"


@pytest.mark.parametrize("header, rec", [("bytes=1000-", "R1"), ("bytes=5000-6000", "R1"), ("bytes=-0", "R1"),
                                         ("bytes=0-", "EMPTY")])
async def test_unsatisfiable_ranges_are_416(emu, emulator_client, header, rec):
    async with api_client(emu, emulator_client) as c:
        r = await fetch(emu, c, header, rec=rec)
    size = len(DATA) if rec == "R1" else 0
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{size}"
    assert r.json()["errors"][0]["errorCode"] == "CMN-107"


@pytest.mark.parametrize("header", [None, "bytes=abc", "items=0-1", "bytes=20-10", "bytes=-"])
async def test_no_or_unusable_range_sends_everything(emu, emulator_client, header):
    async with api_client(emu, emulator_client) as c:
        r = await fetch(emu, c, header)
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["content-length"] == "1000"
    assert r.headers["accept-ranges"] == "bytes"
    assert "content-range" not in r.headers


async def test_byte_cap_answers_206_even_without_range(emu, emulator_client):
    emu.config.max_bytes_per_response = 300
    async with api_client(emu, emulator_client) as c:
        whole = await fetch(emu, c)
        tail = await fetch(emu, c, "bytes=800-")
        small = await fetch(emu, c, "bytes=0-99")
        # A client that continues from where each answer stopped gets every byte.
        pieces, offset = [], 0
        while offset < len(DATA):
            r = await fetch(emu, c, f"bytes={offset}-")
            pieces.append(r.content)
            offset += len(r.content)
    assert whole.status_code == 206
    assert whole.headers["content-range"] == "bytes 0-299/1000"
    assert whole.content == DATA[:300]
    assert tail.headers["content-range"] == "bytes 800-999/1000" and tail.content == DATA[800:]
    assert small.headers["content-range"] == "bytes 0-99/1000"
    assert b"".join(pieces) == DATA and len(pieces) == 4


async def test_content_disposition(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        plain = await fetch(emu, c)
        inline = await fetch(emu, c, contentDisposition="Inline")
        named = await fetch(emu, c, contentDisposition="Attachment", contentDispositionFilename='my "call".mp3')
    assert "content-disposition" not in plain.headers
    assert inline.headers["content-disposition"] == 'inline; filename="R1.mp3"'
    assert named.headers["content-disposition"] == 'attachment; filename="my _call_.mp3"'


async def test_unknown_content_is_404_and_bytes_are_counted(emu, emulator_client):
    async with api_client(emu, emulator_client) as c:
        missing = await fetch(emu, c, rec="nope")
        att = await c.get(f"{emu.media_base}{emu.extension_path}/message-store/1/content/2")
        await fetch(emu, c, "bytes=0-99")
    assert missing.status_code == 404 and missing.json()["errors"][0]["errorCode"] == "CMN-102"
    assert att.status_code == 404
    assert emu.stats.bytes_served == 100
    assert emu.stats.requests["recording-content"] == 2


# Streamed audio through the routes: the body comes in chunk-aligned pieces now, so the
# edges (a range starting mid-chunk, a cap or a cut landing mid-chunk) are what to check.
AUDIO = {"A1": media.audio_mp3_sized(61, 3 * media.CHUNK + 2_400_777), "W1": media.audio_wav_sized(62, 3_333_334)}


@pytest.fixture
def audio_emu() -> Emulator:
    store = Store()
    for rid, obj in AUDIO.items():
        store.recordings[rid] = Recording(id=rid, media=obj, duration=int(obj.duration))
    return Emulator(build_config(), store)


def _edges(obj: media.StreamedAudio) -> list[str]:
    hlen, chunk = len(obj.header), media.CHUNK
    return [f"bytes=0-{hlen - 1}", f"bytes=0-{hlen + 9}", f"bytes={hlen}-{hlen + chunk - 1}",
            f"bytes={hlen + chunk - 5}-{hlen + 3 * chunk + 4}", "bytes=-1000", f"bytes={obj.size - chunk - 1}-",
            "bytes=1-"]


@pytest.mark.parametrize("rec", sorted(AUDIO))
async def test_streamed_audio_ranges_match_read(audio_emu, emulator_client, rec):
    obj = AUDIO[rec]
    async with api_client(audio_emu, emulator_client) as c:
        whole = await fetch(audio_emu, c, rec=rec)
        assert whole.status_code == 200 and whole.content == obj.read(0, obj.size)
        for header in _edges(obj):
            r = await fetch(audio_emu, c, header, rec=rec)
            start, end = parse_range(header, obj.size)
            assert r.status_code == 206 and r.content == obj.read(start, end - start + 1), header
            assert r.headers["content-length"] == str(end - start + 1)
        head = await c.head(audio_emu.recording_content_uri(rec))
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(obj.size)


@pytest.mark.parametrize("rec", sorted(AUDIO))
async def test_streamed_audio_byte_cap_and_chunked_answers(audio_emu, emulator_client, rec):
    obj = AUDIO[rec]
    audio_emu.config.max_bytes_per_response = (1 << 20) + 5  # ends mid-chunk
    async with api_client(audio_emu, emulator_client) as c:
        pieces, offset = [], 0
        while offset < obj.size:
            r = await fetch(audio_emu, c, f"bytes={offset}-", rec=rec)
            assert r.status_code == 206 and len(r.content) == min((1 << 20) + 5, obj.size - offset)
            pieces.append(r.content)
            offset += len(r.content)
        audio_emu.config.max_bytes_per_response = None
        audio_emu.config.chunked_media = True
        chunked = await fetch(audio_emu, c, f"bytes={len(obj.header) + 3}-", rec=rec)
    assert b"".join(pieces) == obj.read(0, obj.size)
    assert "content-length" not in chunked.headers
    assert chunked.content == obj.read(len(obj.header) + 3, obj.size)


@pytest.mark.parametrize("cut_at", [0.0, 0.3, 0.99])
async def test_streamed_audio_truncated_where_cut_at_says(audio_emu, emulator_client, cut_at):
    obj = AUDIO["A1"]
    audio_emu.config.faults.truncate_rate = 1.0
    audio_emu.config.faults.cut_at = cut_at
    async with api_client(audio_emu, emulator_client) as c:
        r = await fetch(audio_emu, c, "bytes=1000-", rec="A1")
    length = obj.size - 1000
    assert r.headers["content-length"] == str(length)
    assert r.content == obj.read(1000, int(length * cut_at))
    assert audio_emu.stats.bytes_served == int(length * cut_at)


async def test_chunk_delay_pauses_once_per_mib_sent(audio_emu, emulator_client):
    """The slow-link fault keeps its meaning (a pause between 1 MiB pieces) although
    audio now goes out in 384 KiB chunks: 3.5 MiB pause 3 times, not 9."""
    obj = AUDIO["A1"]
    assert 3 << 20 < obj.size < 4 << 20
    async with api_client(audio_emu, emulator_client) as c:
        audio_emu.config.faults.chunk_delay_ms = 100
        started = time.monotonic()
        r = await fetch(audio_emu, c, rec="A1")
        elapsed = time.monotonic() - started
    assert r.content == obj.read(0, obj.size)
    assert 0.3 <= elapsed < 0.75, elapsed


def test_parse_range_unit():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-4", 10) == (2, 4)
    assert parse_range("bytes= 2 - ", 10) == (2, 9)
    assert parse_range("BYTES=-3", 10) == (7, 9)
    assert parse_range("bytes=10-", 10) is False
    assert parse_range("bytes=4-2", 10) is None


# real loopback HTTP ---------------------------------------------------------------------
def first_recording(srv, token: str, *, min_size: int = 0) -> tuple[str, int]:
    """contentUri and Content-Length of the first recording of at least `min_size` bytes."""
    headers = {"Authorization": f"Bearer {token}"}
    log = httpx.get(srv.platform + EXT + "/call-log", params={**SINCE, "withRecording": "true"},
                    headers=headers, timeout=10).json()
    for rec in log["records"]:
        uri = rec["recording"]["contentUri"]
        probe = httpx.get(uri, headers={**headers, "Range": "bytes=0-0"}, timeout=10)
        size = int(probe.headers["content-range"].rsplit("/", 1)[1])
        if size >= min_size:
            return uri, size
    raise AssertionError("no recording that large")


def test_ranges_reassemble_and_match_over_loopback(start_emulator):
    srv = start_emulator(rate_limits=False)
    token = srv.token()
    headers = {"Authorization": f"Bearer {token}"}
    uri, size = first_recording(srv, token, min_size=100_000)
    whole = httpx.get(uri, headers=headers, timeout=30)
    assert whole.status_code == 200 and len(whole.content) == size == int(whole.headers["content-length"])
    cut1, cut2 = size // 3, 2 * size // 3
    parts = [httpx.get(uri, headers={**headers, "Range": r}, timeout=30).content
             for r in (f"bytes=0-{cut1 - 1}", f"bytes={cut1}-{cut2 - 1}", f"bytes={cut2}-")]
    assert b"".join(parts) == whole.content
    last = httpx.get(uri, headers={**headers, "Range": f"bytes={size}-"}, timeout=10)
    assert last.status_code == 416 and last.headers["content-range"] == f"bytes */{size}"


def test_connections_are_counted_per_host_and_each_new_one_pays_the_handshake(start_emulator):
    """Production is HTTPS: a new connection costs a TCP and a TLS handshake before its
    first answer (`handshake_ms`), a kept-alive one does not. The counts are how tests
    see whether a client reuses its connections."""
    srv = start_emulator(rate_limits=False)
    token = srv.token()
    headers = {"Authorization": f"Bearer {token}", "Range": "bytes=0-9"}
    uri, _ = first_recording(srv, token, min_size=100_000)
    srv.configure(faults={"handshake_ms": 300})
    srv.reset_stats()
    with httpx.Client(headers=headers, timeout=30) as kept:
        began = time.monotonic()
        assert kept.get(uri).status_code == 206
        first = time.monotonic() - began
        for _ in range(3):
            assert kept.get(uri).status_code == 206
    assert first >= 0.3  # (a lower bound only: the first answer waited out the handshake)
    assert srv.stats()["connections"] == {"media": 1}
    for _ in range(2):  # a new client each time: a new connection each time
        assert httpx.get(uri, headers=headers, timeout=30).status_code == 206
    assert srv.stats()["connections"] == {"media": 3}
    srv.configure(faults={"handshake_ms": 0})
    httpx.get(srv.platform + EXT, headers={"Authorization": f"Bearer {token}"}, timeout=30).raise_for_status()
    assert srv.stats()["connections"] == {"media": 3, "platform": 1}


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("file") is None, reason="needs curl and file")
def test_curl_downloads_real_media_with_the_query_token(start_emulator, tmp_path):
    srv = start_emulator()
    token = srv.token()
    listing = httpx.get(srv.platform + EXT + "/message-store", params={**SINCE, "messageType": "Fax"},
                        headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    att = next(a for r in listing["records"] for a in r["attachments"] if a["contentType"] == "application/pdf")
    out = tmp_path / "fax.pdf"
    done = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", str(out), "-w", "%{http_code}",
                           f"{att['uri']}?access_token={token}"], capture_output=True, text=True, timeout=20)
    assert done.stdout == "200", done.stderr
    kind = subprocess.run(["file", "-b", str(out)], capture_output=True, text=True, timeout=10).stdout
    assert kind.startswith("PDF document"), kind
    ranged = subprocess.run(["curl", "-sS", "--max-time", "10", "-r", "0-4", "-H", f"Authorization: Bearer {token}",
                             att["uri"]], capture_output=True, timeout=20)
    assert ranged.stdout == b"%PDF-"


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_large_recording_streams_without_buffering(start_emulator):
    srv = start_emulator(scale="bench", rate_limits=False)
    token = srv.token()
    uri, size = first_recording(srv, token, min_size=200 * 1024 * 1024)
    assert size == 200 * 1024 * 1024
    rss_before = _rss_kib(srv.pid)
    digest, received = hashlib.sha256(), 0
    with httpx.stream("GET", uri, headers={"Authorization": f"Bearer {token}"}, timeout=60) as r:
        assert r.status_code == 200 and int(r.headers["content-length"]) == size
        for piece in r.iter_raw(1 << 20):
            digest.update(piece)
            received += len(piece)
    assert received == size
    # Holding the body would add 200 MiB; streaming keeps growth to buffers.
    assert _rss_kib(srv.pid) - rss_before < 64 * 1024


def test_client_disconnect_stops_the_stream(start_emulator):
    srv = start_emulator(scale="bench", rate_limits=False)
    token = srv.token()
    uri, size = first_recording(srv, token, min_size=2 * 1024 ** 3)
    srv.reset_stats()
    with httpx.stream("GET", uri, headers={"Authorization": f"Bearer {token}"}, timeout=30) as r:
        got = 0
        for piece in r.iter_raw(1 << 16):
            got += len(piece)
            if got > 4 << 20:
                break
    time.sleep(0.5)
    first = srv.stats()["bytes_served"]
    time.sleep(0.5)
    assert srv.stats()["bytes_served"] == first  # nothing more is generated
    assert first < 256 << 20


def _fault_download(srv, uri: str, token: str) -> tuple[int, int, Exception | None]:
    """(declared length, bytes received, error) of one streamed GET."""
    received, error, declared = 0, None, -1
    try:
        with httpx.stream("GET", uri, headers={"Authorization": f"Bearer {token}"}, timeout=10) as r:
            declared = int(r.headers["content-length"])
            for piece in r.iter_raw():
                received += len(piece)
    except httpx.HTTPError as exc:
        error = exc
    return declared, received, error


@pytest.mark.parametrize("fault", ["reset_rate", "truncate_rate"])
def test_body_faults_cut_the_body_short(start_emulator, fault):
    srv = start_emulator(rate_limits=False)
    token = srv.token()
    uri, size = first_recording(srv, token, min_size=100_000)
    srv.configure(faults={fault: 1.0})
    declared, received, error = _fault_download(srv, uri, token)
    assert declared == size
    assert received < size
    assert isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError)), error
    assert srv.stats()["faults"][fault.removesuffix("_rate")] == 1
    srv.configure(faults={fault: 0.0})
    assert _fault_download(srv, uri, token)[1:] == (size, None)


def test_error_and_latency_faults(start_emulator):
    srv = start_emulator()
    token = srv.token()
    url = srv.platform + EXT + "/message-store"
    headers = {"Authorization": f"Bearer {token}"}
    srv.configure(faults={"error_rate": 1.0})
    r = httpx.get(url, headers=headers, timeout=10)
    assert r.status_code == 503
    assert r.json()["errors"][0]["errorCode"] == "CMN-201"
    srv.configure(faults={"error_rate": 0.5, "seed": 7})
    statuses = [httpx.get(url, headers=headers, timeout=10).status_code for _ in range(20)]
    assert 0 < statuses.count(503) < 20 and set(statuses) == {200, 503}
    srv.configure(faults={"error_rate": 0.0, "latency_ms": 300})
    started = time.monotonic()
    assert httpx.get(url, headers=headers, timeout=10).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert srv.stats()["faults"]["error"] >= 2
