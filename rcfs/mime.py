"""Which media type may go where: THE table, and the sniffer that decides a file's type.

One place answers "may this file be sent as a fax / an MMS / a greeting?":

    mime.sniff(head, path=None) -> str          # the type, from the content only
    mime.sniff_prefix(first_bytes) -> str|None  # the type once the first bytes settle it
    mime.check(channel, mime_type)              # raises MediaRejected (EMEDIUMTYPE)
    mime.check_prefix(channel, first_bytes)     # early refusal during write()
    mime.check_sizes(channel, sizes)            # EINVAL empty, EFBIG too big / too many
    mime.check_pages(channel, pages)            # EFBIG over the fax page limit
    mime.page_count(mime_type, path) -> int|None
    mime.canonical(mime_type) -> str            # the name the platform uses (upload part type)

Channels are "fax", "mms" and "greeting" (`CHANNELS`). The type is never taken from
the file name.

Why libmagic (python-magic) and not puremagic: the tests hold the sniffer to what
`file --mime-type` says, and `file` *is* libmagic with Debian's magic database, so
the same library and database agree by construction, including the hard cases:
Office Open XML is told from a plain ZIP by the names in the first local headers
(`[Content_Types].xml` or `_rels/.rels`, then a `word/`, `xl/` or `ppt/` entry),
legacy Office files by parsing the OLE2 compound file's directory and summary
information, text from binary by a real encoding analysis. puremagic matches
signatures at fixed offsets and leans on the file name for containers, which is the
one thing we must not trust. libmagic1 is a Debian package (`file` depends on it)
and python-magic is a thin ctypes binding to it.

How many bytes libmagic needs
-----------------------------
libmagic reads at most `SNIFF_WINDOW` bytes of a file (its `bytes_max`, 7 MiB in
file 5.44), except for two parsers that read the file itself beyond that window: ELF
(program headers and dynamic section: that is what tells a PIE executable from a
shared library) and OLE2 compound files (directory and summary-information sectors
can sit anywhere). Therefore:

* `sniff(head, path)` with the spooled file's `path` asks libmagic about the file,
  exactly as `file --mime-type` does; without a path it judges `head`.
* Formats identified by a header signature (PDF, images, audio, video, RTF, gzip,
  executables, ...) are settled by their first bytes: every sample in the test
  corpus gives its final answer from its first 64 bytes; `sniff_prefix` waits for
  `EARLY_BYTES` (4 KiB) to keep a margin for headers with variable fields.
* ZIP containers are not settled early: OOXML detection hops from local header to
  local header with `search/6000` windows that start after the first entry's
  compressed size, so no bound below the read window exists (in practice Office
  packages settle within the first few KiB). A ZIP stays undecided until
  `SNIFF_WINDOW` bytes have been seen or the file is complete (`close`).
* Text is not settled early either (a NUL byte late in the file makes it binary;
  CSV and the source-code flavours are decided from the whole window), nor are
  OLE2 files (settled only from the file). Unknown binary data is undecided too.

So a video or an executable sent by fax is refused by the first `write()`; a ZIP
renamed `.pdf` is refused at `close()` (or at `write()` past 7 MiB), while a real
DOCX passes.

Use from the outbox: call `check_prefix` once the first `EARLY_BYTES` are spooled
and, if it is still undecided, once more when `SNIFF_WINDOW` bytes are (each call runs
libmagic over what it is given, up to 7 MiB, so not on every write); at `flush`, judge
the complete spooled file with `check(channel, sniff(head, path))`, `check_sizes` and,
for a fax, `check_pages(channel, page_count(type, path))`. Every call is synchronous
and CPU-bound but short (measured here: 3 ms for a 7 MiB text buffer, the slow case;
0.1 ms for a DOCX): a worker thread from trio is optional. python-magic serialises calls on its handle with a lock.
"""

from __future__ import annotations

import dataclasses
import errno as errno_mod
import re
import struct
from pathlib import Path
from typing import Iterable

import magic

MB = 1000 * 1000

# libmagic's own read window, and the bytes after which a header signature is trusted.
_MAGIC = magic.Magic(mime=True)
SNIFF_WINDOW: int = _MAGIC.getparam(magic.MAGIC_PARAM_BYTES_MAX)
EARLY_BYTES = 4096

