"""Push: one WebSocket per mount to RingCentral's gateway, so new faxes, voicemail, texts
and recordings appear within seconds, and an idle mount asks the API nothing.

The wire is PUSH-AND-ADMIN.md §A: a ws token from `POST /restapi/oauth/wstoken` (Auth
group, 5 a minute shared with logins: reused while younger than 0.8 x `expires_in`, as
`@rc-ex/ws` does), the gateway URL + `?access_token=` (+ `&wsc=` to recover), the
`ConnectionDetails` frame first, then one subscription carrying every event filter the
folder owners ask for (`FolderOwner.push_filters`), created over the socket.

What it means for the folders (`FolderOwner.trusted`, `.pushed`, `.resync`):

* While the channel is healthy (connected, subscribed, heartbeats answered) listings are
  trusted: no TTL, so an idle mount makes no request at all, heartbeats aside.
* An event goes to the owners that want it (`FolderOwner.wants`); each runs one
  incremental sync (message-sync ISync, Light) or, for a recording, asks the call log
  for that telephony session. Notices that arrive while a folder syncs are coalesced
  into one more sync. The owner tells the kernel what changed (rcfs.fs).
* Company mode (an admin's mount): the subscription also carries the account's ended
  recorded calls (/company/recordings asks the company call log for that telephony
  session) and the mailbox of each other extension whose folders were listed (added
  with a PUT when first listed, removed when the extension goes), at most
  `MAX_FILTERS` in all; a folder whose filter did not fit polls by its TTL (the log
  says so once). An event names its extension; it goes only to that mailbox's folders
  (`Notice.for_extension`), so the user's own folders do not sync for Alice's fax.
  A filter is live from the answer that added it: a listing started earlier is not
  trusted (`covers`), so nothing that happened in between is missed.
* When the channel goes down, the TTLs apply again (today's polling on look), the log
  says so once and `rcfs status` shows it; rcfs reconnects with capped backoff and,
  within `recoveryTimeout`, asks for the session back (`&wsc=`). Recovered: the gateway
  replays what was missed, nothing else to do. Not recovered (or a fresh session): one
  incremental sync per folder already listed, so nothing is missed.
* A Heartbeat goes out when nothing was received for a while and at least every third
  of `idleTimeout` (only client frames keep a socket from idling out, pings do not);
  an unanswered one means the socket is dead (a stalled NAT, a suspended laptop): it is
  closed and the session recovered. Idle (WSG-902) and absolute (WSG-903) timeouts end
  in a reconnect that recovers the session at once.
* The OAuth session behind the socket can end (a revoke, an admin's logout, a password
  change, the service's session cap). The gateway then ends the socket (an `Error` with
  status 401) or refuses the cached ws token at the upgrade (401); either way the next
  attempt, at once, asks for a new ws token, which makes the auth module (rcfs.api.auth)
  log in again with the JWT; the old gateway session cannot be recovered, so the channel
  subscribes again and syncs every listed folder once, and the log says what happened.
  If the auth module logs in again for another reason (an API request met the 401
  first), the channel moves to the new session by itself: a gateway that kept the old
  socket open might stop delivering on it without a word. If the JWT itself is refused,
  the channel stays down with that reason (log, `rcfs status`) until the mount is
  restarted, and listings fall back to their TTL.
* A machine that slept: trio's clock (CLOCK_MONOTONIC) stands still during a suspend,
  so every timer here would carry on as if nothing happened, and the next heartbeat
  could be a minute away while the gateway has long closed the socket and listings are
  still trusted. The boot clock (CLOCK_BOOTTIME) does count the sleep: checked every
  `WAKE_TICK` seconds; when it ran ahead of trio's clock, the socket is probed with a
  Heartbeat at once, and one left unanswered for `WAKE_PROBE` seconds ends it (then
  recovered, or resubscribed with a sync of every listed folder).

Why trio-websocket: rcfs runs on trio (pyfuse3); trio-websocket is the trio-native
client (wsproto underneath, the same engine hypercorn uses in the emulator), so the
socket lives in the mount's nursery and is cancelled with it; `websockets` is asyncio.

The ws token is a secret like the access token: it appears only in the URL handed to
the socket, never in a log line or an error message (trio-websocket logs the URL at
DEBUG, so its logger is kept at INFO and scrubbed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable
from urllib.parse import urlsplit

import trio

from .api.errors import ApiError, AuthError

if TYPE_CHECKING:
    from .api.client import RingCentralClient
    from .folders.base import FolderOwner

log = logging.getLogger(__name__)

SUBSCRIPTION_PATH = "/restapi/v1.0/subscription/"
DETAILS_WAIT = 60.0  # seconds for ConnectionDetails (what @rc-ex/ws waits)
REQUEST_WAIT = 30.0  # seconds for the answer to a subscription request
CONNECT_TIMEOUT = 15.0
PROBE_MAX = 60.0  # a Heartbeat after this long without any frame (@rc-ex/ws: 60 s)
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # seconds between attempts, capped
TOKEN_REUSE = 0.8  # share of the ws token's lifetime it is reused for
# Event filters rcfs puts in its one subscription at most. The service's limit is not
# documented (PUSH-AND-ADMIN §A4 names 30 subscriptions per user and app, nothing per
# subscription; a subscription answer may list `disabledFilters` "due to certain
# limitations"): 20 is a conservative guess [I]. The mailbox's own filters come first;
# other extensions' mailboxes (company mode) fill the rest in the order they were
# opened, and those left out keep polling by their TTL.
MAX_FILTERS = 20
SHORT_LIVED = 5.0  # seconds: a socket ended sooner than this does not reconnect at once
WAKE_TICK = 5.0  # seconds between looks at the boot clock (a suspend shows there only)
WAKE_GAP = 5.0  # seconds the boot clock must run ahead of trio's to count as a sleep
WAKE_PROBE = 10.0  # seconds a Heartbeat sent after a sleep may take to be answered


def boot_clock() -> float:
    """Seconds since boot, suspends included (Linux CLOCK_BOOTTIME); elsewhere the wall
    clock, whose jumps (NTP) at worst cost a needless Heartbeat."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.time()


