"""Real files of every media type the contract names, made at test time.

Images come from Pillow (a real encoder); Office Open XML documents are real ZIP
packages written with the standard library's `zipfile` in the layout Word, Excel and
PowerPoint produce; WAV comes from the standard library's `wave`; gzip from `gzip`.
Formats no installed tool writes (MP3, AMR, MP4/3GP/QuickTime, MPEG, AVI, FLV, WMV,
WebM, Ogg, the legacy OLE2 Office files, PSD) are built here by hand as small but
structurally valid files: correct headers, sizes and boxes, so that any reader (and
libmagic) sees the real format, not a magic number glued onto junk.

`SAMPLES` maps a sample name to a builder `() -> bytes`; `write_sample(dir, name)`
writes it under a name with the usual extension. Used by tests/test_mime.py (the
corpus checked against `file --mime-type`) and usable by the outbox tests (what `cp`
copies into a recipient folder).
"""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import wave
import zipfile
from pathlib import Path
from typing import Callable

# ----------------------------------------------------------------------------- images


def _image(fmt: str, mode: str = "RGB", size: tuple[int, int] = (64, 48), **save) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new(mode, size, "white")
    ImageDraw.Draw(img).rectangle((8, 8, size[0] - 8, size[1] - 8), outline="black")
    out = io.BytesIO()
    img.save(out, fmt, **save)
    return out.getvalue()


def jpeg() -> bytes:
    return _image("JPEG", quality=80)


def png() -> bytes:
    return _image("PNG")


def gif() -> bytes:
    return _image("GIF", mode="P")


def bmp() -> bytes:
    return _image("BMP")


def webp() -> bytes:
    return _image("WEBP")


def pcx() -> bytes:
    return _image("PCX")


def tga() -> bytes:
    return _image("TGA")


def tiff_multipage(pages: int = 3) -> bytes:
    """A fax-style multi-page TIFF (bilevel, Group 4), one image directory per page."""
    from PIL import Image, ImageDraw

    frames = []
    for n in range(pages):
        img = Image.new("1", (200, 100), 1)
        ImageDraw.Draw(img).text((10, 40), f"page {n + 1}", fill=0)
        frames.append(img)
    out = io.BytesIO()
    frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:], compression="group4")
    return out.getvalue()


def pdf() -> bytes:
    """A two-page PDF written by Pillow's PDF encoder."""
    from PIL import Image

    pages = [Image.new("RGB", (200, 100), c) for c in ("white", "grey")]
    out = io.BytesIO()
    pages[0].save(out, "PDF", save_all=True, append_images=pages[1:])
    return out.getvalue()


def svg() -> bytes:
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            b'<rect width="10" height="10" fill="red"/></svg>\n')


def psd() -> bytes:
    """A 4x4 RGB Photoshop file: header, empty colour-mode / resource / layer sections,
    raw image data (one plane per channel)."""
    width = height = 4
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)
    return header + sections + struct.pack(">H", 0) + bytes(3 * width * height)


# ----------------------------------------------------------------------------- text


def plain_text() -> bytes:
    return b"Dear Sir or Madam,\n\nplease find the signed contract attached.\n\nRegards\n"


def c_source() -> bytes:
    return b'#include <stdio.h>\n\nint main(void)\n{\n    printf("hello\\n");\n    return 0;\n}\n'


def cpp_source() -> bytes:
    return (b"#include <iostream>\n\nclass Greeter {\npublic:\n    void hello() const { std::cout << \"hi\"; }\n};\n\n"
            b"int main()\n{\n    Greeter().hello();\n    return 0;\n}\n")


def csv() -> bytes:
    rows = ["date,number,pages,status"] + [f"2026-03-0{d},+1415555012{d},{d},Sent" for d in range(1, 8)]
    return ("\n".join(rows) + "\n").encode()


