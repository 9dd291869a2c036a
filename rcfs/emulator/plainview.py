"""A plain HTTP view of the account's media, for benchmarking rcfs against generic tools.

rclone's `http` backend and httpdirfs mount a web server's directory index; they do not
speak the RingCentral API. With `config.plain_view` on (off by default; `--plain-view
true`), the media host also serves, without auth:

    /plain/                      index of the kinds: faxes/ voicemail/ recordings/ mms/
    /plain/<kind>/               index of one kind (HTML, one link per entry)
    /plain/<kind>/<name>         a file: the same bytes as the API's content URL
    /plain/mms/<message>/        an MMS message's parts, as rcfs shows them
    /plain/mms/<message>/<name>

Names are built as rcfs's catalog builds them, from the same JSON the API returns
(`Emulator.render_message` / `render_call`) and with `rcfs.names`, so a path in an rcfs
mount and the same path under an anchor's mount hold the same bytes. Recordings carry the
extension of their real content type (what rcfs shows once it has learned the type).

Files answer through `media_routes.media_response`: Range, HEAD, the byte cap and the
body faults behave exactly as on the content routes. Every request goes through
`Emulator.endpoint`, so the configured latency, the 503 fault and the rate limiter apply
as they do to the API: index pages count in the Light group (like a message-list
call), message files in Medium (like message content) and recordings in Heavy (like
recording content); over budget the answer is 429 with Retry-After. Requests are
counted in `/_emulator/stats` under route names starting with `plain-`.
"""

from __future__ import annotations

import datetime as dt
import html
import urllib.parse
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from rcfs import names

from .auth import Session
from .media_routes import _TextMedia, media_response

if TYPE_CHECKING:
    from .app import Emulator

PREFIX = "/plain"
KINDS = ("faxes", "voicemail", "recordings", "mms")
_DOCUMENT_TYPES = ("RenderedDocument", "SourceDocument")


class _Entry:
    """One file of the view: where its bytes come from and when it was made."""

    __slots__ = ("media", "mtime", "default_name")

    def __init__(self, media: Any, mtime: dt.datetime, default_name: str) -> None:
        self.media = media
        self.mtime = mtime
        self.default_name = default_name


class _Folder:
    """Entries by name, in listing order; sub-folders (MMS messages) as `_Folder`."""

    def __init__(self) -> None:
        self.children: dict[str, _Entry | _Folder] = {}


