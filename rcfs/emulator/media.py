"""Deterministic, valid media files for the emulator, generated on demand.

INTERFACE (implemented by the media work; store.py and the routes rely on it):

    class MediaObject(Protocol):
        content_type: str      # e.g. "application/pdf", "audio/mpeg"
        size: int              # exact byte length
        extension: str         # ".pdf", ".tif", ".mp3", ".wav", ".jpg", ".png", ".gif", ".vcf", ".txt"
        def read(self, offset: int, length: int) -> bytes: ...   # bytes [offset, offset+length) clipped to size

Factories (seed -> identical bytes every time):
    fax_pdf(seed, pages) / fax_tiff(seed, pages)
    audio_mp3(seed, seconds) / audio_wav(seed, seconds)
    audio_mp3_sized(seed, size) / audio_wav_sized(seed, size)   # large recordings, memory O(1)
    image_jpeg(seed) / image_png(seed) / image_gif(seed)
    vcard(seed, name, phone)
    text_plain(text)
    from_bytes(data, content_type)   # uploaded content (sent faxes, MMS, greetings)

Three kinds of object sit behind the protocol:

- `StaticMedia`: bytes held in memory (uploads, text, vCards).
- `RenderedMedia`: small documents and images rendered on first use by a pure function
  of the seed; the bytes live in a shared, size-bounded LRU and are re-rendered
  (identically) after eviction, so ten thousand lazy faxes cost almost nothing.
- `StreamedAudio`: MP3 and WAV of any length. A fixed header followed by a body cut into
  `CHUNK`-byte chunks, each derived from (seed, chunk index) alone, so any byte range is
  produced on demand with memory independent of the file size.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import mimetypes
import random
import struct
import threading
from typing import Callable, Iterator, Protocol

import cachetools

log = logging.getLogger(__name__)


class MediaObject(Protocol):
    """What the content routes serve: a typed, sized, randomly readable byte string."""

    content_type: str
    size: int
    extension: str

    def read(self, offset: int, length: int) -> bytes: ...


EXTENSIONS: dict[str, str] = {
    "application/pdf": ".pdf",
    "image/tiff": ".tif",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "text/vcard": ".vcf",
    "text/x-vcard": ".vcf",
    "text/plain": ".txt",
    "audio/amr": ".amr",
    "audio/mp4": ".m4a",
    "video/mp4": ".mp4",
    "video/mpeg": ".mpg",
    "application/zip": ".zip",
    "application/gzip": ".gz",
    "application/rtf": ".rtf",
}


def extension_for(content_type: str) -> str:
    """File extension for a MIME type (parameters ignored); `.bin` when unknown."""
    base = content_type.split(";", 1)[0].strip().lower()
    return EXTENSIONS.get(base) or mimetypes.guess_extension(base) or ".bin"


def _clip(size: int, offset: int, length: int) -> tuple[int, int]:
    if offset < 0 or length < 0:
        raise ValueError(f"negative offset or length: {offset}, {length}")
    start = min(offset, size)
    return start, min(size, start + length)


def _derive(*parts: object) -> random.Random:
    """A PRNG seeded by the parts (stable across runs and Python versions)."""
    return random.Random(":".join(map(str, parts)).encode())


# --------------------------------------------------------------------------- static


class StaticMedia:
    """Content held in memory as bytes (uploads, transcriptions, vCards)."""

    def __init__(self, data: bytes, content_type: str, extension: str | None = None) -> None:
        self.data = bytes(data)
        self.content_type = content_type
        self.extension = extension or extension_for(content_type)
        self.size = len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) clipped to the size."""
        start, end = _clip(self.size, offset, length)
        return self.data[start:end]

    def __repr__(self) -> str:
        return f"StaticMedia({self.content_type}, {self.size} bytes)"


def from_bytes(data: bytes, content_type: str) -> StaticMedia:
    """Uploaded content (sent faxes, MMS, greetings) served back as it came."""
    return StaticMedia(data, content_type)


def text_plain(text: str) -> StaticMedia:
    """A UTF-8 `text/plain` object (SMS bodies, voicemail transcriptions)."""
    return StaticMedia(text.encode("utf-8"), "text/plain", ".txt")