def html() -> bytes:
    return (b"<!DOCTYPE html>\n<html><head><title>Cover</title></head>\n"
            b"<body><p>Fax cover page</p></body></html>\n")


def xml() -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n<invoice><total>12.50</total></invoice>\n'


def rtf() -> bytes:
    return (b"{\\rtf1\\ansi\\deff0 {\\fonttbl {\\f0 Times New Roman;}}\n"
            b"\\f0\\fs24 Hello from an RTF document.\\par\n}\n")


def vcard() -> bytes:
    return (b"BEGIN:VCARD\r\nVERSION:3.0\r\nN:Doe;Jane;;;\r\nFN:Jane Doe\r\n"
            b"TEL;TYPE=CELL:+14155550123\r\nEND:VCARD\r\n")


def icalendar() -> bytes:
    return (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//rcfs//tests//EN\r\nBEGIN:VEVENT\r\n"
            b"UID:1@rcfs\r\nDTSTAMP:20260301T120000Z\r\nDTSTART:20260302T090000Z\r\n"
            b"SUMMARY:Call back\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


# ----------------------------------------------------------------------------- archives


def zip_archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("readme.txt", "an ordinary archive\n")
        z.writestr("data/numbers.csv", "a,b\n1,2\n")
    return out.getvalue()


def gzip_file() -> bytes:
    return gzip.compress(b"compressed text\n" * 20, mtime=0)


_CT = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
       '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
       '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
       '<Default Extension="xml" ContentType="application/xml"/>'
       '<Override PartName="/{part}" ContentType="{ctype}"/></Types>')
_RELS = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
         '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
         '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
         'relationships/officeDocument" Target="{part}"/></Relationships>')
_OOXML = {
    "docx": ("word/document.xml",
             "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
             '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
             '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
             '<w:body><w:p><w:r><w:t>Hello fax</w:t></w:r></w:p></w:body></w:document>'),
    "xlsx": ("xl/workbook.xml",
             "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
             '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
             '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
             '<sheets/></workbook>'),
    "pptx": ("ppt/presentation.xml",
             "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
             '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
             '<p:presentation xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main"/>'),
}


def ooxml(kind: str) -> bytes:
    """A minimal Office Open XML package (docx, xlsx or pptx) in the entry order Office
    writes: `[Content_Types].xml`, `_rels/.rels`, then the main part."""
    part, ctype, body = _OOXML[kind]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _CT.format(part=part, ctype=ctype))
        z.writestr("_rels/.rels", _RELS.format(part=part))
        z.writestr(part, body)
    return out.getvalue()


# ----------------------------------------------------------------------------- OLE2 (doc/xls/ppt)

_FREESECT, _ENDOFCHAIN, _FATSECT, _NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
_FMTID_SUMMARY = bytes.fromhex("E0859FF2F94F6810AB9108002B27B3D9")  # {F29F85E0-4FF9-1068-...}
_SECTOR = 512


def _dir_entry(name: str, kind: int, *, right: int = _NOSTREAM, child: int = _NOSTREAM,
               start: int = _ENDOFCHAIN, size: int = 0) -> bytes:
    encoded = (name + "\0").encode("utf-16-le")
    return (encoded.ljust(64, b"\0") + struct.pack("<HBB", len(encoded), kind, 1)
            + struct.pack("<III", _NOSTREAM, right, child) + bytes(16 + 4 + 16)
            + struct.pack("<III", start, size, 0))


def _summary_information(application: str) -> bytes:
    """A SummaryInformation property set naming the creating application (PIDSI_APPNAME),
    padded to 4096 bytes so it lives in regular sectors, not the mini stream."""
    value = application.encode() + b"\0"
    prop = struct.pack("<II", 0x1E, len(value)) + value  # VT_LPSTR
    prop += bytes(-len(prop) % 4)
    section = struct.pack("<II", 16 + len(prop), 1) + struct.pack("<II", 0x12, 16) + prop
    head = (struct.pack("<HHI", 0xFFFE, 0, 0x00020006) + bytes(16) + struct.pack("<I", 1)
            + _FMTID_SUMMARY + struct.pack("<I", 48))
    return (head + section).ljust(4096, b"\0")