class PlainView:
    """Builds the folders from the store, rebuilt only when the store has changed."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self._version: tuple | None = None
        self._folders: dict[str, _Folder] = {}

    def folders(self) -> dict[str, _Folder]:
        store = self.emu.store
        version = (store.last_change_seq, len(store.messages), len(store.calls), len(store.recordings))
        if version != self._version:
            self._folders = self._build()
            self._version = version
        return self._folders

    def _build(self) -> dict[str, _Folder]:
        folders = {kind: _Folder() for kind in KINDS}
        store = self.emu.store
        by_type = {"Fax": "faxes", "VoiceMail": "voicemail", "SMS": "mms"}
        for msg in store.query_messages():  # Alive messages, newest first, as the API lists them
            kind = by_type.get(msg.type)
            if kind is None:
                continue
            atts = {a.id: a for a in msg.attachments}
            record = self.emu.render_message(msg)
            created = names.parse_time(record.get("creationTime")) or msg.creation_time
            stem = names.base_name(created, record.get("direction"), names.other_party(record), str(record["id"]))
            rendered = [a for a in record.get("attachments") or [] if a.get("uri")]

            def entry(att_json: dict) -> _Entry:
                att = atts[att_json["id"]]
                media = att.media if att.media is not None else _TextMedia((att.text or "").encode())
                return _Entry(media, msg.creation_time, f"{att.id}{media.extension}")

            folder = folders[kind]
            if kind == "faxes":
                docs = [a for a in rendered if a.get("type") in _DOCUMENT_TYPES] or rendered
                docs.sort(key=lambda a: a.get("type") != "RenderedDocument")
                for i, att in enumerate(docs):
                    suffix = "" if i == 0 else f"_{i + 1}"
                    folder.children[names.with_extension(stem + suffix, att.get("contentType"))] = entry(att)
            elif kind == "voicemail":
                for att in rendered:
                    if att.get("type") == "AudioRecording":
                        folder.children[names.with_extension(stem, att.get("contentType"))] = entry(att)
                    elif att.get("type") == "AudioTranscription":
                        folder.children[stem + ".txt"] = entry(att)
            else:
                parts = [a for a in rendered if a.get("type") == "MmsAttachment"]
                if not parts:
                    continue  # a plain SMS is not part of /mms
                sub = _Folder()
                folder.children[stem] = sub
                for i, att in enumerate(parts, start=1):
                    sub.children[names.attachment_name(att.get("fileName"), i, att.get("contentType"))] = entry(att)
                for att in rendered:
                    if att.get("type") == "Text":
                        name = "text.txt" if "text.txt" not in sub.children else "message-text.txt"
                        sub.children[name] = entry(att)
                        break
        for call in store.query_calls(with_recording=True):
            record = self.emu.render_call(call)
            rec = call.recording
            assert rec is not None
            created = names.parse_time(record.get("startTime")) or call.start_time
            stem = names.base_name(created, record.get("direction"), names.other_party(record), rec.id)
            folders["recordings"].children[names.with_extension(stem, rec.media.content_type)] = _Entry(
                rec.media, call.start_time, f"{rec.id}{rec.media.extension}")
        return folders


def _index(title: str, links: list[str]) -> HTMLResponse:
    """An autoindex-style page: one `<a href>` per entry, directories ending in `/`."""
    rows = "\n".join(f'<a href="{urllib.parse.quote(link)}">{html.escape(link)}</a>' for link in links)
    body = (f"<!DOCTYPE html>\n<html><head><title>Index of {html.escape(title)}</title></head>\n"
            f"<body><h1>Index of {html.escape(title)}</h1>\n<pre>\n{rows}\n</pre></body></html>\n")
    return HTMLResponse(body)


def routes(emu: Emulator) -> list[BaseRoute]:
    """The view's routes (added to the media host only when `config.plain_view` is on)."""
    view = PlainView(emu)

    def folder_at(kind: str, sub: str | None) -> _Folder:
        folder = view.folders().get(kind)
        if folder is not None and sub is not None:
            child = folder.children.get(sub)
            folder = child if isinstance(child, _Folder) else None
        if folder is None:
            raise emu.not_found("path", kind if sub is None else f"{kind}/{sub}")
        return folder

    async def root(request: Request, session: Session | None) -> Response:
        return _index(PREFIX + "/", [k + "/" for k in KINDS])

    async def listing(request: Request, session: Session | None) -> Response:
        kind, sub = request.path_params["kind"], request.path_params.get("sub")
        folder = folder_at(kind, sub)
        links = [n + "/" if isinstance(c, _Folder) else n for n, c in folder.children.items()]
        return _index(request.url.path, links)

    async def file(request: Request, session: Session | None) -> Response:
        params = request.path_params
        return serve_file(request, params["kind"], params.get("sub"), params["name"])

    async def recording(request: Request, session: Session | None) -> Response:
        return serve_file(request, "recordings", None, request.path_params["name"])

    def serve_file(request: Request, kind: str, sub: str | None, name: str) -> Response:
        child = folder_at(kind, sub).children.get(name)
        if isinstance(child, _Folder):  # a directory asked for without its slash
            return RedirectResponse(request.url.path + "/", status_code=301)
        if child is None:
            raise emu.not_found("path", request.url.path)
        response = media_response(emu, request, child.media, child.default_name)
        response.headers["Last-Modified"] = format_datetime(child.mtime.astimezone(dt.timezone.utc), usegmt=True)
        return response

    def route(path: str, name: str, group: str, handler) -> Route:
        return Route(path, emu.endpoint(name, group, handler, auth="none"), methods=["GET", "HEAD"], name=name)

    # Starlette tries routes in order: the Heavy recordings route before the generic one.
    return [
        route(PREFIX + "/", "plain-index", "Light", root),
        route(PREFIX + "/recordings/{name}", "plain-recording", "Heavy", recording),
        route(PREFIX + "/{kind}/", "plain-index-kind", "Light", listing),
        route(PREFIX + "/{kind}/{sub}/", "plain-index-sub", "Light", listing),
        route(PREFIX + "/{kind}/{sub}/{name}", "plain-file-sub", "Medium", file),
        route(PREFIX + "/{kind}/{name}", "plain-file", "Medium", file),
    ]

