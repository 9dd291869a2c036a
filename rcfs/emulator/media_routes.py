"""Content routes of the media host: message attachments, call recordings, greetings.

Rate-limit groups (CONTRACT §4.4): message content Medium, recording and greeting
content Heavy. Auth: Bearer header or the `access_token` query parameter (media host
only).

Ranges (CONTRACT §13): one byte range `bytes=a-b`, `bytes=a-` or `bytes=-n` answers 206
with `Content-Range`, `Content-Length` and `Accept-Ranges: bytes`; a multi-range header
is answered with its first range; a start at or past the end (or `-0`, or any range of
an empty object) is 416 CMN-107 with `Content-Range: bytes */<size>`; a malformed
header is ignored (200, whole body), as RFC 9110 allows. `config.max_bytes_per_response`
caps every answer: when the body would be longer, the answer is 206 with that many bytes,
even for a request without Range. `contentDisposition=Inline|Attachment` (and
`contentDispositionFilename`) add a `Content-Disposition` header.

Bodies stream from `media.pieces()` (streamed audio: its 384 KiB chunks, passed to the
socket uncopied; anything else: 1 MiB reads), so a multi-gigabyte recording never sits in
memory; a client that disconnects stops the stream.

Faults (`config.faults`, drawn per media response): `reset_rate` aborts the response
after half the body (the ASGI app raises `ConnectionAbort`; hypercorn drops the
connection, the in-process transport re-raises it); `truncate_rate` ends the response
cleanly after half the body, fewer bytes than `Content-Length` (hypercorn then closes
the connection; the in-process transport just returns the short body). `faults.cut_at`
moves the cut (0: not a byte of the body arrives).

Answers without a size (production does each sometimes; switches in the config):
`chunked_media` sends no Content-Length (chunked transfer encoding; a truncated body
then ends without its last chunk, as a dropped connection does), `unknown_media_total`
sends `Content-Range: bytes a-b/*` and 416 answers without a size, and `ignore_range`
answers 200 with the whole body whatever Range asked (the byte cap does not apply).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from .auth import Session
from . import media as media_objects
from .media import MediaObject

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger(__name__)

PAUSE_EVERY = 1 << 20  # the chunk_delay_ms fault pauses once per MiB sent
_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


class ConnectionAbort(Exception):
    """Raised by a media response to cut its connection mid-body (the reset fault)."""


@dataclasses.dataclass
class _TextMedia:
    """Stand-in media for a Text attachment stored only as `text`."""

    data: bytes
    content_type: str = "text/plain"
    extension: str = ".txt"

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """The first range of a `Range` header as inclusive (start, end).

    None: no usable header (serve everything). False: not satisfiable (416).
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec:
        return None
    m = _RANGE.match(spec.split(",")[0])
    if m is None or (m.group(1) == "" and m.group(2) == ""):
        return None
    first, last = m.group(1), m.group(2)
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last != "" else size - 1
    if last != "" and end < start:
        return None
    if start >= size:
        return False
    return start, min(end, size - 1)


def _disposition(request: Request, default_name: str) -> str | None:
    kind = request.query_params.get("contentDisposition")
    if not kind:
        return None
    name = request.query_params.get("contentDispositionFilename") or default_name
    name = name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
    return f'{"attachment" if kind.lower() == "attachment" else "inline"}; filename="{name}"'


class MediaBody(Response):
    """A streamed media answer of `length` bytes starting at `start` of `media`."""

    def __init__(self, emu: Emulator, media: MediaObject, start: int, length: int,
                 status_code: int, headers: dict[str, str], fault: str | None = None) -> None:
        self.emu = emu
        self.media = media
        self.start = start
        self.length = length
        self.status_code = status_code
        self.fault = fault
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope.get("method") == "HEAD" or self.length == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        limit = self.length
        chunked = "content-length" not in self.headers
        if self.fault is not None:
            limit = int(self.length * min(1.0, max(0.0, self.emu.config.faults.cut_at)))
        disconnected = False

        async def watch(scope_to_cancel: anyio.CancelScope) -> None:
            nonlocal disconnected
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    scope_to_cancel.cancel()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            sent, next_pause = 0, PAUSE_EVERY
            delay = self.emu.config.faults.chunk_delay_ms / 1000.0
            for data in media_objects.pieces(self.media, self.start, limit):
                if delay > 0 and sent >= next_pause:
                    await anyio.sleep(delay)
                    next_pause += PAUSE_EVERY
                await send({"type": "http.response.body", "body": data, "more_body": True})
                sent += len(data)
                self.emu.stats.bytes_served += len(data)
            if sent < limit:
                log.warning("media object ended early at %d of %d bytes", self.start + sent, self.start + limit)
            tg.cancel_scope.cancel()
        if disconnected:
            return
        if self.fault == "reset" or (self.fault == "truncate" and chunked):
            # (A clean end of a chunked body would be a complete answer: cut it instead.)
            raise ConnectionAbort("fault: connection reset mid-body")
        try:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception as exc:  # h11 objects to ending short of Content-Length: intended here
            if self.fault is None:
                raise
            log.debug("truncated body ended: %s", exc)


