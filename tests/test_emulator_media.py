"""The emulator's media objects: real formats (checked by `file`, pypdf, Pillow, mutagen,
wave), deterministic bytes, and read(offset, length) that agrees with itself everywhere."""

from __future__ import annotations

import array
import contextlib
import functools
import hashlib
import io
import random
import subprocess
import sys
import tracemalloc
import wave

import mutagen.mp3
import pypdf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from rcfs.emulator import media

MIME_ALIASES = {"audio/wav": {"audio/wav", "audio/x-wav"}, "audio/x-wav": {"audio/wav", "audio/x-wav"},
                "text/vcard": {"text/vcard", "text/x-vcard"}}


def file_mime(data: bytes) -> str:
    """What /usr/bin/file says the bytes are."""
    out = subprocess.run(["file", "--mime-type", "-b", "-"], input=data, capture_output=True,
                         timeout=30, check=True)
    return out.stdout.decode().strip()


def head(obj: media.MediaObject, limit: int = 1 << 20) -> bytes:
    return obj.read(0, min(obj.size, limit))


KINDS = {
    "pdf": lambda: media.fax_pdf(11, 3),
    "tiff": lambda: media.fax_tiff(12, 2),
    "tiff-low": lambda: media.fax_tiff(13, 3, resolution="Low"),
    "mp3": lambda: media.audio_mp3(14, 20),
    "mp3-sized": lambda: media.audio_mp3_sized(15, 300 * 1024 * 1024),
    "wav": lambda: media.audio_wav(16, 5),
    "wav-x": lambda: media.audio_wav(17, 5, "audio/x-wav"),
    "wav-sized": lambda: media.audio_wav_sized(18, 1 << 30),
    "jpeg": lambda: media.image_jpeg(19),
    "png": lambda: media.image_png(20),
    "gif": lambda: media.image_gif(21),
    "vcard": lambda: media.vcard(22, "Ada Lovelace", "+442079460123"),
    "text": lambda: media.text_plain("Hi, it's Sam. Call me back at +1 650 555 0142. Merci, café?"),
    "upload-pdf": lambda: media.from_bytes(media.fax_pdf(23, 1).read(0, 1 << 20), "application/pdf"),
    "upload-png": lambda: media.from_bytes(media.image_png(24).read(0, 1 << 20), "image/png"),
}