_TOKEN_IN_TEXT = re.compile(r"(access_token=|wsc=)[^&\s'\"]+")


class _ScrubUrls(logging.Filter):
    """trio-websocket prints the URL (with the ws token) at DEBUG: never let it out."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return False
        record.msg = _TOKEN_IN_TEXT.sub(r"\1***", str(record.msg))
        if record.args:
            record.args = tuple(_TOKEN_IN_TEXT.sub(r"\1***", str(a)) for a in record.args) \
                if isinstance(record.args, tuple) else record.args
        return True


_ws_logger = logging.getLogger("trio-websocket")
_ws_logger.setLevel(logging.INFO)
_ws_logger.addFilter(_ScrubUrls())


@dataclasses.dataclass
class Notice:
    """One ServerNotification, as the folder owners see it."""

    event: str  # the filter it matched (numeric ids)
    kind: str  # "message-store", "instant-sms", "fax", "voicemail", "telephony", "other"
    body: dict
    message_types: frozenset[str] = frozenset()  # message-store: the types that changed
    telephony_session_id: str | None = None
    status: str | None = None  # telephony: the party's status code
    recording_ids: tuple[str, ...] = ()
    party_extension_ids: tuple[str, ...] = ()  # telephony: the extensions on the call
    extension_id: str | None = None  # the extension the filter names (None: account-level)
    account_level: bool = False  # an account-wide filter (company mode: every extension's calls)
    mine: bool = False  # set by the channel: the filter is the signed-in user's own extension's

    def for_extension(self, extension_id: str) -> bool:
        """Whether this event is about the mailbox of `extension_id` (`~`: the user's)."""
        if extension_id == "~":
            return self.mine
        return self.extension_id == extension_id


_EXTENSION_IN_PATH = re.compile(r"/extension/([^/?]+)")
_ACCOUNT_LEVEL = re.compile(r"/restapi/v1\.0/account/[^/]+/telephony/sessions")


def notice_from(envelope: dict) -> Notice:
    """Classify an event envelope (names from the API are only compared, never used)."""
    event = str(envelope.get("event") or "")
    body = envelope.get("body") if isinstance(envelope.get("body"), dict) else {}
    path = urlsplit(event).path.rstrip("/")
    notice = _classify(event, path, body)
    match = _EXTENSION_IN_PATH.search(path)
    notice.extension_id = match.group(1) if match else None
    notice.account_level = match is None and _ACCOUNT_LEVEL.fullmatch(path) is not None
    return notice


def _classify(event: str, path: str, body: dict) -> Notice:
    if path.endswith("/message-store"):
        changes = body.get("changes") if isinstance(body.get("changes"), list) else []
        types = frozenset(str(c.get("type")) for c in changes if isinstance(c, dict) and c.get("type"))
        return Notice(event, "message-store", body, message_types=types)
    if path.endswith("/message-store/instant"):
        return Notice(event, "instant-sms", body, message_types=frozenset({"SMS"}))
    if path.endswith("/fax"):
        return Notice(event, "fax", body, message_types=frozenset({"Fax"}))
    if path.endswith("/voicemail"):
        return Notice(event, "voicemail", body, message_types=frozenset({"VoiceMail"}))
    if path.endswith("/telephony/sessions"):
        status, recordings, extensions = None, [], []
        for party in body.get("parties") or []:
            if not isinstance(party, dict):
                continue
            if isinstance(party.get("extensionId"), (str, int)) and not isinstance(party.get("extensionId"), bool):
                extensions.append(str(party["extensionId"]))
            code = (party.get("status") or {}).get("code") if isinstance(party.get("status"), dict) else None
            status = status or (str(code) if code else None)
            for rec in party.get("recordings") or []:
                if isinstance(rec, dict) and rec.get("id") is not None:
                    recordings.append(str(rec["id"]))
        tsid = body.get("telephonySessionId")
        return Notice(event, "telephony", body, telephony_session_id=str(tsid) if tsid else None,
                      status=status, recording_ids=tuple(dict.fromkeys(recordings)),
                      party_extension_ids=tuple(dict.fromkeys(extensions)))
    return Notice(event, "other", body)


# What a user should read for the close codes a gateway socket ends with (RFC 6455 §7.4).
_CLOSE_CODES = {1000: "was closed by the gateway", 1001: "was closed: the gateway is going away",
                1006: "was lost (no close frame: network or server gone)",
                1008: "was closed by the gateway (policy)", 1011: "was closed by the gateway (server error)"}


def _network_cause(exc: BaseException) -> str:
    """The OS-level reason behind a socket failure ("Connection refused", "Name or service
    not known"), found along the exception's cause chain; else its type name."""
    seen: BaseException | None = exc
    wrapper = None  # an OSError without errno ("all attempts to connect ... failed")
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, OSError):
            if seen.strerror:
                return _TOKEN_IN_TEXT.sub(r"\1***", str(seen.strerror))[:120]  # (no URL in it; if ever)
            wrapper = wrapper or _TOKEN_IN_TEXT.sub(r"\1***", str(seen))
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:  # noqa: F821 - builtin from 3.11
            seen = seen.exceptions[0]
            continue
        seen = seen.__cause__ or seen.__context__
    return (wrapper or type(exc).__name__)[:120]


