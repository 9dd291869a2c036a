"""The emulator as two ASGI apps sharing one account: the platform host and the media host.

INTERFACE CONTRACT (sending.py and the tests rely on these names):

    emu = Emulator(config, store)            # store: rcfs.emulator.store.Store (seeded or empty)
    emu.platform_app, emu.media_app          # Starlette apps (ASGI)
    emu.platform_base, emu.media_base        # absolute base URLs, no trailing slash; set by
                                             # the server once the sockets are bound
    emu.render_message(msg) -> dict          # GetMessageInfoResponse JSON of a store.Message
    emu.api_error(status, code, message, **extra) -> starlette Response   # RingCentral error body
    emu.authenticate(request) -> Session     # raises the 401 response (as an exception) if bad
    emu.stats                                # counters per route / group, bytes served

The platform app serves /restapi/oauth/* and /restapi/v1.0/* JSON routes plus /_emulator/*
(admin); the media app serves the content routes (message content, recording content,
greeting content). Both count against the same rate limiter and token table.

Also available (used by the route modules, usable by sending.py):

    emu.config, emu.store, emu.tokens (auth.TokenTable), emu.limiter (ratelimit.RateLimiter)
    emu.render_message(msg, single=True)     # single GET form (same body; see spec_departures)
    emu.render_call(call), emu.render_recording(rec), emu.render_greeting(greeting)
    emu.extension_path / emu.account_path     # "/restapi/v1.0/account/<id>[/extension/<id>]"
    raise ApiProblem(emu.api_error(...))     # inside a handler: answer with that error
    emu.endpoint(name, group, handler, auth=...)  # wrap a handler(request, session) with
                                             # stats, faults, auth and rate limiting

Every request to a routed endpoint goes through `Emulator.endpoint`: count it, add the
configured latency, maybe answer 503 (fault), authenticate, charge the rate-limit group
(429 when over), run the handler, stamp the `X-Rate-Limit-*` headers on the answer.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import gzip
import logging
import random
import time
import zlib
from typing import Any, Awaitable, Callable, Literal

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import auth as auth_mod
from .auth import AuthFailure, Session, TokenTable
from .config import EmulatorConfig
from .ratelimit import RateLimiter
from .store import DROP, Attachment, CallRecord, Greeting, Message, Party, Recording, Store, iso

log = logging.getLogger(__name__)

# The app permission each route needs (CONTRACT §5, §8, §9, §10); `config.missing_permissions`
# answers 403 CMN-401 for the routes that need one of them. Unlisted routes need none.
PERMISSIONS: dict[str, str] = {
    "account-get": "ReadAccounts", "extension-get": "ReadAccounts",
    "message-list": "ReadMessages", "message-get": "ReadMessages", "message-sync": "ReadMessages",
    "message-content": "ReadMessages",
    "message-update": "EditMessages", "message-patch": "EditMessages", "message-delete": "EditMessages",
    "call-log": "ReadCallLog", "call-log-account": "ReadCallLog", "call-log-sync-account": "ReadCallLog",
    "call-record": "ReadCallLog", "call-record-account": "ReadCallLog",
    "recording-get": "ReadCallRecording", "recording-content": "ReadCallRecording",
    "fax-send": "Faxes", "sms-send": "SMS", "mms-send": "SMS",
    "greeting-get": "ReadAccounts", "greeting-content": "ReadAccounts",
    "greeting-content-account": "ReadAccounts", "greeting-create": "EditExtensions",
    "extension-list": "ReadAccounts", "authz-profile": "ReadAccounts", "authz-check": "ReadAccounts",
}

# Routes that may address another extension than the signed-in one (`/extension/{id}`
# with an id other than `~` or the session's own), and the user permission that takes:
# a regular user gets 403 CMN-408 naming it (company.py). Other extension routes
# (sending, greetings, phone numbers) only serve the signed-in extension's own id.
OTHER_EXTENSION_ROUTES: dict[str, str] = {
    "extension-get": "ReadExtensions",
    "message-list": "ReadMessages", "message-get": "ReadMessages", "message-sync": "ReadMessages",
    "message-content": "ReadMessages", "message-update": "EditMessages", "message-patch": "EditMessages",
    "message-delete": "EditMessages", "call-log": "ReadCallLog", "call-record": "ReadCallLog",
}
# Account-level routes only an admin may use, and the user permission they name.
ADMIN_ROUTES: dict[str, str] = {
    "call-log-account": "FullCompanyCallLog", "call-record-account": "FullCompanyCallLog",
    "call-log-sync-account": "FullCompanyCallLog",
    # Message-store exports cover every extension: "only users with the admin role" (B4).
    "report-create": "Users", "report-get": "Users", "report-archives": "Users",
    "report-archive-content": "Users",
}

# The store of the extension the request being answered addresses (`Emulator.store`).
_ADDRESSED: contextvars.ContextVar[Store | None] = contextvars.ContextVar("rcfs_emulator_store", default=None)

AuthMode = Literal["bearer", "media", "client", "none"]
Handler = Callable[[Request, "Session | None"], Awaitable[Response]]


class ApiProblem(Exception):
    """Raised inside a handler to answer with `response` (an `Emulator.api_error`)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


