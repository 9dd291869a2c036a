"""Upload bodies as RingCentral's sending endpoints see them: multipart parsing and
content sniffing.

The emulator parses multipart bodies itself instead of using Starlette's form parser,
because the fax, MMS and greeting endpoints must accept `multipart/mixed` as well as
`multipart/form-data`, must see parts that carry no `Content-Disposition` at all (to
answer MSG-350) and must keep a JSON envelope part whatever its name is.

Sniffing: the declared `Content-Type` of a part is a hint only; `sniff()` looks at the
bytes, so a PDF declared as `image/png` is stored as a PDF and an executable declared as
`application/pdf` is refused.
"""

from __future__ import annotations

import dataclasses
import email.message
import email.utils
import logging
import re
import struct

log = logging.getLogger(__name__)


class MultipartError(ValueError):
    """The body is not a well-formed multipart body (missing boundary, unterminated part)."""


@dataclasses.dataclass
class Part:
    """One body part.

    `headers` has lower-case names. `disposition` is the lower-cased disposition type
    (`form-data`, `attachment`, `inline`) or None when the part has no
    `Content-Disposition` header. `content_type` is the lower-cased media type without
    parameters, None when the part has no `Content-Type` header.
    """

    headers: dict[str, str]
    data: bytes
    disposition: str | None = None
    name: str | None = None
    filename: str | None = None
    content_type: str | None = None

    @property
    def is_json(self) -> bool:
        """Whether the part declares a JSON media type."""
        return self.content_type is not None and (
            self.content_type == "application/json" or self.content_type.endswith("+json"))

    def text(self) -> str:
        """The part body as text (UTF-8, falling back to Latin-1 so it never fails)."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            return self.data.decode("latin-1")


def media_type(header: str | None) -> str:
    """`multipart/mixed; boundary=x` -> `multipart/mixed` (lower case; '' when absent)."""
    if not header:
        return ""
    return header.split(";", 1)[0].strip().lower()


def _header_message(name: str, value: str) -> email.message.Message:
    msg = email.message.Message()
    msg[name] = value
    return msg


def boundary_of(content_type: str | None) -> str | None:
    """The `boundary` parameter of a multipart Content-Type header, or None."""
    if not content_type:
        return None
    value = _header_message("content-type", content_type).get_param("boundary")
    if isinstance(value, tuple):
        value = email.utils.collapse_rfc2231_value(value)
    return value or None


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    last: str | None = None
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("latin-1")
        if text[0] in " \t" and last is not None:  # obsolete line folding
            headers[last] += " " + text.strip()
            continue
        name, sep, value = text.partition(":")
        if not sep:
            raise MultipartError(f"malformed part header line {text[:60]!r}")
        last = name.strip().lower()
        headers[last] = value.strip()
    return headers


def _make_part(headers: dict[str, str], data: bytes) -> Part:
    part = Part(headers=headers, data=data)
    if "content-type" in headers:
        part.content_type = media_type(headers["content-type"]) or None
    disp = headers.get("content-disposition")
    if disp is not None:
        msg = _header_message("content-disposition", disp)
        part.disposition = (msg.get_content_disposition()
                            or disp.split(";", 1)[0].strip().lower() or None)
        name = msg.get_param("name", header="content-disposition")
        if isinstance(name, tuple):
            name = email.utils.collapse_rfc2231_value(name)
        part.name = name if isinstance(name, str) else None
        part.filename = msg.get_filename()
    return part


def parse_multipart(body: bytes, boundary: str) -> list[Part]:
    """Split a multipart body (RFC 2046) into its parts.

    Accepts a preamble and an epilogue, transport padding after a delimiter, and
    CRLF line breaks (what every HTTP client sends). Raises MultipartError when the
    first delimiter or the closing delimiter is missing.
    """
    delim = b"--" + boundary.encode("latin-1")
    if body.startswith(delim):
        pos = 0
    else:
        pos = body.find(b"\r\n" + delim)
        if pos < 0:
            raise MultipartError("no multipart boundary found in the body")
        pos += 2
    parts: list[Part] = []
    while True:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            return parts
        while body[pos:pos + 1] in (b" ", b"\t"):
            pos += 1
        if body[pos:pos + 2] != b"\r\n":
            raise MultipartError("malformed multipart delimiter line")
        pos += 2
        end = body.find(b"\r\n" + delim, pos)
        if end < 0:
            raise MultipartError("multipart body ends without a closing boundary")
        chunk = body[pos:end]
        if chunk.startswith(b"\r\n"):
            raw_headers, data = b"", chunk[2:]
        else:
            raw_headers, sep, data = chunk.partition(b"\r\n\r\n")
            if not sep:
                raise MultipartError("multipart part without a blank line after its headers")
        parts.append(_make_part(_parse_headers(raw_headers), data))
        pos = end + 2


# --------------------------------------------------------------------------------------
# content sniffing

OOXML = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "dotx": "application/vnd.openxmlformats-officedocument.wordprocessingml.template",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xlsb": "application/vnd.ms-excel.sheet.binary.macroEnabled.12",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "vsdx": "application/vnd.ms-visio.drawing",
}
OLE = {
    "doc": "application/msword",
    "dot": "application/msword",
    "xls": "application/vnd.ms-excel",
    "ppt": "application/vnd.ms-powerpoint",
    "vsd": "application/vnd.visio",
    "pub": "application/x-mspublisher",
    "wps": "application/vnd.ms-works",
}
# Formats on the fax source list that carry no reliable magic number: only the file
# name can identify them, so they are the one place the declared name is trusted.
NO_MAGIC = {
    "tga": "image/x-tga",
    "pcx": "image/vnd.zbrush.pcx",
    "wk1": "application/vnd.lotus-1-2-3",
    "wk3": "application/vnd.lotus-1-2-3",
    "wk4": "application/vnd.lotus-1-2-3",
    "wq1": "application/x-quattro-pro",
    "awd": "application/x-awd",
    "wri": "application/x-mswrite",
    "mcw": "application/x-macwriteii",
    "vdx": "application/vnd.visio",
}
TEXT_TYPES = {"text/plain", "text/csv", "text/html", "application/xml", "text/xml",
              "text/vcard", "text/calendar", "image/svg+xml"}
_EXT_TEXT = {"csv": "text/csv", "html": "text/html", "htm": "text/html", "xml": "application/xml",
             "vcf": "text/vcard", "ics": "text/calendar", "svg": "image/svg+xml"}

UNKNOWN = "application/octet-stream"


def extension(filename: str | None) -> str:
    """The lower-case extension of a file name without the dot ('' when none)."""
    if not filename or "." not in filename:
        return ""
    return filename.rsplit(".", 1)[1].lower()


# The package folder of each Office Open XML kind, and the types it may be.
_OOXML_FOLDERS = {"word/": ("docx", "dotx"), "xl/": ("xlsx", "xlsb"), "ppt/": ("pptx",),
                  "visio/": ("vsdx",)}


def _zip_type(data: bytes, ext: str) -> str:
    """A ZIP is an Office document only when its entries say so (`[Content_Types].xml`
    and the part folder); the extension then only picks among that kind's variants
    (docx/dotx, xlsx/xlsb). A ZIP of anything else is `application/zip` by any name."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return "application/zip"
    if "[Content_Types].xml" not in names:
        return "application/zip"
    for folder, kinds in _OOXML_FOLDERS.items():
        if any(name.startswith(folder) for name in names):
            return OOXML[ext if ext in kinds else kinds[0]]
    return "application/zip"