EMPTY_TYPES = frozenset({"application/x-empty", "inode/x-empty"})

# libmagic's name -> the name the RingCentral documents use (and the upload part gets).
_CANONICAL = {
    "text/rtf": "application/rtf",
    "audio/x-wav": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "video/x-msvideo": "video/avi",
    "audio/x-m4a": "audio/mp4",
    "video/x-ms-asf": "video/x-ms-wmv",
    "image/x-ms-bmp": "image/bmp",  # older libmagic
    "text/x-vcard": "text/vcard",
    "application/x-gzip": "application/gzip",
}

OOXML_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
OOXML_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
OOXML_PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

# CONTRACT §9: the fax sources (pdf, psd, doc/docx/dot, xls/xlsx/xlsb, ppt/pptx,
# vsd/vdx, pub, wps, wri, wk1/wk3/wk4, tif/gif/jpg/bmp/png/pcx/tga, rtf, txt/log/c/h/
# cpp/hpp/err, xml, html/htm, csv) under the names libmagic gives them. mcw, awd and
# wq1 carry no signature libmagic knows, so they cannot be recognised and are refused.
FAX_TYPES = frozenset({
    "application/pdf",
    "image/vnd.adobe.photoshop",
    "application/msword", OOXML_DOCX,
    "application/vnd.ms-excel", OOXML_XLSX,
    "application/vnd.ms-powerpoint", OOXML_PPTX,
    "application/vnd.ms-office",  # libmagic's name for other OLE2 Office documents
    "application/vnd.visio", "application/vnd.ms-publisher", "application/vnd.ms-works",
    "application/x-mswrite", "application/vnd.lotus-1-2-3",
    "image/tiff", "image/gif", "image/jpeg", "image/bmp", "image/png", "image/x-pcx",
    "image/x-tga",
    "application/rtf",
    "text/plain", "text/x-c", "text/x-c++",
    "text/xml", "application/xml", "text/html", "text/csv",
})
# CONTRACT §10.2, verbatim.
MMS_TYPES = frozenset({
    "image/jpeg", "image/png", "image/bmp", "image/gif", "image/tiff", "image/svg+xml",
    "image/webp",
    "video/3gpp", "video/mp4", "video/mpeg", "video/avi", "video/x-flv", "video/x-ms-wmv",
    "video/quicktime", "video/webm", "video/ogg",
    "audio/mpeg", "audio/mp4", "audio/ogg", "audio/wav", "audio/amr", "audio/3gpp",
    "text/vcard",
    "application/zip", "application/gzip",
    "application/rtf", "application/pdf", "text/html", "text/plain", "text/csv",
    "text/calendar",
})
# CONTRACT §11: the greeting response knows audio/mpeg and audio/wav only.
GREETING_TYPES = frozenset({"audio/mpeg", "audio/wav"})
# shared/seed/media-content.txt: "all the media types our platform is capable of
# supporting". It is no upper bound for the channel lists above: the fax section names
# PDF, Office documents and text, which it omits, and the greeting answer names WAV.
PLATFORM_TYPES = frozenset({
    "application/gzip", "application/rtf", "application/zip", "audio/amr", "audio/mp4",
    "audio/mpeg", "image/bmp", "image/gif", "image/jpeg", "image/png", "image/tiff",
    "text/vcard", "video/mp4", "video/mpeg",
})


@dataclasses.dataclass(frozen=True)
class Channel:
    """What one kind of message accepts."""

    name: str
    types: frozenset[str]
    max_total_bytes: int  # all attachments of one message together
    max_files: int | None  # attachments per message (None: no limit of its own)
    max_pages: int | None  # rendered pages (fax only)


# Limits (CONTRACT §9-§11). "MB" is read as 10^6 bytes, the stricter reading: a file the
# platform might refuse after the upload is better refused before it leaves the disk.
CHANNELS: dict[str, Channel] = {
    "fax": Channel("fax", FAX_TYPES, 50 * MB, None, 200),
    "mms": Channel("mms", MMS_TYPES, 1_500_000, 10, None),
    "greeting": Channel("greeting", GREETING_TYPES, 20 * MB, 1, None),
}


