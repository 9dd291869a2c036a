"""The emulator's sending endpoints: fax, SMS/MMS and custom user greetings.

Routed by `app.py` after authentication and rate limiting:

    POST …/extension/{e}/fax        -> create_fax(emu, request)       (Heavy)
    POST …/extension/{e}/sms, /mms  -> create_sms(emu, request)       (Medium)
    POST …/extension/{e}/greeting   -> create_greeting(emu, request)  (Heavy)

Request shapes follow CONTRACT §9-§11: flat `multipart/form-data` fields, a first JSON
envelope part (plain `multipart/mixed` or the official SDK's `json`/`request.json`
part), document parts with or without a Content-Type, and the JSON fax resend.

Sent messages start `Queued`. Their later state is computed lazily: every route that
reads messages calls `settle_sends(store)` first, which moves each send whose time has
come to `Sent` (or `SendingFailed` for `config.failing_numbers`) and records the change
for message-sync. No background task is needed, and tests move time with `store.now`.
Each recipient gets its own outcome (`to[].messageStatus`, and for a fax
`to[].faxErrorCode` on the failing numbers); the message is `SendingFailed` when any
recipient failed.

The SMS/MMS `from` number must be one of the extension's numbers with the `SmsSender`
(SMS) or `MmsSender` (with attachments) feature (`numbers.py`).

Fault switches for send POSTs (`config.faults`, all counters of "the next N"):
`send_force_503` / `send_force_429` answer 503 CMN-201 / 429 CMN-301 (with
`Retry-After`) after draining the body, storing nothing; `send_drop_answer` stores the
message, then sends the answer's status line and headers and cuts the connection
before the body (the client cannot learn the id: the reconciliation case);
`send_answer_delay_ms` holds every answer that long after the message is stored. The
general `latency_ms`, `error_rate` and `force_429` apply to sends as to every
throttled request (`Emulator.endpoint`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import re
import weakref
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .multipart import (FAX_TYPES, GREETING_TYPES, MMS_TYPES, MultipartError, Part,
                        boundary_of, count_pages, media_type, parse_multipart, sniff)
from .store import Attachment, Greeting, Message, Party, Store, conversation_id

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

log = logging.getLogger(__name__)

MiB = 1024 * 1024
FAX_MAX_BODY = 55 * MiB  # x-request-max-body-size: 55m
FAX_MAX_ATTACHMENTS = 50 * MiB  # each and all together
FAX_MAX_PAGES = 200
FAX_COVER_TEXT_MAX = 1024
FAX_COVER_INDEXES = frozenset({0, *range(1, 14), *range(15, 29)})
SMS_MAX_BODY = 10 * MiB
SMS_MAX_TEXT_UNITS = 1000  # UTF-16 code units
MMS_MAX_FILES = 10
MMS_MAX_TOTAL = 1_500_000
GREETING_MAX_BODY = 20 * MiB
GREETING_TYPES_ALLOWED = frozenset({
    "Introductory", "Announcement", "ConnectingMessage", "ConnectingAudio", "Voicemail",
    "Unavailable", "HoldMusic", "TemplateGreeting"})
# The code a send to one of `config.failing_numbers` ends with.
FAILED_FAX_CODE = "NoAnswer"

# Names under which clients send files; a part with one of these names is a file part
# even when it forgot its filename (which is then MSG-351).
FILE_FIELDS = frozenset({"attachment", "attachments", "binary", "file"})
ENVELOPE_NAMES = frozenset({"json", "request", "body"})


class SendError(Exception):
    """A request the sending endpoints refuse; becomes a RingCentral error body.

    `extra` holds error attributes such as `parameterName` / `parameterValue`.
    """

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def response(self, emu: Any) -> Response:
        """The error as a starlette Response built by the emulator's `api_error`."""
        return emu.api_error(self.status, self.code, self.message, **self.extra)


