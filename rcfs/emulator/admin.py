"""Admin endpoints of the emulator (platform host, no auth: a loopback test tool).

    GET  /_emulator/stats          {"requests": {route: n}, "total_requests", "groups":
                                   {"light": n, ...}, "statuses": {"200": n, ...},
                                   "rate_limited": n, "bytes_served": n, "faults": {kind: n},
                                   "media_requests": [[route, path, Range header], ...]: the
                                   last 2000 content requests in arrival order}
    POST /_emulator/stats/reset    zero the counters (204)
    GET  /_emulator/requests       every rate-limited request in arrival order (the last
                                   20000): {"requests": [{t (emulator clock, s), route, path, group,
                                   status (200: let through, 429), forced, remaining,
                                   session (the OAuth session id)}]}
    GET  /_emulator/config         the live settings (same keys as below)
    POST /_emulator/config         change settings at run time; JSON object with any of
                                   window, limit_light, limit_medium, limit_heavy,
                                   limit_auth, limits {light, medium, heavy, auth},
                                   rate_limits, max_bytes_per_response, access_token_ttl,
                                   refresh_token_ttl, refresh_grace, password_grant,
                                   send_delay, failing_numbers, report_delay,
                                   report_failures, report_archive_max_bytes, faults {latency_ms, handshake_ms,
                                   error_rate, reset_rate, truncate_rate, chunk_delay_ms, force_429,
                                   seed, send_force_503, send_force_429, send_drop_answer,
                                   send_answer_delay_ms, cut_at}; and (issue 9) compress_json, session_cap,
                                   missing_permissions [names], chunked_media,
                                   unknown_media_total, ignore_range, foreign_media_rate,
                                   foreign_media_base, jwt (the credential the JWT grant
                                   accepts: change it to "revoke" the user's JWT),
                                   denied_extensions [ids] (their mailbox answers 403
                                   CMN-408 [ReadMessages] even to an admin).
                                   Unknown keys are 400. Answers the new settings.
    POST /_emulator/ratelimit/reset  forget all rate-limit counts and penalties (204)
    POST /_emulator/sessions/end   end OAuth sessions as an admin logout or a password
                                   change does: JSON {"which": "all"|"oldest"|"newest"}
                                   (default all) → {"ended": n}; their access tokens answer
                                   401 and their refresh tokens 400 invalid_grant from now on,
                                   and their push sockets are closed (gateway.py)
    POST /_emulator/messages       inject an inbound message (for sync tests): JSON
                                   {"type": "SMS"|"Fax"|"VoiceMail", "from": "+1…",
                                    "text": "…" (SMS), "also": ["+1…"] (SMS: the other
                                    recipients of a group text), "toNumber": "+1…" (SMS:
                                    which of the user's numbers it reaches; default the
                                    main number), "pages": n (Fax), "seconds": n
                                    (VoiceMail), "audioParts": n (VoiceMail: that many
                                    AudioRecording attachments, default 1), "extension":
                                    "<number>" (whose mailbox; default the signed-in user's;
                                    not with deliverBefore), "minutesAgo": n
                                    (default 0), "deliverBefore": "<route name>" (hold the
                                    message, and store it just before the next request of
                                    that route, e.g. "message-list", is answered: a message
                                    arriving at an exact point of a client's sequence)}
                                   → 201 with the message JSON
    GET  /_emulator/info           ids, base URLs and counts of the seeded data
    POST /_emulator/calls          add a recorded call that just ended (for refresh tests):
                                   JSON {"extension": "<number>" (default the signed-in
                                   user's), "from": "+1…" (default +16505550199),
                                   "seconds": n (default 40), "minutesAgo": n (default 1)}
                                   → 201 {"id": call id, "recordingId": …}
    POST /_emulator/extensions/delete  delete an extension of the company, as an admin
                                   does while a client has it mounted: JSON {"id": "<ext id>"}
                                   → {"deleted": true|false} (the signed-in admin cannot be)
    GET  /_emulator/sent           every outbound message as stored, oldest first:
                                   {"messages": [{id, type, messageStatus, from, to
                                   [{phoneNumber, messageStatus, faxErrorCode}], text,
                                   faxPageCount, ..., attachments [{fileName,
                                   contentType, size, sha256}]}]} (sending.sent_report)

Push (gateway.py, same rules):

    GET  /_emulator/push           the WebSocket gateway: open connections with their
                                   subscription and filters, sessions, counts (connections,
                                   notifications, heartbeats, recoveries, timeouts), timeouts
    POST /_emulator/push           switches: {"drop": true} (close every socket as a lost
                                   connection would), {"stall": seconds} (every socket a
                                   black hole for that long), {"fail_recoveries": n},
                                   {"subscription_id_header": bool}, {"single_use_tokens": bool}
    POST /_emulator/calls/live     place and end a (recorded) call: JSON {"from"|"to": "+1…",
                                   "direction": "Inbound"|"Outbound", "seconds": recording
                                   length, "talkSeconds": wall seconds before it ends (0),
                                   "callLogDelay": seconds after the end before the call log
                                   has it (0), "recorded": true, "recordingType", "format":
                                   "mp3"|"wav", "extension": "<number>" (whose call; default
                                   the signed-in user's)} -> 201 {telephonySessionId,
                                   sessionId, callId, recordingId}; telephony-session events
                                   Setup, Answered and Disconnected (with `recordings`) are
                                   pushed, to that extension's and the account's filters

None of these count against rate limits; they are counted in `requests` under
their route names (`admin-*`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .app import ApiProblem
from .auth import Session
from .config import Faults
from .store import Attachment, Message, Party, conversation_id

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger(__name__)

_NUMBERS = {"window": float, "limit_light": int, "limit_medium": int, "limit_heavy": int,
            "limit_auth": int, "send_delay": float,
            "report_delay": float, "report_failures": int, "report_archive_max_bytes": int}
_OPTIONAL_INTS = ("max_bytes_per_response", "access_token_ttl", "refresh_token_ttl", "session_cap")
_BOOLS = ("rate_limits", "password_grant", "compress_json", "chunked_media", "unknown_media_total",
          "ignore_range")
_SHARES = ("foreign_media_rate",)  # numbers within [0, 1]
_STRINGS = ("foreign_media_base", "jwt")
_FAULTS = {"latency_ms": float, "handshake_ms": float, "error_rate": float, "reset_rate": float, "truncate_rate": float,
           "chunk_delay_ms": float, "force_429": int, "cut_at": float, "seed": int,
           "send_force_503": int, "send_force_429": int, "send_drop_answer": int,
           "send_answer_delay_ms": float}


def config_view(emu: Emulator) -> dict[str, Any]:
    """The run-time settings as JSON."""
    c = emu.config
    out: dict[str, Any] = {k: getattr(c, k) for k in (*_NUMBERS, *_OPTIONAL_INTS, *_BOOLS, *_SHARES)}
    out["failing_numbers"] = list(c.failing_numbers)
    out["missing_permissions"] = list(c.missing_permissions)
    out["denied_extensions"] = list(c.denied_extensions)
    out["foreign_media_base"] = c.foreign_media_base
    out["refresh_grace"] = emu.tokens.refresh_grace
    out["faults"] = dataclasses.asdict(c.faults)
    return out


def _bad(emu: Emulator, message: str) -> ApiProblem:
    return ApiProblem(emu.api_error(400, "CMN-101", message))


def _number(emu: Emulator, key: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(emu, f"[{key}] must be a number")
    if value < 0:
        raise _bad(emu, f"[{key}] must not be negative")
    return kind(value)


def apply_config(emu: Emulator, body: dict[str, Any]) -> None:
    """Validate all of `body` first, then change the live config (all or nothing)."""
    updates: dict[str, Any] = {}
    fault_updates: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in body.items():
        if key in _NUMBERS:
            updates[key] = _number(emu, key, value, _NUMBERS[key])
        elif key == "limits":
            if not isinstance(value, dict):
                raise _bad(emu, "[limits] must be an object")
            for group, limit in value.items():
                name = f"limit_{str(group).lower()}"
                if name not in _NUMBERS:
                    raise _bad(emu, f"unknown rate-limit group [{group}]")
                updates[name] = _number(emu, name, limit, int)
        elif key in _OPTIONAL_INTS:
            updates[key] = None if value is None else _number(emu, key, value, int)
        elif key in _BOOLS:
            if not isinstance(value, bool):
                raise _bad(emu, f"[{key}] must be true or false")
            updates[key] = value
        elif key in _SHARES:
            updates[key] = _number(emu, key, value, float)
            if updates[key] > 1:
                raise _bad(emu, f"[{key}] must be within [0, 1]")
        elif key in _STRINGS:
            if not isinstance(value, str) or not value:
                raise _bad(emu, f"[{key}] must be a non-empty string")
            updates[key] = value
        elif key == "denied_extensions":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _bad(emu, "[denied_extensions] must be a list of strings")
            updates[key] = tuple(value)
        elif key == "missing_permissions":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _bad(emu, "[missing_permissions] must be a list of strings")
            updates[key] = tuple(value)
        elif key == "refresh_grace":
            extra[key] = _number(emu, key, value, float)
        elif key == "failing_numbers":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _bad(emu, "[failing_numbers] must be a list of strings")
            updates[key] = tuple(value)
        elif key == "faults":
            if not isinstance(value, dict):
                raise _bad(emu, "[faults] must be an object")
            for name, v in value.items():
                if name not in _FAULTS:
                    raise _bad(emu, f"unknown fault [{name}]")
                fault_updates[name] = _number(emu, name, v, _FAULTS[name])
                if (name.endswith("_rate") or name == "cut_at") and fault_updates[name] > 1:
                    raise _bad(emu, f"[{name}] must be within [0, 1]")
        else:
            raise _bad(emu, f"unknown setting [{key}]")
    if updates.get("window") == 0:
        raise _bad(emu, "[window] must be positive")
    for key, value in updates.items():
        setattr(emu.config, key, value)
    if fault_updates:
        faults: Faults = emu.config.faults
        for name, value in fault_updates.items():
            setattr(faults, name, value)
        emu.reseed_faults()
    if "refresh_grace" in extra:
        emu.tokens.refresh_grace = extra["refresh_grace"]
    log.info("emulator config changed: %s", sorted(body))


async def _json(emu: Emulator, request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiProblem(emu.api_error(400, "CMN-103", "JSON body is unparsable")) from None
    if not isinstance(body, dict):
        raise _bad(emu, "body must be a JSON object")
    return body


def inject_message(emu: Emulator, body: dict[str, Any]) -> Message:
    """Create an inbound message from the admin JSON (see the module docstring)."""
    media = importlib.import_module("rcfs.emulator.media")
    store = emu.store
    kind = body.get("type", "SMS")
    sender = str(body.get("from", "+16505550199"))
    minutes = body.get("minutesAgo", 0)
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
        raise _bad(emu, "[minutesAgo] must be a number")
    created = store.now() - dt.timedelta(minutes=minutes)
    msg_id = store.new_id()
    me = Party(phone_number=store.main_number, extension_number=store.extension_number)
    try:
        if kind == "SMS":
            text = str(body.get("text", "Hello from the emulator"))
            att = Attachment(id=msg_id, type="Text", media=media.text_plain(text), text=text)
            # A group text: the other recipients besides the user ("also"); the user's own
            # number it arrives at ("toNumber", default the main number).
            also = body.get("also", [])
            mine = body.get("toNumber", store.main_number)
            if not isinstance(also, list) or not all(isinstance(n, str) and n for n in also):
                raise _bad(emu, "[also] must be a list of phone numbers")
            if not isinstance(mine, str) or not mine:
                raise _bad(emu, "[toNumber] must be a phone number")
            me = Party(phone_number=mine, extension_number=store.extension_number)
            msg = Message(id=msg_id, type="SMS", direction="Inbound", creation_time=created,
                          from_=Party(phone_number=sender), to=[me, *(Party(phone_number=n) for n in also)],
                          attachments=[att], subject=text,
                          conversation_id=conversation_id([sender, mine, *also]))
        elif kind == "Fax":
            pages = int(body.get("pages", 1))
            att = Attachment(id=msg_id, type="RenderedDocument", media=media.fax_pdf(msg_id, pages))
            msg = Message(id=msg_id, type="Fax", direction="Inbound", creation_time=created,
                          from_=Party(phone_number=sender), to=[me], attachments=[att],
                          subject=sender, fax_page_count=pages, fax_resolution="High")
        elif kind == "VoiceMail":
            seconds = int(body.get("seconds", 5))
            parts = body.get("audioParts", 1)
            if isinstance(parts, bool) or not isinstance(parts, int) or not 1 <= parts <= 10:
                raise _bad(emu, "[audioParts] must be an integer in 1..10")
            atts = [Attachment(id=msg_id if i == 0 else store.new_id(), type="AudioRecording",
                               media=media.audio_mp3(msg_id + i, seconds + i), vm_duration=seconds + i)
                    for i in range(parts)]
            msg = Message(id=msg_id, type="VoiceMail", direction="Inbound", creation_time=created,
                          from_=Party(phone_number=sender), to=[me], attachments=atts,
                          subject=f"Voice message from {sender}", vm_transcription_status="NotAvailable")
        else:
            raise _bad(emu, f"[type] must be SMS, Fax or VoiceMail, not {kind!r}")
    except AttributeError as exc:  # media factories not available in this build
        raise ApiProblem(emu.api_error(501, "CMN-202", f"cannot build {kind} media: {exc}")) from None
    route = body.get("deliverBefore")
    if route is not None:
        if not isinstance(route, str) or not route:
            raise _bad(emu, "[deliverBefore] must be a route name")
        emu.held_messages.append((route, msg))
        return msg
    return store.add_message(msg)


def routes(emu: Emulator) -> list[BaseRoute]:
    """The `/_emulator/*` routes."""

    async def stats(request: Request, session: Session | None) -> Response:
        return JSONResponse(emu.stats.as_dict())

    async def request_log(request: Request, session: Session | None) -> Response:
        return JSONResponse({"requests": list(emu.stats.log)})

    async def stats_reset(request: Request, session: Session | None) -> Response:
        emu.stats.reset()
        return Response(status_code=204)

    async def get_config(request: Request, session: Session | None) -> Response:
        return JSONResponse(config_view(emu))

    async def set_config(request: Request, session: Session | None) -> Response:
        apply_config(emu, await _json(emu, request))
        return JSONResponse(config_view(emu))

    async def ratelimit_reset(request: Request, session: Session | None) -> Response:
        emu.limiter.reset()
        return Response(status_code=204)

    async def sessions_end(request: Request, session: Session | None) -> Response:
        which = (await _json(emu, request)).get("which", "all")
        if which not in ("all", "oldest", "newest"):
            raise _bad(emu, "[which] must be all, oldest or newest")
        return JSONResponse({"ended": emu.tokens.end_sessions(which)})

    async def messages(request: Request, session: Session | None) -> Response:
        body = await _json(emu, request)
        try:
            store = emu.store_of_number(body.get("extension"))
        except ValueError as exc:
            raise _bad(emu, str(exc)) from None
        if store is not emu.main_store and body.get("deliverBefore") is not None:
            raise _bad(emu, "[deliverBefore] is for the signed-in user's mailbox only")
        with emu.addressing(store):  # that extension's mailbox, its ids and URIs
            msg = inject_message(emu, body)
            return JSONResponse(emu.render_message(msg), status_code=201)

    async def info(request: Request, session: Session | None) -> Response:
        s = emu.store
        return JSONResponse({
            "platform": emu.platform_base,
            "media": emu.media_base,
            "account_id": s.account_id,
            "extension_id": s.extension_id,
            "messages": len(s.messages),
            "calls": len(s.calls),
            "recordings": len(s.recordings),
            "greetings": len(s.greetings),
            "extensions": len(emu.company.extensions),
            "company_calls": sum(len(e.store.calls) for e in emu.company.extensions.values()),
        })

    async def calls(request: Request, session: Session | None) -> Response:
        body = await _json(emu, request)
        from . import company as company_mod
        number = str(body.get("extension") or emu.main_store.extension_number)
        ext = emu.company.by_number(number)
        if ext is None:
            raise _bad(emu, f"no extension numbered [{number}]")
        seconds, minutes = body.get("seconds", 40), body.get("minutesAgo", 1)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in (seconds, minutes)):
            raise _bad(emu, "[seconds] and [minutesAgo] must be numbers >= 0")
        call = company_mod.add_recorded_call(emu.company, ext, str(body.get("from", "+16505550199")),
                                             emu.store.now() - dt.timedelta(minutes=minutes), int(seconds))
        return JSONResponse({"id": call.id, "recordingId": call.recording.id}, status_code=201)

    async def extension_delete(request: Request, session: Session | None) -> Response:
        ext_id = str((await _json(emu, request)).get("id", ""))
        return JSONResponse({"deleted": emu.company.remove(ext_id)})

    async def sent(request: Request, session: Session | None) -> Response:
        from . import sending
        return JSONResponse({"messages": sending.sent_report(emu)})

    def r(path: str, name: str, handler, method: str) -> Route:
        return Route(path, emu.endpoint(name, None, handler, auth="none"), methods=[method], name=name)

    return [
        r("/_emulator/stats", "admin-stats", stats, "GET"),
        r("/_emulator/stats/reset", "admin-stats-reset", stats_reset, "POST"),
        r("/_emulator/requests", "admin-requests", request_log, "GET"),
        r("/_emulator/config", "admin-config", get_config, "GET"),
        r("/_emulator/config", "admin-config-set", set_config, "POST"),
        r("/_emulator/ratelimit/reset", "admin-ratelimit-reset", ratelimit_reset, "POST"),
        r("/_emulator/sessions/end", "admin-sessions-end", sessions_end, "POST"),
        r("/_emulator/messages", "admin-messages", messages, "POST"),
        r("/_emulator/info", "admin-info", info, "GET"),
        r("/_emulator/sent", "admin-sent", sent, "GET"),
        r("/_emulator/extensions/delete", "admin-extension-delete", extension_delete, "POST"),
        r("/_emulator/calls", "admin-calls", calls, "POST"),
    ]