def own_extension_id(asked: Iterable[str], answered: Iterable[str]) -> str | None:
    """The signed-in user's extension id, read off the subscription's answer: production
    expands `~` in the filters it echoes (PUSH-AND-ADMIN §A3), so an asked
    `/extension/~/...` filter names it there."""
    answered = [a for a in answered if isinstance(a, str)]
    for filt in asked:
        if "/extension/~" not in filt:
            continue
        parts = re.split(r"(/account/~|/extension/~)", filt)
        pattern = "".join("/account/[^/?]+" if p == "/account/~" else "/extension/([^/?]+)"
                          if p == "/extension/~" else re.escape(p) for p in parts)
        for got in answered:
            match = re.fullmatch(pattern, got)
            if match:
                return match.group(1)
    return None


class ChannelDown(Exception):
    """The socket is unusable; the message says why (no secrets in it)."""


@dataclasses.dataclass
class PushStats:
    connects: int = 0
    recovered: int = 0
    recovery_failed: int = 0
    resyncs: int = 0  # folder syncs after a fresh (not recovered) subscription
    notifications: int = 0
    syncs: int = 0  # folder syncs caused by notifications
    heartbeats: int = 0
    wakeups: int = 0  # suspends of the machine noticed (the boot clock ran ahead)
    ws_tokens: int = 0
    attempts: int = 0  # connection attempts, successful or not (a hot loop would show here)
    new_logins: int = 0  # OAuth sessions the channel had to move to (the old one ended)
    last_event: float | None = None  # time.time() of the last notification