MEDIA_LOG_MAX = 2000  # content requests kept for GET /_emulator/stats (media_requests)


@dataclasses.dataclass
class Stats:
    """Counters the admin endpoint reports (`GET /_emulator/stats`)."""

    requests: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    groups: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    rate_limited: int = 0
    bytes_served: int = 0
    faults: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    # The latest content requests in arrival order, (route, path, Range header): tests tell
    # a client's 1-byte probes from its reads, and which came while which was running.
    media_log: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=MEDIA_LOG_MAX))
    # Every rate-limited request in arrival order (`GET /_emulator/requests`): tests of
    # several clients sharing one budget read who was answered what, and when.
    log: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=20000))
    # New connections by host ("platform" or "media"), told apart by the client's address
    # and port: whether a client keeps its connections alive shows here, and nowhere else.
    connections: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    peers: set = dataclasses.field(default_factory=set)

    def new_connection(self, host: str, client: tuple | None, server: tuple | None) -> bool:
        """Note the connection a request came on; True the first time it is seen."""
        key = (client, server)
        if client is None or key in self.peers:
            return False
        self.peers.add(key)
        self.connections[host] += 1
        return True

    def reset(self) -> None:
        """Zero every counter."""
        self.media_log.clear()
        self.connections.clear()  # (peers stay known: a kept-alive connection is not new)
        self.log.clear()
        self.requests.clear()
        self.groups.clear()
        self.statuses.clear()
        self.faults.clear()
        self.rate_limited = 0
        self.bytes_served = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON form: route names, groups (lower case) and statuses as string keys."""
        return {
            "requests": dict(self.requests),
            "total_requests": sum(self.requests.values()),
            "groups": {g.lower(): n for g, n in self.groups.items()},
            "statuses": {str(s): n for s, n in sorted(self.statuses.items())},
            "rate_limited": self.rate_limited,
            "bytes_served": self.bytes_served,
            "faults": dict(self.faults),
            "connections": dict(self.connections),
            "media_requests": [list(entry) for entry in self.media_log],
        }


class Emulator:
    """One emulated RingCentral account served by a platform app and a media app.

    `clock` (seconds, monotonic) drives token expiry and rate-limit windows; the
    store's own `now` drives message times.
    """

    def __init__(self, config: EmulatorConfig, store: Store, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.main_store = store  # the signed-in super admin's mailbox (extension 101)
        if store.company is None:  # a bare Store: an account of one extension
            from .company import Company
            store.company = Company(store)
        self.company = store.company
        self.clock = clock
        self.platform_base = "http://platform.rcfs-emulator.invalid"
        self.media_base = "http://media.rcfs-emulator.invalid"
        self.tokens = TokenTable(config, store.extension_id, clock)
        self.limiter = RateLimiter(config, clock)
        self.stats = Stats()
        self.fault_rng = random.Random(config.faults.seed)
        self.account_path = f"/restapi/v1.0/account/{store.account_id}"

        from . import admin, gateway, greetings, media_routes, platform, reports  # they import this one

        self.sync_tokens = platform.SyncTokens()
        # (route name, message): injected messages that arrive just before the next
        # request of that route is answered (admin `deliverBefore`: races made exact).
        self.held_messages: list[tuple[str, Message]] = []
        self.gateway = gateway.Gateway(self)  # push notifications over WebSocket
        errors = {404: self._not_found, 405: self._not_allowed}
        self.platform_app = Starlette(routes=platform.routes(self) + reports.routes(self)
                                      + greetings.routes(self) + admin.routes(self)
                                      + gateway.routes(self),
                                      exception_handlers=errors)
        media = media_routes.routes(self)
        if config.plain_view:  # benchmark-only view for tools that do not speak the API
            from . import plainview
            media += plainview.routes(self)
        self.media_app = Starlette(routes=media, exception_handlers=errors)

    # the addressed extension -------------------------------------------------
    @property
    def store(self) -> Store:
        """The mailbox the request being answered addresses: the path's extension (`~`:
        the signed-in one's); outside a request, the super admin's."""
        return _ADDRESSED.get() or self.main_store

    def store_of_number(self, number: object) -> Store:
        """The mailbox of the extension numbered `number` (an admin request's
        `"extension"`; None: the signed-in super admin's). ValueError if there is none."""
        if number is None:
            return self.main_store
        ext = self.company.by_number(str(number))
        if ext is None:
            raise ValueError(f"no extension numbered [{number}]")
        return ext.store

    @contextlib.contextmanager
    def addressing(self, store: Store):
        """Render as if the request addressed `store` (another extension's mailbox)."""
        token = _ADDRESSED.set(store)
        try:
            yield store
        finally:
            _ADDRESSED.reset(token)

    @property
    def extension_path(self) -> str:
        return f"{self.account_path}/extension/{self.store.extension_id}"

    def owner_of_credential(self, credential: str) -> str | None:
        """The extension id a user credential signs in, None if it is no user's."""
        import secrets

        if secrets.compare_digest(credential, self.config.jwt):
            return self.main_store.extension_id
        if secrets.compare_digest(credential, self.config.user_jwt):
            from .company import REGULAR_USER_NUMBER
            user = self.company.by_number(REGULAR_USER_NUMBER)
            return user.id if user is not None else None
        return None

    def is_admin(self, session: Session | None) -> bool:
        ext = self.company.get(session.owner_id) if session is not None else None
        return ext is not None and ext.admin

    def user_permission_error(self, permission: str) -> Response:
        """403 CMN-408: the signed-in *user* lacks `permission` for the resource (the
        live-captured shape, PUSH-AND-ADMIN.md §B3)."""
        message = (f"In order to call this API endpoint, user needs to have [{permission}] "
                   "permission for requested resource.")
        return JSONResponse({"errorCode": "CMN-408", "message": message,
                             "errors": [{"errorCode": "CMN-408", "message": message,
                                         "permissionName": permission}],
                             "permissionName": permission}, status_code=403)

    def addressed_store(self, name: str, request: Request, session: Session | None) -> Store:
        """The mailbox route `name` addresses, after the permission checks; raises the
        404 of an unknown extension or the 403 of one this session may not reach."""
        value = request.path_params.get("extensionId")
        own = session.owner_id if session is not None else self.main_store.extension_id
        target = own if value in (None, "~") else value
        ext = self.company.get(target)
        if ext is None:
            raise self.not_found("extensionId", str(value))
        if name in ADMIN_ROUTES and session is not None and not self.is_admin(session):
            raise ApiProblem(self.user_permission_error(ADMIN_ROUTES[name]))
        if target != own:
            if name not in OTHER_EXTENSION_ROUTES:
                raise self.not_found("extensionId", str(value))
            if session is not None and not self.is_admin(session):
                raise ApiProblem(self.user_permission_error(OTHER_EXTENSION_ROUTES[name]))
        if target in self.config.denied_extensions and name in OTHER_EXTENSION_ROUTES \
                and OTHER_EXTENSION_ROUTES[name] in ("ReadMessages", "EditMessages"):
            raise ApiProblem(self.user_permission_error("ReadMessages"))
        return ext.store

    # errors ----------------------------------------------------------------
    def api_error(self, status: int, code: str, message: str, **extra: Any) -> Response:
        """A RingCentral error body: `errorCode` + `message` on top, the same in `errors[]`.

        `extra` (e.g. parameterName="dateFrom") goes into the error item and on top, as
        the real API's legacy shape does.
        """
        item = {"errorCode": code, "message": message, **extra}
        return JSONResponse({"errorCode": code, "message": message, "errors": [item], **extra},
                            status_code=status)

    def permission_error(self, permission: str) -> Response:
        """The 403 of an app without `permission` (the wire shape of CONTRACT §5's example)."""
        message = f"In order to call this API endpoint, application needs to have [{permission}] permission"
        return JSONResponse({"errorCode": "InsufficientPermissions", "message": message,
                             "errors": [{"errorCode": "CMN-401", "message": message,
                                         "permissionName": permission}],
                             "permissionName": permission}, status_code=403)

    def compress(self, request: Request, response: Response) -> Response:
        """gzip (or deflate) a JSON answer when `config.compress_json` is on and the
        request's Accept-Encoding allows it, as any compliant server or proxy may."""
        if not self.config.compress_json or "content-encoding" in response.headers:
            return response
        body = getattr(response, "body", None)
        if not body or not response.headers.get("content-type", "").startswith("application/json"):
            return response
        accepted = set()
        for item in request.headers.get("accept-encoding", "").split(","):
            name, _, params = item.strip().partition(";")
            if params.strip().replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
                accepted.add(name.strip().lower())
        if "gzip" in accepted:
            data, encoding = gzip.compress(body, mtime=0), "gzip"
        elif "deflate" in accepted:
            data, encoding = zlib.compress(body), "deflate"
        else:
            return response
        response.body = data
        response.headers["content-encoding"] = encoding
        response.headers["content-length"] = str(len(data))
        response.headers["vary"] = "Accept-Encoding"
        return response

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return self.api_error(404, "AGW-404", "Resource not found")

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return self.api_error(405, "CMN-120", f"Method {request.method} is not allowed here")

    # auth ----------------------------------------------------------------------
    def authenticate(self, request: Request, *, allow_query: bool = False) -> Session:
        """The session of the request's access token; raises `AuthFailure` (a 401)."""
        return auth_mod.authenticate(self, request, allow_query=allow_query)

    # ids and urls --------------------------------------------------------------
    def not_found(self, name: str, value: str) -> ApiProblem:
        """The API's 404 for an unknown id in parameter `name` (CMN-102), to raise."""
        return ApiProblem(self.api_error(404, "CMN-102", f"Resource for parameter [{name}] is not found",
                                         parameterName=name, parameterValue=value))

    def lookup(self, table: dict, request: Request, param: str) -> Any:
        """The object named by path parameter `param` in `table`, or the 404 raised."""
        key = request.path_params[param]
        item = table.get(key)
        if item is None:
            raise self.not_found(param, key)
        return item

    def lookup_recording(self, request: Request) -> Recording:
        """The recording named by the path's `recordingId`, of any extension, or the 404."""
        rec_id = request.path_params["recordingId"]
        rec = self.store.recordings.get(rec_id) or self.company.recording(rec_id)
        if rec is None:
            raise self.not_found("recordingId", rec_id)
        return rec

    def check_path_ids(self, request: Request) -> None:
        """Reject an account id in the path that is neither `~` nor ours (extension ids
        are resolved by `addressed_store`)."""
        value = request.path_params.get("accountId")
        if value is not None and value not in ("~", self.main_store.account_id):
            raise self.not_found("accountId", value)

    def canonical_path(self, request: Request) -> str:
        """The request path with `~` account / extension ids replaced by the real ones."""
        path = request.url.path
        path = path.replace("/account/~", f"/account/{self.store.account_id}", 1)
        return path.replace("/extension/~", f"/extension/{self.store.extension_id}", 1)

    def message_uri(self, msg_id: int) -> str:
        """Absolute platform URI of one message."""
        return f"{self.platform_base}{self.extension_path}/message-store/{msg_id}"

    def attachment_uri(self, msg_id: int, att_id: int) -> str:
        """Absolute media URI of one attachment's content."""
        return f"{self.media_base}{self.extension_path}/message-store/{msg_id}/content/{att_id}"

    # rendering -----------------------------------------------------------------
    @staticmethod
    def _party(p: Party) -> dict[str, Any]:
        return _present(phoneNumber=p.phone_number, extensionNumber=p.extension_number, name=p.name)

    def render_attachment(self, msg: Message, att: Attachment) -> dict[str, Any]:
        """`MessageAttachmentInfo` JSON: size/fileName only when the store says so.

        With `config.foreign_media_rate`, that share of attachments (a fixed choice per
        attachment) names a URI on `config.foreign_media_base` instead of the media host.
        """
        uri = self.attachment_uri(msg.id, att.id)
        rate = self.config.foreign_media_rate
        if rate > 0 and zlib.crc32(f"{msg.id}:{att.id}".encode()) % 10_000 < rate * 10_000:
            uri = self.config.foreign_media_base.rstrip("/") + uri[len(self.media_base):]
        out: dict[str, Any] = {
            "id": att.id,
            "uri": uri,
            "type": att.type,
            "contentType": att.media.content_type if att.media is not None else "text/plain",
        }
        if att.vm_duration is not None:
            out["vmDuration"] = att.vm_duration
        if att.file_name is not None:
            out["fileName"] = att.file_name
        if att.expose_size and att.media is not None:
            out["size"] = att.media.size
        return _odd(out, att.odd_json)

    def deliver_held(self, route: str) -> None:
        """Store the held messages waiting for a request of `route` (see admin.py)."""
        keep = []
        for wanted, msg in self.held_messages:
            if wanted == route:
                msg.last_modified = self.store.now()
                self.store.add_message(msg)
            else:
                keep.append((wanted, msg))
        self.held_messages = keep

    def render_message(self, msg: Message, *, single: bool = False) -> dict[str, Any]:
        """`GetMessageInfoResponse` JSON of a message (`single=True`: the single-GET form).

        Purged messages have lost their attachments, so they render with none. The
        single-GET form is the same body: the spec's required `vmSideRecipients`
        (minItems 1) is deliberately omitted, as listed in tests/spec_departures.py.
        """
        to = []
        for p in msg.to:
            item = self._party(p)
            if msg.direction == "Outbound":
                # Each recipient of a settled send has its own outcome (sending.py).
                item["messageStatus"] = p.message_status or msg.message_status
                code = p.fax_error_code if p.message_status else msg.fax_error_code
                if code is not None:
                    item["faxErrorCode"] = code
            to.append(item)
        out: dict[str, Any] = {
            "uri": self.message_uri(msg.id),
            "id": msg.id,
            "extensionId": self.store.extension_id,
            "type": msg.type,
            "direction": msg.direction,
            "availability": msg.availability,
            "readStatus": msg.read_status,
            "messageStatus": msg.message_status,
            "priority": "Normal",
            "creationTime": iso(msg.creation_time),
            "lastModifiedTime": iso(msg.last_modified or msg.creation_time),
            "from": self._party(msg.from_),
            "to": to,
            "attachments": [] if msg.availability == "Purged"
            else [self.render_attachment(msg, a) for a in msg.attachments],
        }
        if msg.subject is not None:
            out["subject"] = msg.subject
        if msg.type == "Fax":
            out.update(_present(faxPageCount=msg.fax_page_count, faxResolution=msg.fax_resolution,
                                coverIndex=msg.cover_index, coverPageText=msg.cover_page_text))
        if msg.type == "VoiceMail" and msg.vm_transcription_status is not None:
            out["vmTranscriptionStatus"] = msg.vm_transcription_status
        if msg.conversation_id is not None:
            out["conversationId"] = msg.conversation_id
            out["conversation"] = {
                "id": str(msg.conversation_id),
                "uri": f"{self.platform_base}/restapi/v1.0/conversation/{msg.conversation_id}",
            }
        return _odd(out, msg.odd_json)

    def recording_uri(self, rec_id: str) -> str:
        """Absolute platform URI of a recording's metadata."""
        return f"{self.platform_base}{self.account_path}/recording/{rec_id}"

    def recording_content_uri(self, rec_id: str) -> str:
        """Absolute media URI of a recording's audio."""
        return f"{self.media_base}{self.account_path}/recording/{rec_id}/content"

    def render_call(self, call: CallRecord, *, account_level: bool = False,
                    extension_id: str | None = None) -> dict[str, Any]:
        """`CallLogRecord` JSON; the `recording` object carries no size (as the real API).
        `extension_id`: the extension whose log holds it (default: the addressed one)."""
        prefix = self.account_path if account_level else self.extension_path
        ext_id = extension_id or self.store.extension_id
        out: dict[str, Any] = {
            "uri": f"{self.platform_base}{prefix}/call-log/{call.id}",
            "id": call.id,
            "sessionId": call.session_id,
            "startTime": iso(call.start_time),
            "duration": call.duration,
            "durationMs": call.duration * 1000,
            "type": call.type,
            "direction": call.direction,
            "action": call.action,
            "result": call.result,
            "from": self._party(call.from_),
            "to": self._party(call.to),
            "extension": {"id": int(ext_id),
                          "uri": f"{self.platform_base}{self.account_path}/extension/{ext_id}"},
        }
        if call.telephony_session_id is not None:
            out["telephonySessionId"] = call.telephony_session_id
        if call.recording is not None:
            out["recording"] = {
                "id": call.recording.id,
                "uri": self.recording_uri(call.recording.id),
                "type": call.recording.type,
                "contentUri": self.recording_content_uri(call.recording.id),
            }
        if call.message_id is not None and ext_id == self.store.extension_id:
            msg = self.store.messages.get(call.message_id)
            out["message"] = {"id": str(call.message_id),
                              "type": msg.type if msg is not None else "VoiceMail",
                              "uri": self.message_uri(call.message_id)}
        return out

    def render_recording(self, rec: Recording) -> dict[str, Any]:
        """`GetCallRecordingResponse` JSON: id, contentUri, contentType, duration."""
        return {
            "id": rec.id,
            "contentUri": self.recording_content_uri(rec.id),
            "contentType": rec.media.content_type,
            "duration": rec.duration,
        }

    def render_greeting(self, greeting: Greeting) -> dict[str, Any]:
        """`CustomUserGreetingInfo` JSON of a stored greeting."""
        path = f"{self.extension_path}/greeting/{greeting.id}"
        out: dict[str, Any] = {
            "uri": f"{self.platform_base}{path}",
            "id": greeting.id,
            "type": greeting.type,
            "contentType": greeting.media.content_type,
            "contentUri": f"{self.media_base}{path}/content",
        }
        if greeting.answering_rule_id is not None:
            out["answeringRule"] = {
                "id": greeting.answering_rule_id,
                "uri": f"{self.platform_base}{self.extension_path}/answering-rule/{greeting.answering_rule_id}",
            }
        return out

    # faults --------------------------------------------------------------------
    def reseed_faults(self) -> None:
        """Restart the fault RNG from `config.faults.seed` (after a config change)."""
        self.fault_rng = random.Random(self.config.faults.seed)

    def fault_hits(self, rate: float) -> bool:
        """Draw once from the fault RNG: True with probability `rate`."""
        return rate > 0 and self.fault_rng.random() < rate

    # the request pipeline ------------------------------------------------------
    def settle_sends(self) -> None:
        """Let sends whose time has come leave Queued (sending.py computes it lazily)."""
        try:
            from . import sending
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.sending":
                raise
            return
        sending.settle_sends(self.store)

    def rate_key(self, request: Request, session: Session | None) -> tuple[str, str]:
        """(user, app) the rate limiter counts against."""
        if session is not None:
            return session.owner_id, session.client_id
        return self.main_store.extension_id, auth_mod.basic_client_id(request) or ""

    def endpoint(self, name: str, group: str | None, handler: Handler, *,
                 auth: AuthMode = "bearer") -> Callable[[Request], Awaitable[Response]]:
        """Wrap `handler(request, session)` into a Starlette endpoint.

        `auth`: "bearer" (header only), "media" (header or `access_token` query),
        "client" (OAuth endpoints: the handler checks client credentials itself) or
        "none" (admin). `group` None means not throttled.
        """

        async def run(request: Request) -> Response:
            self.stats.requests[name] += 1
            if name.endswith("-content"):
                self.stats.media_log.append((name, request.url.path, request.headers.get("range", "")))
            faults = self.config.faults
            # (admin requests, which have no group, are the test's own: not counted)
            host = "media" if auth == "media" or name.startswith("plain-") else "platform"
            fresh = group is not None and self.stats.new_connection(
                host, request.scope.get("client"), request.scope.get("server"))
            if fresh and faults.handshake_ms > 0:
                await anyio.sleep(faults.handshake_ms / 1000.0)
            if group is not None and faults.latency_ms > 0:
                await anyio.sleep(faults.latency_ms / 1000.0)
            if group is not None and self.fault_hits(faults.error_rate):
                self.stats.faults["error"] += 1
                response = self.api_error(503, "CMN-201", "Service Temporarily Unavailable")
                self.stats.statuses[response.status_code] += 1
                return self.compress(request, response)
            decision = None
            addressed = None
            try:
                session = None
                if auth in ("bearer", "media"):
                    session = self.authenticate(request, allow_query=auth == "media")
                    permission = PERMISSIONS.get(name)
                    if permission is not None and permission in self.config.missing_permissions:
                        raise ApiProblem(self.permission_error(permission))
                if group is not None:
                    self.stats.groups[group] += 1
                    decision = self.limiter.check(self.rate_key(request, session), group)
                    self.stats.log.append({
                        "t": round(self.clock(), 4), "route": name, "path": request.url.path,
                        "group": group.lower(),
                        "status": 200 if decision.allowed else 429, "forced": decision.forced,
                        "remaining": decision.remaining, "session": session.id if session else None})
                    if not decision.allowed:
                        self.stats.rate_limited += 1
                        response = self.api_error(429, "CMN-301", "Request rate exceeded")
                        response.headers.update(decision.headers())
                        self.stats.statuses[429] += 1
                        return self.compress(request, response)
                self.check_path_ids(request)
                if auth in ("bearer", "media"):
                    addressed = _ADDRESSED.set(self.addressed_store(name, request, session))
                if group is not None:
                    self.settle_sends()
                    self.gateway.run_due()  # a placed call's later steps (gateway.place_call)
                if self.held_messages:
                    self.deliver_held(name)
                response = await handler(request, session)
            except (ApiProblem, AuthFailure) as exc:
                response = exc.response
            except HTTPException:
                raise
            except Exception:
                log.exception("emulator handler %s failed", name)
                response = self.api_error(500, "CMN-203", "Internal Server Error")
            finally:
                if addressed is not None:
                    _ADDRESSED.reset(addressed)
            if decision is not None:
                # A handler's own rate headers (an injected 429 on a send) win.
                for key, value in decision.headers().items():
                    response.headers.setdefault(key, value)
            self.stats.statuses[response.status_code] += 1
            return self.compress(request, response)

        run.__name__ = name.replace("-", "_")
        return run


def _odd(out: dict[str, Any], overrides: dict | None) -> dict[str, Any]:
    """`out` with the odd-record overrides applied (DROP removes a key)."""
    for key, value in (overrides or {}).items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _present(**fields: Any) -> dict[str, Any]:
    """The fields whose value is not None (the API omits absent optional fields)."""
    return {k: v for k, v in fields.items() if v is not None}