def vcard(seed: int, name: str, phone: str) -> StaticMedia:
    """A vCard 3.0 contact card for `name` / `phone`, with a seed-derived e-mail and note."""
    rng = _derive("vcard", seed)
    first, _, last = name.partition(" ")
    user = "".join(ch for ch in name.lower() if ch.isalnum() or ch == " ").replace(" ", ".") or "contact"
    domain = rng.choice(["example.com", "example.org", "example.net"])
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"N:{last};{first};;;",
        f"FN:{name}",
        f"TEL;TYPE=CELL:{phone}",
        f"EMAIL;TYPE=INTERNET:{user}@{domain}",
        f"NOTE:{_phrase(rng, 6)}",
        "END:VCARD",
    ]
    return StaticMedia(("\r\n".join(lines) + "\r\n").encode("utf-8"), "text/vcard", ".vcf")


# --------------------------------------------------------------------------- rendered

# Rendered bytes are shared by key so equal objects render once; the bound keeps a
# 10,000-fax listing account from pinning every PDF it ever served.
_RENDER_CACHE_BYTES = 64 * 1024 * 1024
_render_cache: cachetools.LRUCache[tuple, bytes] = cachetools.LRUCache(_RENDER_CACHE_BYTES, getsizeof=len)
_render_lock = threading.Lock()


