"""JSON routes of the platform host: OAuth, message store, message sync, call log,
recording metadata, greetings metadata, and the hand-off to `sending.py` for POSTs.

Rate-limit groups follow CONTRACT §4.4. Behaviour details (CONTRACT §6–8):

* message list: `messageType`, `availability` (default Alive), `direction`,
  `readStatus` (all repeatable), `conversationId`, `phoneNumber`, `dateFrom` (default
  `dateTo` − 24 h), `dateTo` (default now), `page`, `perPage` (default 100, clamped to
  1000). Newest first. `uri` echoes the effective query, including the computed
  `dateFrom`; navigation links carry the same query, so paging is stable.
* message sync: FSync defines the frame (`dateFrom` default `dateTo` − 24 h, following
  the spec rather than the guide's one week; `messageType`, `direction`,
  `conversationId`) and returns Alive messages newest first, at most `recordCount`.
  ISync returns what changed since the token (Deleted/Purged ones as `{id,
  availability}`), ignoring `dateFrom`/`recordCount` widening. Tokens are signed with a
  per-process key: a token from another emulator run, or a tampered one, is 400 MSG-333.
* call log: user and account level, `dateFrom`/`dateTo`/`type`/`direction`/
  `withRecording`/`recordingType`, `perPage` 1–1000 or `max`; `view` is accepted and
  ignored (always Simple).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import importlib
import json
import logging
import math
import secrets
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response


class JSONResponse(_StarletteJSONResponse):
    """JSON with non-ASCII characters escaped.

    Hostile `fileName` values may hold lone surrogates, which cannot be encoded as
    UTF-8; as `\\udcff` escapes they are still valid JSON text, as a server could send.
    """

    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")
from starlette.routing import BaseRoute, Route

from . import auth
from .app import ApiProblem
from .auth import Session
from .store import UTC, Message, iso

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger(__name__)

MESSAGE_TYPES = ("Fax", "SMS", "VoiceMail", "Pager", "Text")
AVAILABILITIES = ("Alive", "Deleted", "Purged")
DIRECTIONS = ("Inbound", "Outbound")
READ_STATUSES = ("Read", "Unread")
CALL_TYPES = ("Voice", "Fax")
RECORDING_TYPES = ("Automatic", "OnDemand", "All")
DEFAULT_PER_PAGE, MAX_PER_PAGE = 100, 1000
DAY = dt.timedelta(hours=24)


# query parsing ------------------------------------------------------------------
def bad_param(emu: Emulator, name: str, value: Any, message: str | None = None) -> ApiProblem:
    """400 CMN-101 for a parameter with an invalid value."""
    return ApiProblem(emu.api_error(400, "CMN-101", message or f"Parameter [{name}] value is invalid",
                                    parameterName=name, parameterValue=str(value)))


def parse_time(emu: Emulator, name: str, raw: str | None) -> dt.datetime | None:
    """An ISO-8601 query value; naive means UTC. The SDK does not URL-encode queries,
    so an offset's `+` arrives as a space: put it back."""
    if raw is None or raw == "":
        return None
    text = raw.strip().replace(" ", "+")
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise bad_param(emu, name, raw) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def enum_list(emu: Emulator, request: Request, name: str, allowed: Iterable[str]) -> list[str]:
    """A repeatable enum parameter; unknown values are 400 CMN-101."""
    values = request.query_params.getlist(name)
    allowed = tuple(allowed)
    for v in values:
        if v not in allowed:
            raise bad_param(emu, name, v)
    return values


def int_param(emu: Emulator, request: Request, name: str, default: int, *, minimum: int = 1) -> int:
    """An integer parameter ≥ `minimum`."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_param(emu, name, raw) from None
    if value < minimum:
        raise bad_param(emu, name, raw)
    return value


def bool_param(emu: Emulator, request: Request, name: str, default: bool = False) -> bool:
    """`true`/`false` (any case)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise bad_param(emu, name, raw)


def phone_param(request: Request, name: str) -> str | None:
    """A phone-number filter; a leading space is an unencoded `+` (SDK quirk)."""
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return None
    raw = raw.replace(" ", "+")
    return raw.strip()


