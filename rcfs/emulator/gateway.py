"""The WebSocket gateway (WSG): push notifications as RingCentral sends them.

Facts from shared/ringcentral/PUSH-AND-ADMIN.md §A; tags [D]/[L]/[I] as there.

* `POST /restapi/oauth/wstoken` (Auth group, Bearer; any or no body and content type)
  -> `{"uri": "ws://<platform host>/ws", "ws_access_token", "expires_in"}`. The token
  may be used again until it expires (what `@rc-ex/ws` does [P]); `single_use_tokens`
  makes it single use, as the docs say [D].
* `GET /ws?access_token=<ws token>[&wsc=<session context>]` upgrades. The first frame is
  always `ConnectionDetails` (or an `Error`). Every frame is a JSON array `[meta]` or
  `[meta, body]`.
* `ClientRequest` POST / PUT / DELETE / GET of `/restapi/v1.0/subscription[/][{id}]`
  over the socket; one subscription per connection (a second POST replaces the first);
  `~` in `eventFilters` is expanded to ids in the answer; the `uri` is relative; the
  reply carries the headers production sends and no `WSG-SubscriptionId` (switch
  `subscription_id_header` adds it: the only way Python SDK 0.9.2 fires
  `subscriptionCreated`). A DELETE must be a one-element array (WSG-808 otherwise).
* `~` is the subscriber's own extension (the one whose credential got the ws token):
  a regular user's `/extension/~` is that user's mailbox. An admin may name any
  extension of the account and the account-level `/account/~/telephony/sessions`; a
  regular user asking another extension's filter gets 403 `SUB-405` [D errors.md], and
  one asking an account-level filter gets the same 403 `SUB-405`: what production
  answers then is not documented (PUSH-AND-ADMIN §A4, §A7 are silent) [I]. Another
  account's filter: 403 `SUB-406` [D]; an unknown extension: 400 `SUB-508`.
* `ServerNotification` envelopes (`uuid` == meta `messageId`, `event` with numeric ids,
  `timestamp`, `subscriptionId`, `ownerId` (the subscriber's extension), `body`) for:
  message-store changes (`newCount`/`updatedCount`/`newMessageIds`), instant SMS, fax,
  voicemail of any extension's mailbox, extension and account telephony sessions (with
  `recordings`; the party is the extension whose call it is). They fire when a store
  changes (an injected message, for any extension with `extension`; a send, a send
  settling, a read-status change, a delete) and when a call placed with
  `POST /_emulator/calls/live` (any extension's) rings, is answered and ends.
* `Heartbeat` frames are echoed. Only text frames from the client count as traffic:
  WebSocket pings never reach this code (the server answers them), as production [L].
  No client frame for `idleTimeout` -> `Error WSG-902` and close; `absoluteTimeout`
  after the upgrade -> `Error WSG-903` and close.
* Recovery: `&wsc=` within `recoveryTimeout` of the drop -> `recoveryState:
  Successful`, the subscription kept, the notifications the client missed replayed in
  order (at most `recoveryBufferSize` = 100, oldest dropped). `Failed` with
  `recoveryErrorCode` `WSG-1005` when the old session had no subscription (or is gone,
  or the `fail_recoveries` switch says so [I]), `WSG-1003` when the ws token belongs to
  another OAuth session; the socket stays usable and the client subscribes again. A
  `wsc` this gateway did not issue -> `Error WSG-400` and close.
* Timeouts scale with the rate-limit `window` (production's are for a 60 s window:
  recoveryTimeout 180, idleTimeout 1800, absoluteTimeout 86400, ws token 600 s), so a
  `--window 1` emulator times out idle sockets after 30 s; the `ws_*` settings set one
  directly.
* An OAuth session that ends (`/restapi/oauth/revoke`, `POST /_emulator/sessions/end`, the
  session cap) takes its sockets with it: `Error` 401 `OAU-149`, close 1008; its ws
  tokens are refused at the upgrade (401) and its gateway sessions cannot be recovered.
  Production's behaviour here is not documented: chosen as the most plausible [I].

Switches (admin, no auth): `POST /_emulator/push` `{"drop": true}` closes every socket
as a lost connection would (code 1011, no Error frame), `{"stall": seconds}` makes every
socket a black hole for that long (nothing sent, client frames ignored),
`{"fail_recoveries": n}`, `{"subscription_id_header": bool}`, `{"single_use_tokens":
bool}`; `GET /_emulator/push` reports connections, sessions, subscriptions and counts.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import secrets
import uuid
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl, urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .auth import Session
from .store import CallRecord, Message, Party, Recording, iso

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger(__name__)

# Production values for a 60 s rate-limit window [D connection-details.json].
RECOVERY_TIMEOUT, IDLE_TIMEOUT, ABSOLUTE_TIMEOUT, WS_TOKEN_TTL = 180, 1800, 86400, 600
RECOVERY_BUFFER = 100
SUBSCRIPTION_PATH = "/restapi/v1.0/subscription"
SUBSCRIPTION_TTL = 86399  # expiresIn of a WebSocket subscription [L]


def _now_iso() -> str:
    return iso(dt.datetime.now(dt.timezone.utc))


def _request_id() -> str:
    return f"{uuid.uuid4()}"


@dataclasses.dataclass
class WsToken:
    token: str
    oauth_session: str
    expires: float
    used: bool = False


@dataclasses.dataclass(eq=False)
class Connection:
    """One open socket."""

    id: int
    websocket: WebSocket
    opened: float
    last_client_frame: float
    wake: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    stalled_until: float = 0.0
    # Answers to the client's frames: sent before notifications, never replayed.
    replies: collections.deque = dataclasses.field(default_factory=collections.deque)
    closing: tuple[int, str | None] | None = None  # (close code, Error code to send first)
    done: bool = False


@dataclasses.dataclass(eq=False)
class WsSession:
    """A gateway session: outlives its socket by `recoveryTimeout` (recovery)."""

    id: str
    oauth_session: str
    created: str
    owner_id: str = ""  # the extension whose credential opened it: `~` in its filters
    sequence: int = 0
    subscription: dict | None = None  # SubscriptionInfo JSON
    pending: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RECOVERY_BUFFER))
    connection: Connection | None = None
    disconnected_at: float | None = None


class Gateway:
    """The WSG of one emulator. `emu.gateway`; routes via `routes()`."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.key = secrets.token_bytes(16)  # signs wsc tokens: a forged one is "malformed"
        self.tokens: dict[str, WsToken] = {}
        self.sessions: dict[str, WsSession] = {}
        self.next_connection = 1
        self.fail_recoveries = 0
        self.subscription_id_header = False
        self.single_use_tokens = False
        self.counts: collections.Counter = collections.Counter()
        # (due on self.clock(), action): the later steps of a placed call. Run by every
        # socket's watchdog and before every API request is answered (`run_due`), so they
        # happen on time with a socket open and are in place for any request without one.
        self.timed: list[tuple[float, Callable[[], None]]] = []
        # Every mailbox of the company is watched: an admin may subscribe to any of them.
        self._observed: set[int] = set()
        for ext in emu.company.extensions.values():
            self._observe(ext.store)
        emu.tokens.on_end.append(self._oauth_session_ended)

    def _observe(self, store: Store) -> None:
        if id(store) not in self._observed:
            self._observed.add(id(store))
            store.observers.append(lambda change, msg: self._store_changed(store, change, msg))

    # settings ----------------------------------------------------------------------
    def _scaled(self, production: int, override: float | None) -> int:
        if override is not None:
            return max(1, math.ceil(override))
        return max(1, math.ceil(production * self.emu.config.window / 60.0))

    @property
    def recovery_timeout(self) -> int:
        return self._scaled(RECOVERY_TIMEOUT, self.emu.config.ws_recovery_timeout)

    @property
    def idle_timeout(self) -> int:
        return self._scaled(IDLE_TIMEOUT, self.emu.config.ws_idle_timeout)

    @property
    def absolute_timeout(self) -> int:
        return self._scaled(ABSOLUTE_TIMEOUT, self.emu.config.ws_absolute_timeout)

    @property
    def token_ttl(self) -> int:
        return self._scaled(WS_TOKEN_TTL, self.emu.config.ws_token_ttl)

    def clock(self) -> float:
        return self.emu.clock()

    # wsc tokens ------------------------------------------------------------------------
    def _wsc_token(self, session_id: str) -> str:
        mac = hmac.new(self.key, session_id.encode(), hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(session_id.encode() + b"." + mac).decode().rstrip("=")

    def _wsc_session_id(self, token: str) -> str | None:
        """The session id a wsc token names, or None if this gateway did not issue it."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return None
        # The MAC is 12 raw bytes and may itself contain b"." (about one token in 20): split
        # at its fixed length, never at the last dot.
        sid, dot, mac = raw[:-13], raw[-13:-12], raw[-12:]
        if dot != b"." or not hmac.compare_digest(mac, hmac.new(self.key, sid, hashlib.sha256).digest()[:12]):
            return None
        return sid.decode("ascii", "replace")

    def _wsc(self, session: WsSession) -> dict:
        session.sequence += 1
        return {"token": self._wsc_token(session.id), "sequence": session.sequence}

    # the token endpoint ----------------------------------------------------------------
    async def wstoken(self, request: Request, session: Session | None) -> Response:
        """`POST /restapi/oauth/wstoken`: no body is defined; whatever comes is ignored."""
        assert session is not None
        await request.body()
        token = secrets.token_urlsafe(32)
        self.tokens[token] = WsToken(token, session.id, self.clock() + self.token_ttl)
        self.counts["ws_tokens"] += 1
        base = self.emu.platform_base
        uri = "ws" + base[len("http"):] + "/ws" if base.startswith("http") else base + "/ws"
        return JSONResponse({"uri": uri, "ws_access_token": token, "expires_in": self.token_ttl})

    def _take_token(self, token: str | None) -> WsToken | None:
        now = self.clock()
        for key in [k for k, t in self.tokens.items() if t.expires <= now]:
            del self.tokens[key]
        found = self.tokens.get(token or "")
        if found is None or (self.single_use_tokens and found.used):
            return None
        if found.oauth_session not in self.emu.tokens.sessions:
            return None  # its OAuth session ended (revoked, logged out)
        found.used = True
        return found

    def _oauth_session_ended(self, oauth: Session) -> None:
        """The OAuth session behind some sockets ended (revoke, admin logout, session cap):
        what production does is not documented; this gateway sends an `Error` (status 401,
        `OAU-149`, the code the API answers a revoked token with) and closes the socket
        (1008), forgets the gateway sessions (a later `wsc` naming one is `Failed`,
        WSG-1005) and the ws tokens issued to it (their upgrade is refused with 401) [I;
        tests/spec_departures.py]."""
        for key in [k for k, t in self.tokens.items() if t.oauth_session == oauth.id]:
            del self.tokens[key]
        for sid, session in list(self.sessions.items()):
            if session.oauth_session != oauth.id:
                continue
            del self.sessions[sid]
            conn = session.connection
            if conn is not None and conn.closing is None:
                conn.closing = (1008, "OAU-149")
                conn.stalled_until = 0.0
                conn.wake.set()
                self.counts["closed_session_ended"] += 1

    # notifications ---------------------------------------------------------------------
    def _store_changed(self, store: Store, change: str, msg: Message) -> None:
        if not any(s.subscription for s in self.sessions.values()):
            return
        with self.emu.addressing(store):  # message URIs name the mailbox's own extension
            for session in list(self.sessions.values()):
                for event, body in self._message_events(session, change, msg, store):
                    self._notify(session, event, body)

    def _filters(self, session: WsSession) -> list[tuple[str, dict[str, str], str]]:
        """(path, query, filter as subscribed) for each filter of the subscription."""
        out = []
        for raw in (session.subscription or {}).get("eventFilters", []):
            parts = urlsplit(raw)
            out.append((parts.path.rstrip("/"), dict(parse_qsl(parts.query)), raw))
        return out

    def _message_events(self, session: WsSession, change: str, msg: Message,
                        store: Store) -> list[tuple[str, dict]]:
        """The events of a change to `store` (one extension's mailbox) that the filters
        of `session` ask for: its own mailbox, or (an admin) another extension's."""
        ext = f"{self.emu.account_path}/extension/{store.extension_id}"
        out = []
        for path, query, raw in self._filters(session):
            if path == ext + "/message-store":
                if query.get("type") not in (None, msg.type) or query.get("direction") not in (None, msg.direction):
                    continue
                item: dict[str, Any] = {"type": msg.type}
                if change == "new":
                    item.update(newCount=1, newMessageIds=[msg.id])
                else:
                    item["updatedCount"] = 1
                out.append((raw, {"accountId": int(store.account_id), "extensionId": int(store.extension_id),
                                  "lastUpdated": iso(msg.last_modified or store.now()), "changes": [item],
                                  "ownerId": store.extension_id}))
            elif change != "new" or msg.direction != "Inbound":
                continue
            elif path == ext + "/message-store/instant" and msg.type == "SMS" \
                    and query.get("type", "SMS") == "SMS":
                body = self.emu.render_message(msg)
                body.pop("uri", None)
                for att in body.get("attachments", []):
                    if att.get("type") == "Text":
                        att.pop("uri", None)  # the instant body's Text part has no uri [D]
                body.update(eventType="Create", ownerId=store.extension_id,
                            owner={"extensionId": store.extension_id, "extensionType": "User"})
                out.append((raw, body))
            elif path == ext + "/fax" and msg.type == "Fax" and query.get("direction", "Inbound") == "Inbound":
                out.append((raw, self.emu.render_message(msg)))
            elif path == ext + "/voicemail" and msg.type == "VoiceMail":
                out.append((raw, self.emu.render_message(msg)))
        return out

    def _notify(self, session: WsSession, event: str, body: dict) -> None:
        message_id = str(uuid.uuid4())
        envelope = {"uuid": message_id, "event": event, "timestamp": _now_iso(),
                    "subscriptionId": session.subscription["id"] if session.subscription else None,
                    "ownerId": session.owner_id or self.emu.main_store.extension_id, "body": body}
        meta = {"type": "ServerNotification", "messageId": message_id, "status": 200,
                "headers": {"RCRequestId": _request_id()}}
        # The wsc (and its sequence) is stamped when the frame goes out.
        session.pending.append((meta, envelope))
        self.counts["notifications"] += 1
        if session.connection is not None:
            session.connection.wake.set()

    def telephony_event(self, *, telephony_session_id: str, session_id: str, sequence: int, status: str,
                        direction: str, remote: str, recordings: list[dict], store: Store | None = None) -> None:
        """A telephony-session event of a call of `store`'s extension (default: the
        signed-in admin's) for every subscription with a matching filter: that
        extension's sessions, or the account's (admins only: `_refused_filter`)."""
        store = store or self.emu.main_store
        me = {"phoneNumber": store.main_number, "extensionId": store.extension_id}
        other = {"phoneNumber": remote}
        party: dict[str, Any] = {
            "accountId": store.account_id, "extensionId": store.extension_id, "id": f"p-{telephony_session_id}-1",
            "direction": direction, "to": me if direction == "Inbound" else other,
            "from": other if direction == "Inbound" else me,
            "status": {"code": status},
            "missedCall": False, "standAlone": False, "muted": False,
        }
        if recordings:
            party["recordings"] = recordings
        body = {"sequence": sequence, "sessionId": session_id, "telephonySessionId": telephony_session_id,
                "serverId": "10.13.22.253.TAM", "eventTime": _now_iso(), "origin": {"type": "Call"},
                "parties": [party]}
        wanted = {f"{self.emu.account_path}/extension/{store.extension_id}/telephony/sessions",
                  self.emu.account_path + "/telephony/sessions"}
        for session in list(self.sessions.values()):
            for path, query, raw in self._filters(session):
                if path in wanted and query.get("statusCode") in (None, status):
                    if query.get("withRecordings") == "true" and not recordings:
                        continue
                    self._notify(session, raw, body)

    # subscriptions over the socket ---------------------------------------------------------
    def _expand(self, raw: Any, owner_id: str) -> str | None:
        """`~` in a filter as production answers it: the account's and the subscriber's
        own extension's ids."""
        if not isinstance(raw, str) or not raw.startswith("/restapi/v1.0/"):
            return None
        return raw.replace("/account/~", f"/account/{self.emu.main_store.account_id}", 1).replace(
            "/extension/~", f"/extension/{owner_id}", 1)

    def _refused_filter(self, session: WsSession, expanded: str) -> tuple[int, dict] | None:
        """The error for a filter this session's user may not have, None if allowed.

        Another extension's events need an admin: a regular user gets 403 SUB-405 ("not
        allowed to subscribe for messages of other extensions" [D errors.md]); another
        account's, 403 SUB-406 [D]. What production answers a regular user asking an
        account-level filter (`/account/{a}/telephony/sessions`) is not documented
        (PUSH-AND-ADMIN §A4/§A7 are silent); the emulator answers SUB-405 too [I]."""
        emu = self.emu
        path = urlsplit(expanded).path.rstrip("/")
        parts = path.split("/")  # "", restapi, v1.0, account, {a}, ...
        if len(parts) < 5 or parts[3] != "account":
            return None  # not an account resource (e.g. the subscription's own reminders)
        if parts[4] != emu.main_store.account_id:
            return 403, _error("SUB-406", "Not allowed to subscribe to events of another account")
        admin = (ext := emu.company.get(session.owner_id)) is not None and ext.admin
        if len(parts) >= 7 and parts[5] == "extension":
            target = emu.company.get(parts[6])
            if target is None:
                return 400, _error("SUB-508", "Event filters are invalid")
            if parts[6] != session.owner_id and not admin:
                return 403, _error("SUB-405", "Not allowed to subscribe for messages of other extensions")
            self._observe(target.store)
            return None
        if not admin and parts[5:] == ["telephony", "sessions"]:
            # (Other account-level filters, e.g. the extension list, are left alone: whom
            # production lets have them is not documented either.)
            return 403, _error("SUB-405", "Not allowed to subscribe to account-level events")
        return None

    def _subscription_request(self, session: WsSession, method: str, path: str, body: Any,
                              frame_len: int) -> tuple[int, dict | None]:
        """(status, body) of one ClientRequest on the subscription resource."""
        emu = self.emu
        rest = path.split("?", 1)[0]
        if not rest.startswith(SUBSCRIPTION_PATH):
            return 404, _error("AGW-404", "Resource not found")
        sub_id = rest[len(SUBSCRIPTION_PATH):].strip("/") or None
        route = {"POST": "ws-subscription-create", "PUT": "ws-subscription-update",
                 "DELETE": "ws-subscription-delete", "GET": "ws-subscription-get"}.get(method)
        if route is None or (method == "POST") == (sub_id is not None):
            return 405, _error("CMN-120", f"Method {method} is not allowed here")
        emu.stats.requests[route] += 1
        group = "Light" if method == "GET" else "Medium"  # REST subscription ops [S]
        emu.stats.groups[group] += 1
        decision = emu.limiter.check((session.owner_id or emu.store.extension_id, self._client_id(session)), group)
        if not decision.allowed:
            emu.stats.rate_limited += 1
            emu.stats.statuses[429] += 1
            return 429, _error("CMN-301", "Request rate exceeded")
        if sub_id is not None and (session.subscription is None or session.subscription["id"] != sub_id):
            emu.stats.statuses[404] += 1
            return 404, _error("CMN-102", "Resource for parameter [subscriptionId] is not found",
                               parameterName="subscriptionId", parameterValue=sub_id)
        if method == "GET":
            emu.stats.statuses[200] += 1
            return 200, session.subscription
        if method == "DELETE":
            if frame_len != 1:
                emu.stats.statuses[400] += 1
                return 400, _error("WSG-808", "Expected a request without a body")
            session.subscription = None
            emu.stats.statuses[204] += 1
            return 204, None
        if not isinstance(body, dict):
            emu.stats.statuses[400] += 1
            return 400, _error("CMN-101", "Request body is missing or not an object")
        filters = body.get("eventFilters")
        mode = body.get("deliveryMode") if method == "POST" else body.get("deliveryMode", {"transportType": "WebSocket"})
        if not isinstance(mode, dict) or mode.get("transportType") != "WebSocket":
            emu.stats.statuses[400] += 1
            return 400, _error("CMN-101", "Parameter [deliveryMode.transportType] value is invalid",
                               parameterName="deliveryMode.transportType")
        expanded = [self._expand(f, session.owner_id) for f in filters] if isinstance(filters, list) else []
        if not expanded or None in expanded:
            emu.stats.statuses[400] += 1
            return 400, _error("SUB-508", "Event filters are invalid")
        for one in expanded:
            refused = self._refused_filter(session, one)  # type: ignore[arg-type]
            if refused is not None:
                emu.stats.statuses[refused[0]] += 1
                return refused
        now = dt.datetime.now(dt.timezone.utc)
        if method == "POST":  # one per connection: a second replaces the first [D]
            sub_id = str(uuid.uuid4())
            created = now
        else:
            assert session.subscription is not None
            created = dt.datetime.fromisoformat(session.subscription["creationTime"].replace("Z", "+00:00"))
        session.subscription = {
            "uri": f"{SUBSCRIPTION_PATH}/{sub_id}", "id": sub_id, "creationTime": iso(created),
            "status": "Active", "eventFilters": list(dict.fromkeys(expanded)),
            "expirationTime": iso(now + dt.timedelta(seconds=SUBSCRIPTION_TTL + 1)),
            "expiresIn": SUBSCRIPTION_TTL, "deliveryMode": {"transportType": "WebSocket", "encryption": False},
        }
        emu.stats.statuses[200] += 1
        return 200, session.subscription

    def _client_id(self, session: WsSession) -> str:
        oauth = self.emu.tokens.sessions.get(session.oauth_session)
        return oauth.client_id if oauth is not None else ""

    # the socket ----------------------------------------------------------------------------
    async def serve(self, websocket: WebSocket) -> None:
        token = self._take_token(websocket.query_params.get("access_token"))
        if token is None:
            self.counts["refused_upgrades"] += 1
            await websocket.send_denial_response(JSONResponse(
                {"errorCode": "OAU-149", "message": "Invalid WebSocket access token"}, status_code=401))
            return
        await websocket.accept()
        now = self.clock()
        conn = Connection(self.next_connection, websocket, now, now)
        self.next_connection += 1
        self.counts["connections"] += 1
        self._expire_sessions()
        wsc = websocket.query_params.get("wsc")
        recovery: dict[str, str] = {}
        session: WsSession | None = None
        if wsc is not None:
            old_id = self._wsc_session_id(wsc)
            if old_id is None:
                self.counts["malformed_wsc"] += 1
                await self._send(websocket, [{"type": "Error", "messageId": str(uuid.uuid4()), "status": 400,
                                              "headers": {"RCRequestId": _request_id()}, "wsc": None},
                                             {"errorCode": "WSG-400",
                                              "message": "Malformed WebSocket session context token"}])
                await websocket.close(1008)
                return
            old = self.sessions.get(old_id)
            if old is not None and old.oauth_session != token.oauth_session:
                recovery = {"recoveryState": "Failed", "recoveryErrorCode": "WSG-1003"}
            elif old is None or old.subscription is None or self.fail_recoveries > 0:
                if old is not None and old.subscription is not None:
                    self.fail_recoveries -= 1
                recovery = {"recoveryState": "Failed", "recoveryErrorCode": "WSG-1005"}
            else:
                recovery = {"recoveryState": "Successful"}
                session = old
                if old.connection is not None:  # a newer socket takes the session over
                    old.connection.closing = (1000, None)
                    old.connection.wake.set()
            if recovery["recoveryState"] == "Failed" and old is not None:
                self.sessions.pop(old.id, None)
            self.counts["recoveries_" + recovery["recoveryState"].lower()] += 1
        if session is None:
            oauth = self.emu.tokens.sessions.get(token.oauth_session)
            session = WsSession(secrets.token_hex(12), token.oauth_session, _now_iso(),
                                owner_id=oauth.owner_id if oauth is not None else self.emu.main_store.extension_id)
            self.sessions[session.id] = session
        session.connection, session.disconnected_at = conn, None
        details = {"creationTime": session.created, "maxConnectionsPerSession": 50,
                   "recoveryBufferSize": RECOVERY_BUFFER, "recoveryTimeout": self.recovery_timeout,
                   "idleTimeout": self.idle_timeout, "absoluteTimeout": self.absolute_timeout,
                   "maxActiveRequests": 10, **recovery}
        await self._send(websocket, [{"type": "ConnectionDetails", "messageId": str(uuid.uuid4()), "status": 200,
                                      "wsc": self._wsc(session), "headers": {"RCRequestId": _request_id()}},
                                     details])
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._reader, conn, session, tg.cancel_scope)
                tg.start_soon(self._watchdog, conn, tg.cancel_scope)
                await self._writer(conn, session)
                tg.cancel_scope.cancel()
        except (WebSocketDisconnect, OSError, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            conn.done = True
            if session.connection is conn:
                session.connection = None
                session.disconnected_at = self.clock()
            self.counts["closed"] += 1

    async def _send(self, websocket: WebSocket, frame: list) -> None:
        await websocket.send_text(json.dumps(frame, separators=(",", ":")))

    async def _writer(self, conn: Connection, session: WsSession) -> None:
        """Send what is pending; close when asked. Returns when the socket is done."""
        while True:
            if conn.closing is not None:
                code, error = conn.closing
                if error is not None:
                    status, text = {"WSG-902": (400, "Idle timeout expired"),
                                    "WSG-903": (400, "Absolute timeout expired"),
                                    "OAU-149": (401, "Token is invalid: its OAuth session has ended")}[error]
                    # A session whose OAuth session ended cannot be recovered: no wsc.
                    wsc = None if error == "OAU-149" else self._wsc(session)
                    await self._send(conn.websocket, [{"type": "Error", "messageId": str(uuid.uuid4()),
                                                       "status": status, "headers": {"RCRequestId": _request_id()},
                                                       "wsc": wsc},
                                                      {"errorCode": error, "message": text}])
                with anyio.move_on_after(2):
                    await conn.websocket.close(code)
                return
            if conn.stalled_until > self.clock():
                with anyio.move_on_after(conn.stalled_until - self.clock()):
                    await conn.wake.wait()
                conn.wake = anyio.Event()
                continue
            if conn.replies:
                meta, body = conn.replies.popleft()
                await self._send(conn.websocket, [meta, body] if body is not None else [meta])
                continue
            if session.connection is conn and session.pending:
                meta, body = session.pending[0]
                if meta["type"] == "ServerNotification" and (
                        session.subscription is None or body.get("subscriptionId") != session.subscription["id"]):
                    session.pending.popleft()  # of a subscription since replaced or deleted
                    continue
                frame_meta = dict(meta)
                if meta["type"] == "ServerNotification":
                    frame_meta["wsc"] = self._wsc(session)
                await self._send(conn.websocket, [frame_meta, body] if body is not None else [frame_meta])
                session.pending.popleft()  # sent: no longer "missed"
                if meta["type"] == "ServerNotification":
                    self.counts["notifications_sent"] += 1
                continue
            await conn.wake.wait()
            conn.wake = anyio.Event()

    @staticmethod
    def _reply(conn: Connection, meta: dict, body: dict | None) -> None:
        """Queue an answer frame ahead of the notifications (the writer sends it)."""
        conn.replies.append((meta, body))
        conn.wake.set()

    async def _reader(self, conn: Connection, session: WsSession, scope: anyio.CancelScope) -> None:
        try:
            while True:
                text = await conn.websocket.receive_text()
                if conn.stalled_until > self.clock():
                    self.counts["frames_lost_in_stall"] += 1
                    continue  # a black hole: the frame never arrived
                conn.last_client_frame = self.clock()
                self._client_frame(conn, session, text)
        except (WebSocketDisconnect, KeyError, RuntimeError):
            pass
        scope.cancel()

    def _client_frame(self, conn: Connection, session: WsSession, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            frame = None
        meta = frame[0] if isinstance(frame, list) and frame and isinstance(frame[0], dict) else None
        message_id = meta.get("messageId") if meta else None
        if meta is None or meta.get("type") not in ("Heartbeat", "ClientRequest") or len(frame) > 2:
            self._reply(conn, {"type": "Error", "messageId": message_id, "status": 400,
                                  "headers": {"RCRequestId": _request_id()}, "wsc": None},
                        _error("WSG-808", "Expected either '{' opening an object body or '[' opening an array"))
            return
        if meta["type"] == "Heartbeat":
            self.counts["heartbeats"] += 1
            self._reply(conn, {"type": "Heartbeat", "messageId": message_id}, None)
            return
        body = frame[1] if len(frame) > 1 else None
        status, answer = self._subscription_request(session, str(meta.get("method", "")).upper(),
                                                    str(meta.get("path", "")), body, len(frame))
        headers = {"Server": "nginx", "Date": dt.datetime.now(dt.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT"),
                   "Content-Type": "application/json", "RoutingKey": "LOOPBACK01",
                   "RCRequestId": _request_id()}
        if self.subscription_id_header and status == 200 and session.subscription is not None:
            headers["WSG-SubscriptionId"] = session.subscription["id"]
        self._reply(conn, {"type": "ClientRequest", "messageId": message_id, "status": status,
                              "headers": headers}, answer)

    async def _watchdog(self, conn: Connection, scope: anyio.CancelScope) -> None:
        """Idle and absolute timeouts; settles sends so their outcome is pushed."""
        from . import sending

        while conn.closing is None:
            now = self.clock()
            idle_at = conn.last_client_frame + self.idle_timeout
            absolute_at = conn.opened + self.absolute_timeout
            if now >= absolute_at:
                conn.closing = (1000, "WSG-903")
            elif now >= idle_at:
                conn.closing = (1000, "WSG-902")
            if conn.closing is not None:
                self.counts["timeouts_" + conn.closing[1]] += 1
                conn.stalled_until = 0.0
                conn.wake.set()
                return
            self.run_due()
            if sending.pending_count(self.emu.store):
                self.emu.settle_sends()  # a queued send leaves Queued: its change is pushed
            await anyio.sleep(min(0.25, max(0.01, min(idle_at, absolute_at) - now)))

    def _expire_sessions(self) -> None:
        now = self.clock()
        for sid, s in list(self.sessions.items()):
            if s.connection is None and s.disconnected_at is not None \
                    and now - s.disconnected_at > self.recovery_timeout:
                del self.sessions[sid]

    def run_due(self) -> None:
        if not self.timed:
            return
        now = self.clock()
        due = sorted((t for t in self.timed if t[0] <= now), key=lambda t: t[0])
        self.timed = [t for t in self.timed if t[0] > now]
        for _, action in due:
            action()

    # switches --------------------------------------------------------------------------------
    def drop_all(self) -> int:
        n = 0
        for s in self.sessions.values():
            if s.connection is not None and s.connection.closing is None:
                s.connection.closing = (1011, None)
                s.connection.stalled_until = 0.0
                s.connection.wake.set()
                n += 1
        return n

    def stall_all(self, seconds: float) -> int:
        n = 0
        for s in self.sessions.values():
            if s.connection is not None:
                s.connection.stalled_until = self.clock() + seconds
                s.connection.wake.set()
                n += 1
        return n

    def report(self) -> dict:
        live = [s for s in self.sessions.values() if s.connection is not None and not s.connection.done]
        return {
            "connections": [{"id": s.connection.id, "session": s.id, "opened": s.connection.opened,
                             "subscription": (s.subscription or {}).get("id"),
                             "eventFilters": (s.subscription or {}).get("eventFilters", [])}
                            for s in live if s.connection is not None],
            "sessions": len(self.sessions),
            "counts": dict(self.counts),
            "timeouts": {"recoveryTimeout": self.recovery_timeout, "idleTimeout": self.idle_timeout,
                         "absoluteTimeout": self.absolute_timeout, "wsTokenTtl": self.token_ttl},
            "switches": {"fail_recoveries": self.fail_recoveries,
                         "subscription_id_header": self.subscription_id_header,
                         "single_use_tokens": self.single_use_tokens},
        }


def _error(code: str, message: str, **extra: Any) -> dict:
    return {"errorCode": code, "message": message, "errors": [{"errorCode": code, "message": message, **extra}],
            **extra}


# recorded calls (admin) ------------------------------------------------------------------------
def _call_id() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(15))


def place_call(emu: Emulator, body: dict) -> dict:
    """Place a (recorded) call of an extension (`extension`: its number; default the
    signed-in admin's): Setup and Answered now; Disconnected after `talkSeconds`; the
    call-log record (with its recording) `callLogDelay` seconds after that (both on the
    gateway's timer, `Gateway.run_due`). Returns the answer JSON."""
    from . import media

    store = emu.store_of_number(body.get("extension"))
    direction = body.get("direction", "Inbound")
    if direction not in ("Inbound", "Outbound"):
        raise ValueError("[direction] must be Inbound or Outbound")
    remote = str(body.get("from" if direction == "Inbound" else "to", "+16505550199"))
    seconds = body.get("seconds", 40)
    talk = body.get("talkSeconds", 0)
    delay = body.get("callLogDelay", 0)
    for name, value in (("seconds", seconds), ("talkSeconds", talk), ("callLogDelay", delay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"[{name}] must be a number >= 0")
    recorded = body.get("recorded", True)
    kind = body.get("recordingType", "Automatic")
    wav = body.get("format", "mp3") == "wav"
    tsid = f"s-{uuid.uuid4().hex[:20]}"
    session_id = str(store.new_id())
    rec_id = str(store.new_id())
    started = store.now()
    gw: Gateway = emu.gateway
    common = dict(telephony_session_id=tsid, session_id=session_id, direction=direction, remote=remote,
                  store=store)
    gw.telephony_event(sequence=1, status="Setup", recordings=[], **common)
    gw.telephony_event(sequence=2, status="Answered",
                       recordings=[{"id": rec_id, "active": True}] if recorded else [], **common)
    recording = None
    if recorded:
        audio = media.audio_wav(int(rec_id), seconds) if wav else media.audio_mp3(int(rec_id), seconds)
        recording = Recording(id=rec_id, media=audio, duration=int(seconds), type=kind)
    me = Party(phone_number=store.main_number, extension_number=store.extension_number)
    other = Party(phone_number=remote)
    call = CallRecord(id=_call_id(), session_id=session_id, start_time=started, duration=int(seconds) + 2,
                      type="Voice", direction=direction, action="Phone Call",
                      result="Accepted" if direction == "Inbound" else "Call connected",
                      from_=other if direction == "Inbound" else me, to=me if direction == "Inbound" else other,
                      recording=recording, telephony_session_id=tsid)
    answer = {"telephonySessionId": tsid, "sessionId": session_id, "callId": call.id,
              "recordingId": rec_id if recorded else None}

    def end() -> None:
        gw.telephony_event(sequence=3, status="Disconnected",
                           recordings=[{"id": rec_id, "active": False}] if recorded else [], **common)

    def logged() -> None:
        store.add_call(call)
        company = emu.company  # the account call log's ISync replays calls logged since
        company.added_calls.append((len(company.added_calls) + 1, store.extension_id, call.id))

    if talk == 0 and delay == 0:
        end()
        logged()
        return answer
    now = gw.clock()
    gw.timed.append((now + talk, end))
    gw.timed.append((now + talk + delay, logged))
    return answer


def routes(emu: Emulator) -> list[BaseRoute]:
    """The token endpoint, the socket, and the admin switches."""
    gw: Gateway = emu.gateway

    async def push_get(request: Request, session: Session | None) -> Response:
        return JSONResponse(gw.report())

    async def push_set(request: Request, session: Session | None) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return emu.api_error(400, "CMN-103", "JSON body is unparsable")
        if not isinstance(body, dict):
            return emu.api_error(400, "CMN-101", "body must be a JSON object")
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key == "drop" and value is True:
                out["dropped"] = gw.drop_all()
            elif key == "stall" and isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
                out["stalled"] = gw.stall_all(float(value))
            elif key == "fail_recoveries" and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                gw.fail_recoveries = value
            elif key in ("subscription_id_header", "single_use_tokens") and isinstance(value, bool):
                setattr(gw, key, value)
            else:
                return emu.api_error(400, "CMN-101", f"unknown or invalid push switch [{key}]")
        return JSONResponse({**gw.report(), **out})

    async def calls(request: Request, session: Session | None) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            answer = place_call(emu, body)
        except ValueError as exc:
            return emu.api_error(400, "CMN-101", str(exc))
        return JSONResponse(answer, status_code=201)

    def admin(path: str, name: str, handler, method: str) -> Route:
        return Route(path, emu.endpoint(name, None, handler, auth="none"), methods=[method], name=name)

    return [
        Route("/restapi/oauth/wstoken", emu.endpoint("oauth-wstoken", "Auth", gw.wstoken, auth="bearer"),
              methods=["POST"], name="oauth-wstoken"),
        WebSocketRoute("/ws", gw.serve, name="wsg"),
        admin("/_emulator/push", "admin-push", push_get, "GET"),
        admin("/_emulator/push", "admin-push-set", push_set, "POST"),
        admin("/_emulator/calls/live", "admin-calls-live", calls, "POST"),
    ]