class RenderedMedia:
    """A small document or image rendered lazily from its key by a pure function."""

    def __init__(self, key: tuple, content_type: str, extension: str,
                 render: Callable[[], bytes]) -> None:
        self.key = key
        self.content_type = content_type
        self.extension = extension
        self._render = render
        self._size: int | None = None

    def data(self) -> bytes:
        """The whole object (rendered now if not in the shared cache)."""
        with _render_lock:
            cached = _render_cache.get(self.key)
        if cached is None:
            cached = self._render()
            with _render_lock:
                _render_cache[self.key] = cached
            self._size = len(cached)
        return cached

    @property
    def size(self) -> int:
        """Exact byte length (renders once, then remembered)."""
        if self._size is None:
            self._size = len(self.data())
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) clipped to the size."""
        data = self.data()
        start, end = _clip(len(data), offset, length)
        return data[start:end]

    def __repr__(self) -> str:
        return f"RenderedMedia{self.key!r}"


_WORDS = (
    "account agreement amount annual approval balance billing branch budget claim client "
    "contract copy customer delivery deposit details document estimate form freight "
    "insurance invoice ledger lease medical notice order patient payment permit policy "
    "proposal purchase quote receipt record referral renewal report request schedule "
    "service shipment signature statement summary supplier terms transfer warranty"
).split()


def _phrase(rng: random.Random, n: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n)]
    return " ".join(words).capitalize()


def _fax_lines(seed: int, page: int, pages: int) -> tuple[str, list[str]]:
    """Reference line and body text of one fax page (shared by the PDF and TIFF forms)."""
    rng = _derive("faxpage", seed, page)
    ref = f"Ref {seed & 0xFFFFFFFF:08X}-{page:02d}  {_phrase(_derive('faxref', seed), 4)}"
    body = [_phrase(rng, rng.randint(6, 11)) + "." for _ in range(rng.randint(8, 14))]
    return ref, body


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _render_pdf(seed: int, pages: int) -> bytes:
    """A small, valid PDF 1.4 with `pages` US-letter pages of real (extractable) text."""
    objects: list[bytes] = []  # object n is objects[n-1]
    page_ids = [4 + 2 * i for i in range(pages)]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{n} 0 R" for n in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for page in range(1, pages + 1):
        ref, body = _fax_lines(seed, page, pages)
        ops = [
            "BT /F1 28 Tf 72 720 Td (FAX) Tj ET",
            f"BT /F1 14 Tf 400 726 Td (Page {page} of {pages}) Tj ET",
            "0.5 w 72 706 m 540 706 l S",
            f"BT /F1 11 Tf 72 684 Td ({_pdf_escape(ref)}) Tj ET",
            "BT /F1 11 Tf 72 650 Td 15 TL",
        ]
        ops += [f"({_pdf_escape(line)}) '" for line in body]
        ops.append("ET")
        ops.append(f"BT /F1 9 Tf 72 40 Td (rcfs emulator fax - page {page}/{pages}) Tj ET")
        stream = ("\n".join(ops) + "\n").encode("latin-1")
        content_id = page_ids[page - 1] + 1
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref_at = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_at))
    return out.getvalue()


def fax_pdf(seed: int, pages: int) -> RenderedMedia:
    """A fax as PDF: `pages` pages, each with its page number and seed-derived text."""
    if pages < 1:
        raise ValueError("a fax has at least one page")
    return RenderedMedia(("pdf", seed, pages), "application/pdf", ".pdf",
                         functools.partial(_render_pdf, seed, pages))


@functools.lru_cache(maxsize=8)
def _font(size: int):  # -> ImageFont
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _render_tiff(seed: int, pages: int, resolution: str) -> bytes:
    """Multi-page bilevel TIFF (CCITT G4), one IFD per page, at fax geometry."""
    from PIL import Image, ImageDraw

    fine = resolution != "Low"
    width, height, ydpi = (1728, 2156, 196) if fine else (1728, 1078, 98)
    scale = 1.0 if fine else 0.5  # Low resolution halves the vertical geometry
    images = []
    for page in range(1, pages + 1):
        ref, body = _fax_lines(seed, page, pages)
        img = Image.new("1", (width, height), 1)
        draw = ImageDraw.Draw(img)
        y = int(80 * scale)
        draw.text((120, y), "FAX", font=_font(int(72 * scale) or 8), fill=0)
        draw.text((1200, y + int(20 * scale)), f"Page {page} of {pages}", font=_font(int(40 * scale) or 8), fill=0)
        y += int(120 * scale)
        draw.line((120, y, width - 120, y), fill=0, width=3)
        y += int(30 * scale)
        draw.text((120, y), ref, font=_font(int(32 * scale) or 8), fill=0)
        y += int(80 * scale)
        for line in body:
            draw.text((120, y), line, font=_font(int(30 * scale) or 8), fill=0)
            y += int(48 * scale)
        images.append(img)
    out = io.BytesIO()
    images[0].save(out, format="TIFF", save_all=True, append_images=images[1:],
                   compression="group4", dpi=(204, ydpi))
    return out.getvalue()


def fax_tiff(seed: int, pages: int, *, resolution: str = "High") -> RenderedMedia:
    """A fax as multi-page TIFF (`resolution` "High" = 204x196 dpi, "Low" = 204x98 dpi)."""
    if pages < 1:
        raise ValueError("a fax has at least one page")
    return RenderedMedia(("tiff", seed, pages, resolution), "image/tiff", ".tif",
                         functools.partial(_render_tiff, seed, pages, resolution))


def _picture(seed: int):  # -> PIL.Image.Image
    """A seed-derived RGB picture: a gradient sky, some shapes and a caption."""
    from PIL import Image, ImageDraw

    rng = _derive("picture", seed)
    w, h = rng.randrange(240, 641, 8), rng.randrange(180, 481, 8)
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))
    grad = Image.linear_gradient("L").resize((w, h))
    img = Image.composite(Image.new("RGB", (w, h), bottom), Image.new("RGB", (w, h), top), grad)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(5, 12)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(10, w // 2), y0 + rng.randrange(10, h // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    draw.text((10, h - 30), f"rcfs {seed & 0xFFFF:04x}", font=_font(20), fill=(255, 255, 255))
    return img


def _render_image(seed: int, fmt: str) -> bytes:
    img = _picture(seed)
    out = io.BytesIO()
    if fmt == "JPEG":
        img.save(out, format="JPEG", quality=80)
    elif fmt == "GIF":
        from PIL import Image
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(out, format="GIF")
    else:
        img.save(out, format=fmt)
    return out.getvalue()


def image_jpeg(seed: int) -> RenderedMedia:
    """A small JPEG photo."""
    return RenderedMedia(("jpeg", seed), "image/jpeg", ".jpg", functools.partial(_render_image, seed, "JPEG"))


def image_png(seed: int) -> RenderedMedia:
    """A small PNG picture."""
    return RenderedMedia(("png", seed), "image/png", ".png", functools.partial(_render_image, seed, "PNG"))


def image_gif(seed: int) -> RenderedMedia:
    """A small palette GIF."""
    return RenderedMedia(("gif", seed), "image/gif", ".gif", functools.partial(_render_image, seed, "GIF"))


# --------------------------------------------------------------------------- streamed audio

CHUNK = 1024 * 384  # a whole number of MP3 frames and of WAV samples

# MPEG-1 Layer III, 128 kbit/s, 48 kHz, mono, no CRC, no padding: 144*128000/48000 =
# 384-byte frames of 1152 samples (24 ms). The 17-byte mono side info is all zeros:
# main_data_begin 0 and part2_3_length 0 in both granules, i.e. silence, and the rest
# of each frame is ancillary data that decoders skip.
MP3_FRAME = 384
MP3_FRAME_SECONDS = 1152 / 48000
_MP3_FRAME_HEAD = bytes([0xFF, 0xFB, 0x94, 0xC4]) + bytes(17)

# Each kind cuts its chunks from its own pool of fixed random bytes, prepared once per
# process in the kind's final form (WAV bytes already in the quiet alphabet, MP3 bytes
# already carrying a frame head at every frame boundary). A chunk is the pool slice at
# a seeded, frame-aligned slot plus the chunk's own stamps: one copy and a few strided
# writes, no per-byte work (generating the bytes cost the emulator more CPU than
# serving them, and on a 2-core machine it competes with the filesystem under test).
_POOL_SLOTS = 1 << 14
_POOL_BYTES = _POOL_SLOTS * MP3_FRAME + CHUNK  # 6.4 MiB per kind

# The pool is small, so two chunks may start at the same slot; the stamps keep every
# block unique. Every `_STAMP_EVERY` bytes (8 MP3 frames) a chunk carries a
# `_STAMP_LEN`-byte stamp derived from (kind, seed, chunk index). A stamp plus the gap
# to the next fits in 4 KiB, so any 4 KiB of a body holds a whole stamp of its own:
# a block served at the wrong place (or from the wrong object) never matches.
_STAMP_EVERY = 8 * MP3_FRAME
_STAMP_LEN = 16
_STAMPS_PER_CHUNK = CHUNK // _STAMP_EVERY
assert CHUNK % _STAMP_EVERY == 0 and _STAMP_EVERY + _STAMP_LEN <= 4096


def _random_pool(kind: str) -> bytearray:
    """`_POOL_BYTES` fixed random bytes for `kind` (the same in every process)."""
    return bytearray(random.Random(f"rcfs-media-pool:{kind}".encode()).randbytes(_POOL_BYTES))


# Chunks are keyed by (kind, seed, index), independent of the object's size, so equal
# seeds share chunks; the bound (12 MiB, plus 13 MiB for the two pools) keeps many
# concurrent large reads in a few tens of MB. (A chunk is cheap to make again; the
# cache serves a Range request that starts mid-chunk where the previous one ended, and
# concurrent readers of one recording.)
_chunk_cache: cachetools.LRUCache[tuple, bytes] = cachetools.LRUCache(32)
_chunk_lock = threading.Lock()


class StreamedAudio:
    """Audio of any size: `header` then a body generated chunk by chunk.

    Subclasses provide `_pool()` (their prepared pool), `_stamp_at` (where in each
    `_STAMP_EVERY` bytes the stamp goes) and, for a restricted alphabet,
    `_alphabet_table` (a `bytes.translate` table that maps random bytes into it). The
    byte at body offset k depends only on the seed and k, so reads at any offset agree
    with each other.
    """

    kind = "audio"
    _stamp_at = 0
    _alphabet_table: bytes | None = None

    def __init__(self, seed: int, header: bytes, size: int, content_type: str,
                 extension: str, duration: float) -> None:
        self.seed = seed
        self.header = header
        self.size = size
        self.content_type = content_type
        self.extension = extension
        self.duration = duration  # seconds

    @staticmethod
    def _pool() -> memoryview:
        raise NotImplementedError

    def _make_chunk(self, index: int) -> bytes:
        """CHUNK bytes for chunk `index`: a pool slice at a seeded slot, stamped."""
        # shake_128, not hash() or random: the same bytes in every process and version.
        derived = hashlib.shake_128(f"{self.kind}:{self.seed}:{index}".encode()).digest(
            _STAMP_LEN * _STAMPS_PER_CHUNK + 4)
        slot = int.from_bytes(derived[-4:], "little") % _POOL_SLOTS
        data = bytearray(self._pool()[slot * MP3_FRAME:slot * MP3_FRAME + CHUNK])
        stamps = derived[:-4]
        if self._alphabet_table is not None:
            stamps = stamps.translate(self._alphabet_table)
        # Byte j of all the chunk's stamps in one strided write (stamp k is made of
        # stamps[k], stamps[_STAMPS_PER_CHUNK + k], ...).
        for j in range(_STAMP_LEN):
            run = stamps[j * _STAMPS_PER_CHUNK:(j + 1) * _STAMPS_PER_CHUNK]
            data[self._stamp_at + j::_STAMP_EVERY] = run
        return bytes(data)

    def _chunk(self, index: int) -> bytes:
        key = (self.kind, self.seed, index)
        with _chunk_lock:
            data = _chunk_cache.get(key)
        if data is None:
            data = self._make_chunk(index)
            with _chunk_lock:
                _chunk_cache[key] = data
        return data

    def _layout(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """[offset, offset+length) clipped, as (chunk index, start within it, length)
        parts; index -1 is the header."""
        start, end = _clip(self.size, offset, length)
        hlen = len(self.header)
        pos = start
        if pos < hlen and pos < end:
            yield -1, pos, min(end, hlen) - pos
            pos = min(end, hlen)
        while pos < end:
            index, within = divmod(pos - hlen, CHUNK)
            take = min(CHUNK - within, end - pos)
            yield index, within, take
            pos += take

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) clipped to the size, generated on demand."""
        parts: list[bytes | memoryview] = []
        for index, within, take in self._layout(offset, length):
            if index < 0:
                parts.append(self.header[within:within + take])
            elif take == CHUNK:
                parts.append(self._chunk(index))
            else:
                parts.append(memoryview(self._chunk(index))[within:within + take])
        if len(parts) == 1 and type(parts[0]) is bytes:
            return parts[0]  # a whole chunk (or header part): no copy
        return b"".join(parts)

    def pieces(self, offset: int, length: int) -> Iterator[bytes]:
        """`read(offset, length)` as consecutive pieces that end on chunk boundaries.

        A piece covering a whole chunk is the cached chunk itself, so a server can hand
        it to the socket without a copy (h11 passes a lone bytes body through as is).
        Between pieces the stream holds no chunk (no local names one), so however many
        streams are under way, the cache bound is what bounds generated memory; each
        holds only the piece its consumer is sending.
        """
        for index, within, take in self._layout(offset, length):
            if index < 0:
                yield self.header[within:within + take]
            elif take == CHUNK:
                yield self._chunk(index)
            else:
                yield self._chunk(index)[within:within + take]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, size={self.size}, {self.duration:.1f}s)"


