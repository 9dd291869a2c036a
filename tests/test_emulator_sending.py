"""The emulator's sending endpoints: multipart parsing, sniffing, validation, the lazy
Queued -> Sent transition, and (over real HTTP) every request shape the contract names.

Multipart bodies are produced by real encoders (requests, the official SDK's
MultipartBuilder, httpx) or written out byte for byte where the shape is what matters
(multipart/mixed with `Content-Disposition: attachment`, parts without headers).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import shutil
import subprocess
import time
import zipfile

import httpx
import pytest
import requests

import mime_samples
from rcfs.emulator import media
from rcfs.emulator.app import Emulator
from rcfs.emulator.config import EmulatorConfig
from rcfs.emulator.multipart import (MultipartError, boundary_of, count_pages,
                                     parse_multipart, sniff)
from rcfs.emulator.sending import (FAX_MAX_ATTACHMENTS, SendError, SendRequest, Upload,
                                   conversation_id, new_fax, new_greeting, new_sms,
                                   normalize_phone, pending_count, resend_fax, settle_sends,
                                   split_parts, utf16_units)
from rcfs.emulator.store import UTC, Store

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
MAIN = "+16505550100"


# ----------------------------------------------------------------------------- helpers


@dataclasses.dataclass
class Account:
    """The parts of the Emulator the sending logic uses, around a real Store and config
    (the HTTP tests below exercise the real Emulator)."""

    store: Store
    config: EmulatorConfig
    platform_base: str = "http://127.0.0.1:1"
    media_base: str = "http://127.0.0.1:2"


class Clock:
    """A settable clock for `Store(now=...)`."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.t = start

    def __call__(self) -> dt.datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def account(clock: Clock) -> Account:
    return Account(Store(main_number=MAIN, now=clock), EmulatorConfig(send_delay=2.0))


def pdf(pages: int = 3) -> bytes:
    return media.fax_pdf(7, pages).read(0, 10**9)


def prepared(files, data=None, mixed: bool = False) -> tuple[bytes, str]:
    """(body, content-type header) as `requests` encodes a multipart upload."""
    req = requests.Request("POST", "http://127.0.0.1/fax", files=files, data=data).prepare()
    ctype = req.headers["Content-Type"]
    if mixed:
        ctype = ctype.replace("multipart/form-data;", "multipart/mixed;")
    return req.body, ctype


def parts_of(body: bytes, ctype: str):
    return parse_multipart(body, boundary_of(ctype))


def mixed_body(boundary: str, parts: list[tuple[list[str], bytes]]) -> bytes:
    out = b""
    for headers, data in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        out += b"".join(h.encode() + b"\r\n" for h in headers) + b"\r\n" + data + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


def upload(name: str, data: bytes, declared: str | None = None) -> Upload:
    return Upload(name, data, declared, sniff(data, name, declared))


def fax_request(to=("+15551230001",), files=None, **fields) -> SendRequest:
    files = files if files is not None else [upload("doc.pdf", pdf(3), "application/pdf")]
    return SendRequest(envelope={"to": [{"phoneNumber": n} for n in to], **fields},
                       uploads=list(files))


def expect_error(status: int, code: str, fn, *args, **kw) -> SendError:
    with pytest.raises(SendError) as info:
        fn(*args, **kw)
    assert (info.value.status, info.value.code) == (status, code), info.value
    return info.value


ELF = b"\x7fELF\x02\x01\x01" + bytes(200)


# ----------------------------------------------------------------------------- sniffing


def test_sniff_recognises_real_media_by_their_bytes():
    cases = {
        "application/pdf": media.fax_pdf(1, 1),
        "image/tiff": media.fax_tiff(1, 2),
        "image/jpeg": media.image_jpeg(1),
        "image/png": media.image_png(1),
        "image/gif": media.image_gif(1),
        "audio/mpeg": media.audio_mp3(1, 2),
        "audio/wav": media.audio_wav(1, 1),
    }
    for expected, obj in cases.items():
        data = obj.read(0, obj.size)
        # The declared type and name lie on purpose: only the bytes count.
        assert sniff(data, "x.txt", "text/plain") == expected