# paging ---------------------------------------------------------------------------
def paged(emu: Emulator, request: Request, items: list, query: list[tuple[str, str]],
          page: int, per_page: int) -> tuple[list, dict, dict, str]:
    """Slice one page; build `paging`, `navigation` and the page's own `uri`.

    `query` is the effective query without page/perPage; navigation links repeat it.
    Links exist only where they lead somewhere: no `previousPage` on page 1, no
    `nextPage` on the last page.
    """
    total = len(items)
    total_pages = math.ceil(total / per_page) if total else 0
    start = (page - 1) * per_page
    records = items[start:start + per_page]
    base = f"{emu.platform_base}{emu.canonical_path(request)}"

    def link(p: int) -> dict[str, str]:
        return {"uri": f"{base}?{urlencode(query + [('page', str(p)), ('perPage', str(per_page))], safe=':')}"}

    paging: dict[str, int] = {"page": page, "perPage": per_page}
    if records:
        paging["pageStart"] = start
        paging["pageEnd"] = start + len(records) - 1
    paging["totalPages"] = total_pages
    paging["totalElements"] = total
    navigation = {"firstPage": link(1)}
    if page < total_pages:
        navigation["nextPage"] = link(page + 1)
    if page > 1:
        navigation["previousPage"] = link(min(page - 1, max(total_pages, 1)))
    navigation["lastPage"] = link(max(total_pages, 1))
    return records, paging, navigation, link(page)["uri"]


# message store --------------------------------------------------------------------
def find_message(emu: Emulator, raw_id: str) -> Message:
    """The message with that id, or 404 CMN-102."""
    try:
        msg = emu.store.messages.get(int(raw_id))
    except ValueError:
        msg = None
    if msg is None:
        raise emu.not_found("messageId", raw_id)
    return msg