def _id3_frames(seed: int) -> bytes:
    def frame(fid: bytes, text: str) -> bytes:
        body = b"\x00" + text.encode("latin-1")  # encoding 0 = ISO-8859-1
        return fid + struct.pack(">I", len(body)) + b"\x00\x00" + body

    return frame(b"TIT2", f"rcfs recording {seed & 0xFFFFFFFF:08x}") + frame(b"TSSE", "rcfs emulator")


def _id3_tag(seed: int, total: int) -> bytes:
    """An ID3v2.3 tag (title, encoder) padded with zeros to exactly `total` bytes."""
    frames = _id3_frames(seed)
    payload = total - 10
    if payload < len(frames):
        raise ValueError("ID3 tag too small")
    syncsafe = bytes(((payload >> s) & 0x7F) for s in (21, 14, 7, 0))
    return b"ID3\x03\x00\x00" + syncsafe + frames + bytes(payload - len(frames))


_ID3_MIN = 10 + len(_id3_frames(0))  # the frames' length does not depend on the seed


class Mp3Audio(StreamedAudio):
    """Silent, header-valid CBR MP3 whose frames carry seeded ancillary bytes."""

    kind = "mp3"
    # The stamps go in ancillary data, past each frame's head and side info.
    _stamp_at = len(_MP3_FRAME_HEAD)

    def __init__(self, seed: int, frames: int, tag_size: int) -> None:
        super().__init__(seed, _id3_tag(seed, tag_size), tag_size + frames * MP3_FRAME,
                         "audio/mpeg", ".mp3", frames * MP3_FRAME_SECONDS)
        self.frames = frames

    @staticmethod
    @functools.cache
    def _pool() -> memoryview:
        """Random bytes with an MP3 frame head at every frame boundary."""
        pool = _random_pool("mp3")
        for i, value in enumerate(_MP3_FRAME_HEAD):
            pool[i::MP3_FRAME] = bytes([value]) * (_POOL_BYTES // MP3_FRAME)
        return memoryview(bytes(pool))


_MP3_TAG = 128  # default tag size for duration-based MP3s


def audio_mp3(seed: int, seconds: float) -> Mp3Audio:
    """An MP3 of about `seconds` (whole 24 ms frames) at 128 kbit/s, 48 kHz, mono."""
    frames = max(1, round(seconds / MP3_FRAME_SECONDS))
    return Mp3Audio(seed, frames, _MP3_TAG)


def audio_mp3_sized(seed: int, size: int) -> Mp3Audio:
    """An MP3 of exactly `size` bytes (the ID3 tag's padding absorbs the remainder)."""
    if size < _ID3_MIN + MP3_FRAME:
        raise ValueError(f"an MP3 needs at least {_ID3_MIN + MP3_FRAME} bytes")
    frames = (size - _ID3_MIN) // MP3_FRAME
    return Mp3Audio(seed, frames, size - frames * MP3_FRAME)


# WAV: 16-bit little-endian mono PCM at 8 kHz (telephony), 16000 bytes per second.
WAV_RATE = 8000
WAV_BYTES_PER_SECOND = WAV_RATE * 2
_WAV_HEADER = 44
# Every byte of the body is drawn from 0x00-0x07 and 0xF8-0xFF, so each sample's high
# byte is in [-8, 7]: noise at most 2048/32768 of full scale (about -24 dBFS), whatever
# the alignment.
_WAV_ALPHABET = bytes(range(0, 8)) + bytes(range(0xF8, 0x100))


def _wav_header(data_len: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_len) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, WAV_RATE, WAV_BYTES_PER_SECOND, 2, 16)
            + b"data" + struct.pack("<I", data_len))