def _sniff_magic(data: bytes, ext: str) -> str | None:
    head = data[:64]
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    # "BM" alone would match plenty of text; the two reserved words after the size are 0.
    if head.startswith(b"BM") and len(head) >= 14 and head[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    if head.startswith(b"{\\rtf"):
        return "application/rtf"
    if head.startswith(b"8BPS"):
        return "image/vnd.adobe.photoshop"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return OLE.get(ext, "application/x-ole-storage")
    if head.startswith(b"PK\x03\x04"):
        return _zip_type(data, ext)
    if head.startswith(b"\x1f\x8b"):
        return "application/gzip"
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"WAVE": "audio/wav", b"WEBP": "image/webp", b"AVI ": "video/avi"}.get(head[8:12])
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
        if version != 1 and layer != 0:  # layer 0 is AAC/ADTS, version 1 is reserved
            return "audio/mpeg"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand.startswith(b"3g"):
            return "video/3gpp"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        if brand == b"qt  ":
            return "video/quicktime"
        return "video/mp4"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"#!AMR"):
        return "audio/amr"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith(b"FLV\x01"):
        return "video/x-flv"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "video/x-ms-wmv"
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "video/mpeg"
    if head.startswith((b"\x7fELF", b"MZ", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe")):
        return UNKNOWN  # executables: recognised only to be refused
    return None


def _looks_like_text(data: bytes) -> bool:
    sample = data[:8192]
    if b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        if exc.start < len(sample) - 3:
            return False
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls <= len(sample) // 100


def _sniff_text(data: bytes, ext: str, declared: str | None) -> str:
    start = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith(b"<?xml") or start.startswith(b"<svg"):
        return "image/svg+xml" if b"<svg" in data[:4096].lower() else "application/xml"
    if start.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    if start.startswith(b"begin:vcard"):
        return "text/vcard"
    if start.startswith(b"begin:vcalendar"):
        return "text/calendar"
    if declared in ("text/csv", "text/plain"):
        return declared
    return _EXT_TEXT.get(ext, "text/plain")


def sniff(data: bytes, filename: str | None = None, declared: str | None = None) -> str:
    """The media type of `data`, decided from its bytes.

    A ZIP is an Office Open XML document only when its entries say so (the file name
    then picks among that kind's variants); the file name names the OLE2 Office format
    and formats that have no magic number; the declared type only picks among text
    flavours (`text/csv` vs `text/plain`). Unknown binary data is
    `application/octet-stream`.
    """
    ext = extension(filename)
    found = _sniff_magic(data, ext)
    if found is not None:
        return found
    if _looks_like_text(data):
        return _sniff_text(data, ext, declared)
    return NO_MAGIC.get(ext, UNKNOWN)


# Allow-lists per endpoint -------------------------------------------------------------

FAX_TYPES = frozenset({
    "application/pdf", "image/tiff", "image/gif", "image/jpeg", "image/png", "image/bmp",
    "image/vnd.adobe.photoshop", "application/rtf", "text/plain", "text/csv", "text/html",
    "application/xml", "text/xml",
    *OLE.values(), *OOXML.values(), *NO_MAGIC.values(),
})
MMS_TYPES = frozenset({
    "image/jpeg", "image/png", "image/bmp", "image/gif", "image/tiff", "image/svg+xml",
    "image/webp",
    "video/3gpp", "video/mp4", "video/mpeg", "video/avi", "video/x-flv", "video/x-ms-wmv",
    "video/quicktime", "video/webm", "video/ogg",
    "audio/mpeg", "audio/mp4", "audio/ogg", "audio/wav", "audio/amr", "audio/3gpp",
    "text/vcard", "application/zip", "application/gzip",
    "application/rtf", "application/pdf", "text/html", "text/plain", "text/csv",
    "text/calendar",
})
GREETING_TYPES = frozenset({"audio/mpeg", "audio/wav"})


# Page counting --------------------------------------------------------------------------

_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_TIFF_MAX_IFDS = 10_000


def _tiff_pages(data: bytes) -> int:
    order = "<" if data[:2] == b"II" else ">"
    seen: set[int] = set()
    try:
        (offset,) = struct.unpack_from(order + "I", data, 4)
        pages = 0
        while offset and offset not in seen and pages < _TIFF_MAX_IFDS:
            seen.add(offset)
            (entries,) = struct.unpack_from(order + "H", data, offset)
            pages += 1
            (offset,) = struct.unpack_from(order + "I", data, offset + 2 + 12 * entries)
        return max(pages, 1)
    except struct.error:
        return max(len(seen), 1)


def count_pages(data: bytes, content_type: str) -> int:
    """Pages a document renders to, as far as is cheap to tell: PDF page objects, TIFF
    image directories, 60 lines per text page; any other document counts as one page."""
    if content_type == "application/pdf":
        return max(len(_PDF_PAGE.findall(data)), 1)
    if content_type == "image/tiff":
        return _tiff_pages(data)
    if content_type in TEXT_TYPES or content_type.startswith("text/"):
        lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        return max(-(-lines // 60), 1)
    return 1