async def list_messages(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/message-store` (Light)."""
    types = enum_list(emu, request, "messageType", MESSAGE_TYPES)
    availability = enum_list(emu, request, "availability", AVAILABILITIES) or ["Alive"]
    directions = enum_list(emu, request, "direction", DIRECTIONS)
    read_status = enum_list(emu, request, "readStatus", READ_STATUSES)
    raw_to = request.query_params.get("dateTo")
    date_to = parse_time(emu, "dateTo", raw_to) or emu.store.now()
    date_from = parse_time(emu, "dateFrom", request.query_params.get("dateFrom")) or date_to - DAY
    page = int_param(emu, request, "page", 1)
    per_page = min(MAX_PER_PAGE, int_param(emu, request, "perPage", DEFAULT_PER_PAGE))
    conversation = request.query_params.get("conversationId")
    phone = phone_param(request, "phoneNumber")

    items = emu.store.query_messages(types=types, date_from=date_from, date_to=date_to,
                                     directions=directions, availability=availability,
                                     read_status=read_status)
    if conversation:
        items = [m for m in items if str(m.conversation_id) == conversation]
    if phone:
        items = [m for m in items if phone in {p.phone_number for p in [m.from_, *m.to]}]

    query = [("messageType", t) for t in types]
    query += [("availability", a) for a in availability]
    query += [("direction", d) for d in directions]
    query += [("readStatus", r) for r in read_status]
    query.append(("dateFrom", iso(date_from)))
    if raw_to:
        query.append(("dateTo", iso(date_to)))
    if conversation:
        query.append(("conversationId", conversation))
    if phone:
        query.append(("phoneNumber", phone))
    records, paging, navigation, uri = paged(emu, request, items, query, page, per_page)
    return JSONResponse({
        "uri": uri,
        "records": [emu.render_message(m) for m in records],
        "paging": paging,
        "navigation": navigation,
    })


async def get_message(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/message-store/{messageId}` (Light)."""
    msg = find_message(emu, request.path_params["messageId"])
    return JSONResponse(emu.render_message(msg, single=True))


async def _json_body(emu: Emulator, request: Request) -> dict:
    raw = await request.body()
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise ApiProblem(emu.api_error(400, "CMN-103", "JSON body is unparsable")) from None
    if not isinstance(body, dict):
        raise ApiProblem(emu.api_error(400, "CMN-104", "Request body must be a JSON object"))
    return body


async def update_message(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`PUT …/message-store/{messageId}` (Medium): body `{"readStatus": …}`."""
    msg = find_message(emu, request.path_params["messageId"])
    body = await _json_body(emu, request)
    status = body.get("readStatus")
    if status not in READ_STATUSES:
        raise bad_param(emu, "readStatus", status)
    if msg.read_status != status:
        msg.read_status = status
        emu.store.touch(msg)
    return JSONResponse(emu.render_message(msg))


async def patch_message(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`PATCH …/message-store/{messageId}` (Medium): `readStatus` and/or `availability`."""
    msg = find_message(emu, request.path_params["messageId"])
    body = await _json_body(emu, request)
    status, availability = body.get("readStatus"), body.get("availability")
    if status is None and availability is None:
        raise bad_param(emu, "readStatus", None, "At least one of [readStatus, availability] is required")
    if status is not None and status not in READ_STATUSES:
        raise bad_param(emu, "readStatus", status)
    if availability is not None:
        if availability not in AVAILABILITIES:
            raise bad_param(emu, "availability", availability)
        if msg.availability == "Purged" and availability != "Purged":
            raise bad_param(emu, "availability", availability, "A purged message cannot be restored")
    changed = False
    if status is not None and status != msg.read_status:
        msg.read_status, changed = status, True
    if availability is not None and availability != msg.availability:
        msg.availability, changed = availability, True
    if changed:
        emu.store.touch(msg)
    return JSONResponse(emu.render_message(msg))


async def delete_message(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`DELETE …/message-store/{messageId}` (Medium): Alive → Deleted → Purged; `purge=true`
    purges at once. Deleting a purged message changes nothing."""
    msg = find_message(emu, request.path_params["messageId"])
    purge = bool_param(emu, request, "purge")
    target = "Purged" if purge or msg.availability != "Alive" else "Deleted"
    if msg.availability != target:
        msg.availability = target
        emu.store.touch(msg)
    return Response(status_code=204)


# message sync ---------------------------------------------------------------------
class SyncTokens:
    """Signed, opaque sync tokens: the change number reached and the sync frame."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(16)

    def encode(self, seq: int, frame: dict) -> str:
        """A token for `seq` and `frame` (JSON-able)."""
        payload = json.dumps({"s": seq, "f": frame}, separators=(",", ":")).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._sign(body)}"

    def decode(self, token: str) -> tuple[int, dict] | None:
        """(seq, frame), or None for anything not issued by this emulator."""
        body, _, sig = token.strip().partition(".")
        if not body or not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            return int(data["s"]), dict(data["f"])
        except (ValueError, KeyError, TypeError):
            return None

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:24]


def _sync_invalid(emu: Emulator) -> ApiProblem:
    return ApiProblem(emu.api_error(400, "MSG-333", "Parameter [syncToken] is invalid: full synchronization is required",
                                    parameterName="syncToken"))


def _in_frame(msg: Message, frame: dict) -> bool:
    if frame.get("types") and msg.type not in frame["types"]:
        return False
    if frame.get("dirs") and msg.direction not in frame["dirs"]:
        return False
    if frame.get("cid") and str(msg.conversation_id) != frame["cid"]:
        return False
    if frame.get("from") and msg.creation_time < dt.datetime.fromisoformat(frame["from"]):
        return False
    return True


async def sync_messages(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/message-sync` (Light): FSync and ISync."""
    q = request.query_params
    token = q.get("syncToken")
    sync_type = q.get("syncType") or ("ISync" if token else "FSync")
    if sync_type not in ("FSync", "ISync"):
        raise bad_param(emu, "syncType", sync_type)
    now = emu.store.now()
    base_uri = f"{emu.platform_base}{emu.canonical_path(request)}"
    if sync_type == "FSync":
        types = enum_list(emu, request, "messageType", MESSAGE_TYPES)
        directions = enum_list(emu, request, "direction", DIRECTIONS)
        date_to = parse_time(emu, "dateTo", q.get("dateTo"))
        date_from = parse_time(emu, "dateFrom", q.get("dateFrom")) or (date_to or now) - DAY
        count = int_param(emu, request, "recordCount", 0, minimum=1) or None
        conversation = q.get("conversationId") or None
        frame = {"types": types, "dirs": directions, "cid": conversation, "from": date_from.isoformat()}
        seq = emu.store.last_change_seq
        items = emu.store.query_messages(types=types, date_from=date_from, date_to=date_to or now,
                                         directions=directions)
        items = [m for m in items if _in_frame(m, frame)]
        older = count is not None and len(items) > count
        if count is not None:
            items = items[:count]
        records = [emu.render_message(m) for m in items]
        query = [("syncType", "FSync"), *[("messageType", t) for t in types],
                 *[("direction", d) for d in directions], ("dateFrom", iso(date_from))]
    else:
        if not token:
            raise bad_param(emu, "syncToken", "", "Parameter [syncToken] is required for ISync")
        decoded = emu.sync_tokens.decode(token)
        if decoded is None or decoded[0] > emu.store.last_change_seq:
            raise _sync_invalid(emu)
        since, frame = decoded
        seq = emu.store.last_change_seq
        changed = [m for m in emu.store.changed_since(since) if _in_frame(m, frame)]
        changed.reverse()  # most recent change first, like the list's newest-first order
        records = [emu.render_message(m) if m.availability == "Alive"
                   else {"id": m.id, "availability": m.availability} for m in changed]
        older = False
        query = [("syncType", "ISync")]
    return JSONResponse({
        "uri": f"{base_uri}?{urlencode(query, safe=':')}",
        "records": records,
        "syncInfo": {
            "syncType": sync_type,
            "syncToken": emu.sync_tokens.encode(seq, frame),
            "syncTime": iso(now),
            "olderRecordsExist": older,
        },
    })


# call log and recordings ----------------------------------------------------------
def _call_log(account_level: bool):
    async def handler(emu: Emulator, request: Request, session: Session | None) -> Response:
        q = request.query_params
        types = enum_list(emu, request, "type", CALL_TYPES)
        directions = enum_list(emu, request, "direction", DIRECTIONS)
        raw_to = q.get("dateTo")
        date_to = parse_time(emu, "dateTo", raw_to) or emu.store.now()
        date_from = parse_time(emu, "dateFrom", q.get("dateFrom")) or date_to - DAY
        with_recording = bool_param(emu, request, "withRecording")
        recording_type = q.get("recordingType") or None
        if recording_type is not None and recording_type not in RECORDING_TYPES:
            raise bad_param(emu, "recordingType", recording_type)
        page = int_param(emu, request, "page", 1)
        raw_per_page = q.get("perPage")
        if raw_per_page is not None and raw_per_page.lower() == "max":
            per_page = MAX_PER_PAGE
        else:
            per_page = min(MAX_PER_PAGE, int_param(emu, request, "perPage", DEFAULT_PER_PAGE))
        filters = dict(date_from=date_from, date_to=date_to, with_recording=with_recording,
                       recording_type=recording_type, types=types, directions=directions)
        if account_level:
            # The company's log: every extension's, each record under its own extension.
            items = [(ext.id, c) for ext in emu.company.extensions.values()
                     for c in ext.store.query_calls(**filters)]
            items.sort(key=lambda pair: (pair[1].start_time, pair[1].id), reverse=True)
        else:
            items = [(None, c) for c in emu.store.query_calls(**filters)]
        query = [("type", t) for t in types] + [("direction", d) for d in directions]
        query.append(("dateFrom", iso(date_from)))
        if raw_to:
            query.append(("dateTo", iso(date_to)))
        if recording_type is not None:
            query.append(("recordingType", recording_type))
        elif with_recording:
            query.append(("withRecording", "true"))
        records, paging, navigation, uri = paged(emu, request, items, query, page, per_page)
        return JSONResponse({
            "uri": uri,
            "records": [emu.render_call(c, account_level=account_level, extension_id=e) for e, c in records],
            "paging": paging,
            "navigation": navigation,
        })

    return handler


SYNC_CALLS_MAX = 250  # ISync answers at most this many records (the spec's CallLogSyncResponse)


async def sync_account_call_log(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/account/{accountId}/call-log-sync` (Heavy, FullCompanyCallLog): FSync gives
    the newest `recordCount` (required) calls since `dateFrom` (at most 30 days back) and a
    token; ISync gives the calls logged since the token (at most 250), newest first."""
    q = request.query_params
    token = q.get("syncToken")
    sync_type = q.get("syncType") or ("ISync" if token else "FSync")
    if sync_type not in ("FSync", "ISync"):
        raise bad_param(emu, "syncType", sync_type)
    now = emu.store.now()
    company = emu.company
    if sync_type == "FSync":
        count = int_param(emu, request, "recordCount", 0, minimum=1)
        if not count:
            raise bad_param(emu, "recordCount", "", "Parameter [recordCount] is required for FSync")
        date_from = parse_time(emu, "dateFrom", q.get("dateFrom"))
        if date_from is not None and date_from < now - 30 * DAY:
            raise bad_param(emu, "dateFrom", q.get("dateFrom"), "Parameter [dateFrom] is limited to the last 30 days")
        items = [(ext.id, c) for ext, c in company.calls() if date_from is None or c.start_time >= date_from]
        items.sort(key=lambda pair: (pair[1].start_time, pair[1].id), reverse=True)
        items = items[:count]
    else:
        decoded = emu.sync_tokens.decode(token or "")
        if decoded is None or decoded[1].get("calls") != "account" or decoded[0] > len(company.added_calls):
            raise _sync_invalid(emu)
        items = []
        for _seq, ext_id, call_id in company.added_calls[decoded[0]:]:
            ext = company.get(ext_id)
            call = ext.store.calls.get(call_id) if ext is not None else None
            if call is not None:
                items.append((ext_id, call))
        items.reverse()
        items = items[:SYNC_CALLS_MAX]
    return JSONResponse({
        "uri": f"{emu.platform_base}{emu.canonical_path(request)}?syncType={sync_type}",
        "records": [emu.render_call(c, account_level=True, extension_id=e) for e, c in items],
        "syncInfo": {"syncType": sync_type,
                     "syncToken": emu.sync_tokens.encode(len(company.added_calls), {"calls": "account"}),
                     "syncTime": iso(now)},
    })


async def get_call(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/call-log/{callRecordId}` (Heavy): the extension's, or any of the company's."""
    if "extensionId" in request.path_params:
        return JSONResponse(emu.render_call(emu.lookup(emu.store.calls, request, "callRecordId")))
    wanted = request.path_params["callRecordId"]
    for ext in emu.company.extensions.values():
        call = ext.store.calls.get(wanted)
        if call is not None:
            return JSONResponse(emu.render_call(call, account_level=True, extension_id=ext.id))
    raise emu.not_found("callRecordId", wanted)


async def get_recording(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/account/{accountId}/recording/{recordingId}` (Heavy)."""
    return JSONResponse(emu.render_recording(emu.lookup_recording(request)))


async def get_greeting(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/extension/{extensionId}/greeting/{greetingId}` (Medium)."""
    return JSONResponse(emu.render_greeting(emu.lookup(emu.store.greetings, request, "greetingId")))


# account ----------------------------------------------------------------------------
def render_extension(emu: Emulator, ext: Any) -> dict[str, Any]:
    """`GetExtensionListInfoResponse` JSON of a company.Extension."""
    first, last = ext.first_last
    contact: dict[str, Any] = {"firstName": first, "lastName": last}
    if ext.email:
        contact["email"] = ext.email
    out: dict[str, Any] = {
        "id": int(ext.id),
        "uri": f"{emu.platform_base}{emu.account_path}/extension/{ext.id}",
        "name": ext.name,
        "type": ext.type,
        "status": ext.status,
        "contact": contact,
        "permissions": {"admin": {"enabled": ext.admin}, "internationalCalling": {"enabled": False}},
        "hidden": False,
        "creationTime": iso(ext.created),
    }
    if ext.number:  # an Unassigned extension has no number
        out["extensionNumber"] = ext.number
    return out


async def get_extension(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/extension/{extensionId}` (Light): enough for a client to learn who it is."""
    s = emu.store
    ext = emu.company.get(s.extension_id)
    out = render_extension(emu, ext)
    if s is emu.main_store:
        out["name"] = "rcfs Demo User"  # what clients have always been told
    out.update({
        "account": {"id": s.account_id, "uri": f"{emu.platform_base}{emu.account_path}"},
        # Where numbers written without a country code are dialled (clients normalise by it).
        "regionalSettings": {"homeCountry": {"id": "1", "name": "United States", "isoCode": "US",
                                             "callingCode": "1"}},
    })
    return JSONResponse(out)


EXTENSION_STATUSES = ("Enabled", "Disabled", "Frozen", "NotActivated", "Unassigned")
EXTENSION_TYPES = (
    "User", "Department", "Announcement", "Voicemail", "DigitalUser", "VirtualUser", "FaxUser",
    "PagingOnly", "SharedLinesGroup", "DelegatedLinesGroup", "GroupCallPickup", "IvrMenu",
    "ApplicationExtension", "ProxyAdmin", "RoomConnector", "ParkLocation", "Limited", "Bot", "Site",
    "Room", "FlexibleUser", "TieLine", "Unknown")


async def list_extensions(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/account/{accountId}/extension` (Medium): the company's extensions in id
    order, filtered by `status` and `type` (repeatable), `extensionNumber`, `email`;
    paged (`page`, `perPage` default 100, at most 1000 here)."""
    statuses = enum_list(emu, request, "status", EXTENSION_STATUSES)
    types = enum_list(emu, request, "type", EXTENSION_TYPES)
    number = request.query_params.get("extensionNumber") or None
    emails = {e.lower() for e in request.query_params.getlist("email")}
    page = int_param(emu, request, "page", 1)
    per_page = min(MAX_PER_PAGE, int_param(emu, request, "perPage", DEFAULT_PER_PAGE))
    items = [e for e in emu.company.extensions.values()
             if (not statuses or e.status in statuses) and (not types or e.type in types)
             and (number is None or e.number == number)
             and (not emails or (e.email or "").lower() in emails)]
    query = ([("status", v) for v in statuses] + [("type", v) for v in types]
             + ([("extensionNumber", number)] if number else []))
    records, paging, navigation, uri = paged(emu, request, items, query, page, per_page)
    return JSONResponse({"uri": uri, "records": [render_extension(emu, e) for e in records],
                         "paging": paging, "navigation": navigation})


# The user permissions the authorization profile knows, and who holds them how widely.
_PROFILE = ("ReadExtensions", "ReadMessages", "EditMessages", "ReadCallLog", "ReadCallRecording",
            "FullCompanyCallLog", "Users")
_ADMIN_ONLY = ("FullCompanyCallLog", "Users")


def _permission(emu: Emulator, session: Session | None, permission: str) -> dict[str, Any] | None:
    """An `ActivePermissionResource`, None when the user lacks `permission` entirely."""
    admin = emu.is_admin(session)
    if permission in _ADMIN_ONLY and not admin:
        return None
    if permission == "ReadExtensions":
        scopes = ["Account"]  # the company directory: every user sees every extension
    else:
        scopes = ["Account"] if admin else ["Self"]
    role = "1" if admin else "3"  # Super Admin / Standard (the roles' ids in production)
    return {"permission": {"uri": f"{emu.platform_base}/restapi/v1.0/dictionary/permission/{permission}",
                           "id": permission},
            "effectiveRole": {"uri": f"{emu.platform_base}{emu.account_path}/user-role/{role}", "id": role},
            "scopes": scopes}


async def authz_profile(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/extension/{extensionId}/authz-profile` (Medium): the signed-in user's permissions."""
    permissions = [p for p in (_permission(emu, session, name) for name in _PROFILE) if p is not None]
    return JSONResponse({"uri": f"{emu.platform_base}{emu.canonical_path(request)}", "permissions": permissions})


async def authz_check(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/authz-profile/check?permissionId=&targetExtensionId=` (Light)."""
    permission = request.query_params.get("permissionId") or ""
    if not permission:
        raise bad_param(emu, "permissionId", "", "Parameter [permissionId] is required")
    target = request.query_params.get("targetExtensionId") or emu.store.extension_id
    if emu.company.get(target) is None:
        raise emu.not_found("targetExtensionId", target)
    details = _permission(emu, session, permission) if permission in _PROFILE else None
    own = session is not None and target == session.owner_id
    ok = details is not None and (own or "Account" in details["scopes"])
    if target in emu.config.denied_extensions and permission in ("ReadMessages", "EditMessages"):
        ok = False
    out: dict[str, Any] = {"uri": f"{emu.platform_base}{emu.canonical_path(request)}", "successful": ok}
    if details is not None:
        out["details"] = details
    return JSONResponse(out)


async def get_account(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/account/{accountId}` (Light)."""
    s = emu.store
    return JSONResponse({
        "uri": f"{emu.platform_base}{emu.account_path}",
        "id": int(s.account_id),
        "mainNumber": s.main_number,
        "status": "Confirmed",
        "serviceInfo": {"brand": {"id": "1210", "name": "RingCentral"}},
    })


async def api_versions(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET /restapi` (not throttled)."""
    return JSONResponse({
        "uri": f"{emu.platform_base}/restapi/",
        "apiVersions": [{"uri": f"{emu.platform_base}/restapi/v1.0", "versionString": "1.0.0",
                         "releaseDate": "2024-01-01T00:00:00.000Z", "uriString": "v1.0"}],
        "serverVersion": "rcfs-emulator",
        "serverRevision": "0",
    })


PHONE_NUMBER_STATUSES = ("Normal", "Pending", "PortedIn", "Temporary", "Unknown")
PHONE_USAGE_TYPES = (
    "MainCompanyNumber", "AdditionalCompanyNumber", "CompanyNumber", "DirectNumber",
    "CompanyFaxNumber", "FmcBusinessMobileNumber", "InventoryFmcBusinessMobileNumber",
    "ForwardedNumber", "ForwardedCompanyNumber", "ContactCenterNumber", "ConferencingNumber",
    "MeetingsNumber", "NumberPool", "BusinessMobileNumber", "ELIN",
    "PartnerBusinessMobileNumber", "NumberPoolPartnerBusinessMobileNumber", "NumberStorage",
    "IntegrationNumber", "InventoryMobileNumber")


async def list_phone_numbers(emu: Emulator, request: Request, session: Session | None) -> Response:
    """`GET …/extension/{extensionId}/phone-number` (Light): the numbers and their features
    (`numbers.py`), filtered by `usageType` (repeatable) and `status`, paged like the
    message list (`page`, `perPage` default 100)."""
    from . import numbers

    usage = enum_list(emu, request, "usageType", PHONE_USAGE_TYPES)
    status = request.query_params.get("status") or None
    if status is not None and status not in PHONE_NUMBER_STATUSES:
        raise bad_param(emu, "status", status)
    page = int_param(emu, request, "page", 1)
    per_page = min(MAX_PER_PAGE, int_param(emu, request, "perPage", DEFAULT_PER_PAGE))
    items = [n for n in numbers.phone_numbers(emu.store)
             if (not usage or n.usage_type in usage) and (status is None or n.status == status)]
    query = [("usageType", u) for u in usage] + ([("status", status)] if status else [])
    records, paging, navigation, uri = paged(emu, request, items, query, page, per_page)
    return JSONResponse({
        "uri": uri,
        "records": [numbers.render(n, emu.platform_base, emu.extension_path) for n in records],
        "paging": paging,
        "navigation": navigation,
    })


# sending (implemented in sending.py) ----------------------------------------------
def _sending(func_name: str):
    async def handler(emu: Emulator, request: Request, session: Session | None) -> Response:
        try:
            module = importlib.import_module("rcfs.emulator.sending")
        except ModuleNotFoundError as exc:
            if exc.name != "rcfs.emulator.sending":
                raise
            module = None
        func = getattr(module, func_name, None)
        if func is None:
            return emu.api_error(501, "CMN-202", "Sending is not supported by this emulator build")
        return await func(emu, request)

    return handler


def routes(emu: Emulator) -> list[BaseRoute]:
    """The platform host's routes (admin routes come from `admin.py`)."""
    acct = "/restapi/v1.0/account/{accountId}"
    ext = acct + "/extension/{extensionId}"

    def r(path: str, name: str, group: str | None, handler, methods: list[str], auth_mode: str = "bearer") -> Route:
        async def bound(request: Request, session: Session | None) -> Response:
            return await handler(emu, request, session)

        return Route(path, emu.endpoint(name, group, bound, auth=auth_mode), methods=methods, name=name)

    async def token(request: Request, session: Session | None) -> Response:
        return await auth.token_endpoint(emu, request)

    async def revoke(request: Request, session: Session | None) -> Response:
        return await auth.revoke_endpoint(emu, request)

    return [
        Route("/restapi/oauth/token", emu.endpoint("oauth-token", "Auth", token, auth="client"),
              methods=["POST"], name="oauth-token"),
        Route("/restapi/oauth/revoke", emu.endpoint("oauth-revoke", "Auth", revoke, auth="client"),
              methods=["POST"], name="oauth-revoke"),
        r("/restapi", "api-versions", None, api_versions, ["GET"], "none"),
        r("/restapi/", "api-versions", None, api_versions, ["GET"], "none"),
        r(acct, "account-get", "Light", get_account, ["GET"]),
        r(ext, "extension-get", "Light", get_extension, ["GET"]),
        r(acct + "/extension", "extension-list", "Medium", list_extensions, ["GET"]),
        r(ext + "/authz-profile", "authz-profile", "Medium", authz_profile, ["GET"]),
        r(ext + "/authz-profile/check", "authz-check", "Light", authz_check, ["GET"]),
        r(ext + "/phone-number", "phone-number-list", "Light", list_phone_numbers, ["GET"]),
        r(ext + "/message-store", "message-list", "Light", list_messages, ["GET"]),
        r(ext + "/message-store/{messageId}", "message-get", "Light", get_message, ["GET"]),
        r(ext + "/message-store/{messageId}", "message-update", "Medium", update_message, ["PUT"]),
        r(ext + "/message-store/{messageId}", "message-patch", "Medium", patch_message, ["PATCH"]),
        r(ext + "/message-store/{messageId}", "message-delete", "Medium", delete_message, ["DELETE"]),
        r(ext + "/message-sync", "message-sync", "Light", sync_messages, ["GET"]),
        r(ext + "/call-log", "call-log", "Heavy", _call_log(False), ["GET"]),
        r(acct + "/call-log", "call-log-account", "Heavy", _call_log(True), ["GET"]),
        r(acct + "/call-log-sync", "call-log-sync-account", "Heavy", sync_account_call_log, ["GET"]),
        r(ext + "/call-log/{callRecordId}", "call-record", "Heavy", get_call, ["GET"]),
        r(acct + "/call-log/{callRecordId}", "call-record-account", "Heavy", get_call, ["GET"]),
        r(acct + "/recording/{recordingId}", "recording-get", "Heavy", get_recording, ["GET"]),
        r(ext + "/greeting/{greetingId}", "greeting-get", "Medium", get_greeting, ["GET"]),
        r(ext + "/fax", "fax-send", "Heavy", _sending("create_fax"), ["POST"]),
        r(ext + "/sms", "sms-send", "Medium", _sending("create_sms"), ["POST"]),
        r(ext + "/mms", "mms-send", "Medium", _sending("create_sms"), ["POST"]),
        r(ext + "/greeting", "greeting-create", "Heavy", _sending("create_greeting"), ["POST"]),
    ]