class WavAudio(StreamedAudio):
    """RIFF/WAVE PCM with quiet seeded noise."""

    kind = "wav"
    # The pool and the stamps are random bytes mapped into the quiet alphabet.
    _alphabet_table = bytes(_WAV_ALPHABET[b % len(_WAV_ALPHABET)] for b in range(256))

    def __init__(self, seed: int, data_len: int, content_type: str) -> None:
        if data_len % 2 or data_len + 36 > 0xFFFFFFFF:
            raise ValueError(f"bad WAV data length {data_len}")
        super().__init__(seed, _wav_header(data_len), _WAV_HEADER + data_len, content_type,
                         ".wav", data_len / WAV_BYTES_PER_SECOND)

    @staticmethod
    @functools.cache
    def _pool() -> memoryview:
        """Random bytes mapped into the quiet alphabet."""
        return memoryview(bytes(_random_pool("wav")).translate(WavAudio._alphabet_table))


def audio_wav(seed: int, seconds: float, content_type: str = "audio/wav") -> WavAudio:
    """A WAV of `seconds` (recordings use audio/wav, voicemail audio/x-wav)."""
    samples = max(1, round(seconds * WAV_RATE))
    return WavAudio(seed, samples * 2, content_type)


def audio_wav_sized(seed: int, size: int, content_type: str = "audio/wav") -> WavAudio:
    """A WAV of `size` bytes, rounded down to even (RIFF chunks are word aligned)."""
    if size < _WAV_HEADER + 2:
        raise ValueError(f"a WAV needs at least {_WAV_HEADER + 2} bytes")
    return WavAudio(seed, (size - _WAV_HEADER) & ~1, content_type)


def pieces(media: MediaObject, offset: int, length: int, step: int = 1 << 20) -> Iterator[bytes]:
    """Bytes [offset, offset+length) of `media`, clipped to its size, as consecutive pieces.

    Streamed audio gives its own chunk-aligned pieces (whole chunks uncopied); other
    objects are read `step` bytes at a time.
    """
    own = getattr(media, "pieces", None)
    if own is not None:
        yield from own(offset, length)
        return
    end = offset + length
    while offset < end:
        data = media.read(offset, min(step, end - offset))
        if not data:
            return
        yield data
        offset += len(data)


def sha256(media: MediaObject, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a whole object, read block by block (for tests and benchmarks)."""
    digest = hashlib.sha256()
    for offset in range(0, media.size, block):
        digest.update(media.read(offset, block))
    return digest.hexdigest()