def ole2(stream: str, application: str) -> bytes:
    """A compound file (CFB v3, 512-byte sectors) as the legacy Office formats are: the
    document stream (`WordDocument`, `Workbook`, `PowerPoint Document`) and a
    SummaryInformation stream naming the application, both in regular sectors.

    Sector 0 is the FAT, sector 1 the directory, then the streams' sectors.
    """
    streams = [(stream, bytes(range(256)) * 16), ("\x05SummaryInformation",
                                                  _summary_information(application))]
    fat = [_FATSECT, _ENDOFCHAIN]
    entries = [_dir_entry("Root Entry", 5, child=1)]
    next_sector = 2
    for index, (name, data) in enumerate(streams):
        count = len(data) // _SECTOR
        fat += [next_sector + k + 1 for k in range(count - 1)] + [_ENDOFCHAIN]
        right = index + 2 if index + 1 < len(streams) else _NOSTREAM
        entries.append(_dir_entry(name, 2, right=right, start=next_sector, size=len(data)))
        next_sector += count
    fat += [_FREESECT] * (_SECTOR // 4 - len(fat))
    header = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(16)
              + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + bytes(6)
              + struct.pack("<IIIIIIIII", 0, 1, 1, 0, 4096, _ENDOFCHAIN, 0, _ENDOFCHAIN, 0)
              + struct.pack("<109I", 0, *([_FREESECT] * 108)))
    directory = b"".join(entries).ljust(_SECTOR, b"\0")
    return (header + struct.pack(f"<{_SECTOR // 4}I", *fat) + directory
            + b"".join(data for _, data in streams))


# ----------------------------------------------------------------------------- audio


def wav(seconds: float = 0.5, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(2 * int(rate * seconds)))
    return out.getvalue()


def _mp3_frames(count: int) -> bytes:
    # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding, mono: 417-byte frames.
    header = bytes([0xFF, 0xFB, 0x90, 0xC4])
    return (header + bytes(417 - 4)) * count


def mp3(frames: int = 40) -> bytes:
    """MPEG audio frames behind an ID3v2.3 tag with a title frame."""
    title = b"\x00rcfs test"
    frame = b"TIT2" + struct.pack(">I", len(title)) + b"\x00\x00" + title
    size = len(frame)
    synchsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x03\x00\x00" + synchsafe + frame + _mp3_frames(frames)


def amr(frames: int = 50) -> bytes:
    """AMR-NB storage format: magic line, then 12.2 kbit/s frames (mode 7, 32 bytes)."""
    return b"#!AMR\n" + (b"\x3c" + bytes(31)) * frames


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _iso_media(brand: bytes, compatible: list[bytes], mdat: int = 64) -> bytes:
    ftyp = _box(b"ftyp", brand + struct.pack(">I", 0) + b"".join(compatible))
    mvhd = _box(b"mvhd", bytes(4) + struct.pack(">IIII", 0, 0, 1000, 0) + struct.pack(">I", 0x00010000)
                + struct.pack(">H", 0x0100) + bytes(10)
                + struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
                + bytes(24) + struct.pack(">I", 2))
    return ftyp + _box(b"moov", mvhd) + _box(b"mdat", bytes(mdat))


def mp4(mdat: int = 64) -> bytes:
    """An MP4 (`isom` brand): ftyp, a movie header, and `mdat` bytes of media data."""
    return _iso_media(b"isom", [b"isom", b"iso2", b"mp41"], mdat)


def m4a() -> bytes:
    return _iso_media(b"M4A ", [b"M4A ", b"mp42", b"isom"])


def video_3gp() -> bytes:
    return _iso_media(b"3gp4", [b"3gp4", b"isom"])