def _invalid(param: str, value: Any = None, why: str = "") -> SendError:
    extra: dict[str, Any] = {"parameterName": param}
    if value is not None:
        extra["parameterValue"] = str(value)[:200]
    message = f"Parameter [{param}] value is invalid" + (f": {why}" if why else "")
    return SendError(400, "CMN-101", message, **extra)


# --------------------------------------------------------------------------------------
# request parsing


@dataclasses.dataclass
class Upload:
    """One uploaded file: its (base) name, bytes, declared and sniffed media types."""

    filename: str
    data: bytes
    declared: str | None
    content_type: str


@dataclasses.dataclass
class SendRequest:
    """A parsed upload request: the JSON envelope, flat form fields and files.

    `flat` maps a form field name to every string sent under it (`to` is usually
    repeated). The envelope wins over a flat field of the same name, except for `to`,
    whose values from both places add up.
    """

    envelope: dict[str, Any] = dataclasses.field(default_factory=dict)
    flat: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    uploads: list[Upload] = dataclasses.field(default_factory=list)

    def value(self, name: str) -> Any:
        """The field's single value (None when absent)."""
        if name in self.envelope:
            return self.envelope[name]
        values = self.flat.get(name)
        return values[0] if values else None

    def values(self, name: str) -> list[Any]:
        """Every value of a repeatable field, envelope first."""
        return _as_list(self.envelope.get(name)) + self.flat.get(name, [])


def _base_name(filename: str) -> str:
    # Clients sometimes send full client-side paths; only the last component is a name.
    return re.split(r"[\\/]", filename)[-1].strip()


def _parse_envelope(part: Part) -> dict[str, Any]:
    try:
        value = json.loads(part.text())
    except ValueError as exc:
        raise SendError(400, "MSG-349", f"Unable to parse the JSON envelope: {exc.msg}") from None
    if not isinstance(value, dict):
        raise SendError(400, "MSG-349", "The JSON envelope must be an object")
    return value


def split_parts(parts: list[Part]) -> SendRequest:
    """Sort multipart parts into the envelope, flat fields and uploaded files.

    The envelope is a JSON part that comes first or is named `json`/`request`. Every other
    part needs a Content-Disposition (MSG-350); file parts (with a filename, an
    `attachment` disposition or a file field name) need a filename (MSG-351).
    """
    envelope: dict[str, Any] | None = None
    flat: dict[str, list[str]] = {}
    uploads: list[Upload] = []
    for index, part in enumerate(parts):
        if envelope is None and part.is_json and (
                index == 0 or (part.name or "").lower() in ENVELOPE_NAMES):
            envelope = _parse_envelope(part)
            continue
        if part.disposition is None:
            raise SendError(400, "MSG-350",
                            f"Content-Disposition header is missing in body part {index + 1}")
        is_file = (part.filename is not None or part.disposition == "attachment"
                   or (part.name or "").lower() in FILE_FIELDS)
        if is_file:
            name = _base_name(part.filename or "")
            if not name:
                raise SendError(400, "MSG-351",
                                f"Content-Disposition of body part {index + 1} has no file name")
            uploads.append(Upload(filename=name, data=part.data, declared=part.content_type,
                                  content_type=sniff(part.data, name, part.content_type)))
            continue
        if not part.name:
            raise SendError(400, "CMN-104", f"Body part {index + 1} has no field name")
        flat.setdefault(part.name, []).append(part.text())
    return SendRequest(envelope=envelope or {}, flat=flat, uploads=uploads)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, refusing (MSG-338) bodies over `limit` bytes.

    An oversized body is still drained, so the client gets the answer instead of a
    broken connection while it is sending.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise SendError(400, "MSG-338",
                        f"Request body of {size} bytes exceeds the limit of {limit} bytes")
    return b"".join(chunks)


