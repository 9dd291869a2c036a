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
"""

from __future__ import annotations

from typing import Protocol


class MediaObject(Protocol):
    content_type: str
    size: int
    extension: str

    def read(self, offset: int, length: int) -> bytes: ...