def quicktime() -> bytes:
    return _iso_media(b"qt  ", [b"qt  "])


def mpeg_video() -> bytes:
    """An MPEG-1 video elementary stream: sequence header (352x240, 29.97 fps), GOP,
    picture start codes, end code."""
    seq = b"\x00\x00\x01\xb3" + bytes([0x16, 0x00, 0xF0, 0x14, 0xFF, 0xFF, 0xE0, 0x18])
    gop = b"\x00\x00\x01\xb8" + bytes([0x00, 0x08, 0x00, 0x00])
    picture = b"\x00\x00\x01\x00" + bytes([0x00, 0x0F, 0xFF, 0xF8]) + bytes(32)
    return seq + gop + picture * 4 + b"\x00\x00\x01\xb7"


def avi() -> bytes:
    avih = _riff_chunk(b"avih", struct.pack("<14I", 33333, 0, 0, 0x10, 1, 0, 1, 0, 64, 48, 0, 0, 0, 0))
    strh = _riff_chunk(b"strh", b"vids" + b"MJPG" + struct.pack("<IHHIIIIIIIIhhhh", 0, 0, 0, 0, 1, 30,
                                                                0, 1, 0, 0xFFFFFFFF, 0, 0, 0, 64, 48))
    strf = _riff_chunk(b"strf", struct.pack("<IiiHH4sIiiII", 40, 64, 48, 1, 24, b"MJPG", 64 * 48 * 3,
                                            0, 0, 0, 0))
    strl = _riff_chunk(b"LIST", b"strl" + strh + strf)
    hdrl = _riff_chunk(b"LIST", b"hdrl" + avih + strl)
    movi = _riff_chunk(b"LIST", b"movi" + _riff_chunk(b"00dc", jpeg()))
    body = b"AVI " + hdrl + movi
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    pad = b"\0" if len(payload) % 2 else b""
    return kind + struct.pack("<I", len(payload)) + payload + pad


def flv() -> bytes:
    """FLV header (video only) and one empty video tag."""
    tag = bytes([9]) + (1).to_bytes(3, "big") + bytes(7) + b"\x17"
    return b"FLV\x01\x01" + struct.pack(">I", 9) + struct.pack(">I", 0) + tag + struct.pack(">I", len(tag))


_ASF_HEADER = bytes.fromhex("3026B2758E66CF11A6D900AA0062CE6C")
_ASF_FILE_PROPS = bytes.fromhex("A1DCAB8C47A9CF118EE400C00C205365")


def wmv() -> bytes:
    """An ASF header object holding a file-properties object (what WMV files start with)."""
    props = _ASF_FILE_PROPS + struct.pack("<Q", 104) + bytes(16) + struct.pack("<QQQQQQIIII", 0, 0, 0, 0, 0,
                                                                                 0, 0, 0, 0, 0)[:80]
    header = _ASF_HEADER + struct.pack("<QIBB", 30 + len(props), 1, 1, 2) + props
    return header + bytes(64)


def _ebml_element(eid: bytes, payload: bytes) -> bytes:
    return eid + bytes([0x80 | len(payload)]) + payload  # lengths here stay under 127


def webm() -> bytes:
    header = _ebml_element(b"\x1a\x45\xdf\xa3", b"".join([
        _ebml_element(b"\x42\x86", b"\x01"), _ebml_element(b"\x42\xf7", b"\x01"),
        _ebml_element(b"\x42\xf2", b"\x04"), _ebml_element(b"\x42\xf3", b"\x08"),
        _ebml_element(b"\x42\x82", b"webm"), _ebml_element(b"\x42\x87", b"\x02"),
        _ebml_element(b"\x42\x85", b"\x02")]))
    segment = b"\x18\x53\x80\x67" + b"\x01\xff\xff\xff\xff\xff\xff\xff"  # unknown size
    return header + segment + bytes(32)