def media_response(emu: Emulator, request: Request, media: MediaObject, default_name: str) -> Response:
    """The 200/206/416 answer for `media`, honouring Range, the byte cap and faults."""
    size = media.size
    config = emu.config
    rng = None if config.ignore_range else parse_range(request.headers.get("range"), size)
    headers: dict[str, str] = {"Accept-Ranges": "bytes"}
    if rng is False:
        response = emu.api_error(416, "CMN-107", "Requested Range Not Satisfiable")
        response.headers.update(headers)
        if not config.unknown_media_total:
            response.headers["Content-Range"] = f"bytes */{size}"
        return response
    partial = rng is not None
    start, end = rng if rng else (0, size - 1)
    cap = None if config.ignore_range else config.max_bytes_per_response
    if cap is not None and cap > 0 and end - start + 1 > cap:
        end = start + cap - 1
        partial = True
    length = max(0, end - start + 1)
    headers["Content-Type"] = media.content_type
    if not config.chunked_media:
        headers["Content-Length"] = str(length)
    if partial:
        headers["Content-Range"] = f"bytes {start}-{end}/{'*' if config.unknown_media_total else size}"
    disposition = _disposition(request, default_name)
    if disposition is not None:
        headers["Content-Disposition"] = disposition
    fault = None
    faults = emu.config.faults
    if length >= 2 and request.method != "HEAD":
        if emu.fault_hits(faults.reset_rate):
            fault = "reset"
        elif emu.fault_hits(faults.truncate_rate):
            fault = "truncate"
        if fault is not None:
            emu.stats.faults[fault] += 1
    return MediaBody(emu, media, start, length, 206 if partial else 200, headers, fault)


async def message_content(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/message-store/{messageId}/content/{attachmentId}` (Medium)."""
    mid, aid = request.path_params["messageId"], request.path_params["attachmentId"]
    msg = emu.store.messages.get(int(mid)) if mid.isdigit() else None
    if msg is None or msg.availability == "Purged":
        raise emu.not_found("messageId", mid)
    att = next((a for a in msg.attachments if str(a.id) == aid), None)
    if att is None:
        raise emu.not_found("attachmentId", aid)
    media: Any = att.media if att.media is not None else _TextMedia((att.text or "").encode())
    return media_response(emu, request, media, f"{att.id}{media.extension}")


async def recording_content(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/account/{accountId}/recording/{recordingId}/content` (Heavy)."""
    rec = emu.lookup_recording(request)
    return media_response(emu, request, rec.media, f"{rec.id}{rec.media.extension}")


async def greeting_content(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/greeting/{greetingId}/content` (Heavy), extension or account level."""
    greeting = emu.lookup(emu.store.greetings, request, "greetingId")
    return media_response(emu, request, greeting.media, f"{greeting.id}{greeting.media.extension}")


def routes(emu: Emulator) -> list[BaseRoute]:
    """The media host's routes."""
    acct = "/restapi/v1.0/account/{accountId}"
    ext = acct + "/extension/{extensionId}"

    def r(path: str, name: str, group: str, handler) -> Route:
        async def bound(request: Request, session: Session | None) -> Response:
            return await handler(emu, request, session)

        return Route(path, emu.endpoint(name, group, bound, auth="media"), methods=["GET"], name=name)

    return [
        r(ext + "/message-store/{messageId}/content/{attachmentId}", "message-content", "Medium", message_content),
        r(acct + "/recording/{recordingId}/content", "recording-content", "Heavy", recording_content),
        r(ext + "/greeting/{greetingId}/content", "greeting-content", "Heavy", greeting_content),
        r(acct + "/greeting/{greetingId}/content", "greeting-content-account", "Heavy", greeting_content),
    ]