async def read_multipart(request: Request, limit: int) -> SendRequest:
    """Read and split a multipart/form-data or multipart/mixed request."""
    header = request.headers.get("content-type")
    boundary = boundary_of(header)
    if not media_type(header).startswith("multipart/") or boundary is None:
        raise SendError(415, "CMN-104", "Expected a multipart/form-data or multipart/mixed body")
    body = await read_body(request, limit)
    try:
        parts = parse_multipart(body, boundary)
    except MultipartError as exc:
        raise SendError(400, "CMN-104", f"Unable to parse the multipart body: {exc}") from None
    return split_parts(parts)


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """Read a JSON object body (CMN-103 when it is not one)."""
    body = await read_body(request, limit)
    try:
        value = json.loads(body)
    except ValueError:
        raise SendError(400, "CMN-103", "Unable to parse the JSON request body") from None
    if not isinstance(value, dict):
        raise SendError(400, "CMN-103", "The JSON request body must be an object")
    return value


# --------------------------------------------------------------------------------------
# field validation

_PHONE_JUNK = re.compile(r"[\s\-().]")
_PHONE = re.compile(r"\+?\d{3,15}")


def normalize_phone(value: Any, param: str) -> str:
    """An E.164 number with `+` from what clients send (`18005554567`, `+1 (800) 555-4567`);
    ten bare digits are taken as a US number."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _invalid(param, value)
    text = _PHONE_JUNK.sub("", str(value))
    if not _PHONE.fullmatch(text):
        raise _invalid(param, value, "not a phone number")
    if text.startswith("+"):
        return text
    return "+1" + text if len(text) == 10 else "+" + text


def parse_recipients(values: Any, param: str = "to") -> list[Party]:
    """Recipients from `to` values: bare numbers, `{phoneNumber, name}` objects, or form
    fields holding such an object as JSON. Raises CMN-101 when there are none."""
    parties: list[Party] = []
    for value in _as_list(values):
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                raise _invalid(param, value, "unparsable recipient") from None
        if isinstance(value, dict):
            number = normalize_phone(value.get("phoneNumber"), f"{param}.phoneNumber")
            name = value.get("name")
            parties.append(Party(phone_number=number, name=name if isinstance(name, str) else None))
        else:
            parties.append(Party(phone_number=normalize_phone(value, param)))
    if not parties:
        raise _invalid(param, None, "at least one recipient is required")
    return parties


def parse_send_time(value: Any) -> dt.datetime | None:
    """`sendTime` as an aware UTC datetime (None when absent)."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise _invalid("sendTime", value)
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise _invalid("sendTime", value, "not an ISO 8601 date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc)


def _int_field(value: Any, param: str) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise _invalid(param, value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _invalid(param, value, "not an integer") from None


def utf16_units(text: str) -> int:
    """Length in UTF-16 code units (astral characters count twice), as the SMS limit is."""
    return len(text.encode("utf-16-le")) // 2


def check_uploads(uploads: list[Upload], allowed: frozenset[str], *, max_each: int | None,
                  max_total: int) -> None:
    """Refuse empty files (MSG-347), types outside `allowed` (415 MSG-348) and sizes over
    the limits (MSG-337)."""
    total = 0
    for up in uploads:
        if not up.data:
            raise SendError(400, "MSG-347", f"Attachment body is empty: {up.filename}")
        if up.content_type not in allowed:
            raise SendError(415, "MSG-348",
                            f"Unsupported attachment media type {up.content_type} "
                            f"({up.filename})", parameterName="attachment")
        if max_each is not None and len(up.data) > max_each:
            raise SendError(400, "MSG-337",
                            f"Attachment size limit exceeded: {up.filename} has {len(up.data)} bytes")
        total += len(up.data)
    if total > max_total:
        raise SendError(400, "MSG-337",
                        f"Attachments size limit exceeded: {total} bytes, limit {max_total}")


# --------------------------------------------------------------------------------------
# lazy Queued -> Sent / SendingFailed


@dataclasses.dataclass
class _Pending:
    due: dt.datetime
    status: str  # Sent or SendingFailed
    fax_pages: int | None = None
    fax_error_code: str | None = None
    # Recipients that fail; empty with status SendingFailed means every one does.
    failing: frozenset[str] = frozenset()


# Keyed by store so several emulators in one process (tests) never see each other's sends.
_PENDING: weakref.WeakKeyDictionary[Store, dict[int, _Pending]] = weakref.WeakKeyDictionary()


def _schedule(store: Store, msg: Message, pending: _Pending) -> None:
    _PENDING.setdefault(store, {})[msg.id] = pending


def pending_count(store: Store) -> int:
    """How many sends of this store are still waiting for their transition."""
    return len(_PENDING.get(store, {}))


def settle_sends(store: Store) -> int:
    """Apply every send transition that is due by `store.now()`; returns how many messages
    changed. Sends whose message was deleted meanwhile are cancelled (as deleting a
    queued fax cancels it)."""
    pending = _PENDING.get(store)
    if not pending:
        return 0
    now = store.now()
    due = sorted((p.due, mid) for mid, p in pending.items() if p.due <= now)
    changed = 0
    for _, mid in due:
        p = pending.pop(mid)
        msg = store.messages.get(mid)
        if msg is None or msg.availability != "Alive" or msg.message_status != "Queued":
            continue
        msg.message_status = p.status
        if msg.type == "Fax":
            msg.fax_page_count = p.fax_pages
            msg.fax_error_code = p.fax_error_code
        for party in msg.to:
            failed = p.status == "SendingFailed" and (not p.failing
                                                      or party.phone_number in p.failing)
            party.message_status = "SendingFailed" if failed else "Sent"
            party.fax_error_code = p.fax_error_code if failed and msg.type == "Fax" else None
        store.touch(msg)
        changed += 1
        log.debug("message %s: Queued -> %s", mid, p.status)
    return changed


def _outcome(emu: Any, recipients: list[Party],
             start: dt.datetime) -> tuple[dt.datetime, frozenset[str]]:
    """When the send settles, and which of its recipients fail."""
    failing = {normalize_phone(n, "failing_numbers") for n in emu.config.failing_numbers}
    fails = frozenset(p.phone_number for p in recipients if p.phone_number in failing)
    return start + dt.timedelta(seconds=float(emu.config.send_delay)), fails


# --------------------------------------------------------------------------------------
# fax


def _media_from_bytes(data: bytes, content_type: str) -> Any:
    from . import media  # media.py is written in parallel; only its factory is needed here
    return media.from_bytes(data, content_type)


def _fax_response(emu: Any, msg: Message) -> dict[str, Any]:
    body = emu.render_message(msg)
    # FaxResponse spells the attachment file name `filename` (MessageAttachmentInfoIntId).
    for att in body.get("attachments", []):
        if "fileName" in att:
            att["filename"] = att.pop("fileName")
    return body


def _json_response(body: dict[str, Any]) -> Response:
    from starlette.responses import JSONResponse
    return JSONResponse(body)


# --------------------------------------------------------------------------------------
# fault switches of the send POSTs


class DroppedAnswer:
    """An ASGI answer that sends the status line and headers of `response`, then cuts
    the connection before the body (the server did the work; the client never learns
    its result). In process, the ASGI transport raises the abort to the caller."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self.status_code = response.status_code
        self.headers = response.headers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from .media_routes import ConnectionAbort
        await send({"type": "http.response.start", "status": self.response.status_code,
                    "headers": self.response.raw_headers})
        raise ConnectionAbort("fault: send answer dropped after the message was stored")


def _take(faults: Any, name: str) -> bool:
    """Consume one unit of the "next N" switch `name`; whether it was set."""
    left = getattr(faults, name)
    if left <= 0:
        return False
    setattr(faults, name, left - 1)
    return True


async def _injected_refusal(emu: Any, request: Request, limit: int,
                            group: str) -> Response | None:
    """The 503 / 429 a `send_force_*` switch asks for (body drained first), or None."""
    from .ratelimit import Decision
    faults = emu.config.faults
    if _take(faults, "send_force_503"):
        kind, response = "send-503", emu.api_error(503, "CMN-201",
                                                   "Service Temporarily Unavailable")
    elif _take(faults, "send_force_429"):
        window = float(emu.config.window)
        decision = Decision(False, group, emu.limiter.limit_of(group), 0, window,
                            max(1, math.ceil(window)), forced=True)
        kind, response = "send-429", emu.api_error(429, "CMN-301", "Request rate exceeded")
        response.headers.update(decision.headers())
    else:
        return None
    try:
        await read_body(request, limit)
    except SendError:
        pass  # oversized: drained all the same
    emu.stats.faults[kind] += 1
    log.info("%s %s: injected %s", request.method, request.url.path, kind)
    return response


async def _answer(emu: Any, response: Response) -> Any:
    """Apply `send_answer_delay_ms` and `send_drop_answer` to a successful send."""
    if response.status_code != 200:
        return response
    faults = emu.config.faults
    if faults.send_answer_delay_ms > 0:
        import anyio
        await anyio.sleep(faults.send_answer_delay_ms / 1000.0)
    if _take(faults, "send_drop_answer"):
        emu.stats.faults["send-drop"] += 1
        log.info("send stored, answer dropped (fault)")
        return DroppedAnswer(response)
    return response


def _with_send_faults(limit: int, group: str):
    """Decorate a send handler with the `send_*` fault switches."""

    def wrap(handler: Callable[[Any, Request], Awaitable[Response]]):
        async def run(emu: Any, request: Request) -> Any:
            refused = await _injected_refusal(emu, request, limit, group)
            if refused is not None:
                return refused
            return await _answer(emu, await handler(emu, request))

        run.__name__, run.__doc__ = handler.__name__, handler.__doc__
        return run

    return wrap


# --------------------------------------------------------------------------------------
# fax handler


@_with_send_faults(FAX_MAX_BODY, "Heavy")
async def create_fax(emu: Any, request: Request) -> Response:
    """`POST …/fax`: a new fax (multipart) or a resend (`application/json`)."""
    try:
        if media_type(request.headers.get("content-type")) == "application/json":
            msg = resend_fax(emu, await read_json(request, FAX_MAX_BODY))
        else:
            msg = new_fax(emu, await read_multipart(request, FAX_MAX_BODY))
    except SendError as err:
        log.info("fax refused: %s", err)
        return err.response(emu)
    return _json_response(_fax_response(emu, msg))


def new_fax(emu: Any, req: SendRequest) -> Message:
    """Validate a parsed fax request, store the Queued message and schedule its outcome."""
    store: Store = emu.store
    recipients = parse_recipients(req.values("to"))
    resolution = req.value("faxResolution") or "Low"
    if resolution not in ("High", "Low"):
        raise _invalid("faxResolution", resolution)
    cover_index = _int_field(req.value("coverIndex"), "coverIndex")
    if cover_index is not None and cover_index not in FAX_COVER_INDEXES:
        raise _invalid("coverIndex", cover_index)
    cover_text = req.value("coverPageText")
    if cover_text is not None and (not isinstance(cover_text, str)
                                   or len(cover_text) > FAX_COVER_TEXT_MAX):
        raise _invalid("coverPageText", None, f"at most {FAX_COVER_TEXT_MAX} characters")
    send_time = parse_send_time(req.value("sendTime"))
    if not req.uploads:
        raise SendError(400, "CMN-101", "Parameter [attachment] is required",
                        parameterName="attachment")
    check_uploads(req.uploads, FAX_TYPES, max_each=FAX_MAX_ATTACHMENTS,
                  max_total=FAX_MAX_ATTACHMENTS)

    now = store.now()
    attachments = [
        Attachment(id=store.new_id(), type="SourceDocument",
                   media=_media_from_bytes(up.data, up.content_type), file_name=up.filename)
        for up in req.uploads]
    pages = sum(count_pages(up.data, up.content_type) for up in req.uploads)
    msg = _store_fax(emu, recipients, attachments, pages, now=now, send_time=send_time,
                     resolution=resolution, cover_index=cover_index, cover_text=cover_text)
    log.info("fax %s queued: %d document(s), %d recipient(s)", msg.id, len(attachments),
             len(recipients))
    return msg


def _store_fax(emu: Any, recipients: list[Party], attachments: list[Attachment], pages: int, *,
               now: dt.datetime, send_time: dt.datetime | None, resolution: str,
               cover_index: int | None, cover_text: str | None) -> Message:
    store: Store = emu.store
    msg = Message(
        id=store.new_id(), type="Fax", direction="Outbound", creation_time=now,
        from_=Party(phone_number=store.main_number), to=recipients, attachments=attachments,
        read_status="Read", message_status="Queued", fax_page_count=0,
        fax_resolution=resolution, cover_index=cover_index, cover_page_text=cover_text)
    store.add_message(msg)
    # The default cover page (coverIndex omitted) is a page too.
    total_pages = pages + (0 if cover_index == 0 else 1)
    due, fails = _outcome(emu, recipients, max(now, send_time or now))
    if fails:
        _schedule(store, msg, _Pending(due, "SendingFailed", 0, FAILED_FAX_CODE, fails))
    elif total_pages > FAX_MAX_PAGES:
        _schedule(store, msg, _Pending(due, "SendingFailed", 0, "TooManyPages"))
    else:
        _schedule(store, msg, _Pending(due, "Sent", total_pages))
    return msg


def resend_fax(emu: Any, body: dict[str, Any]) -> Message:
    """Resend or forward an existing fax (`{"originalMessageId", "to"?, "sendTime"?}`)."""
    store: Store = emu.store
    raw_id = body.get("originalMessageId")
    if raw_id in (None, ""):
        raise SendError(400, "CMN-101", "Parameter [originalMessageId] is required",
                        parameterName="originalMessageId")
    original_id = _int_field(raw_id, "originalMessageId")
    original = store.messages.get(original_id) if original_id is not None else None
    if original is None or original.type != "Fax":
        raise SendError(404, "CMN-102", "Resource for parameter [originalMessageId] is not found",
                        parameterName="originalMessageId", parameterValue=str(raw_id))
    if original.message_status == "Queued" or original.availability == "Purged":
        raise SendError(406, "MSG-343",
                        f"Fax message {original.id} cannot be resent in its current state")
    if body.get("to") is not None:
        recipients = parse_recipients(body.get("to"))
    elif original.direction == "Outbound":
        recipients = [dataclasses.replace(p) for p in original.to]
    else:
        raise _invalid("to", None, "forwarding a received fax needs recipients")
    send_time = parse_send_time(body.get("sendTime"))
    docs = [a for a in original.attachments if a.type in ("SourceDocument", "RenderedDocument")]
    attachments = [Attachment(id=store.new_id(), type="SourceDocument", media=a.media,
                              file_name=a.file_name) for a in docs]
    pages = sum(count_pages(a.media.read(0, a.media.size), a.media.content_type) for a in docs)
    msg = _store_fax(emu, recipients, attachments, pages, now=store.now(), send_time=send_time,
                     resolution=original.fax_resolution or "Low",
                     cover_index=original.cover_index, cover_text=original.cover_page_text)
    log.info("fax %s queued as a resend of %s", msg.id, original.id)
    return msg


# --------------------------------------------------------------------------------------
# SMS / MMS


@_with_send_faults(SMS_MAX_BODY, "Medium")
async def create_sms(emu: Any, request: Request) -> Response:
    """`POST …/sms` and `…/mms`: JSON SMS, or multipart SMS/MMS with attachments."""
    is_mms_endpoint = request.url.path.rstrip("/").endswith("/mms")
    try:
        if media_type(request.headers.get("content-type")) == "application/json":
            body = await read_json(request, SMS_MAX_BODY)
            req = SendRequest(envelope=body)
        else:
            req = await read_multipart(request, SMS_MAX_BODY)
        msg = new_sms(emu, req, require_attachments=is_mms_endpoint)
    except SendError as err:
        log.info("sms refused: %s", err)
        return err.response(emu)
    return _json_response(emu.render_message(msg))


def _from_party(store: Store, value: Any, *, mms: bool) -> Party:
    if value in (None, ""):
        raise SendError(400, "CMN-101", "Parameter [from] is required", parameterName="from")
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            raise _invalid("from", value) from None
    raw = value.get("phoneNumber") if isinstance(value, dict) else value
    number = normalize_phone(raw, "from.phoneNumber")
    from . import numbers
    problem = numbers.sender_problem(store, number, mms=mms)
    if problem is not None:
        status, code, message = problem
        raise SendError(status, code, message, parameterName="from.phoneNumber",
                        parameterValue=number)
    return Party(phone_number=number)


def new_sms(emu: Any, req: SendRequest, *, require_attachments: bool) -> Message:
    """Validate a parsed SMS/MMS request, store the Queued message, schedule its outcome."""
    store: Store = emu.store
    sender = _from_party(store, req.value("from"), mms=bool(req.uploads))
    recipients = parse_recipients(req.values("to"))
    text = req.value("text")
    if text is not None and not isinstance(text, str):
        raise _invalid("text", text)
    if text is not None and utf16_units(text) > SMS_MAX_TEXT_UNITS:
        raise _invalid("text", None, f"longer than {SMS_MAX_TEXT_UNITS} UTF-16 code units")
    if require_attachments and not req.uploads:
        raise SendError(400, "CMN-101", "Parameter [attachments] is required",
                        parameterName="attachments")
    if not text and not req.uploads:
        raise SendError(400, "CMN-101", "Parameter [text] is required", parameterName="text")
    if len(req.uploads) > MMS_MAX_FILES:
        raise _invalid("attachments", len(req.uploads), f"at most {MMS_MAX_FILES} attachments")
    check_uploads(req.uploads, MMS_TYPES, max_each=None, max_total=MMS_MAX_TOTAL)

    from . import media
    attachments: list[Attachment] = []
    if text:
        attachments.append(Attachment(id=store.new_id(), type="Text",
                                      media=media.text_plain(text), text=text))
    attachments += [
        Attachment(id=store.new_id(), type="MmsAttachment",
                   media=_media_from_bytes(up.data, up.content_type), file_name=up.filename)
        for up in req.uploads]
    now = store.now()
    msg = Message(
        id=store.new_id(), type="SMS", direction="Outbound", creation_time=now, from_=sender,
        to=recipients, attachments=attachments, read_status="Read", message_status="Queued",
        subject=text or None,
        conversation_id=conversation_id([sender.phone_number or ""]
                                        + [p.phone_number or "" for p in recipients]))
    store.add_message(msg)
    due, fails = _outcome(emu, recipients, now)
    _schedule(store, msg, _Pending(due, "SendingFailed" if fails else "Sent", failing=fails))
    log.info("%s %s queued to %d recipient(s)", "MMS" if req.uploads else "SMS", msg.id,
             len(recipients))
    return msg


# --------------------------------------------------------------------------------------
# greetings


@_with_send_faults(GREETING_MAX_BODY, "Heavy")
async def create_greeting(emu: Any, request: Request) -> Response:
    """`POST …/extension/{e}/greeting`: upload a custom user greeting (MP3 or WAV)."""
    try:
        apply = request.query_params.get("apply", "true").lower() != "false"
        greeting = new_greeting(emu, await read_multipart(request, GREETING_MAX_BODY),
                                apply=apply)
    except SendError as err:
        log.info("greeting refused: %s", err)
        return err.response(emu)
    return _json_response(emu.render_greeting(greeting))


def _answering_rule_id(req: SendRequest) -> str | None:
    rule = req.value("answeringRule")
    if isinstance(rule, str) and rule.lstrip().startswith("{"):
        try:
            rule = json.loads(rule)
        except ValueError:
            raise _invalid("answeringRule", rule) from None
    if isinstance(rule, dict):
        rule = rule.get("id")
    if rule in (None, ""):
        rule = req.value("answeringRuleId")
    if rule in (None, ""):
        return None
    if not isinstance(rule, (str, int)) or isinstance(rule, bool):
        raise _invalid("answeringRule.id", rule)
    return str(rule)


def new_greeting(emu: Any, req: SendRequest, *, apply: bool = True) -> Greeting:
    """Validate a parsed greeting upload and store it; with `apply` and an answering
    rule it becomes that rule's greeting of its type (404 CMN-102 for an unknown rule)."""
    store: Store = emu.store
    gtype = req.value("type")
    if gtype in (None, ""):
        raise SendError(400, "CMN-101", "Parameter [type] is required", parameterName="type")
    if gtype not in GREETING_TYPES_ALLOWED:
        raise _invalid("type", gtype)
    rule_id = _answering_rule_id(req)
    binaries = req.uploads
    if not binaries:
        raise SendError(400, "CMN-101", "Parameter [binary] is required", parameterName="binary")
    if len(binaries) > 1:
        raise _invalid("binary", len(binaries), "exactly one audio file is expected")
    check_uploads(binaries, GREETING_TYPES, max_each=None, max_total=GREETING_MAX_BODY)
    from . import greetings
    if apply and rule_id is not None and rule_id not in greetings.rules_of(store):
        raise SendError(404, "CMN-102", "Resource for parameter [answeringRule.id] is not found",
                        parameterName="answeringRule.id", parameterValue=rule_id)
    audio = binaries[0]
    greeting = Greeting(id=str(store.new_id()), type=gtype,
                        media=_media_from_bytes(audio.data, audio.content_type),
                        answering_rule_id=rule_id if apply else None)
    store.greetings[greeting.id] = greeting
    if apply and rule_id is not None:
        # The rule now plays this greeting for its type (what replacing one means).
        greetings.apply_greeting(store, rule_id, greeting)
    log.info("greeting %s stored (%s, %s)", greeting.id, gtype, audio.content_type)
    return greeting


# --------------------------------------------------------------------------------------
# what tests check: the outbound messages as stored


def sent_report(emu: Any) -> list[dict[str, Any]]:
    """Every outbound message, oldest first, with each attachment's sha256 (the admin
    endpoint `GET /_emulator/sent`): what arrived, byte for byte, and its state."""
    settle_sends(emu.store)
    out = []
    for msg in sorted(emu.store.messages.values(), key=lambda m: (m.creation_time, m.id)):
        if msg.direction != "Outbound":
            continue
        attachments = []
        for att in msg.attachments:
            data = att.media.read(0, att.media.size) if att.media is not None else b""
            attachments.append({"id": att.id, "type": att.type, "fileName": att.file_name,
                                "contentType": att.media.content_type if att.media else None,
                                "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        out.append({
            "id": msg.id, "type": msg.type, "availability": msg.availability,
            "messageStatus": msg.message_status, "from": msg.from_.phone_number,
            "to": [{"phoneNumber": p.phone_number, "messageStatus": p.message_status
                    or msg.message_status, "faxErrorCode": p.fax_error_code} for p in msg.to],
            "creationTime": msg.creation_time.isoformat(), "faxPageCount": msg.fax_page_count,
            "faxResolution": msg.fax_resolution, "coverIndex": msg.cover_index,
            "coverPageText": msg.cover_page_text, "text": msg.subject if msg.type == "SMS" else None,
            "attachments": attachments,
        })
    return out


__all__ = [
    "SendError", "SendRequest", "Upload", "create_fax", "create_sms", "create_greeting",
    "settle_sends", "pending_count", "split_parts", "read_multipart", "new_fax", "resend_fax",
    "new_sms", "new_greeting", "normalize_phone", "parse_recipients",
    "conversation_id", "utf16_units", "sent_report", "DroppedAnswer",
]