class PushChannel:
    """The mount's push channel. `run` in the mount's nursery; `healthy` for owners."""

    def __init__(self, client: "RingCentralClient", owners: Iterable["FolderOwner"], *,
                 wall_clock: Callable[[], float] = time.time,
                 boot_clock: Callable[[], float] = boot_clock) -> None:
        self.client = client
        self.boot_clock = boot_clock
        self.owners: list[FolderOwner] = []
        self.wall_clock = wall_clock
        self.state = "starting"  # starting | up | down
        self.why_down: str | None = None
        self.since = wall_clock()
        self.stats = PushStats()
        self.subscription_id: str | None = None
        self.filters: list[str] = []
        # The ws token's age and the recovery window count on the boot clock: they run on at
        # the service while the machine sleeps (trio's clock does not).
        self._token: tuple[dict, float] | None = None  # (answer, boot clock when obtained)
        # The auth module's login count when the ws token in hand was obtained: a later
        # login means the token's OAuth session was replaced (ended).
        self._token_logins: int | None = None
        self._relogin = trio.Event()  # set when the auth module logs in again
        client.auth.on_login.append(self._logged_in)
        self._wsc: str | None = None
        self._wsc_sequence = -1
        self._dropped_at: float | None = None
        self._recovery_timeout = 180.0
        self._idle_timeout = 1800.0
        self._ws = None
        self._opened_at = float("-inf")  # trio time the last socket opened
        self._waiting: dict[str, tuple[trio.Event, list]] = {}  # messageId -> (done, [frame])
        self._last_received = 0.0
        self._last_sent = 0.0
        self._heartbeat_due: tuple[str, float] | None = None  # (messageId, deadline)
        self._work: dict[int, tuple[trio.Event, list[Notice]]] = {}
        self._busy = 0  # folder workers syncing now
        self._rng = random.Random()
        self._refilter = trio.Event()
        # trio time the live subscription became active: a listing made (started) before
        # it may miss what happened before it, so only later ones are trusted.
        self._subscribed_at: float | None = None
        # ... and each of its filters (one added later by PUT is live from its answer on).
        self._filter_since: dict[str, float] = {}
        self.max_filters = MAX_FILTERS
        self.left_out: list[str] = []  # filters wanted beyond `max_filters`
        self._cap_logged = False
        self._refused: set[str] = set()  # filters the service would not have (`_refuse`)
        self._own_extension: str | None = None  # learned from the subscription's answer
        self._nursery: trio.Nursery | None = None  # the folder workers' (run)
        for owner in owners:
            if owner.push_filters():
                self._adopt(owner)

    # owners -------------------------------------------------------------------------------
    def _adopt(self, owner: "FolderOwner") -> None:
        self.owners.append(owner)
        # A folder without a filter of its own (yet) has nothing to be trusted for: it polls.
        owner.trusted = lambda started, owner=owner: bool(filters := owner.push_filters()) \
            and self.covers(started, filters)
        owner.push_changed = self.filters_changed
        self._work[id(owner)] = (trio.Event(), [])

    def add_owner(self, owner: "FolderOwner") -> None:
        """A folder that came after the mount (company mode: a mailbox of another
        extension, opened): its events are dispatched to it from now on, and its filters
        join the subscription when it asks for them (`FolderOwner.push_changed`)."""
        if any(o is owner for o in self.owners):
            return
        self._adopt(owner)
        if self._nursery is not None:
            self._nursery.start_soon(self._folder_worker, owner)
        if owner.push_filters():
            self.filters_changed()

    def remove_owner(self, owner: "FolderOwner") -> None:
        """The folder is gone (its extension left the account): no more events for it,
        and its filters leave the subscription."""
        if not any(o is owner for o in self.owners):
            return
        self.owners = [o for o in self.owners if o is not owner]
        slot = self._work.pop(id(owner), None)
        if slot is not None:
            slot[0].set()  # its worker sees it is gone and ends
        self.filters_changed()

    def covers(self, listed_at: float | None, filters: Iterable[str] = ()) -> bool:
        """Whether a listing whose load started at `listed_at` (trio time) needs no TTL:
        the channel is healthy and its subscription, with every one of `filters` (the
        folder's), was already active then, so every later change arrives as an event.
        A folder whose filter was left out (the cap) is never covered: it polls."""
        if not (self.healthy and listed_at is not None and self._subscribed_at is not None
                and listed_at >= self._subscribed_at):
            return False
        return all(self._filter_since.get(f, float("inf")) <= listed_at for f in filters)

    @property
    def healthy(self) -> bool:
        return self.state == "up"

    def filters_changed(self) -> None:
        """An owner's `push_filters` changed (company mode: a folder of another extension
        opened or closed): the live subscription is updated with PUT over the socket."""
        self._refilter.set()

    def wanted_filters(self) -> list[str]:
        """Every owner's filters, once each, in the owners' order, at most `max_filters`
        (the rest in `left_out`: those folders poll by their TTL; said once in the log)."""
        filters: list[str] = []
        left_out: list[str] = []
        for owner in self.owners:
            for f in owner.push_filters():
                if f in filters or f in left_out or f in self._refused:
                    continue
                (filters if len(filters) < self.max_filters else left_out).append(f)
        self.left_out = left_out
        if left_out and not self._cap_logged:
            self._cap_logged = True
            log.warning("push: the subscription carries at most %d event filters; %d more folder(s) "
                        "(other extensions' mailboxes opened later) are re-checked on look after "
                        "their TTL instead", self.max_filters, len(left_out))
        return filters

    def _refuse(self, filters: list[str], status: int, answer: Any) -> None:
        """The service refused `filters`: never asked again during this mount."""
        self._refused.update(filters)
        code = str(answer.get("errorCode") or "") if isinstance(answer, dict) else ""
        log.warning("push: the service refused %d event filter(s) (HTTP %d %s); the folders that "
                    "need them are re-checked on look after their TTL", len(filters), status, code[:32])

    def _live(self, filters: list[str], answer: Any) -> None:
        """`filters` are the live subscription's now (its `answer`): each one new to it
        counts as active from now on."""
        now = trio.current_time()
        self._filter_since = {f: self._filter_since.get(f, now) for f in filters}
        self.filters = filters
        if isinstance(answer, dict) and isinstance(answer.get("eventFilters"), list):
            self._own_extension = own_extension_id(filters, answer["eventFilters"]) or self._own_extension

    # reporting ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        s = self.stats
        pending = sum(len(p) for _, p in self._work.values()) + self._busy
        return {"state": self.state, "pending": pending, "since": round(self.since, 1), "why": self.why_down,
                "filters": len(self.filters), "filters_left_out": len(self.left_out),
                "filters_refused": len(self._refused), "connects": s.connects, "recovered": s.recovered,
                "recovery_failed": s.recovery_failed, "notifications": s.notifications, "syncs": s.syncs,
                "resyncs": s.resyncs, "heartbeats": s.heartbeats, "ws_tokens": s.ws_tokens,
                "attempts": s.attempts, "new_logins": s.new_logins, "wakeups": s.wakeups,
                "final": self._final(),
                "last_event": round(s.last_event, 1) if s.last_event else None}

    def _final(self) -> bool:
        """True when the channel cannot come back in this process: the auth module gave the
        session up (credentials rejected); only a new mount with a good JWT helps."""
        return self.client.auth.failed

    def _logins(self) -> int:
        return self.client.auth.logins

    def _logged_in(self) -> None:
        """The auth module logged in (a new OAuth session): a socket opened with a ws token
        of the old one must move over (`_session_watch`)."""
        self._relogin.set()

    def _set_state(self, state: str, why: str | None = None) -> None:
        if state == self.state:
            if state == "down" and why != self.why_down:
                self.why_down = why  # a new reason is worth a line; the same one is not
                if self._final():
                    log.error("push channel stays down until rcfs is mounted again: %s", why)
                else:
                    log.warning("push channel still down: %s", why)
            return
        previous, self.state, self.why_down, self.since = self.state, state, why, self.wall_clock()
        if state == "down" and self._final():
            log.error("push channel down until rcfs is mounted again (%s): listings are re-checked on "
                      "look after their TTL", why)
        elif state == "down":
            log.warning("push channel down (%s): listings are re-checked on look after their TTL "
                        "until it is back", why)
        elif state == "up" and previous == "down":
            log.warning("push channel back: listings are trusted again, changes arrive as events")
        elif state == "up":
            log.info("push channel up: %d event filter(s); idle listings cost no request", len(self.filters))

    # the loop ---------------------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a channel up until cancelled; never raises (a failure is a log line)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for owner in self.owners:
                nursery.start_soon(self._folder_worker, owner)
            task_status.started()
            failures = 0
            while True:
                try:
                    self.stats.attempts += 1
                    await self._session()
                    failures = 0  # it was up: start the backoff again
                except _Reconnect as exc:
                    # An expected end (idle/absolute timeout), or the OAuth session ended and a
                    # new ws token (a new login) is due: at once, but a second in a row without
                    # the channel coming up in between backs off like any failure.
                    again = self.state == "down" and isinstance(exc, _SessionEnded)
                    # A gateway that ends every socket at once must not make a loop of it.
                    again = again or trio.current_time() - self._opened_at < SHORT_LIVED
                    if isinstance(exc, _SessionEnded):
                        self._set_state("down", str(exc))
                    failures = failures + 1 if again else 0
                except ChannelDown as exc:
                    # A socket that was up starts the backoff again from its first step.
                    failures = 1 if self.state == "up" else failures + 1
                    self._set_state("down", str(exc))
                except AuthError as exc:
                    # The auth module gave the session up (it says why, once, in the log) and
                    # fails fast from now on: the attempts below cost no request.
                    self._set_state("down", f"the account's login was refused: {exc}")
                    failures = max(failures + 1, len(BACKOFF) - 1)
                except ApiError as exc:
                    self._set_state("down", f"cannot get a ws token: {exc}")
                    failures += 1
                except Exception as exc:  # noqa: BLE001 - the channel must never end silently
                    log.exception("push channel failed unexpectedly; retrying")
                    self._set_state("down", f"internal error: {type(exc).__name__}")
                    failures += 1
                finally:
                    self._ws = None  # (the subscription id stays: a recovered session keeps it)
                    for done, slot in self._waiting.values():
                        done.set()
                    self._waiting.clear()
                    self._heartbeat_due = None
                    if self._dropped_at is None:
                        self._dropped_at = self.boot_clock()
                if failures:
                    delay = BACKOFF[min(failures, len(BACKOFF)) - 1]
                    await trio.sleep(delay * (0.75 + 0.5 * self._rng.random()))

    async def _url(self) -> str:
        now = self.boot_clock()
        if self._token is not None:
            answer, got = self._token
            if now - got < TOKEN_REUSE * float(answer.get("expires_in") or 0):
                return self._gateway_url(answer)
        had = self._token_logins
        answer = await self.client.ws_token()
        self.stats.ws_tokens += 1
        self._token = (answer, self.boot_clock())
        self._token_logins = self._logins()
        if had is not None and self._token_logins > had:
            self.stats.new_logins += 1
            log.warning("the OAuth session behind the push channel ended (revoked, logged out, or ended "
                        "by the service); rcfs logged in again with the JWT: new ws token, new gateway "
                        "session, one sync of every listed folder")
        return self._gateway_url(answer)

    def _gateway_url(self, answer: dict) -> str:
        uri = str(answer["uri"])
        parts = urlsplit(uri)
        host = (parts.hostname or "").lower()
        from .api.client import _stays_local  # the client's own rule for plain transports

        if parts.query or not (parts.scheme == "wss" or (parts.scheme == "ws" and _stays_local(host))):
            raise ChannelDown(f"refusing the gateway address {parts.scheme}://{host}{parts.path}: "
                              "not wss (or has a query)")
        url = f"{uri}?access_token={answer['ws_access_token']}"
        if self._wsc and self._dropped_at is not None \
                and self.boot_clock() - self._dropped_at < self._recovery_timeout:
            url += f"&wsc={self._wsc}"
        return url

    async def _session(self) -> None:
        """One socket, from connect to close."""
        from trio_websocket import open_websocket_url

        url = await self._url()
        recovering = "&wsc=" in url
        self._last_sent = self._last_received = trio.current_time()
        try:
            async with open_websocket_url(url, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=2.0) as ws:
                self._ws = ws
                self._opened_at = trio.current_time()
                self.stats.connects += 1
                try:
                    await self._serve(ws, recovering)
                finally:
                    with trio.move_on_after(2) as scope:
                        scope.shield = True
                        await ws.aclose()
        except BaseException as exc:  # noqa: BLE001 - mapped to ChannelDown or re-raised
            down = self._as_down(exc)
            if down is None:
                raise
            raise down from None

    def _as_down(self, exc: BaseException) -> ChannelDown | None:
        """The ChannelDown a failure of the socket means; None for anything else
        (cancellation, a bug), which must propagate."""
        from trio_websocket import ConnectionClosed, ConnectionRejected, ConnectionTimeout, HandshakeError

        if isinstance(exc, BaseExceptionGroup):  # noqa: F821 - builtin from 3.11
            downs = [self._as_down(e) for e in exc.exceptions]
            if any(d is None for d in downs):
                return None
            return next((d for d in downs if isinstance(d, _Reconnect)), downs[0])
        if isinstance(exc, ChannelDown):
            return exc
        if isinstance(exc, ConnectionRejected):
            status = getattr(exc, "status_code", None)
            if status in (401, 403):
                # Expired, used up, or its OAuth session ended: the next attempt gets a new
                # one (and the auth module a new login if the session is gone).
                self._token = None
                return _SessionEnded(f"the gateway refused the ws token (HTTP {status}): expired, "
                                     "or its OAuth session ended; getting a new one")
            return ChannelDown(f"the gateway refused the connection (HTTP {status})")
        if isinstance(exc, ConnectionTimeout):
            return ChannelDown(f"no answer from the gateway within {CONNECT_TIMEOUT:g} s (network down?)")
        if isinstance(exc, HandshakeError):
            return ChannelDown(f"cannot connect to the gateway ({_network_cause(exc)})")
        if isinstance(exc, ConnectionClosed):
            code = getattr(exc.reason, "code", None)
            meaning = _CLOSE_CODES.get(code, "closed")
            return ChannelDown(f"the gateway socket {meaning} (code {code if code is not None else '?'})")
        if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError)):
            return ChannelDown(f"the connection to the gateway broke ({_network_cause(exc)})")
        return None

    async def _receive(self, ws, wait: float) -> list:
        with trio.fail_after(wait):
            text = await ws.get_message()
        self._last_received = trio.current_time()
        try:
            frame = json.loads(text)
        except (TypeError, ValueError):
            raise ChannelDown("the gateway sent a frame that is not JSON") from None
        if not isinstance(frame, list) or not frame or not isinstance(frame[0], dict):
            raise ChannelDown("the gateway sent a frame that is not [meta, body]")
        wsc = frame[0].get("wsc")
        if isinstance(wsc, dict) and isinstance(wsc.get("token"), str):
            sequence = wsc.get("sequence") if isinstance(wsc.get("sequence"), int) else 0
            if frame[0].get("type") == "ConnectionDetails" or sequence > self._wsc_sequence:
                self._wsc, self._wsc_sequence = wsc["token"], sequence
        return frame

    async def _send(self, ws, frame: list) -> None:
        await ws.send_message(json.dumps(frame, separators=(",", ":")))
        self._last_sent = trio.current_time()

    async def _serve(self, ws, recovering: bool) -> None:
        try:
            frame = await self._receive(ws, DETAILS_WAIT)
        except trio.TooSlowError:
            raise ChannelDown("no ConnectionDetails from the gateway") from None
        meta, body = frame[0], frame[1] if len(frame) > 1 and isinstance(frame[1], dict) else {}
        if meta.get("type") == "Error":
            code = str(body.get("errorCode", "?"))[:32]
            if code == "WSG-400":
                self._wsc = None  # a session context it cannot read: start a fresh session
            raise ChannelDown(f"the gateway answered {code}")
        if meta.get("type") != "ConnectionDetails":
            raise ChannelDown("the gateway's first frame is not ConnectionDetails")
        for name, attr in (("recoveryTimeout", "_recovery_timeout"), ("idleTimeout", "_idle_timeout")):
            value = body.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                setattr(self, attr, float(value))
        state = body.get("recoveryState")
        self._dropped_at = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reader, ws)
            nursery.start_soon(self._heartbeats, ws)
            nursery.start_soon(self._refilterer, ws)
            nursery.start_soon(self._session_watch)
            nursery.start_soon(self._wake_watch, ws)
            if recovering and state == "Successful":
                self.stats.recovered += 1
                log.info("push session recovered; the gateway replays what was missed")
            else:
                if recovering:
                    self.stats.recovery_failed += 1
                    log.warning("push session not recovered (%s): subscribing again and syncing every "
                                "listed folder once", str(body.get("recoveryErrorCode", state))[:32])
                await self._subscribe(ws)
            self._set_state("up")
            if not (recovering and state == "Successful"):
                # Whatever happened while no subscription was live is only in the API.
                for owner in self.owners:
                    self._queue(owner, None)

    async def _wake_watch(self, ws) -> None:
        """Notice a suspend (the boot clock ran ahead of trio's) and probe the socket at
        once instead of when the next heartbeat happens to be due."""
        boot, mono = self.boot_clock(), trio.current_time()
        while True:
            await trio.sleep(WAKE_TICK)
            boot2, mono2 = self.boot_clock(), trio.current_time()
            asleep = (boot2 - boot) - (mono2 - mono)
            boot, mono = boot2, mono2
            if asleep < WAKE_GAP:
                continue
            self.stats.wakeups += 1
            log.info("the machine was asleep for about %d s: checking the push socket", round(asleep))
            if self._heartbeat_due is None:
                mid = str(uuid.uuid4())
                self._heartbeat_due = (mid, mono2 + WAKE_PROBE)
                self.stats.heartbeats += 1
                await self._send(ws, [{"type": "Heartbeat", "messageId": mid}])
            probe = self._heartbeat_due
            with trio.move_on_after(WAKE_PROBE):
                while self._heartbeat_due is probe:  # the reader clears it on the answer
                    await trio.sleep(0.05)
                continue
            raise ChannelDown(f"no answer from the gateway after the machine slept (about {round(asleep)} s)")

    async def _session_watch(self) -> None:
        """Move to a new OAuth session as soon as the auth module logged in again: the
        socket's ws token belongs to the old one, which has ended."""
        while True:
            await self._relogin.wait()
            self._relogin = trio.Event()
            if self._token_logins is not None and self._logins() > self._token_logins:
                self._token = None
                self._dropped_at = self.boot_clock()
                raise _SessionEnded("the OAuth session behind the socket ended (rcfs logged in again); "
                                    "moving to the new one")

    async def _refilterer(self, ws) -> None:
        while True:
            await self._refilter.wait()
            self._refilter = trio.Event()
            filters = self.wanted_filters()
            if filters == self.filters or self.subscription_id is None:
                continue
            status, body = await self._request(ws, "PUT", SUBSCRIPTION_PATH + self.subscription_id,
                                               {"eventFilters": filters,
                                                "deliveryMode": {"transportType": "WebSocket"}})
            if status == 404:  # gone meanwhile: a new one (what @rc-ex/ws does)
                await self._subscribe(ws)
            elif status in (400, 403) and set(filters) - set(self.filters):
                # The service will not have a filter added (the role does not reach that
                # mailbox, or the filter is not allowed): the subscription stays as it
                # was, and the folders asking for it poll by their TTL.
                self._refuse([f for f in filters if f not in self.filters], status, body)
            elif status != 200:
                raise ChannelDown(f"updating the subscription failed (HTTP {status})")
            else:
                self._live(filters, body)
                log.info("push subscription now has %d event filter(s)", len(filters))

    async def _subscribe(self, ws) -> None:
        filters = self.wanted_filters()
        self.filters = filters
        self._filter_since = {}
        status, body = await self._request(ws, "POST", SUBSCRIPTION_PATH,
                                           {"eventFilters": filters, "deliveryMode": {"transportType": "WebSocket"}})
        extra = [f for f in filters if "/extension/~/" not in f]
        if status in (400, 403) and extra:
            # Refused with company filters in it (the role reaches other mailboxes but may
            # not subscribe to them, or to the account's calls): the user's own mailbox is
            # still pushed; the company folders poll by their TTL.
            self._refuse(extra, status, body)
            filters = self.filters = self.wanted_filters()
            status, body = await self._request(ws, "POST", SUBSCRIPTION_PATH,
                                               {"eventFilters": filters,
                                                "deliveryMode": {"transportType": "WebSocket"}})
        if status != 200 or not isinstance(body, dict) or not body.get("id"):
            code = body.get("errorCode") if isinstance(body, dict) else None
            raise ChannelDown(f"subscribing failed (HTTP {status} {str(code or '')[:32]})")
        self.subscription_id = str(body["id"])
        self._subscribed_at = trio.current_time()
        self._live(filters, body)
        disabled = body.get("disabledFilters")
        if isinstance(disabled, list) and disabled:
            log.warning("the gateway disabled %d of the push event filters; those folders are "
                        "re-checked on look after their TTL", len(disabled))

    async def _request(self, ws, method: str, path: str, body: dict | None) -> tuple[int, Any]:
        mid = str(uuid.uuid4())
        done, slot = trio.Event(), []
        self._waiting[mid] = (done, slot)
        meta = {"type": "ClientRequest", "messageId": mid, "method": method, "path": path}
        await self._send(ws, [meta, body] if body is not None else [meta])
        with trio.move_on_after(REQUEST_WAIT):
            await done.wait()
        self._waiting.pop(mid, None)
        if not slot:
            raise ChannelDown(f"no answer to {method} {path} over the socket")
        frame = slot[0]
        return int(frame[0].get("status") or 0), frame[1] if len(frame) > 1 else None

    async def _reader(self, ws) -> None:
        while True:
            # The heartbeat task decides when silence means death; here we just wait.
            frame = await self._receive(ws, float("inf"))
            meta = frame[0]
            kind = meta.get("type")
            if kind == "ServerNotification" and len(frame) > 1 and isinstance(frame[1], dict):
                self._notified(frame[1])
            elif kind == "Heartbeat":
                if self._heartbeat_due and meta.get("messageId") == self._heartbeat_due[0]:
                    self._heartbeat_due = None
            elif kind == "ClientRequest":
                waiter = self._waiting.get(str(meta.get("messageId")))
                if waiter is not None:
                    waiter[1].append(frame)
                    waiter[0].set()
            elif kind == "Error":
                body = frame[1] if len(frame) > 1 and isinstance(frame[1], dict) else {}
                code = str(body.get("errorCode", "?"))[:32]
                waiter = self._waiting.get(str(meta.get("messageId")))
                if waiter is not None:
                    waiter[1].append(frame)
                    waiter[0].set()
                    continue
                if code in ("WSG-902", "WSG-903"):
                    # Expected ends: reconnect now and recover the session.
                    log.info("push socket ended by the gateway (%s); recovering the session", code)
                    self._dropped_at = self.boot_clock()
                    raise _Reconnect()
                if meta.get("status") in (401, 403):
                    # Not authorized any more: the OAuth session behind the ws token ended. The
                    # status is what counts (production's code here is not documented).
                    self._token = None
                    self._dropped_at = self.boot_clock()
                    raise _SessionEnded(f"the gateway ended the socket: its OAuth session is no longer "
                                        f"valid ({code}); logging in again")
                raise ChannelDown(f"the gateway sent error {code}")

    async def _heartbeats(self, ws) -> None:
        while True:
            # At least one client frame per third of idleTimeout (only those count), and a
            # probe after a silence; its answer must come within the same span.
            span = max(0.2, min(PROBE_MAX, self._idle_timeout / 3.0))
            now = trio.current_time()
            if self._heartbeat_due is not None:
                if now >= self._heartbeat_due[1]:
                    raise ChannelDown(f"a heartbeat went unanswered for {span:g} s")
                await trio.sleep(self._heartbeat_due[1] - now)
                continue
            due = min(self._last_received + span, self._last_sent + span)
            if now >= due:
                mid = str(uuid.uuid4())
                self._heartbeat_due = (mid, now + span)
                self.stats.heartbeats += 1
                await self._send(ws, [{"type": "Heartbeat", "messageId": mid}])
                continue
            await trio.sleep(due - now)

    # events -> folders --------------------------------------------------------------------
    def _notified(self, envelope: dict) -> None:
        sub = envelope.get("subscriptionId")
        if self.subscription_id and sub is not None and str(sub) != self.subscription_id:
            return  # of a subscription this channel no longer has
        notice = notice_from(envelope)
        if self._own_extension is not None:
            notice.mine = notice.extension_id == self._own_extension
        else:  # not learned (an answer without ids): any extension not asked for by id
            named = {m.group(1) for f in self.filters for m in [_EXTENSION_IN_PATH.search(f)] if m}
            notice.mine = notice.extension_id is not None and (notice.extension_id == "~"
                                                                or notice.extension_id not in named)
        self.stats.notifications += 1
        self.stats.last_event = self.wall_clock()
        log.debug("push: %s event", notice.kind)
        for owner in self.owners:
            try:
                wanted = owner.wants(notice)
            except Exception:  # noqa: BLE001 - one owner's bug must not stop the others
                log.exception("/%s could not judge a push event", owner.name)
                continue
            if wanted:
                self._queue(owner, notice)

    def _queue(self, owner: "FolderOwner", notice: Notice | None) -> None:
        """`notice` None: a resync (one incremental sync of a listed folder), only for a
        folder the subscription covers: one without a filter, or left out by the cap,
        polls by its TTL and misses nothing a resync would find."""
        slot = self._work.get(id(owner))
        if slot is None:
            return  # removed meanwhile
        if notice is None and not (owner.push_filters() and set(owner.push_filters()) <= set(self.filters)):
            return
        done, pending = slot
        pending.append(notice)
        done.set()

    async def _folder_worker(self, owner: "FolderOwner") -> None:
        while True:
            slot = self._work.get(id(owner))
            if slot is None:
                return  # the owner was removed (remove_owner)
            done, pending = slot
            await done.wait()
            if self._work.get(id(owner)) is not slot:
                return
            notices = list(pending)
            self._work[id(owner)] = (trio.Event(), [])
            self._busy += 1
            try:
                if None in notices:
                    self.stats.resyncs += 1
                    await owner.resync()
                real = [n for n in notices if n is not None]
                if real:
                    self.stats.syncs += 1
                    await owner.pushed(real)
            except ApiError as exc:
                log.warning("/%s: syncing after a push event failed (%s); it is re-checked on the next look",
                            owner.name, exc)
            except Exception:  # noqa: BLE001
                log.exception("/%s: unexpected error syncing after a push event", owner.name)
            finally:
                self._busy -= 1


class _Reconnect(ChannelDown):
    def __init__(self, why: str = "the gateway ended the socket (timeout); reconnecting") -> None:
        super().__init__(why)


class _SessionEnded(_Reconnect):
    """The socket's OAuth session ended (or its ws token is no good): reconnect at once
    with a new ws token."""