EXPECTED = {
    "pdf": ("application/pdf", ".pdf"), "tiff": ("image/tiff", ".tif"), "tiff-low": ("image/tiff", ".tif"),
    "mp3": ("audio/mpeg", ".mp3"), "mp3-sized": ("audio/mpeg", ".mp3"), "wav": ("audio/wav", ".wav"),
    "wav-x": ("audio/x-wav", ".wav"), "wav-sized": ("audio/wav", ".wav"), "jpeg": ("image/jpeg", ".jpg"),
    "png": ("image/png", ".png"), "gif": ("image/gif", ".gif"), "vcard": ("text/vcard", ".vcf"),
    "text": ("text/plain", ".txt"), "upload-pdf": ("application/pdf", ".pdf"),
    "upload-png": ("image/png", ".png"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_file_agrees_with_content_type(kind: str) -> None:
    obj = KINDS[kind]()
    assert (obj.content_type, obj.extension) == EXPECTED[kind]
    detected = file_mime(head(obj))
    assert detected in MIME_ALIASES.get(obj.content_type, {obj.content_type}), (kind, detected)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_same_seed_same_bytes(kind: str) -> None:
    a, b = KINDS[kind](), KINDS[kind]()
    assert a.size == b.size
    assert head(a) == head(b)
    if a.size > 1 << 20:
        assert a.read(a.size - 5000, 5000) == b.read(a.size - 5000, 5000)


def test_different_seeds_differ() -> None:
    pairs = [(media.fax_pdf(1, 2), media.fax_pdf(2, 2)), (media.fax_tiff(1, 1), media.fax_tiff(2, 1)),
             (media.image_jpeg(1), media.image_jpeg(2)), (media.audio_mp3(1, 5), media.audio_mp3(2, 5)),
             (media.audio_wav(1, 5), media.audio_wav(2, 5))]
    for a, b in pairs:
        assert a.read(0, a.size) != b.read(0, b.size)


@pytest.mark.parametrize("pages", [1, 2, 5])
def test_pdf_has_n_pages_with_text(pages: int) -> None:
    doc = media.fax_pdf(99, pages)
    reader = pypdf.PdfReader(io.BytesIO(doc.read(0, doc.size)), strict=True)
    assert len(reader.pages) == pages
    refs = set()
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text()
        assert f"Page {number} of {pages}" in text
        ref_line = next(line for line in text.splitlines() if line.startswith("Ref "))
        refs.add(ref_line)
    assert len(refs) == pages  # the reference line carries the page number


@pytest.mark.parametrize(("pages", "resolution", "height", "ydpi"), [(1, "High", 2156, 196), (4, "Low", 1078, 98)])
def test_tiff_has_n_bilevel_pages(pages: int, resolution: str, height: int, ydpi: int) -> None:
    doc = media.fax_tiff(7, pages, resolution=resolution)
    img = Image.open(io.BytesIO(doc.read(0, doc.size)))
    assert img.n_frames == pages
    for frame in range(pages):
        img.seek(frame)
        assert img.mode == "1" and img.size == (1728, height)
        assert img.info["dpi"] == (204, ydpi)
        # There is ink on every page (text was drawn) but the page is mostly white.
        black = img.histogram()[0]
        assert 1000 < black < img.size[0] * img.size[1] // 4


def test_zero_pages_rejected() -> None:
    with pytest.raises(ValueError):
        media.fax_pdf(1, 0)
    with pytest.raises(ValueError):
        media.fax_tiff(1, 0)


def test_mp3_is_cbr_stream_of_silent_frames() -> None:
    mp3 = media.audio_mp3(5, 90)
    info = mutagen.mp3.MP3(io.BytesIO(mp3.read(0, mp3.size))).info
    assert (info.bitrate, info.sample_rate, info.channels) == (128000, 48000, 1)
    assert info.length == pytest.approx(90, abs=0.03)
    assert mp3.duration == pytest.approx(90, abs=0.03)


@pytest.mark.parametrize("size", [media.MP3_FRAME + 200, 10_000_001, 700 * 1024 * 1024 + 3])
def test_mp3_sized_exact_and_framed(size: int) -> None:
    mp3 = media.audio_mp3_sized(8, size)
    assert mp3.size == size
    tag = mp3.read(0, 10)
    tag_len = 10 + sum(b << (7 * (3 - i)) for i, b in enumerate(tag[6:10]))
    assert tag[:3] == b"ID3" and (size - tag_len) % media.MP3_FRAME == 0
    rng = random.Random(size)
    frames = (size - tag_len) // media.MP3_FRAME
    for frame in [0, frames - 1] + [rng.randrange(frames) for _ in range(50)]:
        at = tag_len + frame * media.MP3_FRAME
        chunk = mp3.read(at, media.MP3_FRAME)
        assert chunk[:4] == b"\xff\xfb\x94\xc4", frame
        assert chunk[4:21] == bytes(17)  # zero-length granules: silence
    assert mp3.read(size - 1, 10) != b"" and mp3.read(size, 10) == b""
    if 100_000 < size < 20_000_000:  # mutagen wants several frames to trust its sync
        info = mutagen.mp3.MP3(io.BytesIO(mp3.read(0, size))).info
        assert info.bitrate == 128000


def test_wav_header_and_quiet_samples() -> None:
    w = media.audio_wav(3, 2.5)
    reader = wave.open(io.BytesIO(w.read(0, w.size)))
    assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
    assert reader.getnframes() == 20000 == (w.size - 44) // 2
    samples = array.array("h", reader.readframes(reader.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()
    assert max(abs(s) for s in samples) <= 2048
    assert len(set(samples)) > 200  # noise, not a constant


@pytest.mark.parametrize("size", [100, 1_000_001, (1 << 31) + 17])
def test_wav_sized(size: int) -> None:
    w = media.audio_wav_sized(4, size, "audio/x-wav")
    assert w.size == size & ~1 and w.content_type == "audio/x-wav"
    header = w.read(0, 44)
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    assert int.from_bytes(header[4:8], "little") == w.size - 8
    assert int.from_bytes(header[40:44], "little") == w.size - 44
    assert w.duration == pytest.approx((w.size - 44) / 16000)


def test_bad_sizes_rejected() -> None:
    with pytest.raises(ValueError):
        media.audio_mp3_sized(1, 100)
    with pytest.raises(ValueError):
        media.audio_wav_sized(1, 40)
    with pytest.raises(ValueError):
        media.audio_wav_sized(1, 5 << 30)  # RIFF sizes are 32-bit
    with pytest.raises(ValueError):
        media.text_plain("x").read(-1, 2)


# ------------------------------------------------------------------ read() consistency

@functools.cache
def _small_objects() -> list[tuple[media.MediaObject, bytes]]:
    objs: list[media.MediaObject] = [
        media.fax_pdf(31, 2), media.fax_tiff(32, 2), media.image_gif(33), media.vcard(34, "Bo Li", "+13125550101"),
        media.text_plain("short"),
        media.audio_mp3(35, 40),  # ~640 KB: crosses a chunk boundary
        media.audio_wav(36, 60),  # ~960 KB
    ]
    out = []
    for obj in objs:
        # The reference copy is assembled from odd-sized sequential reads.
        parts, pos, step = [], 0, 77_777
        while pos < obj.size:
            parts.append(obj.read(pos, step))
            pos += step
        full = b"".join(parts)
        assert len(full) == obj.size
        out.append((obj, full))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 6), offset=st.integers(0, 1_100_000), length=st.integers(0, 900_000))
def test_read_matches_slice_of_whole(which: int, offset: int, length: int) -> None:
    obj, full = _small_objects()[which]
    offset %= obj.size + 10  # also probe just past the end
    assert obj.read(offset, length) == full[offset:offset + length]


LARGE = {"mp3": lambda: media.audio_mp3_sized(41, 2 * 1024**3), "wav": lambda: media.audio_wav_sized(42, 3 * 1024**3)}


@settings(max_examples=200, deadline=None)
@given(which=st.sampled_from(sorted(LARGE)), where=st.floats(0, 1), near=st.integers(-3, 3),
       n=st.integers(0, 600_000), m=st.integers(0, 600_000))
def test_large_reads_agree_at_boundaries(which: str, where: float, near: int, n: int, m: int) -> None:
    obj = LARGE[which]()
    # Bias the split point onto chunk boundaries and the header edge, where bugs live.
    a = int(where * obj.size)
    if near:
        a = len(obj.header) + (a // media.CHUNK + near) * media.CHUNK
    a = max(0, min(a, obj.size))
    assert obj.read(a, n) + obj.read(a + n, m) == obj.read(a, n + m)
    assert len(obj.read(a, n + m)) == max(0, min(n + m, obj.size - a))


@pytest.mark.parametrize("which", sorted(LARGE))
def test_large_blocks_never_repeat(which: str) -> None:
    obj = LARGE[which]()
    rng = random.Random(5)
    block = 4096
    offsets = {rng.randrange(obj.size // block) * block for _ in range(300)}
    offsets |= {len(obj.header) + i * block for i in range(200)}  # neighbours inside one chunk
    digests = {hashlib.sha256(obj.read(off, block)).digest() for off in offsets}
    assert len(digests) == len(offsets)


def test_large_object_memory_is_constant() -> None:
    obj = media.audio_mp3_sized(43, 8 * 1024**3)
    obj.read(0, 1)  # the shared random pool exists before measuring
    tracemalloc.start()
    try:
        for off in (obj.size - (1 << 20), obj.size // 2, 12345):
            assert len(obj.read(off, 1 << 20)) == min(1 << 20, obj.size - off)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024


def test_sha256_helper_matches_whole_read() -> None:
    obj = media.audio_wav(9, 70)
    assert media.sha256(obj, block=300_001) == hashlib.sha256(obj.read(0, obj.size)).hexdigest()


def test_extension_for() -> None:
    assert media.extension_for("image/jpeg") == ".jpg"
    assert media.extension_for("text/plain; charset=utf-8") == ".txt"
    assert media.extension_for("Audio/X-WAV") == ".wav"
    assert media.extension_for("application/x-rcfs-unknown") == ".bin"
    assert media.from_bytes(b"abc", "application/octet-stream").read(1, 5) == b"bc"


@pytest.mark.parametrize("which", sorted(LARGE))
def test_chunk_cache_does_not_change_bytes(which: str) -> None:
    obj = LARGE[which]()
    spots = [len(obj.header) + i * media.CHUNK - 100 for i in range(1, 9)]
    media._chunk_cache.clear()
    forward = [obj.read(s, 200) for s in spots]
    media._chunk_cache.clear()
    backward = [obj.read(s, 200) for s in reversed(spots)][::-1]
    assert forward == backward
    assert len(set(forward)) == len(forward)


# ------------------------------------------------------- streamed audio: what it is for

def test_audio_headers_unchanged() -> None:
    """The ID3 tag and the WAV header are pinned: the bytes before the body are what
    rcfs and the MIME checks saw before chunks were cut from prepared pools."""
    headers = [o.header for o in (media.audio_mp3(14, 20), media.audio_mp3_sized(15, 300 * 1024 * 1024),
                                  media.audio_wav(16, 5), media.audio_wav_sized(18, 1 << 30, "audio/x-wav"))]
    assert hashlib.sha256(b"".join(headers)).hexdigest() == (
        "2e38dafe6138de7b8a7f1f7ef33c21da1430ae7311474bc37262fdfd08542124")


_DIGESTS_OF_SPOTS = """
import hashlib, sys
from rcfs.emulator import media
for obj in (media.audio_mp3_sized(41, 2 * 1024**3), media.audio_wav_sized(42, 3 * 1024**3)):
    for spot in (0, 1000, obj.size // 3, obj.size - 5000):
        print(hashlib.sha256(obj.read(spot, 1 << 20)).hexdigest())
"""


def test_audio_bytes_are_the_same_in_every_process() -> None:
    """Bytes depend on (seed, offset) alone: no hash randomisation, no id(), no state."""
    runs = set()
    for hash_seed in ("0", "4242"):
        out = subprocess.run([sys.executable, "-c", _DIGESTS_OF_SPOTS], capture_output=True, text=True,
                             timeout=120, check=True, env={"PYTHONHASHSEED": hash_seed, "PATH": ""})
        runs.add(out.stdout)
    here = io.StringIO()
    with contextlib.redirect_stdout(here):
        exec(_DIGESTS_OF_SPOTS, {})
    assert runs == {here.getvalue()} and len(set(here.getvalue().split())) == 8


@pytest.mark.parametrize("make", [lambda: media.audio_mp3_sized(51, 200 * 1024 * 1024),
                                  lambda: media.audio_wav_sized(52, 200 * 1024 * 1024)], ids=["mp3", "wav"])
def test_every_mib_block_of_a_200_mib_recording_is_distinct(make) -> None:
    """A block served at the wrong place must show in a checksum."""
    obj = make()
    digests = {hashlib.sha256(obj.read(off, 1 << 20)).digest() for off in range(0, obj.size, 1 << 20)}
    assert len(digests) == 200


@pytest.mark.parametrize("which", sorted(LARGE))
def test_blocks_at_the_same_place_of_every_chunk_differ(which: str) -> None:
    """Chunks are cut from a small pool, so in a 2-3 GiB object many start at the same
    slot; their stamps still make every 4 KiB block different."""
    obj = LARGE[which]()
    chunks = (obj.size - len(obj.header)) // media.CHUNK
    for within in (0, 12345, media.CHUNK - 4096):
        offsets = [len(obj.header) + i * media.CHUNK + within for i in range(chunks)]
        digests = {hashlib.sha256(obj.read(off, 4096)).digest() for off in offsets}
        assert len(digests) == len(offsets), within


def test_mp3_frames_stay_valid_across_chunks() -> None:
    """Every frame of several chunks, far into a large file, has the frame head and
    silent side info; `file` calls a body cut at a chunk boundary MPEG audio."""
    mp3 = LARGE["mp3"]()
    tag = len(mp3.header)
    for first_chunk in (0, 1000, (mp3.size - tag) // media.CHUNK - 3):
        start = tag + first_chunk * media.CHUNK
        body = mp3.read(start, 3 * media.CHUNK)
        assert len(body) == 3 * media.CHUNK
        for frame in range(0, len(body), media.MP3_FRAME):
            assert body[frame:frame + 21] == b"\xff\xfb\x94\xc4" + bytes(17), (first_chunk, frame)
        assert file_mime(body[media.CHUNK:]) == "audio/mpeg"  # a body cut at the chunk boundary


def test_wav_body_stays_quiet_across_chunks() -> None:
    """Pool bytes and stamps alike are in the quiet alphabet, whatever the chunk."""
    wav = LARGE["wav"]()
    allowed = set(range(0, 8)) | set(range(0xF8, 0x100))
    for first_chunk in (0, 2000, (wav.size - 44) // media.CHUNK - 3):
        body = wav.read(44 + first_chunk * media.CHUNK, 3 * media.CHUNK)
        assert set(body) <= allowed
        samples = array.array("h", body)
        if sys.byteorder == "big":
            samples.byteswap()
        assert max(abs(s) for s in samples) <= 2048 and len(set(samples)) > 200


@settings(max_examples=100, deadline=None)
@given(which=st.sampled_from(sorted(LARGE)), where=st.floats(0, 1), n=st.integers(0, 3 * media.CHUNK))
def test_pieces_are_the_read_cut_at_chunk_boundaries(which: str, where: float, n: int) -> None:
    obj = LARGE[which]()
    a = int(where * obj.size)
    pieces = list(media.pieces(obj, a, n))
    assert b"".join(pieces) == obj.read(a, n)
    assert all(type(p) is bytes and p for p in pieces)
    ends = a
    for piece in pieces[:-1]:
        ends += len(piece)
        assert ends == len(obj.header) or (ends - len(obj.header)) % media.CHUNK == 0


def test_whole_chunks_are_served_uncopied() -> None:
    """A piece (or read) that is exactly one chunk is the cached chunk itself: the media
    route hands it to h11 and the socket without copying 384 KiB."""
    obj = LARGE["mp3"]()
    at = len(obj.header) + 7 * media.CHUNK
    pieces = list(obj.pieces(at, 2 * media.CHUNK))
    assert [len(p) for p in pieces] == [media.CHUNK] * 2
    assert pieces[0] is obj._chunk(7) and pieces[1] is obj._chunk(8)
    assert obj.read(at, media.CHUNK) is obj._chunk(7)
    static = media.from_bytes(bytes(range(256)) * 10_000, "application/octet-stream")
    assert [len(p) for p in media.pieces(static, 5, 2_100_000)] == [1 << 20, 1 << 20, 2_100_000 - (2 << 20)]


def test_memory_stays_bounded_with_many_concurrent_readers() -> None:
    """Hundreds of large recordings read at once: the chunk cache stays bounded and a
    stream between two pieces holds no chunk (what a response holds is the one piece
    it is sending, as it held one 1 MiB read before)."""
    objs = [media.audio_mp3_sized(1000 + i, 2 * 1024**3) if i % 2 else media.audio_wav_sized(1000 + i, 2 * 1024**3)
            for i in range(200)]
    for obj in objs[:2]:
        obj.read(0, 1)  # the per-kind pools exist before measuring
    tracemalloc.start()
    try:
        for round_ in range(3):
            streams = [obj.pieces(round_ * 5 * media.CHUNK + 1000, 4 * media.CHUNK) for obj in objs]
            for _ in range(5):  # interleaved, as concurrent responses are
                for stream in streams:
                    assert next(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024
    assert len(media._chunk_cache) <= media._chunk_cache.maxsize
