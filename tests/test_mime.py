"""The MIME corpus: real files of every type the contract names (tests/mime_samples.py),
plus impostors, checked against `file --mime-type` and against the contract's channel
lists (CONTRACT §9 fax sources, §10.2 MMS types, §11 greetings, §13 / seed
media-content.txt platform list).

The channel expectations below are written out from the contract's prose, by sample
name, not derived from rcfs.mime's tables: a table that drifts from the contract fails.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

import mime_samples
from rcfs import mime

pytestmark = pytest.mark.skipif(shutil.which("file") is None, reason="needs file(1)")

# What libmagic must call each sample: proves the builders made the real format.
EXPECTED = {
    "pdf": "application/pdf", "tiff": "image/tiff", "jpeg": "image/jpeg", "png": "image/png",
    "gif": "image/gif", "bmp": "image/bmp", "webp": "image/webp", "pcx": "image/x-pcx",
    "tga": "image/x-tga", "psd": "image/vnd.adobe.photoshop", "svg": "image/svg+xml",
    "text": "text/plain", "c": "text/x-c", "cpp": "text/x-c++", "csv": "text/csv",
    "html": "text/html", "xml": "text/xml", "rtf": "text/rtf", "vcard": "text/vcard",
    "icalendar": "text/calendar", "zip": "application/zip", "gzip": "application/gzip",
    "docx": mime.OOXML_DOCX, "xlsx": mime.OOXML_XLSX, "pptx": mime.OOXML_PPTX,
    "doc": "application/msword", "xls": "application/vnd.ms-excel",
    "ppt": "application/vnd.ms-powerpoint", "wav": "audio/x-wav", "mp3": "audio/mpeg",
    "amr": "audio/amr", "m4a": "audio/x-m4a", "mp4": "video/mp4", "3gp": "video/3gpp",
    "mov": "video/quicktime", "mpeg": "video/mpeg", "avi": "video/x-msvideo",
    "flv": "video/x-flv", "wmv": "video/x-ms-asf", "webm": "video/webm", "ogg": "audio/ogg",
    "ogv": "video/ogg", "elf": "application/x-pie-executable",
}

# CONTRACT §9 "Supported sources" (pdf psd doc/docx xls/xlsx ppt/pptx tif gif jpg bmp png
# pcx tga rtf txt c/cpp xml html csv); never audio, video, archives or programs.
FAX_ACCEPTS = {"pdf", "psd", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "tiff", "gif",
               "jpeg", "bmp", "png", "pcx", "tga", "rtf", "text", "c", "cpp", "xml", "html",
               "csv"}
# CONTRACT §10.2 allowed MIME types, by the samples that are of those types.
MMS_ACCEPTS = {"jpeg", "png", "bmp", "gif", "tiff", "svg", "webp", "3gp", "mp4", "mpeg",
               "avi", "flv", "wmv", "mov", "webm", "ogv", "mp3", "m4a", "ogg", "wav", "amr",
               "vcard", "zip", "gzip", "rtf", "pdf", "html", "text", "csv", "icalendar"}
GREETING_ACCEPTS = {"mp3", "wav"}
ACCEPTS = {"fax": FAX_ACCEPTS, "mms": MMS_ACCEPTS, "greeting": GREETING_ACCEPTS}

# Types of the lists no sample here can have, and why.
UNPRODUCIBLE = {
    "audio/3gpp": "libmagic names every 3GPP file video/3gpp, audio-only ones included",
    "application/xml": "libmagic names XML documents text/xml",
    "application/vnd.ms-office": "libmagic's fallback for OLE2 Office files it cannot place",
    "application/vnd.visio": "no tool here writes Visio files",
    "application/vnd.ms-publisher": "no tool here writes Publisher files",
    "application/vnd.ms-works": "no tool here writes Works files",
    "application/x-mswrite": "no tool here writes Windows Write files",
    "application/vnd.lotus-1-2-3": "no tool here writes Lotus 1-2-3 files",
}


def file_mime_types(paths: list[Path]) -> dict[Path, str]:
    """`file --mime-type -b` of each path (one run)."""
    out = subprocess.run(["file", "--mime-type", "-b", "--", *map(str, paths)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == len(paths), out
    return dict(zip(paths, lines))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("mime-corpus")
    return {name: mime_samples.write_sample(directory, name) for name in mime_samples.SAMPLES}


def head_of(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(mime.SNIFF_WINDOW)


# ----------------------------------------------------------------------------- the corpus


def test_sniffer_agrees_with_file_on_every_sample(corpus):
    told = file_mime_types(list(corpus.values()))
    for name, path in corpus.items():
        assert told[path] == EXPECTED[name], f"{name}: the sample is not what it claims"
        assert mime.sniff(head_of(path), path) == told[path], name
        if name != "elf":  # ELF: from a buffer libmagic cannot read the dynamic section
            assert mime.sniff(head_of(path)) == told[path], name
    assert mime.sniff(head_of(corpus["elf"])) in ("application/x-sharedlib",
                                                   "application/x-pie-executable")


def test_corpus_covers_every_listed_type(corpus):
    produced = {mime.canonical(EXPECTED[name]) for name in corpus}
    for listed in (mime.PLATFORM_TYPES, mime.MMS_TYPES, mime.GREETING_TYPES, mime.FAX_TYPES):
        missing = set(listed) - produced - set(UNPRODUCIBLE)
        assert not missing, f"no sample of {sorted(missing)}"
    assert set(UNPRODUCIBLE) <= mime.MMS_TYPES | mime.FAX_TYPES


def test_the_seed_list_names_what_the_platform_handles(corpus):
    # seed/media-content.txt, verbatim: every entry is accepted by MMS (its widest channel).
    seed = {"application/gzip", "application/rtf", "application/zip", "audio/amr", "audio/mp4",
            "audio/mpeg", "image/bmp", "image/gif", "image/jpeg", "image/png", "image/tiff",
            "text/vcard", "video/mp4", "video/mpeg"}
    assert mime.PLATFORM_TYPES == seed
    assert seed <= mime.MMS_TYPES


@pytest.mark.parametrize("channel", ["fax", "mms", "greeting"])
def test_channels_accept_and_refuse_as_the_contract_says(corpus, channel):
    for name, path in corpus.items():
        found = mime.sniff(head_of(path), path)
        if name in ACCEPTS[channel]:
            mime.check(channel, found)
        else:
            with pytest.raises(mime.MediaRejected) as info:
                mime.check(channel, found)
            assert info.value.errno == errno.EMEDIUMTYPE, name
            assert found in info.value.reason and info.value.mime == found


def test_fax_never_takes_audio_video_archives_or_programs(corpus):
    for name in corpus:
        major = EXPECTED[name].split("/")[0]
        if major in ("audio", "video") or name in ("zip", "gzip", "elf"):
            assert not mime.allowed("fax", EXPECTED[name]), name


def test_upload_types_use_the_platforms_names():
    assert mime.canonical("text/rtf") == "application/rtf"
    assert mime.canonical("audio/x-wav") == "audio/wav"
    assert mime.canonical("audio/x-m4a") == "audio/mp4"
    assert mime.canonical("video/x-msvideo") == "video/avi"
    assert mime.canonical("video/x-ms-asf") == "video/x-ms-wmv"
    assert mime.canonical("image/png") == "image/png"


# ----------------------------------------------------------------------------- impostors


@pytest.fixture(scope="module")
def impostors(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("impostors")
    return {
        "zip-as-pdf": mime_samples.write_sample(d, "zip", "contract.pdf"),
        "docx-as-pdf": mime_samples.write_sample(d, "docx", "letter.pdf"),
        "elf-as-jpg": mime_samples.write_sample(d, "elf", "holiday.jpg"),
        "mp4-as-pdf": mime_samples.write_sample(d, "mp4", "scan.pdf"),
        "text-as-png": mime_samples.write_sample(d, "text", "photo.png"),
        "jpeg-as-txt": mime_samples.write_sample(d, "jpeg", "notes.txt"),
        "xlsx-as-zip": mime_samples.write_sample(d, "xlsx", "backup.zip"),
    }


def test_impostors_are_judged_by_content(impostors):
    told = file_mime_types(list(impostors.values()))
    found = {label: mime.sniff(head_of(p), p) for label, p in impostors.items()}
    assert found == {label: told[p] for label, p in impostors.items()}
    assert found["zip-as-pdf"] == "application/zip"
    assert found["docx-as-pdf"] == mime.OOXML_DOCX
    assert found["elf-as-jpg"] == "application/x-pie-executable"
    assert found["mp4-as-pdf"] == "video/mp4"
    assert found["text-as-png"] == "text/plain"
    assert found["jpeg-as-txt"] == "image/jpeg"
    assert found["xlsx-as-zip"] == mime.OOXML_XLSX

    def refused(channel: str, label: str) -> int:
        with pytest.raises(mime.MediaRejected) as info:
            mime.check(channel, found[label])
        return info.value.errno

    assert refused("fax", "zip-as-pdf") == errno.EMEDIUMTYPE
    mime.check("fax", found["docx-as-pdf"])  # a real DOCX passes whatever its name
    assert refused("fax", "elf-as-jpg") == errno.EMEDIUMTYPE
    assert refused("mms", "elf-as-jpg") == errno.EMEDIUMTYPE
    assert refused("fax", "mp4-as-pdf") == errno.EMEDIUMTYPE
    mime.check("mms", found["text-as-png"])  # text is text: MMS takes text/plain
    assert refused("mms", "xlsx-as-zip") == errno.EMEDIUMTYPE  # not an archive: a workbook


def test_a_zip_of_ordinary_files_named_docx_is_a_zip(tmp_path):
    path = mime_samples.write_sample(tmp_path, "zip", "letter.docx")
    assert mime.sniff(b"", path) == file_mime_types([path])[path] == "application/zip"
    with pytest.raises(mime.MediaRejected):
        mime.check("fax", mime.sniff(b"", path))


# ----------------------------------------------------------------------------- early decision


def test_signature_formats_are_refused_from_the_first_bytes():
    video = mime_samples.mp4(mdat=200_000)
    program = mime_samples.elf()
    assert mime.sniff_prefix(video[:mime.EARLY_BYTES]) == "video/mp4"
    with pytest.raises(mime.MediaRejected) as info:
        mime.check_prefix("fax", video[:mime.EARLY_BYTES])
    assert info.value.errno == errno.EMEDIUMTYPE
    for channel in ("fax", "mms", "greeting"):
        with pytest.raises(mime.MediaRejected):
            mime.check_prefix(channel, program[:mime.EARLY_BYTES])
    assert mime.check_prefix("mms", video[:mime.EARLY_BYTES]) == "video/mp4"


def test_nothing_is_decided_from_fewer_than_early_bytes():
    program = mime_samples.elf()
    assert mime.sniff_prefix(program[:mime.EARLY_BYTES - 1]) is None
    assert mime.check_prefix("fax", program[:100]) is None


def test_containers_and_text_wait_for_the_whole_file(tmp_path):
    # A DOCX whose first part is large: still a ZIP after 64 KiB, a DOCX only in full.
    path = tmp_path / "big.docx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("[Content_Types].xml", "<Types>" + "<!-- pad -->" * 3000 + "</Types>")
        z.writestr("_rels/.rels", "<Relationships/>")
        z.writestr("word/document.xml", "<w:document/>")
    data = path.read_bytes()
    assert len(data) > 32 * 1024
    assert mime.sniff_prefix(data[:8192]) is None
    assert mime.check_prefix("fax", data[:8192]) is None  # not refused: it may be a DOCX
    assert mime.sniff(data, path) == mime.OOXML_DOCX == file_mime_types([path])[path]
    text = b"line of a letter\n" * 1000
    assert mime.sniff_prefix(text) is None
    assert mime.sniff_prefix(mime_samples.ole2("WordDocument", "Microsoft Office Word")) is None


def test_a_zip_is_settled_once_libmagic_has_its_whole_window(tmp_path):
    path = tmp_path / "archive.pdf"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("blob.bin", os.urandom(mime.SNIFF_WINDOW + 4096))
    data = path.read_bytes()
    assert mime.sniff_prefix(data[:mime.SNIFF_WINDOW - 1]) is None
    assert mime.sniff_prefix(data[:mime.SNIFF_WINDOW]) == "application/zip"
    with pytest.raises(mime.MediaRejected):
        mime.check_prefix("fax", data[:mime.SNIFF_WINDOW])
    assert file_mime_types([path])[path] == "application/zip"


def test_an_early_answer_is_the_final_answer(corpus):
    """Wherever sniff_prefix answers, the complete file gets the same type."""
    for name, path in corpus.items():
        data = path.read_bytes()
        if name == "mp4":
            data = mime_samples.mp4(mdat=50_000)
        if len(data) < mime.EARLY_BYTES:
            continue
        for size in (mime.EARLY_BYTES, 2 * mime.EARLY_BYTES, len(data)):
            early = mime.sniff_prefix(data[:size])
            assert early is None or early == mime.sniff(data), (name, size, early)


# ----------------------------------------------------------------------------- limits


def test_mms_limits_ten_files_and_one_and_a_half_megabytes():
    mime.check_sizes("mms", [1000] * 10)
    with pytest.raises(mime.MediaRejected) as info:
        mime.check_sizes("mms", [1000] * 11)
    assert info.value.errno == errno.EFBIG and "10" in info.value.reason
    mime.check_sizes("mms", [1_000_000, 500_000])
    with pytest.raises(mime.MediaRejected) as info:
        mime.check_sizes("mms", [1_000_000, 500_001])
    assert info.value.errno == errno.EFBIG


def test_fax_and_greeting_size_limits_and_empty_files():
    mime.check_sizes("fax", [50_000_000])
    with pytest.raises(mime.MediaRejected) as info:
        mime.check_sizes("fax", [25_000_000, 25_000_001])
    assert info.value.errno == errno.EFBIG
    mime.check_sizes("greeting", [20_000_000])
    with pytest.raises(mime.MediaRejected):
        mime.check_sizes("greeting", [20_000_001])
    with pytest.raises(mime.MediaRejected) as info:
        mime.check_sizes("fax", [10, 0])
    assert info.value.errno == errno.EINVAL


def test_an_empty_file_is_einval(tmp_path):
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    found = mime.sniff(b"", path)
    assert found == file_mime_types([path])[path]
    with pytest.raises(mime.MediaRejected) as info:
        mime.check("fax", found)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(mime.MediaRejected):
        mime.check("mms", mime.sniff(b""))


def test_page_counts_where_the_file_tells(corpus, tmp_path):
    pypdf = pytest.importorskip("pypdf")
    assert mime.page_count("image/tiff", corpus["tiff"]) == 3
    with corpus["tiff"].open("rb") as f:
        from PIL import Image
        assert Image.open(f).n_frames == 3
    pdf_pages = mime.page_count("application/pdf", corpus["pdf"])
    assert pdf_pages == len(pypdf.PdfReader(corpus["pdf"]).pages) == 2
    assert mime.page_count("image/jpeg", corpus["jpeg"]) == 1
    assert mime.page_count("text/plain", corpus["text"]) is None
    assert mime.page_count(mime.OOXML_DOCX, corpus["docx"]) is None
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00\xff\xff\x00\x00")
    assert mime.page_count("image/tiff", broken) is None


def test_page_limit_of_a_fax():
    mime.check_pages("fax", 200)
    mime.check_pages("fax", None)  # unknown: the platform decides (TooManyPages)
    with pytest.raises(mime.MediaRejected) as info:
        mime.check_pages("fax", 201)
    assert info.value.errno == errno.EFBIG
    mime.check_pages("mms", 500)  # MMS has no page limit


def test_refusals_explain_themselves_in_words():
    with pytest.raises(mime.MediaRejected) as info:
        mime.check("fax", "application/zip")
    assert str(info.value) == "a ZIP archive (application/zip) cannot be sent as a fax"
    with pytest.raises(mime.MediaRejected) as info:
        mime.check("mms", "application/x-pie-executable")
    assert str(info.value).startswith("an executable (application/x-pie-executable)")
