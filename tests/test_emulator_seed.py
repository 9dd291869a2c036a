"""The seeded account: counts per scale, determinism, date spread, hostile names, and
media that `file` recognises as what the API says they are."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import io
import re
import subprocess
import time
from pathlib import Path

import pypdf
import pytest
from PIL import Image

from rcfs.emulator import media, seed
from rcfs.emulator.config import EmulatorConfig
from rcfs.emulator.store import Message, Store

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
E164 = re.compile(r"^\+[1-9]\d{7,14}$")
MIME_ALIASES = {"audio/wav": {"audio/wav", "audio/x-wav"}, "audio/x-wav": {"audio/wav", "audio/x-wav"},
                "text/vcard": {"text/vcard", "text/x-vcard"}}


def build(**kw: object) -> Store:
    return seed.build_store(EmulatorConfig(**kw), NOW)  # type: ignore[arg-type]


def of_type(store: Store, type_: str) -> list[Message]:
    return sorted((m for m in store.messages.values() if m.type == type_), key=lambda m: m.id)


def all_media(store: Store) -> list[tuple[str, media.MediaObject]]:
    out: list[tuple[str, media.MediaObject]] = []
    for msg in sorted(store.messages.values(), key=lambda m: m.id):
        out += [(f"{msg.type}/{msg.id}/{a.type}/{a.id}", a.media) for a in msg.attachments]
    out += [(f"recording/{r.id}", r.media) for r in store.recordings.values()]
    out += [(f"greeting/{g.id}", g.media) for g in store.greetings.values()]
    return out


def pdf_pages(obj: media.MediaObject) -> int:
    return len(pypdf.PdfReader(io.BytesIO(obj.read(0, obj.size))).pages)


def tiff_pages(obj: media.MediaObject) -> int:
    return Image.open(io.BytesIO(obj.read(0, obj.size))).n_frames


@pytest.fixture(scope="module")
def demo() -> Store:
    return build()


def test_demo_faxes(demo: Store) -> None:
    faxes = of_type(demo, "Fax")
    assert len(faxes) == seed.DEMO_FAXES
    assert {f.direction for f in faxes} == {"Inbound", "Outbound"}
    kinds = collections.Counter()
    for fax in faxes:
        rendered = [a for a in fax.attachments if a.type == "RenderedDocument"]
        sources = [a for a in fax.attachments if a.type == "SourceDocument"]
        assert len(rendered) == 1 and (len(sources) == 1) == (fax.direction == "Outbound")
        doc = rendered[0].media
        kinds[doc.content_type] += 1
        assert 1 <= fax.fax_page_count <= 5 and fax.fax_resolution in ("High", "Low")
        counted = pdf_pages(doc) if doc.content_type == "application/pdf" else tiff_pages(doc)
        assert counted == fax.fax_page_count
        assert rendered[0].file_name is None
        if fax.direction == "Inbound":
            assert fax.message_status == "Received" and E164.match(fax.subject or "")
        else:
            assert fax.message_status in ("Sent", "SendingFailed") and fax.subject
            assert sources[0].file_name and sources[0].file_name.endswith(sources[0].media.extension)
        assert fax.read_status in ("Read", "Unread")
    assert set(kinds) == {"application/pdf", "image/tiff"}


def test_demo_voicemails(demo: Store) -> None:
    vms = of_type(demo, "VoiceMail")
    assert len(vms) == seed.VOICEMAILS
    types = set()
    for vm in vms:
        audio, text = vm.attachments
        assert (audio.type, text.type) == ("AudioRecording", "AudioTranscription")
        assert audio.media.content_type in ("audio/mpeg", "audio/x-wav")
        types.add(audio.media.content_type)
        assert audio.vm_duration and abs(audio.media.duration - audio.vm_duration) < 0.1
        assert text.media.content_type == "text/plain"
        assert b"call me back" in text.media.read(0, text.media.size)
        assert vm.vm_transcription_status == "Completed" and vm.direction == "Inbound"
        assert vm.subject and vm.subject.startswith("Voice message from")
    assert types == {"audio/mpeg", "audio/x-wav"}


def test_demo_sms_and_mms(demo: Store) -> None:
    sms = of_type(demo, "SMS")
    assert len(sms) == seed.SMS_TOTAL + seed.TEXTS_TOTAL
    mms = [m for m in sms if any(a.type == "MmsAttachment" for a in m.attachments)]
    assert len(mms) == seed.MMS_COUNT
    part_types = set()
    for msg in sms:
        texts = [a for a in msg.attachments if a.type == "Text"]
        assert len(texts) == 1 and texts[0].text == msg.subject
        assert texts[0].media.read(0, 10_000).decode() == texts[0].text
        assert msg.conversation_id is not None
        expected = {"Received"} if msg.direction == "Inbound" else {"Sent", "Delivered"}
        assert msg.message_status in expected
    for msg in mms:
        parts = [a for a in msg.attachments if a.type == "MmsAttachment"]
        assert 1 <= len(parts) <= 4
        part_types |= {a.media.content_type for a in parts}
    assert {"image/jpeg", "image/png", "text/vcard", "audio/mpeg"} <= part_types
    named = [a for m in mms for a in m.attachments if a.type == "MmsAttachment" and a.file_name]
    unnamed = [a for m in mms for a in m.attachments if a.type == "MmsAttachment" and not a.file_name]
    assert named and unnamed
    # Most fax and voicemail attachments carry no fileName, as in the real API.
    others = [a for m in of_type(demo, "Fax") + of_type(demo, "VoiceMail") for a in m.attachments]
    assert sum(a.file_name is not None for a in others) < len(others) / 2


def test_demo_calls(demo: Store) -> None:
    assert len(demo.calls) == seed.CALLS_TOTAL
    recorded = [c for c in demo.calls.values() if c.recording is not None]
    assert len(recorded) == seed.RECORDED_CALLS == len(demo.recordings)
    assert {c.recording.type for c in recorded} == {"Automatic", "OnDemand"}
    assert {c.recording.media.content_type for c in recorded} == {"audio/mpeg", "audio/wav"}
    for call in recorded:
        rec = call.recording
        assert 30 <= rec.duration <= 600 and call.duration >= rec.duration
        assert abs(rec.media.duration - rec.duration) < 0.1
        assert isinstance(rec.id, str) and demo.recordings[rec.id] is rec
    for call in demo.calls.values():
        assert isinstance(call.id, str) and call.session_id.isdigit()
        assert E164.match(call.from_.phone_number) and E164.match(call.to.phone_number)
        if call.message_id is not None:
            assert demo.messages[call.message_id].type == "VoiceMail" and call.result == "Voicemail"
    assert len({c.id for c in demo.calls.values()}) == len(demo.calls)
    # Demo stays small: recordings are at most ten minutes of 16 kB/s audio.
    assert max(r.media.size for r in demo.recordings.values()) < 10 * 1024 * 1024


def test_ids_times_and_parties(demo: Store) -> None:
    msgs = sorted(demo.messages.values(), key=lambda m: m.id)
    att_ids = [a.id for m in msgs for a in m.attachments]
    assert len(set(att_ids)) == len(att_ids)
    assert not set(att_ids) & set(demo.messages)
    assert all(0 < i < 2**63 for i in att_ids + [m.id for m in msgs])
    times = [m.creation_time for m in msgs]
    assert times == sorted(times) and len(set(times)) == len(times)  # ids grow with time
    call_times = [c.start_time for c in demo.calls.values()]
    assert len(set(call_times)) == len(call_times)
    for m in msgs:
        for party in [m.from_, *m.to]:
            assert party.phone_number and E164.match(party.phone_number), party
        assert m.availability == "Alive" and m.last_modified == m.creation_time
    assert demo.last_change_seq == len(msgs)


@pytest.mark.parametrize("scale", seed.SCALES)
def test_date_spread(scale: str) -> None:
    store = build(scale=scale, faxes=300)
    day_ago = NOW - dt.timedelta(hours=24)
    for kind in ("Fax", "VoiceMail", "SMS"):
        times = [m.creation_time for m in of_type(store, kind)]
        recent = sum(t >= day_ago for t in times)
        assert 0 < recent < len(times) / 4, kind
        assert min(times) < NOW - dt.timedelta(days=90)
        assert all(NOW - dt.timedelta(days=181) <= t < NOW for t in times)
        assert all(t.microsecond == 0 and t.tzinfo is not None for t in times)
    starts = [c.start_time for c in store.calls.values()]
    assert any(t >= day_ago for t in starts) and any(t < day_ago for t in starts)


def _snapshot(store: Store) -> list[tuple]:
    rows: list[tuple] = []
    for m in sorted(store.messages.values(), key=lambda m: m.id):
        rows.append((m.id, m.type, m.direction, m.creation_time, m.subject, m.read_status, m.message_status,
                     dataclasses.astuple(m.from_), [dataclasses.astuple(p) for p in m.to],
                     [(a.id, a.type, a.media.content_type, a.media.size, a.file_name, a.expose_size)
                      for a in m.attachments]))
    for c in sorted(store.calls.values(), key=lambda c: c.id):
        rows.append((c.id, c.start_time, c.duration, c.result, c.recording and c.recording.id,
                     c.recording and c.recording.media.size))
    return rows


def _fingerprint(obj: media.MediaObject) -> str:
    h = hashlib.sha256()
    h.update(obj.read(0, 300_000))
    h.update(obj.read(max(0, obj.size - 300_000), 300_000))
    return h.hexdigest()


def test_same_seed_same_account() -> None:
    a, b = build(seed=7, scale="bench"), build(seed=7, scale="bench")
    assert _snapshot(a) == _snapshot(b)
    media_a, media_b = all_media(a), all_media(b)
    assert [k for k, _ in media_a] == [k for k, _ in media_b]
    for (_, x), (_, y) in list(zip(media_a, media_b))[::7]:  # a sample, large ones included below
        assert _fingerprint(x) == _fingerprint(y)
    large_a = sorted(a.recordings.values(), key=lambda r: r.media.size)[-1]
    large_b = b.recordings[large_a.id]
    assert large_a.media.size == 2 * 1024**3
    assert _fingerprint(large_a.media) == _fingerprint(large_b.media)


def test_other_seed_other_account() -> None:
    a, b = build(seed=1), build(seed=2)
    assert [m.creation_time for m in a.messages.values()] != [m.creation_time for m in b.messages.values()]
    pdf_a = next(x for k, x in all_media(a) if x.content_type == "application/pdf")
    pdf_b = next(x for k, x in all_media(b) if x.content_type == "application/pdf")
    assert pdf_a.read(0, pdf_a.size) != pdf_b.read(0, pdf_b.size)


def test_listing_scale_is_large_and_fast() -> None:
    started = time.perf_counter()
    store = build(scale="listing")
    elapsed = time.perf_counter() - started
    faxes = of_type(store, "Fax")
    assert len(faxes) == seed.LISTING_FAXES
    assert elapsed < 3.0, elapsed
    assert all(f.attachments[0].media.content_type == "application/pdf" for f in faxes)
    assert all(1 <= f.fax_page_count <= 2 for f in faxes)
    assert len(of_type(store, "VoiceMail")) == seed.VOICEMAILS and len(store.calls) == seed.CALLS_TOTAL
    sample = faxes[::997]
    assert all(pdf_pages(f.attachments[0].media) == f.fax_page_count for f in sample)


@pytest.mark.parametrize(("scale", "faxes"), [("demo", 3), ("listing", 25), ("bench", 0)])
def test_fax_count_override(scale: str, faxes: int) -> None:
    store = build(scale=scale, faxes=faxes)
    assert len(of_type(store, "Fax")) == faxes
    assert len(of_type(store, "VoiceMail")) == seed.VOICEMAILS


def test_bench_recordings() -> None:
    store = build(scale="bench")
    sizes = sorted(r.media.size for r in store.recordings.values())
    large = [s for s in sizes if s >= 100 * 1024**2]
    assert large == sorted(size - (size % 2) for size, _ in seed.BENCH_LARGE)
    few_mb = [r for r in store.recordings.values() if 2 * 1024**2 <= r.media.size <= 6 * 1024**2 + 44]
    assert len(few_mb) >= seed.BENCH_SMALL
    assert len(store.recordings) == seed.RECORDED_CALLS + len(seed.BENCH_LARGE) + seed.BENCH_SMALL
    for rec in store.recordings.values():
        if rec.media.size >= 100 * 1024**2:
            assert abs(rec.duration - rec.media.duration) <= 1
            tail = rec.media.read(rec.media.size - 4096, 1 << 20)
            assert len(tail) == 4096


def test_hostile_names_only_when_asked(demo: Store) -> None:
    def names(store: Store) -> list[str | None]:
        return [a.file_name for m in store.messages.values() for a in m.attachments]

    wanted = [n for group in seed.HOSTILE_NAMES for n in group]
    assert not set(wanted) & set(names(demo))
    hostile = build(hostile_names=True)
    got = names(hostile)
    for name in wanted:
        assert got.count(name) >= wanted.count(name), repr(name)
    assert "photo.jpg" in got and got.count("photo.jpg") == 2
    assert any(len(n or "") == 1000 for n in got)
    assert "\udcff\udcfe.png" in got and "" in got and "../../etc/passwd" in got and "/absolute.png" in got
    assert any(n and "\x00" in n for n in got)
    # Hostile messages are extra, recent (inside the default 24 h window) SMS.
    assert len(hostile.messages) == len(demo.messages) + len(seed.HOSTILE_NAMES)
    day_ago = NOW - dt.timedelta(hours=24)
    hostile_msgs = [m for m in hostile.messages.values()
                    if any(a.file_name in wanted for a in m.attachments)]
    assert len(hostile_msgs) == len(seed.HOSTILE_NAMES)
    assert all(m.creation_time >= day_ago and m.type == "SMS" for m in hostile_msgs)


def test_hide_sizes_share_is_deterministic_and_nested() -> None:
    def hidden(share: float) -> set[int]:
        store = build(hide_sizes=share, faxes=200)
        return {a.id for m in store.messages.values() for a in m.attachments if not a.expose_size}

    total = len([a for m in build(faxes=200).messages.values() for a in m.attachments])
    none, some, more, every = hidden(0.0), hidden(0.3), hidden(0.6), hidden(1.0)
    assert none == set() and len(every) == total
    assert some < more < every
    assert 0.2 * total < len(some) < 0.4 * total
    assert hidden(0.3) == some


def test_bad_config_rejected() -> None:
    with pytest.raises(ValueError):
        build(scale="huge")
    with pytest.raises(ValueError):
        build(hide_sizes=1.5)


def test_default_now_is_current_time() -> None:
    store = seed.build_store(EmulatorConfig(faxes=5))
    newest = max(m.creation_time for m in store.messages.values())
    assert dt.timedelta(0) < dt.datetime.now(UTC) - newest < dt.timedelta(hours=24)


def test_file_agrees_with_every_demo_media_object(demo: Store, tmp_path: Path) -> None:
    objects = all_media(demo)
    paths = []
    for i, (_, obj) in enumerate(objects):
        path = tmp_path / f"{i:04d}"
        path.write_bytes(obj.read(0, min(obj.size, 1 << 20)))
        paths.append(path)
    out = subprocess.run(["file", "--mime-type", "-b", *map(str, paths)], capture_output=True,
                         timeout=60, check=True, text=True).stdout.splitlines()
    assert len(out) == len(objects)
    for (label, obj), detected in zip(objects, out):
        if obj.content_type == "text/plain" and re.search(rb"[\x00-\x08\x0e-\x1f]", obj.read(0, obj.size)):
            # A text carrying terminal escapes (seed._CONTROL_CHAT) is data to `file`.
            assert detected.strip() in ("application/octet-stream", "text/plain"), (label, detected)
            continue
        assert detected.strip() in MIME_ALIASES.get(obj.content_type, {obj.content_type}), (label, detected)
        assert obj.extension == media.extension_for(obj.content_type)
    kinds = {obj.content_type for _, obj in objects}
    assert {"application/pdf", "image/tiff", "audio/mpeg", "audio/x-wav", "audio/wav", "image/jpeg",
            "image/png", "image/gif", "text/vcard", "text/plain"} <= kinds