def _ogg_page(payload: bytes, sequence: int, flags: int) -> bytes:
    segments = [255] * (len(payload) // 255) + [len(payload) % 255]
    head = (b"OggS" + bytes([0, flags]) + struct.pack("<qII", 0, 0x52434653, sequence)
            + struct.pack("<I", 0) + bytes([len(segments)]) + bytes(segments))
    return head + payload


def ogg_vorbis() -> bytes:
    ident = b"\x01vorbis" + struct.pack("<IBIiiiB", 0, 1, 8000, 0, 64000, 0, 0xB8) + b"\x01"
    return _ogg_page(ident, 0, 0x02) + _ogg_page(b"\x03vorbis" + bytes(20), 1, 0)


def ogg_theora() -> bytes:
    ident = (b"\x80theora" + bytes([3, 2, 1]) + struct.pack(">HH", 4, 3) + (64).to_bytes(3, "big")
             + (48).to_bytes(3, "big") + bytes([0, 0]) + struct.pack(">II", 30, 1) + bytes(6)
             + bytes([0, 0, 0]) + bytes(3))
    return _ogg_page(ident, 0, 0x02) + _ogg_page(b"\x81theora" + bytes(20), 1, 0)


# ----------------------------------------------------------------------------- executables


def elf() -> bytes:
    return Path(shutil.which("true") or "/bin/true").read_bytes()


# ----------------------------------------------------------------------------- the table

# name -> (file extension, builder)
SAMPLES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "pdf": ("pdf", pdf),
    "tiff": ("tif", tiff_multipage),
    "jpeg": ("jpg", jpeg),
    "png": ("png", png),
    "gif": ("gif", gif),
    "bmp": ("bmp", bmp),
    "webp": ("webp", webp),
    "pcx": ("pcx", pcx),
    "tga": ("tga", tga),
    "psd": ("psd", psd),
    "svg": ("svg", svg),
    "text": ("txt", plain_text),
    "c": ("c", c_source),
    "cpp": ("cpp", cpp_source),
    "csv": ("csv", csv),
    "html": ("html", html),
    "xml": ("xml", xml),
    "rtf": ("rtf", rtf),
    "vcard": ("vcf", vcard),
    "icalendar": ("ics", icalendar),
    "zip": ("zip", zip_archive),
    "gzip": ("gz", gzip_file),
    "docx": ("docx", lambda: ooxml("docx")),
    "xlsx": ("xlsx", lambda: ooxml("xlsx")),
    "pptx": ("pptx", lambda: ooxml("pptx")),
    "doc": ("doc", lambda: ole2("WordDocument", "Microsoft Office Word")),
    "xls": ("xls", lambda: ole2("Workbook", "Microsoft Excel")),
    "ppt": ("ppt", lambda: ole2("PowerPoint Document", "Microsoft Office PowerPoint")),
    "wav": ("wav", wav),
    "mp3": ("mp3", mp3),
    "amr": ("amr", amr),
    "m4a": ("m4a", m4a),
    "mp4": ("mp4", mp4),
    "3gp": ("3gp", video_3gp),
    "mov": ("mov", quicktime),
    "mpeg": ("mpg", mpeg_video),
    "avi": ("avi", avi),
    "flv": ("flv", flv),
    "wmv": ("wmv", wmv),
    "webm": ("webm", webm),
    "ogg": ("ogg", ogg_vorbis),
    "ogv": ("ogv", ogg_theora),
    "elf": ("bin", elf),
}


def build(name: str) -> bytes:
    """The bytes of sample `name`."""
    return SAMPLES[name][1]()


def write_sample(directory: Path, name: str, filename: str | None = None) -> Path:
    """Write sample `name` into `directory` (as `filename`, default `sample.<ext>`)."""
    ext, builder = SAMPLES[name]
    path = directory / (filename or f"{name}.{ext}")
    path.write_bytes(builder())
    return path