def test_sniff_text_flavours_and_containers():
    assert sniff(b"hello\nworld\n", "a.txt", None) == "text/plain"
    assert sniff(b"a,b\n1,2\n", "a.csv", None) == "text/csv"
    assert sniff(b"a,b\n1,2\n", "upload", "text/csv") == "text/csv"
    assert sniff(b"<!DOCTYPE html><html></html>", "a.txt", None) == "text/html"
    assert sniff(b"<?xml version='1.0'?><a/>", None, None) == "application/xml"
    assert sniff(b"BEGIN:VCARD\r\nEND:VCARD\r\n", None, None) == "text/vcard"
    assert sniff("Grüße €".encode(), None, None) == "text/plain"
    assert sniff(b"BMW is a car maker\n", None, None) == "text/plain"  # not a bitmap
    docx = mime_samples.ooxml("docx")
    assert sniff(docx, "letter.docx", None).endswith("wordprocessingml.document")
    # The entries decide, not the name: a DOCX is a DOCX by any name, a ZIP stays a ZIP.
    assert sniff(docx, "photos.zip", None).endswith("wordprocessingml.document")
    assert sniff(mime_samples.ooxml("xlsx"), "x.bin", None).endswith("spreadsheetml.sheet")
    assert sniff(mime_samples.zip_archive(), "letter.docx", None) == "application/zip"
    only_types = io.BytesIO()
    with zipfile.ZipFile(only_types, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
    assert sniff(only_types.getvalue(), "letter.docx", None) == "application/zip"
    assert sniff(b"PK\x03\x04 truncated", "letter.docx", None) == "application/zip"
    assert sniff(ELF, "doc.pdf", "application/pdf") == "application/octet-stream"
    assert sniff(bytes(range(256)) * 4, "blob.bin", None) == "application/octet-stream"
    assert sniff(bytes(range(256)) * 4, "old.wk1", None) == "application/vnd.lotus-1-2-3"


def test_count_pages_of_pdf_tiff_and_text():
    pypdf = pytest.importorskip("pypdf")
    data = pdf(4)
    assert len(pypdf.PdfReader(io.BytesIO(data)).pages) == 4
    assert count_pages(data, "application/pdf") == 4
    tiff = media.fax_tiff(3, 5)
    assert count_pages(tiff.read(0, tiff.size), "image/tiff") == 5
    assert count_pages(b"line\n" * 60, "text/plain") == 1
    assert count_pages(b"line\n" * 61, "text/plain") == 2
    assert count_pages(b"%PDF-1.4 garbage", "application/pdf") == 1
    assert count_pages(b"II*\x00\xff\xff\xff\x7f", "image/tiff") == 1  # broken offset


# ----------------------------------------------------------------------------- multipart


def test_parse_flat_form_fields_as_requests_encodes_them():
    body, ctype = prepared(
        files=[("attachment", ("fax one.pdf", pdf(1), "application/pdf")),
               ("attachment", ("notes.txt", b"hello\n"))],
        data=[("to", "18005554567"), ("to", "+1 650 555 0199"), ("faxResolution", "High"),
              ("coverIndex", "0")])
    parts = parts_of(body, ctype)
    req = split_parts(parts)
    assert req.envelope == {}
    assert req.flat["to"] == ["18005554567", "+1 650 555 0199"]
    assert req.value("faxResolution") == "High"
    assert [(u.filename, u.content_type) for u in req.uploads] == [
        ("fax one.pdf", "application/pdf"), ("notes.txt", "text/plain")]
    assert req.uploads[0].data == pdf(1)
    assert req.uploads[1].declared is None  # requests sent no Content-Type for it


def test_parse_the_official_sdk_builder_both_outer_types():
    from ringcentral import SDK
    sdk = SDK("id", "secret", "http://127.0.0.1:9")
    for mixed in (False, True):
        builder = sdk.create_multipart_builder()
        builder.set_body({"to": [{"phoneNumber": "+15551230002", "name": "Ann"}],
                          "faxResolution": "Low", "coverPageText": "hi"})
        builder.add(("report.pdf", pdf(2), "application/pdf"))
        builder.add(("readme.txt", b"plain words\n"))  # no MIME type: part without Content-Type
        builder.set_multipart_mixed(mixed)
        request = builder.request("http://127.0.0.1:9/restapi/v1.0/account/~/extension/~/fax")
        prep = request if isinstance(request, requests.PreparedRequest) else request.prepare()
        ctype = prep.headers["Content-Type"]
        assert ctype.startswith("multipart/mixed;" if mixed else "multipart/form-data;")
        parts = parts_of(prep.body, ctype)
        assert parts[0].name == "json" and parts[0].filename == "request.json"
        assert parts[2].content_type is None
        req = split_parts(parts)
        assert req.envelope["to"][0]["name"] == "Ann"
        assert [u.filename for u in req.uploads] == ["report.pdf", "readme.txt"]
        assert [u.content_type for u in req.uploads] == ["application/pdf", "text/plain"]


def test_parse_multipart_mixed_with_attachment_dispositions():
    envelope = {"to": [{"phoneNumber": "18005554567"}], "faxResolution": "High"}
    body = b"preamble to ignore\r\n" + mixed_body("XyZ", [
        (["Content-Type: application/json"], json.dumps(envelope).encode()),
        (['Content-Disposition: attachment; filename="fax.txt"', "Content-Type: text/plain"],
         b"first document\r\nsecond line"),
        (["Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"], pdf(1)),
    ]) + b"epilogue"
    req = split_parts(parse_multipart(body, "XyZ"))
    assert req.envelope == envelope
    assert req.uploads[0].data == b"first document\r\nsecond line"  # CRLF inside kept
    assert req.uploads[1].filename == "résumé.pdf"
    assert req.uploads[1].content_type == "application/pdf"


def test_broken_multipart_bodies():
    with pytest.raises(MultipartError):
        parse_multipart(b"no boundary here", "abc")
    with pytest.raises(MultipartError):
        parse_multipart(b"--abc\r\nContent-Type: text/plain\r\n\r\nunterminated", "abc")
    with pytest.raises(MultipartError):
        parse_multipart(b"--abc\r\nthis is no header\r\n\r\nx\r\n--abc--", "abc")
    parts = parse_multipart(b"--abc\r\n\r\nheaderless\r\n--abc--", "abc")
    assert parts[0].headers == {} and parts[0].data == b"headerless"


def test_part_errors_msg_349_350_351():
    bad_json = mixed_body("b", [(["Content-Type: application/json"], b"{not json"),
                                (['Content-Disposition: attachment; filename="a.txt"'], b"x")])
    expect_error(400, "MSG-349", split_parts, parse_multipart(bad_json, "b"))
    no_disp = mixed_body("b", [(["Content-Type: application/json"], b"{}"),
                               (["Content-Type: application/pdf"], pdf(1))])
    expect_error(400, "MSG-350", split_parts, parse_multipart(no_disp, "b"))
    no_name = mixed_body("b", [(["Content-Type: application/json"], b"{}"),
                               (["Content-Disposition: attachment"], pdf(1))])
    expect_error(400, "MSG-351", split_parts, parse_multipart(no_name, "b"))
    form_no_name = mixed_body("b", [(['Content-Disposition: form-data; name="attachment"'], b"x")])
    expect_error(400, "MSG-351", split_parts, parse_multipart(form_no_name, "b"))


def test_client_side_paths_are_cut_to_the_file_name():
    body = mixed_body("b", [(['Content-Disposition: form-data; name="attachment"; '
                              'filename="C:\\\\Users\\\\me\\\\..\\\\scan.pdf"'], pdf(1)),
                            (['Content-Disposition: form-data; name="attachment"; '
                              'filename="../../etc/passwd"'], b"root\n")])
    req = split_parts(parse_multipart(body, "b"))
    assert [u.filename for u in req.uploads] == ["scan.pdf", "passwd"]


# ----------------------------------------------------------------------------- fields


def test_phone_numbers_and_text_length():
    assert normalize_phone("18005554567", "to") == "+18005554567"
    assert normalize_phone("(650) 555-0199", "to") == "+16505550199"
    assert normalize_phone("+44 20 7946 0958", "to") == "+442079460958"
    for bad in ("call me", "", None, True, "+1-800-FLOWERS"):
        expect_error(400, "CMN-101", normalize_phone, bad, "to")
    assert utf16_units("a" * 10) == 10
    assert utf16_units("😀") == 2
    assert conversation_id(["+1", "+2"]) == conversation_id(["+2", "+1", "+2"])
    assert conversation_id(["+1", "+2"]) > 2**53


# ----------------------------------------------------------------------------- fax logic


def test_fax_is_queued_then_sent_after_the_delay(account: Account, clock: Clock):
    msg = new_fax(account, fax_request(faxResolution="High"))
    assert (msg.type, msg.direction, msg.message_status) == ("Fax", "Outbound", "Queued")
    assert msg.fax_page_count == 0 and msg.fax_resolution == "High"
    assert msg.to[0].phone_number == "+15551230001" and msg.from_.phone_number == MAIN
    att = msg.attachments[0]
    assert (att.type, att.file_name, att.media.content_type) == (
        "SourceDocument", "doc.pdf", "application/pdf")
    assert att.media.read(0, att.media.size) == pdf(3)
    assert account.store.messages[msg.id] is msg
    seq = account.store.last_change_seq

    clock.advance(1.9)
    assert settle_sends(account.store) == 0 and msg.message_status == "Queued"
    clock.advance(0.2)
    assert settle_sends(account.store) == 1
    assert msg.message_status == "Sent"
    assert msg.fax_page_count == 4  # 3 document pages + the default cover page
    assert msg.last_modified == clock.t
    assert [m.id for m in account.store.changed_since(seq)] == [msg.id]
    assert settle_sends(account.store) == 0 and pending_count(account.store) == 0


def test_fax_to_a_failing_number_ends_sending_failed(account: Account, clock: Clock):
    msg = new_fax(account, fax_request(to=("+15551230001", "15550000666"), coverIndex=0))
    clock.advance(5)
    settle_sends(account.store)
    assert msg.message_status == "SendingFailed"
    assert msg.fax_error_code == "NoAnswer"
    # Each recipient has its own outcome: only the failing number carries the code.
    assert [(p.message_status, p.fax_error_code) for p in msg.to] == [
        ("Sent", None), ("SendingFailed", "NoAnswer")]
    body = Emulator(account.config, account.store).render_message(msg)
    assert body["to"] == [
        {"phoneNumber": "+15551230001", "messageStatus": "Sent"},
        {"phoneNumber": "+15550000666", "messageStatus": "SendingFailed",
         "faxErrorCode": "NoAnswer"}]


def test_too_many_pages_fails_every_recipient(account: Account, clock: Clock):
    text = upload("long.txt", b"x\n" * (60 * 201))
    msg = new_fax(account, fax_request(to=("+15551230001", "+15551230002"), files=[text],
                                       coverIndex=0))
    clock.advance(3)
    settle_sends(account.store)
    assert [(p.message_status, p.fax_error_code) for p in msg.to] == [
        ("SendingFailed", "TooManyPages")] * 2


def test_mms_sender_needs_the_mms_feature(account: Account):
    jpeg = media.image_jpeg(1).read(0, 10**7)
    support = MAIN[:-2] + "01"  # numbers.py: SMS only
    new_sms(account, sms_request(sender=support), require_attachments=False)
    err = expect_error(403, "MSG-242", new_sms, account,
                       sms_request(sender=support, files=[upload("p.jpg", jpeg)]),
                       require_attachments=True)
    assert "MMS" in err.message and err.extra["parameterValue"] == support
    expect_error(403, "MSG-241", new_sms, account, sms_request(sender=MAIN[:-2] + "09"),
                 require_attachments=False)


def test_fax_without_cover_page_and_scheduled(account: Account, clock: Clock):
    later = (T0 + dt.timedelta(seconds=60)).isoformat().replace("+00:00", "Z")
    msg = new_fax(account, fax_request(coverIndex="0", sendTime=later))
    clock.advance(30)
    settle_sends(account.store)
    assert msg.message_status == "Queued"
    clock.advance(32.5)
    settle_sends(account.store)
    assert (msg.message_status, msg.fax_page_count, msg.cover_index) == ("Sent", 3, 0)


def test_deleting_a_queued_fax_cancels_it(account: Account, clock: Clock):
    msg = new_fax(account, fax_request())
    msg.availability = "Deleted"
    clock.advance(10)
    assert settle_sends(account.store) == 0
    assert msg.message_status == "Queued" and pending_count(account.store) == 0


def test_fax_with_too_many_pages_fails_rendering(account: Account, clock: Clock):
    text = upload("long.txt", b"x\n" * (60 * 201))
    msg = new_fax(account, fax_request(files=[text], coverIndex=0))
    clock.advance(3)
    settle_sends(account.store)
    assert (msg.message_status, msg.fax_error_code) == ("SendingFailed", "TooManyPages")


def test_fax_validation_errors(account: Account):
    expect_error(400, "CMN-101", new_fax, account, fax_request(to=()))
    err = expect_error(400, "CMN-101", new_fax, account, fax_request(files=[]))
    assert err.extra["parameterName"] == "attachment"
    expect_error(400, "MSG-347", new_fax, account, fax_request(files=[upload("e.pdf", b"")]))
    err = expect_error(415, "MSG-348", new_fax, account,
                       fax_request(files=[upload("doc.pdf", ELF, "application/pdf")]))
    assert "octet-stream" in err.message
    expect_error(415, "MSG-348", new_fax, account,
                 fax_request(files=[upload("song.pdf", media.audio_mp3(1, 1).read(0, 99999))]))
    expect_error(400, "CMN-101", new_fax, account, fax_request(faxResolution="Ultra"))
    expect_error(400, "CMN-101", new_fax, account, fax_request(coverIndex=14))
    expect_error(400, "CMN-101", new_fax, account, fax_request(coverIndex="two"))
    expect_error(400, "CMN-101", new_fax, account, fax_request(coverPageText="x" * 1025))
    expect_error(400, "CMN-101", new_fax, account, fax_request(sendTime="tomorrow"))
    expect_error(400, "CMN-101", new_fax, account, fax_request(to=("not a number",)))
    assert account.store.messages == {}


def test_fax_size_limit(account: Account):
    half = FAX_MAX_ATTACHMENTS // 2
    big = [upload("a.txt", b"a" * half), upload("b.txt", b"b" * (half + 1))]
    expect_error(400, "MSG-337", new_fax, account, fax_request(files=big))
    assert account.store.messages == {}


def test_fax_resend(account: Account, clock: Clock):
    first = new_fax(account, fax_request(files=[upload("doc.pdf", pdf(2))], coverIndex=0))
    expect_error(406, "MSG-343", resend_fax, account, {"originalMessageId": str(first.id)})
    clock.advance(3)
    settle_sends(account.store)
    again = resend_fax(account, {"originalMessageId": str(first.id)})
    assert again.id != first.id and again.message_status == "Queued"
    assert [p.phone_number for p in again.to] == ["+15551230001"]
    assert again.attachments[0].media is first.attachments[0].media
    assert again.attachments[0].id != first.attachments[0].id
    forward = resend_fax(account, {"originalMessageId": first.id,
                                   "to": [{"phoneNumber": "+15557654321"}]})
    assert forward.to[0].phone_number == "+15557654321"
    clock.advance(3)
    settle_sends(account.store)
    assert (again.message_status, again.fax_page_count) == ("Sent", 2)
    expect_error(404, "CMN-102", resend_fax, account, {"originalMessageId": "123"})
    expect_error(400, "CMN-101", resend_fax, account, {})
    expect_error(400, "CMN-101", resend_fax, account, {"originalMessageId": "abc"})


# ----------------------------------------------------------------------------- sms / mms


def sms_request(text="hello", to=("+15551230009",), files=(), sender=MAIN) -> SendRequest:
    return SendRequest(envelope={"from": {"phoneNumber": sender},
                                 "to": [{"phoneNumber": n} for n in to], "text": text},
                       uploads=list(files))


def test_sms_is_stored_with_a_text_part_and_sent(account: Account, clock: Clock):
    msg = new_sms(account, sms_request("hi there 😀"), require_attachments=False)
    assert (msg.type, msg.direction, msg.message_status) == ("SMS", "Outbound", "Queued")
    assert msg.subject == "hi there 😀"
    [text] = msg.attachments
    assert text.type == "Text" and text.text == "hi there 😀"
    assert text.media.read(0, 100) == "hi there 😀".encode()
    assert msg.conversation_id == conversation_id([MAIN, "+15551230009"])
    clock.advance(2)
    settle_sends(account.store)
    assert msg.message_status == "Sent"


def test_sms_limits(account: Account):
    new_sms(account, sms_request("😀" * 500), require_attachments=False)
    err = expect_error(400, "CMN-101", new_sms, account, sms_request("😀" * 500 + "a"),
                       require_attachments=False)
    assert err.extra["parameterName"] == "text"
    expect_error(400, "MSG-245", new_sms, account, sms_request(sender="+15559999999"),
                 require_attachments=False)
    expect_error(400, "CMN-101", new_sms, account, sms_request(text=None),
                 require_attachments=False)
    expect_error(400, "CMN-101", new_sms, account, sms_request(to=()), require_attachments=False)
    expect_error(400, "CMN-101", new_sms, account, sms_request(), require_attachments=True)


def test_mms_attachments(account: Account, clock: Clock):
    jpeg = media.image_jpeg(3).read(0, 10**7)
    card = media.vcard(1, "Ann Example", "+15551112222").read(0, 10**6)
    msg = new_sms(account, sms_request("look", files=[upload("p.jpg", jpeg, "image/jpeg"),
                                                      upload("ann.vcf", card)]),
                  require_attachments=True)
    assert [a.type for a in msg.attachments] == ["Text", "MmsAttachment", "MmsAttachment"]
    assert [a.media.content_type for a in msg.attachments[1:]] == ["image/jpeg", "text/vcard"]
    assert msg.attachments[1].media.read(0, len(jpeg)) == jpeg
    only_image = new_sms(account, sms_request(None, files=[upload("p.jpg", jpeg)]),
                         require_attachments=True)
    assert [a.type for a in only_image.attachments] == ["MmsAttachment"]

    eleven = [upload(f"{i}.jpg", jpeg) for i in range(11)]
    expect_error(400, "CMN-101", new_sms, account, sms_request(files=eleven),
                 require_attachments=True)
    ten_big = [upload(f"{i}.txt", b"x" * 150_001) for i in range(10)]
    expect_error(400, "MSG-337", new_sms, account, sms_request(files=ten_big),
                 require_attachments=True)
    exactly = [upload(f"{i}.txt", b"x" * 150_000) for i in range(10)]
    new_sms(account, sms_request(files=exactly), require_attachments=True)
    expect_error(415, "MSG-348", new_sms, account, sms_request(files=[upload("a.jpg", ELF)]),
                 require_attachments=True)
    expect_error(415, "MSG-348", new_sms, account,
                 sms_request(files=[upload("a.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(99))]),
                 require_attachments=True)
    expect_error(400, "MSG-347", new_sms, account, sms_request(files=[upload("a.jpg", b"")]),
                 require_attachments=True)


# ----------------------------------------------------------------------------- greetings


def greeting_request(files, **envelope) -> SendRequest:
    return SendRequest(envelope=envelope, uploads=list(files))


def test_greeting_upload(account: Account):
    mp3 = media.audio_mp3(4, 2).read(0, 10**7)
    g = new_greeting(account, greeting_request([upload("hello.mp3", mp3)], type="Voicemail",
                                               answeringRule={"id": "business-hours-rule"}))
    assert account.store.greetings[g.id] is g
    assert (g.type, g.media.content_type, g.answering_rule_id) == (
        "Voicemail", "audio/mpeg", "business-hours-rule")
    assert g.media.read(0, len(mp3)) == mp3
    wav = media.audio_wav(4, 1).read(0, 10**7)
    flat = SendRequest(flat={"type": ["Announcement"], "answeringRuleId": ["7"]},
                       uploads=[upload("a.wav", wav)])
    g2 = new_greeting(account, flat, apply=False)
    assert (g2.media.content_type, g2.answering_rule_id) == ("audio/wav", None)

    png = media.image_png(1).read(0, 10**7)
    expect_error(415, "MSG-348", new_greeting, account,
                 greeting_request([upload("x.mp3", png, "audio/mpeg")], type="Voicemail"))
    expect_error(400, "MSG-347", new_greeting, account,
                 greeting_request([upload("x.mp3", b"")], type="Voicemail"))
    expect_error(400, "CMN-101", new_greeting, account,
                 greeting_request([upload("x.mp3", mp3)], type="Company"))
    expect_error(400, "CMN-101", new_greeting, account,
                 greeting_request([upload("x.mp3", mp3)]))
    expect_error(400, "CMN-101", new_greeting, account, greeting_request([], type="Voicemail"))


# ============================================================================ over HTTP
# The real Emulator apps, in process over httpx's ASGI transport (the store clock is
# injectable only in process); tests/test_emulator_sdk.py and the curl test below cover
# real loopback HTTP.

PLATFORM, MEDIA = "http://platform.test", "http://media.test"
EXT = "/restapi/v1.0/account/~/extension/~"


@dataclasses.dataclass
class Api:
    """An authenticated httpx client on an in-process Emulator."""

    emu: Emulator
    client: httpx.AsyncClient
    clock: Clock

    async def post(self, path: str, **kw) -> httpx.Response:
        return await self.client.post(PLATFORM + EXT + path, **kw)

    async def get(self, url: str, **kw) -> httpx.Response:
        return await self.client.get(url if url.startswith("http") else PLATFORM + EXT + url, **kw)


@pytest.fixture
async def api(clock: Clock):
    config = EmulatorConfig(send_delay=2.0, rate_limits=False)
    emu = Emulator(config, Store(main_number=MAIN, now=clock))
    emu.platform_base, emu.media_base = PLATFORM, MEDIA
    mounts = {PLATFORM: httpx.ASGITransport(emu.platform_app),
              MEDIA: httpx.ASGITransport(emu.media_app)}
    async with httpx.AsyncClient(mounts=mounts, timeout=10) as client:
        r = await client.post(PLATFORM + "/restapi/oauth/token",
                              auth=(config.client_id, config.client_secret),
                              data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                    "assertion": config.jwt})
        assert r.status_code == 200, r.text
        client.headers["Authorization"] = "Bearer " + r.json()["access_token"]
        yield Api(emu, client, clock)


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["errors"][0]["errorCode"] == code, body
    assert body["errorCode"] and body["message"] and body["errors"][0]["message"]
    return body


async def check_fax_response(api: Api, r: httpx.Response, docs: list[tuple[str, bytes]]) -> dict:
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["type"], body["direction"], body["messageStatus"]) == ("Fax", "Outbound", "Queued")
    assert body["faxPageCount"] == 0
    assert body["uri"] == f"{PLATFORM}{api.emu.extension_path}/message-store/{body['id']}"
    assert [a["filename"] for a in body["attachments"]] == [name for name, _ in docs]
    assert all("fileName" not in a for a in body["attachments"])
    for att, (_, data) in zip(body["attachments"], docs):
        assert att["uri"].startswith(MEDIA + "/") and att["size"] == len(data)
        content = await api.get(att["uri"])
        assert content.status_code == 200 and content.content == data
        assert content.headers["content-type"].startswith(att["contentType"])
    return body


async def test_fax_shape_1_flat_form_fields(api: Api):
    doc = pdf(2)
    r = await api.post("/fax", data={"to": ["18005554567", "+16505550199"],
                                     "faxResolution": "High", "coverIndex": "0"},
                       files=[("attachment", ("scan.pdf", doc, "application/pdf")),
                              ("attachment", ("notes.txt", b"hello\nworld\n", "text/plain"))])
    body = await check_fax_response(api, r, [("scan.pdf", doc), ("notes.txt", b"hello\nworld\n")])
    assert [t["phoneNumber"] for t in body["to"]] == ["+18005554567", "+16505550199"]
    assert body["faxResolution"] == "High" and body["coverIndex"] == 0
    assert [a["contentType"] for a in body["attachments"]] == ["application/pdf", "text/plain"]


async def test_fax_shape_2_multipart_mixed_json_envelope(api: Api):
    doc = b"Dear sir,\r\nplease find\r\n"
    envelope = {"to": [{"phoneNumber": "18005554567", "name": "Bob"}], "faxResolution": "Low",
                "coverPageText": "urgent"}
    body = mixed_body("mixed-boundary-1", [
        (["Content-Type: application/json"], json.dumps(envelope).encode()),
        (['Content-Disposition: attachment; filename="fax.txt"', "Content-Type: text/plain"], doc),
    ])
    r = await api.post("/fax", content=body,
                       headers={"Content-Type": "multipart/mixed; boundary=mixed-boundary-1"})
    out = await check_fax_response(api, r, [("fax.txt", doc)])
    assert out["to"][0] == {"phoneNumber": "+18005554567", "name": "Bob", "messageStatus": "Queued"}
    assert out["coverPageText"] == "urgent"


async def test_fax_shape_3_sdk_builder_and_lazy_transition(api: Api):
    from ringcentral import SDK
    builder = SDK("id", "secret", PLATFORM).create_multipart_builder()
    builder.set_body({"to": [{"phoneNumber": "+15551230001"}]})
    builder.add(("report.pdf", pdf(3)))  # no MIME type: the part has no Content-Type
    prep = builder.request(PLATFORM + EXT + "/fax").prepare()
    r = await api.post("/fax", content=prep.body,
                       headers={"Content-Type": prep.headers["Content-Type"]})
    body = await check_fax_response(api, r, [("report.pdf", pdf(3))])
    assert body["attachments"][0]["contentType"] == "application/pdf"

    sync = (await api.get("/message-sync", params={"syncType": "FSync",
                                                   "dateFrom": "2026-01-01T00:00:00Z"})).json()
    assert [m["id"] for m in sync["records"]] == [body["id"]]
    api.clock.advance(1)
    assert (await api.get(f"/message-store/{body['id']}")).json()["messageStatus"] == "Queued"
    api.clock.advance(1.5)
    msg = (await api.get(f"/message-store/{body['id']}")).json()
    assert (msg["messageStatus"], msg["faxPageCount"]) == ("Sent", 4)
    assert msg["to"][0]["messageStatus"] == "Sent"
    isync = (await api.get("/message-sync", params={"syncType": "ISync",
                                                    "syncToken": sync["syncInfo"]["syncToken"]}))
    assert [(m["id"], m["messageStatus"]) for m in isync.json()["records"]] == [(body["id"], "Sent")]


async def test_fax_failure_and_resend_over_http(api: Api):
    r = await api.post("/fax", data={"to": "+15550000666"},
                       files={"attachment": ("a.txt", b"text\n")})
    assert r.status_code == 200
    fid = r.json()["id"]
    r = await api.post("/fax", json={"originalMessageId": str(fid)})
    assert_error(r, 406, "MSG-343")
    api.clock.advance(3)
    failed = (await api.get(f"/message-store/{fid}")).json()
    assert failed["messageStatus"] == "SendingFailed"
    assert failed["to"][0]["faxErrorCode"] == "NoAnswer"
    r = await api.post("/fax", json={"originalMessageId": str(fid),
                                     "to": [{"phoneNumber": "+15551230001"}]})
    assert r.status_code == 200, r.text
    assert r.json()["attachments"][0]["filename"] == "a.txt"
    api.clock.advance(3)
    assert (await api.get(f"/message-store/{r.json()['id']}")).json()["messageStatus"] == "Sent"


async def test_fax_errors_over_http(api: Api):
    files = {"attachment": ("a.pdf", pdf(1), "application/pdf")}
    assert_error(await api.post("/fax", files=files), 400, "CMN-101")
    only_fields = mixed_body("b", [(['Content-Disposition: form-data; name="to"'], b"+15551230001")])
    body = assert_error(await api.post("/fax", content=only_fields,
                                       headers={"Content-Type": "multipart/form-data; boundary=b"}),
                        400, "CMN-101")
    assert body["errors"][0]["parameterName"] == "attachment"
    assert_error(await api.post("/fax", data={"to": "+15551230001"}), 415, "CMN-104")  # urlencoded
    assert_error(await api.post("/fax", data={"to": "+15551230001"},
                                files={"attachment": ("a.pdf", b"")}), 400, "MSG-347")
    assert_error(await api.post("/fax", data={"to": "+15551230001"},
                                files={"attachment": ("a.pdf", ELF, "application/pdf")}),
                 415, "MSG-348")
    bad_envelope = mixed_body("b", [(["Content-Type: application/json"], b"{oops"),
                                    (['Content-Disposition: attachment; filename="a.txt"'], b"x")])
    assert_error(await api.post("/fax", content=bad_envelope,
                                headers={"Content-Type": "multipart/mixed; boundary=b"}),
                 400, "MSG-349")
    no_disposition = mixed_body("b", [(["Content-Type: application/json"], b'{"to":["+15551230001"]}'),
                                      (["Content-Type: text/plain"], b"x")])
    assert_error(await api.post("/fax", content=no_disposition,
                                headers={"Content-Type": "multipart/mixed; boundary=b"}),
                 400, "MSG-350")
    no_filename = mixed_body("b", [(["Content-Type: application/json"], b'{"to":["+15551230001"]}'),
                                   (["Content-Disposition: attachment"], b"x")])
    assert_error(await api.post("/fax", content=no_filename,
                                headers={"Content-Type": "multipart/mixed; boundary=b"}),
                 400, "MSG-351")
    assert_error(await api.post("/fax", content=b"to=1", headers={"Content-Type": "text/plain"}),
                 415, "CMN-104")
    assert_error(await api.post("/fax", content=b"--b\r\nbroken",
                                headers={"Content-Type": "multipart/form-data; boundary=b"}),
                 400, "CMN-104")
    assert_error(await api.post("/fax", json={"originalMessageId": "42"}), 404, "CMN-102")
    assert_error(await api.post("/fax", content=b"[1]", headers={"Content-Type": "application/json"}),
                 400, "CMN-103")
    assert api.emu.store.messages == {}


async def test_sms_and_mms_over_http(api: Api):
    r = await api.post("/sms", json={"from": {"phoneNumber": MAIN},
                                     "to": [{"phoneNumber": "+15551230009"}], "text": "hello"})
    assert r.status_code == 200, r.text
    sms = r.json()
    assert (sms["type"], sms["messageStatus"], sms["subject"]) == ("SMS", "Queued", "hello")
    assert [a["type"] for a in sms["attachments"]] == ["Text"]
    assert (await api.get(sms["attachments"][0]["uri"])).content == b"hello"

    jpeg = media.image_jpeg(5).read(0, 10**7)
    for path in ("/mms", "/sms"):  # the MMS alias and the SMS endpoint take the same multipart
        r = await api.post(path, files=[
            ("json", ("request.json", json.dumps({"from": {"phoneNumber": MAIN},
                                                  "to": [{"phoneNumber": "+15551230009"}],
                                                  "text": "pic"}), "application/json")),
            ("attachment", ("photo.jpg", jpeg, "image/jpeg"))])
        assert r.status_code == 200, r.text
        mms = r.json()
        assert [a["type"] for a in mms["attachments"]] == ["Text", "MmsAttachment"]
        assert mms["conversationId"] == sms["conversationId"]
        assert (await api.get(mms["attachments"][1]["uri"])).content == jpeg
    api.clock.advance(2.5)
    assert (await api.get(f"/message-store/{mms['id']}")).json()["messageStatus"] == "Sent"

    envelope = json.dumps({"from": {"phoneNumber": MAIN}, "to": [{"phoneNumber": "+15551230009"}]})
    assert_error(await api.post("/mms", files=[("json", ("request.json", envelope, "application/json"))]),
                 400, "CMN-101")
    assert_error(await api.post("/mms", files=[
        ("json", ("request.json", envelope, "application/json")),
        ("attachment", ("big.jpg", jpeg + bytes(1_500_001 - len(jpeg)), "image/jpeg"))]),
        400, "MSG-337")
    assert_error(await api.post("/mms", files=[
        ("json", ("request.json", envelope, "application/json")),
        ("attachment", ("x.jpg", ELF, "image/jpeg"))]), 415, "MSG-348")
    assert_error(await api.post("/sms", json={"from": {"phoneNumber": MAIN},
                                              "to": [{"phoneNumber": "+15551230009"}],
                                              "text": "x" * 1001}), 400, "CMN-101")


async def test_greeting_over_http(api: Api):
    mp3 = media.audio_mp3(9, 3).read(0, 10**7)
    r = await api.post("/greeting", files=[
        ("json", ("request.json", json.dumps({"type": "Announcement"}), "application/json")),
        ("binary", ("hello.mp3", mp3, "audio/mpeg"))])
    assert r.status_code == 200, r.text
    g = r.json()
    assert (g["type"], g["contentType"]) == ("Announcement", "audio/mpeg")
    assert "answeringRule" not in g
    assert g["uri"] == f"{PLATFORM}{api.emu.extension_path}/greeting/{g['id']}"
    content = await api.get(g["contentUri"])
    assert content.status_code == 200 and content.content == mp3
    assert (await api.get(g["uri"])).json() == g

    wav = media.audio_wav(9, 1).read(0, 10**7)
    r = await api.post("/greeting", data={"type": "Voicemail", "answeringRuleId": "business-hours-rule"},
                       files={"binary": ("v.wav", wav)})
    assert r.status_code == 200, r.text
    assert r.json()["answeringRule"]["id"] == "business-hours-rule"
    assert r.json()["contentType"] == "audio/wav"
    assert_error(await api.post("/greeting", data={"type": "Voicemail"},
                                files={"binary": ("v.mp3", pdf(1), "audio/mpeg")}), 415, "MSG-348")
    assert_error(await api.post("/greeting", data={"type": "Nope"},
                                files={"binary": ("v.mp3", mp3)}), 400, "CMN-101")


async def test_oversized_body_is_refused_after_draining(api: Api):
    from rcfs.emulator.sending import SMS_MAX_BODY
    body = b'{"text": "' + b"x" * SMS_MAX_BODY + b'"}'
    assert_error(await api.post("/sms", content=body, headers={"Content-Type": "application/json"}),
                 400, "MSG-338")
    assert api.emu.store.messages == {}


# ----------------------------------------------------------------------------- curl, loopback

curl_required = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


@curl_required
def test_curl_sends_a_fax_and_gets_it_back(start_emulator, tmp_path):
    """curl's own multipart encoder (`-F`), real loopback HTTP, then `file` on the download."""
    srv = start_emulator(send_delay=0.2)
    token = srv.token()
    doc = tmp_path / "scan.pdf"
    doc.write_bytes(pdf(2))
    (tmp_path / "note.txt").write_text("call me back\n")
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-H", f"Authorization: Bearer {token}",
         "-F", "to=+15551230001", "-F", "to=18005554567", "-F", "faxResolution=High",
         "-F", f"attachment=@{doc};type=application/pdf", "-F", f"attachment=@{tmp_path / 'note.txt'}",
         "-w", "\n%{http_code}", srv.platform + EXT + "/fax"],
        capture_output=True, text=True, timeout=30, check=True).stdout
    text, status = out.rsplit("\n", 1)
    assert status == "200", text
    sent = json.loads(text)
    assert [a["filename"] for a in sent["attachments"]] == ["scan.pdf", "note.txt"]
    assert [t["phoneNumber"] for t in sent["to"]] == ["+15551230001", "+18005554567"]

    got = tmp_path / "got.pdf"
    subprocess.run(["curl", "-sS", "--fail", "--max-time", "20", "-H", f"Authorization: Bearer {token}",
                    "-o", str(got), sent["attachments"][0]["uri"]], check=True, timeout=30)
    assert got.read_bytes() == pdf(2)
    if shutil.which("file"):
        kind = subprocess.run(["file", "-b", str(got)], capture_output=True, text=True,
                              timeout=30).stdout
        assert kind.startswith("PDF document")

    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(sent["uri"], headers={"Authorization": f"Bearer {token}"}, timeout=10)
        if r.json()["messageStatus"] != "Queued" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (r.json()["messageStatus"], r.json()["faxPageCount"]) == ("Sent", 4)