class MediaRejected(Exception):
    """A file that may not be sent on a channel. `errno` is what the writer should get:
    EMEDIUMTYPE (wrong type), EFBIG (too big, too many files or pages), EINVAL (empty)."""

    def __init__(self, reason: str, errno: int = errno_mod.EMEDIUMTYPE,
                 mime: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errno = errno
        self.mime = mime


# ----------------------------------------------------------------------------- sniffing


def sniff(head: bytes, path: Path | str | None = None) -> str:
    """The MIME type of a file, as libmagic (`file --mime-type`) names it.

    With `path`, libmagic examines the file itself (up to `SNIFF_WINDOW` bytes, and
    ELF / OLE2 structures wherever they are), which is exactly what `file` does; this
    is the final verdict on a spooled file. Without it, `head` (the first bytes) is
    judged. The file name plays no part either way.
    """
    if path is not None:
        return _MAGIC.from_file(str(path))
    return _MAGIC.from_buffer(bytes(head[:SNIFF_WINDOW]))


def _settled_by_signature(mime_type: str) -> bool:
    """Whether libmagic identified the type from a header signature that more bytes
    cannot change (see the module docstring)."""
    if mime_type in ("image/svg+xml",):  # found by searching XML text
        return False
    if mime_type.startswith(("image/", "audio/", "video/")):
        return True
    return mime_type in _SIGNATURE_TYPES


_SIGNATURE_TYPES = frozenset({
    "application/pdf", "text/rtf", "application/gzip", "application/x-bzip2",
    "application/x-xz", "application/x-7z-compressed", "application/x-rar",
    "application/vnd.rar", "application/zstd", "application/x-dosexec",
    "application/x-mach-binary", "application/x-executable", "application/x-sharedlib",
    "application/x-pie-executable", "application/x-object", "application/x-coredump",
    "application/java-vm", "application/x-iso9660-image", "application/x-ms-ne-executable",
})
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def sniff_prefix(first_bytes: bytes) -> str | None:
    """The type once the first bytes written settle it, else None (need more bytes, or
    wait for the complete file and `sniff(head, path)`).

    Signature formats settle at `EARLY_BYTES`; everything else (ZIP containers, text,
    unknown data) only when `SNIFF_WINDOW` bytes are there, OLE2 files never (their
    parser reads the file). For executables the answer may name a sibling type of
    the final one (libmagic tells a PIE from a shared library only from the file);
    both are refused everywhere.
    """
    if len(first_bytes) < EARLY_BYTES:
        return None
    found = _MAGIC.from_buffer(bytes(first_bytes[:SNIFF_WINDOW]))
    if _settled_by_signature(found):
        return found
    if len(first_bytes) >= SNIFF_WINDOW and not first_bytes.startswith(_OLE2_MAGIC):
        return found
    return None


# ----------------------------------------------------------------------------- the table


def canonical(mime_type: str) -> str:
    """The platform's name for a libmagic type (`text/rtf` -> `application/rtf`,
    `audio/x-wav` -> `audio/wav`, ...); other names unchanged. This is the type to
    declare on the upload part."""
    return _CANONICAL.get(mime_type, mime_type)


def channel(name: str) -> Channel:
    """The rules of channel `name` ("fax", "mms", "greeting"); KeyError when unknown."""
    return CHANNELS[name]


def allowed(channel_name: str, mime_type: str) -> bool:
    """Whether files of this type may be sent on the channel."""
    return canonical(mime_type) in CHANNELS[channel_name].types


def check(channel_name: str, mime_type: str) -> None:
    """Raise MediaRejected unless the type may go on the channel (EINVAL for an empty
    file, EMEDIUMTYPE for any other refused type)."""
    if mime_type in EMPTY_TYPES:
        raise MediaRejected("the file is empty", errno_mod.EINVAL, mime_type)
    if not allowed(channel_name, mime_type):
        raise MediaRejected(f"{describe(mime_type)} cannot be sent as {_article(channel_name)}",
                            errno_mod.EMEDIUMTYPE, mime_type)


def check_prefix(channel_name: str, first_bytes: bytes) -> str | None:
    """For `write()`: raise MediaRejected as soon as the first bytes prove the file
    cannot go on the channel; return the settled type, or None while undecided."""
    settled = sniff_prefix(first_bytes)
    if settled is not None:
        check(channel_name, settled)
    return settled


def check_sizes(channel_name: str, sizes: Iterable[int]) -> None:
    """Check the attachment sizes of one message: EINVAL when one is empty, EFBIG when
    there are too many files or their total is over the channel's limit."""
    rules = CHANNELS[channel_name]
    sizes = list(sizes)
    if any(size == 0 for size in sizes):
        raise MediaRejected("the file is empty", errno_mod.EINVAL)
    if rules.max_files is not None and len(sizes) > rules.max_files:
        raise MediaRejected(f"{_article(channel_name)} carries at most {rules.max_files} "
                            f"file(s), this one would have {len(sizes)}", errno_mod.EFBIG)
    total = sum(sizes)
    if total > rules.max_total_bytes:
        raise MediaRejected(f"{total} bytes is over the {rules.max_total_bytes}-byte limit "
                            f"of {_article(channel_name)}", errno_mod.EFBIG)


def check_pages(channel_name: str, pages: int | None) -> None:
    """EFBIG when a known page count is over the channel's page limit."""
    limit = CHANNELS[channel_name].max_pages
    if pages is not None and limit is not None and pages > limit:
        raise MediaRejected(f"{pages} pages is over the {limit}-page limit of "
                            f"{_article(channel_name)}", errno_mod.EFBIG)


def describe(mime_type: str) -> str:
    """Words for a log line or an error text: `a ZIP archive (application/zip)`."""
    words = _WORDS.get(canonical(mime_type))
    if words is None:
        major = mime_type.split("/", 1)[0]
        words = {"video": "a video", "audio": "an audio file", "image": "an image",
                 "text": "a text file"}.get(major, "a file")
        if mime_type.startswith(("application/x-pie-executable", "application/x-sharedlib",
                                 "application/x-executable", "application/x-dosexec",
                                 "application/x-mach-binary")):
            words = "an executable"
    return f"{words} ({mime_type})"


_WORDS = {
    "application/zip": "a ZIP archive", "application/gzip": "a gzip archive",
    "application/pdf": "a PDF document", "application/octet-stream": "unrecognised binary data",
    OOXML_DOCX: "a Word document", OOXML_XLSX: "an Excel workbook",
    OOXML_PPTX: "a PowerPoint presentation", "application/msword": "a Word document",
}


def _article(channel_name: str) -> str:
    return {"fax": "a fax", "mms": "an MMS", "greeting": "a greeting"}.get(
        channel_name, channel_name)


# ----------------------------------------------------------------------------- pages

_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_PDF_OBJECT_STREAM = re.compile(rb"/Type\s*/ObjStm\b")
_TIFF_MAX_PAGES = 100_000


def page_count(mime_type: str, path: Path | str) -> int | None:
    """Pages the document will be, where the file says so cheaply: TIFF image
    directories, PDF page objects (None when the PDF hides them in compressed object
    streams), 1 for other images; None where only rendering would tell (text, Office)."""
    mime_type = canonical(mime_type)
    if mime_type == "image/tiff":
        return _tiff_pages(Path(path))
    if mime_type == "application/pdf":
        data = Path(path).read_bytes()
        if _PDF_OBJECT_STREAM.search(data):
            return None
        return len(_PDF_PAGE.findall(data)) or None
    if mime_type.startswith("image/") and mime_type != "image/svg+xml":
        return 1
    return None


def _tiff_pages(path: Path) -> int | None:
    """Count the IFD chain without decoding any image (bounded; None if malformed)."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            return None
        order = "<" if head[:2] == b"II" else ">"
        (offset,) = struct.unpack(order + "I", head[4:8])
        seen: set[int] = set()
        while offset and offset not in seen and len(seen) < _TIFF_MAX_PAGES:
            seen.add(offset)
            f.seek(offset)
            raw = f.read(2)
            if len(raw) < 2:
                return None
            (entries,) = struct.unpack(order + "H", raw)
            f.seek(offset + 2 + 12 * entries)
            raw = f.read(4)
            if len(raw) < 4:
                return None
            (offset,) = struct.unpack(order + "I", raw)
        return len(seen) or None


__all__ = [
    "CHANNELS", "Channel", "EARLY_BYTES", "FAX_TYPES", "GREETING_TYPES", "MMS_TYPES",
    "MediaRejected", "PLATFORM_TYPES", "SNIFF_WINDOW", "allowed", "canonical", "channel",
    "check", "check_pages", "check_prefix", "check_sizes", "describe", "page_count",
    "sniff", "sniff_prefix",
]
