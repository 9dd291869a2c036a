"""The RingCentral API client: the only code in rcfs that knows URLs, headers,
tokens and rate-limit groups.

INTERFACE CONTRACT (the FUSE side codes against exactly this; keep it stable):

    creds = Credentials(server_url=..., client_id=..., client_secret=..., jwt=...)
    async with RingCentralClient(creds, token_store=TokenStore(path), transport=None) as rc:
        msgs = await rc.list_messages(message_type="Fax", date_from=since)       # all pages
        sync = await rc.sync_messages(message_type="Fax", date_from=since)       # FSync -> SyncResult
        sync = await rc.sync_messages(message_type="Fax", sync_token=sync.sync_token)  # ISync
        calls = await rc.list_call_log(date_from=since)                           # recorded calls only
        chunk = await rc.fetch(url, start=0, end=1048575, priority=Priority.FOREGROUND)
        async with rc.stream(url, start=0, priority=Priority.READAHEAD) as s:
            s.total ; async for piece in s.aiter_bytes(): ...

Every method raises only `rcfs.api.errors.ApiError` subclasses.

Also available: `get_message(id)`, `get_recording(id)`, `update_message(id, read_status)`,
`delete_message(id, purge=False)`, `send_fax(...)`, `send_mms(...)`,
`upload_greeting(...)`, `logout()`, `rc.stats` (ClientStats), `rc.governor.budget(group)`
and `rc.budget_for(url)` (the Budget of the group a URL belongs to).

How one call runs (`_request`): take a valid access token (auth.py: proactive,
single-flight refresh) → wait for a slot in the URL's rate-limit group (governor.py)
→ send over the one shared `httpx.AsyncClient` (keep-alive, every phase timed out) →
on 401 renew the token once and resend; on 429 let the governor block the group for
Retry-After and resend (bounded); on 5xx or a transport error back off and resend
(bounded by attempts and total time; POSTs only when the server cannot have acted) →
map what is left to a domain error. httpx exceptions never leave this module.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import ipaddress
import json as jsonlib
import logging
import random
import re
import socket
import time
from typing import Any, AsyncIterator, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import httpcore
import httpx
import trio

from . import tuning
from .auth import TokenManager, TokenStore
from .errors import (
    ApiError,
    AuthError,
    BadResponse,
    NetworkError,
    NotFound,
    PermissionDenied,
    RangeNotSatisfiable,
    RateLimited,
    Rejected,
    ServerError,
    UntrustedURL,
)
from .governor import Budget, Group, Priority, RateGovernor
from .retry import RetryPolicy, is_retryable_transport_error, never_reached_server

tuning.install()  # fewer copies and syscalls per byte of media (see tuning.py)

log = logging.getLogger(__name__)

__all__ = [
    "Chunk",
    "ClientStats",
    "Credentials",
    "Priority",
    "RingCentralClient",
    "Stream",
    "SyncResult",
    "classify",
]

EXTENSION_PATH = "/restapi/v1.0/account/~/extension/~"
ACCOUNT_PATH = "/restapi/v1.0/account/~"


def extension_path(extension_id: str = "~") -> str:
    """The path of one extension: `~` the signed-in one, else its id (an admin may
    address any extension of the account: PUSH-AND-ADMIN.md §B3)."""
    if extension_id == "~":
        return EXTENSION_PATH
    if not str(extension_id).isdigit():
        raise ValueError(f"an extension id is a number, not {extension_id!r}")
    return f"{ACCOUNT_PATH}/extension/{extension_id}"
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=30.0)
MAX_PAGES = 10_000  # a server whose nextPage never ends must not keep us forever
_ERROR_BODY_LIMIT = 64 * 1024
BATCH_MAX = 1024 * 1024  # largest socket low-water mark a Stream.batch() hint sets


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What identifies the app and the user; secrets never appear in its repr."""

    server_url: str  # e.g. https://platform.ringcentral.com (no trailing slash needed)
    client_id: str
    client_secret: str
    jwt: str
    # The media host's origin when it is not the platform's twin (platform.X -> media.X,
    # same scheme and port): the emulator's media port, a proxy. Empty: the twin only.
    media_url: str = ""

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(server_url={self.server_url!r}, client_id={self.client_id!r}, ...)"


@dataclasses.dataclass
class SyncResult:
    """One message-sync answer: records (deleted ones may be just {id, availability})."""

    records: list[dict]
    sync_token: str
    sync_type: str = ""
    sync_time: str | None = None
    older_records_exist: bool = False


@dataclasses.dataclass
class Chunk:
    """What one ranged GET returned.

    `start` is the offset of `data[0]` in the file (`fetch` keeps it at the asked start
    even when the server ignored Range). `total` is the file size when the server said
    (Content-Range total, or Content-Length of a 200, or the length of a 200's whole
    body), else None. A server may send
    fewer bytes than asked (206 short): callers continue from `start + len(data)`.
    """

    data: bytes
    start: int
    total: int | None
    content_type: str | None


class Stream:
    """An open-ended streaming GET (`Range: bytes=N-`). Use via `RingCentralClient.stream`.

    `start`/`total`/`content_type` are known once the context manager is entered
    (headers received). `aiter_bytes()` yields body pieces as they arrive; it ends at the
    end of the body, which may be before the end of the file (byte cap): the caller
    opens a new stream from where it stopped. A dropped connection raises NetworkError.
    """

    start: int
    total: int | None
    content_type: str | None
    whole_file: bool = False  # a 200: the body is the whole file, its clean end is EOF

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Body pieces as they arrive (iterate once)."""
        raise NotImplementedError

    def batch(self, nbytes: int, boundary: int | None = None) -> None:
        """Hint: the consumer has no use for fewer than `nbytes` more bytes, so the next
        piece may wait until that many have arrived (or the body ended); and, when
        `boundary` is given, it wants no piece to run past `boundary` more bytes (a piece
        that ends exactly there can be kept as it is). Hints only: pieces may still be
        smaller. The default ignores them."""


@dataclasses.dataclass
class ClientStats:
    """Counters since the client was created (for logs, tests and benchmarks)."""

    requests: dict[str, int] = dataclasses.field(default_factory=dict)  # sent, per group
    statuses: dict[int, int] = dataclasses.field(default_factory=dict)  # answers per status
    rate_limited: int = 0  # 429 answers seen
    rate_limited_groups: dict[str, int] = dataclasses.field(default_factory=dict)  # 429s per group
    retries: int = 0  # requests re-sent after a 5xx, transport error, 401 or 429
    transport_errors: int = 0
    bytes_received: int = 0  # response bodies (media and JSON)
    bytes_sent: int = 0  # request bodies

    @property
    def total_requests(self) -> int:
        """All requests sent, every group together."""
        return sum(self.requests.values())


# -- rate-limit group of each operation (CONTRACT §4.4) ---------------------------------

_ALL = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
_ROUTES: list[tuple[str, re.Pattern[str], frozenset[str], Group]] = [
    (kind, re.compile(pattern), methods, group)
    for kind, pattern, methods, group in [
        ("oauth", r"^/restapi/oauth/", _ALL, Group.AUTH),
        ("message-content", r"/message-store/[^/]+/content/[^/]+/?$", _ALL, Group.MEDIUM),
        ("message-list", r"/message-store/?$", frozenset({"GET"}), Group.LIGHT),
        ("message-modify", r"/message-store(/[^/]+)?/?$", _ALL - {"GET"}, Group.MEDIUM),
        ("message-read", r"/message-store/[^/]+/?$", frozenset({"GET"}), Group.LIGHT),
        ("message-sync", r"/message-sync/?$", _ALL, Group.LIGHT),
        ("call-log", r"/call-log(-sync)?(/[^/]+)?/?$", _ALL, Group.HEAVY),
        ("recording-content", r"/recording/[^/]+/content/?$", _ALL, Group.HEAVY),
        ("recording", r"/recording/[^/]+/?$", _ALL, Group.HEAVY),
        ("call-recordings", r"/call-recordings/?$", _ALL, Group.HEAVY),
        ("fax", r"/extension/[^/]+/fax/?$", _ALL, Group.HEAVY),
        ("sms", r"/extension/[^/]+/(sms|mms|company-pager)/?$", _ALL, Group.MEDIUM),
        ("greeting-content", r"/greeting/[^/]+/content/?$", _ALL, Group.HEAVY),
        ("user-greeting-create", r"/extension/[^/]+/greeting/?$", frozenset({"POST"}), Group.HEAVY),
        ("company-greeting-create", r"/account/[^/]+/greeting/?$", frozenset({"POST"}), Group.MEDIUM),
        ("greeting-read", r"/greeting/[^/]+/?$", frozenset({"GET"}), Group.MEDIUM),
        ("dictionary-greeting", r"^/restapi/v1\.0/dictionary/greeting", _ALL, Group.MEDIUM),
        ("fax-cover-page", r"^/restapi/v1\.0/dictionary/fax-cover-page", _ALL, Group.LIGHT),
        ("message-store-report", r"/message-store-report", _ALL, Group.HEAVY),
        ("answering-rule-read", r"/answering-rule/[^/]+/?$", frozenset({"GET"}), Group.LIGHT),
        ("answering-rule", r"/answering-rule(/[^/]+)?/?$", _ALL, Group.MEDIUM),
        ("phone-number", r"/extension/[^/]+/phone-number/?$", _ALL, Group.LIGHT),
        ("authz-check", r"/authz-profile/check/?$", frozenset({"GET"}), Group.LIGHT),
        ("authz-profile", r"/authz-profile/?$", frozenset({"GET"}), Group.MEDIUM),
        ("extension-list", r"^/restapi/v1\.0/account/[^/]+/extension/?$", frozenset({"GET"}), Group.MEDIUM),
        ("extension", r"^/restapi/v1\.0/account/[^/]+(/extension/[^/]+)?/?$", frozenset({"GET"}), Group.LIGHT),
        ("api-versions", r"^/restapi/?$", _ALL, Group.NONE),
    ]
]


def classify(method: str, url: str) -> tuple[str, Group]:
    """The operation kind and rate-limit group of a request (CONTRACT §4.4).

    Unknown routes count as Heavy: pacing them too slowly costs time, too fast a 429.
    """
    path = urlsplit(url).path or "/"
    m = method.upper()
    for kind, pattern, methods, group in _ROUTES:
        if m in methods and pattern.search(path):
            return kind, group
    return "other", Group.HEAVY


def format_time(value: dt.datetime | str) -> str:
    """RingCentral's timestamp form (UTC, milliseconds, `Z`); naive datetimes are UTC."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _sanitise_token(text: str) -> str:
    """A name from the API fit for a log line: word characters only, bounded."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64]


def _stays_local(host: str) -> bool:
    """True for hosts plain http cannot leak to the network from: loopback addresses,
    `localhost`, and the RFC 6761 names that never resolve to a remote host (`*.localhost`,
    `*.invalid`: the in-process emulator's hosts)."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith((".localhost", ".invalid")):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of `url`, the port spelled out; None when it has none."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port out of range or not a number
        return None
    if not host or port is None:
        return None
    return scheme, host, port


def _origin_text(origin: tuple[str, str, int]) -> str:
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if _DEFAULT_PORTS.get(scheme) == port else f":{port}")


def _safe_url(url: str | httpx.URL) -> str:
    """Scheme, host and path only: query strings may carry anything."""
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """Parse `bytes a-b/N` (or `/*`) into (a, b, N or None); None if malformed."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if not m:
        return None
    a, b = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    if b < a or (total is not None and b >= total):
        return None
    return a, b, total


def _unsatisfied_total(value: str | None) -> int | None:
    """The N of `Content-Range: bytes */N` (a 416 answer), None if absent or malformed."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", value)
    return int(m.group(1)) if m else None


async def _raw_pieces(resp: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives; a body that is already in memory comes as one piece."""
    if resp.is_stream_consumed:
        try:
            content = resp.content  # e.g. MockTransport answers: read at construction
        except httpx.ResponseNotRead:
            raise RuntimeError("response body was already consumed") from None
        if content:
            yield content
        return
    async with contextlib.aclosing(resp.aiter_raw()) as pieces:
        async for piece in pieces:
            yield piece


async def _decoded_pieces(resp: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives, Content-Encoding undone."""
    if resp.is_stream_consumed:
        async with contextlib.aclosing(_raw_pieces(resp)) as pieces:  # already decoded
            async for piece in pieces:
                yield piece
        return
    async with contextlib.aclosing(resp.aiter_bytes()) as pieces:
        async for piece in pieces:
            yield piece


class _SocketBatching:
    """Wakes the consumer of a body only when `want` bytes have arrived, via SO_RCVLOWAT.

    Why: a fast sender and an eager reader split a media body into pieces of a few
    hundred KB, and every piece costs a trip through trio, httpcore, h11 and the reader
    in Python; batching to half a MiB cut rcfs' CPU per GB by about a third and raised
    the cold read through the mount by 10-25% (side-by-side runs of scripts/bench's read
    1, with and without). Up to a whole block (1 MiB, with the read cap below) lets most
    blocks arrive as one piece; a reader that starts waiting for less lowers the mark
    at once (`rcfs.reader`), so it never waits for read-ahead it did not ask for. The low-water mark never
    exceeds the bytes the body still owes, so its end always wakes the reader, and
    it is back at 1 before the connection returns to the pool (headers of the next
    answer must not wait). A FIN, RST or error wakes the reader whatever the mark.
    """

    def __init__(self, response: httpx.Response, length: int | None) -> None:
        self._sock = None  # set only when the body's length is known
        self._remaining = length or 0
        self._mark = 1
        self._stream = None  # httpcore's stream, when its reads can be capped (tuning.py)
        if length is None or not hasattr(socket, "SO_RCVLOWAT"):
            return
        stream = response.extensions.get("network_stream")
        if stream is not None and hasattr(stream, "read_cap"):
            self._stream = stream
        try:
            sock = stream.get_extra_info("socket") if stream is not None else None
        except Exception:  # noqa: BLE001 - a transport without sockets (tests, mocks)
            sock = None
        if sock is not None and getattr(sock, "type", None) == socket.SOCK_STREAM:
            self._sock = sock

    def request(self, want: int, boundary: int | None = None) -> None:
        """The consumer has no use for fewer than `want` more bytes, nor for a piece that
        runs past `boundary` more bytes.

        Why the boundary: the reader caches the body in blocks; a socket read that ends
        exactly at a block's end, starting at its start, is a `bytes` object the cache
        keeps as that block: no copy and no second 1 MiB allocation per block (about a
        tenth of rcfs' CPU per GB of a cold read, scripts/bench --anchors case 1).
        """
        if self._sock is None:
            return
        if boundary is not None and boundary > 0:
            want = min(want, boundary)
            if self._stream is not None:
                self._stream.read_cap = boundary
        self._set(max(1, min(want, self._remaining, BATCH_MAX)))

    def consumed(self, nbytes: int) -> None:
        """`nbytes` more of the body arrived: never wait for more than it still owes."""
        if self._sock is None:
            return
        self._remaining = max(0, self._remaining - nbytes)
        self._set(max(1, min(self._mark, self._remaining)))

    def reset(self) -> None:
        if self._stream is not None:
            self._stream.read_cap = None  # the connection goes back to the pool as it came
            self._stream = None
        if self._sock is not None:
            self._set(1)
            self._sock = None

    def _set(self, mark: int) -> None:
        if mark == self._mark or self._sock is None:
            return
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
            self._mark = mark
        except OSError:
            self._sock = None  # closed under us: nothing left to tune


def _content_length(headers: httpx.Headers) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise BadResponse("malformed Content-Length header") from None
    if n < 0:
        raise BadResponse("negative Content-Length header")
    return n


class _ResponseStream(Stream):
    """The Stream handed out by `RingCentralClient.stream` (wraps one httpx response)."""

    def __init__(
        self,
        response: httpx.Response,
        *,
        start: int,
        total: int | None,
        content_type: str | None,
        piece_timeout: float,
        stats: ClientStats,
        scrub: Callable[[str], str],
    ) -> None:
        self.start = start
        self.total = total
        self.content_type = content_type
        self.whole_file = response.status_code == 200
        self.received = 0
        self._response = response
        self._piece_timeout = piece_timeout
        self._stats = stats
        self._scrub = scrub
        self._pieces: AsyncIterator[bytes] | None = None
        self._raw: tuning.RawBody | None | bool = None  # None: not looked for yet; False: not possible
        self._batching = _SocketBatching(response, _content_length(response.headers))

    def __repr__(self) -> str:
        return f"Stream(start={self.start}, total={self.total}, received={self.received})"

    def batch(self, nbytes: int, boundary: int | None = None) -> None:
        self._batching.request(nbytes, boundary)

    async def _close_pieces(self) -> None:
        self._batching.reset()
        pieces, self._pieces = self._pieces, None
        if pieces is not None:
            try:
                await pieces.aclose()  # type: ignore[attr-defined]
            except (httpx.HTTPError, RuntimeError):
                pass

    async def _finish(self) -> None:
        """End the answer cleanly if its whole body is in, so that its connection goes
        back to the pool instead of being closed (`_media` does this on every exit).

        Why: a consumer that stops iterating at its last wanted byte leaves the end of the
        HTTP message unread, and httpcore closes such a connection; in production the next
        file then pays a new TCP and TLS handshake. With the body all in, the end costs no
        socket read (h11 knows the length). A body with bytes still on the wire (a 200 to
        a ranged request, a chunked one) is left alone: closing is cheaper than reading
        bytes nobody wants.
        """
        length = _content_length(self._response.headers)
        if self._pieces is None or length is None or self.received < length:
            return
        try:
            with trio.fail_after(self._piece_timeout):
                async for _ in self._pieces:
                    return  # (more than Content-Length: h11 would have refused; nothing to keep)
        except (trio.TooSlowError, httpx.HTTPError, httpcore.NetworkError, httpcore.TimeoutException):
            pass  # the connection is closed on exit, as before

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Body pieces as they arrive; NetworkError if the connection drops or stalls."""
        if self._pieces is not None:
            raise RuntimeError("Stream.aiter_bytes() can only be iterated once")
        self._pieces = _raw_pieces(self._response)
        # A plain iterator object, not an async generator: a consumer that stops early
        # (seek, close, cancellation) leaves nothing for the garbage collector to finalize.
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._pieces is None:
            raise StopAsyncIteration
        while True:
            if self._raw is None and self.received:
                # The first piece came through httpx, headers and whatever h11 had buffered
                # with them: the rest can come straight from the socket (tuning.RawBody).
                self._raw = tuning.raw_body(self._response) or False
            raw = self._raw if self._raw and self._raw.remaining else None
            try:
                with trio.fail_after(self._piece_timeout):
                    # (Once a raw body is all in, httpx's iterator ends the answer cleanly.)
                    piece = await (raw.read() if raw is not None else self._pieces.__anext__())
            except StopAsyncIteration:
                raise
            except trio.TooSlowError:
                raise NetworkError(
                    f"stream stalled: no data for {self._piece_timeout:g} s after {self.received} bytes"
                ) from None
            except (httpx.HTTPError, httpcore.NetworkError, httpcore.TimeoutException, tuning.BodyCut) as exc:
                raise NetworkError(
                    self._scrub(f"stream dropped after {self.received} bytes: {type(exc).__name__}: {exc}")
                ) from None
            if piece:
                self.received += len(piece)
                self._stats.bytes_received += len(piece)
                self._batching.consumed(len(piece))
                return piece


class RingCentralClient:
    """Async client for the subset of the RingCentral API rcfs needs.

    ```
    async with RingCentralClient(creds, token_store=TokenStore(path)) as rc:
        faxes = await rc.list_messages("Fax", date_from=since)
    ```

    **Parameters:**
    * `credentials`: app and user credentials (`Credentials`).
    * `token_store`: persists tokens across runs (None: memory only, login every run).
    * `transport` / `mounts`: passed to `httpx.AsyncClient` (tests route hosts to the
      emulator's ASGI apps; production passes nothing).
    * `timeout`: httpx timeout for every request (float or `httpx.Timeout`).
    * `retry`: `RetryPolicy` bounds for 5xx, transport errors and 429s.
    * `governor`: a `RateGovernor` (one is created when omitted).
    * `max_connections`: HTTP keep-alive pool size.
    * `wall_clock`: epoch seconds for token expiry (tests inject one).
    * `media_urls`: media origins besides the derived one and `credentials.media_url`.
    * `shared`: a `SharedBudget` (issue 18): the fleet's rate-limit budget and token pair.

    Where the token goes (`check_url`): every request goes to an origin of
    `trusted_origins`, compared whole (scheme, host and port): the origin of
    `server_url`, its media twin (`platform.X` -> `media.X`, same scheme and port, so
    `https://media.ringcentral.com` for production), `credentials.media_url` and
    `media_urls`; and over https, or over plain http only to a host that stays on this
    machine (loopback, `localhost`, `*.localhost`, `*.invalid`: the emulator and tests).
    A host name alone is not enough: another port on the same host is another service
    (on loopback, any local user's). Anything else an API answer names (an attachment or
    nextPage URI) is refused with UntrustedURL before a connection is made. The token
    only ever travels in the Authorization header.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        token_store: TokenStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        mounts: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        governor: RateGovernor | None = None,
        max_connections: int = 32,
        user_agent: str = "rcfs/0.1",
        wall_clock: Callable[[], float] = time.time,
        media_urls: Iterable[str] = (),
        shared: Any = None,
    ) -> None:
        self.credentials = dataclasses.replace(credentials, server_url=credentials.server_url.rstrip("/"))
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.retry = retry or RetryPolicy()
        # shared: a fleet's SharedBudget (rcfs.api.shared_budget): one budget, one login.
        self.governor = governor or RateGovernor(shared=shared)
        self.stats = ClientStats()
        self._rng = random.Random()
        self._learned_groups: dict[str, Group] = {}
        self._http = httpx.AsyncClient(
            transport=transport,
            mounts=dict(mounts) if mounts else None,
            timeout=self.timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": user_agent},
            trust_env=False,  # never pick up proxies or .netrc credentials from the environment
            follow_redirects=False,
        )
        self._denied_permissions: set[str] = set()
        self.trusted_origins = self._trusted_origins(self.credentials.server_url,
                                                     [self.credentials.media_url, *media_urls])
        self.auth = TokenManager(
            self.credentials,
            request_token=self._token_request,
            revoke=self._revoke_request,
            store=token_store,
            wall_clock=wall_clock,
            shared=shared.tokens() if shared is not None else None,
        )

    def __repr__(self) -> str:
        return f"RingCentralClient({self.credentials.server_url!r})"

    async def __aenter__(self) -> RingCentralClient:
        await self._http.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (tokens stay persisted for the next run)."""
        with trio.CancelScope(shield=True):
            await self._http.aclose()

    # -- typed calls: messages ---------------------------------------------------------

    async def list_messages(
        self,
        message_type: str | Sequence[str] | None = None,
        date_from: dt.datetime | str | None = None,
        date_to: dt.datetime | str | None = None,
        per_page: int = 1000,
        *,
        availability: str | Sequence[str] | None = None,
        direction: str | None = None,
        priority: Priority = Priority.FOREGROUND,
        extension_id: str = "~",
    ) -> list[dict]:
        """Every message of the given type(s) in [date_from, date_to], all pages followed
        (of `extension_id`'s mailbox; `~`: the signed-in user's).

        `date_from` is always sent (the server's silent default is the last 24 hours);
        when omitted it means "the beginning" (1970).
        """
        params: list[tuple[str, str]] = self._types("messageType", message_type)
        params.append(("dateFrom", format_time(date_from or dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))))
        if date_to is not None:
            params.append(("dateTo", format_time(date_to)))
        params += self._types("availability", availability)
        if direction:
            params.append(("direction", direction))
        params.append(("perPage", str(max(1, min(1000, per_page)))))
        return await self._all_pages(f"{extension_path(extension_id)}/message-store", params, priority)

    async def sync_messages(
        self,
        message_type: str | Sequence[str] | None = None,
        date_from: dt.datetime | str | None = None,
        date_to: dt.datetime | str | None = None,
        *,
        sync_token: str | None = None,
        record_count: int | None = None,
        priority: Priority = Priority.BACKGROUND,
        extension_id: str = "~",
    ) -> SyncResult:
        """Message sync: FSync without `sync_token`, ISync with it (CONTRACT §7).

        An expired or invalid token raises `Rejected` with code "MSG-333": do a FSync.
        """
        params: list[tuple[str, str]] = []
        if sync_token:
            params.append(("syncType", "ISync"))
            params.append(("syncToken", sync_token))
            if date_from is not None:
                params.append(("dateFrom", format_time(date_from)))
        else:
            params.append(("syncType", "FSync"))
            params += self._types("messageType", message_type)
            params.append(("dateFrom", format_time(date_from or dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))))
            if date_to is not None:
                params.append(("dateTo", format_time(date_to)))
        if record_count is not None:
            params.append(("recordCount", str(record_count)))
        body = await self._json("GET", f"{extension_path(extension_id)}/message-sync", params=params,
                                priority=priority)
        records = body.get("records")
        info = body.get("syncInfo")
        if not isinstance(records, list) or not isinstance(info, dict) or not isinstance(info.get("syncToken"), str):
            raise BadResponse("message-sync answer lacks records or syncInfo.syncToken")
        return SyncResult(
            records=records,
            sync_token=info["syncToken"],
            sync_type=str(info.get("syncType") or ""),
            sync_time=info.get("syncTime"),
            older_records_exist=bool(info.get("olderRecordsExist")),
        )

    async def get_message(self, message_id: str | int, *, priority: Priority = Priority.FOREGROUND) -> dict:
        """One message record (`GET …/message-store/{id}`); NotFound if unknown."""
        return await self._json("GET", f"{EXTENSION_PATH}/message-store/{message_id}", priority=priority)

    async def update_message(self, message_id: str | int, read_status: str) -> dict:
        """Set `readStatus` ("Read"/"Unread"); returns the updated record."""
        return await self._json(
            "PUT", f"{EXTENSION_PATH}/message-store/{message_id}", json={"readStatus": read_status}
        )

    async def delete_message(self, message_id: str | int, *, purge: bool = False) -> None:
        """Delete a message (to Deleted; Purged when `purge` or already deleted)."""
        params = [("purge", "true")] if purge else None
        await self._request("DELETE", f"{EXTENSION_PATH}/message-store/{message_id}", params=params)

    # -- typed calls: call log and recordings ---------------------------------------------

    async def list_call_log(
        self,
        date_from: dt.datetime | str | None = None,
        date_to: dt.datetime | str | None = None,
        *,
        per_page: int = 1000,
        telephony_session_id: str | None = None,
        priority: Priority = Priority.FOREGROUND,
        extension_id: str = "~",
    ) -> list[dict]:
        """Every call that has a recording in [date_from, date_to], all pages followed
        (of `extension_id`'s call log; `~`: the signed-in user's); with
        `telephony_session_id`, only that call's legs (how a recording is found once its
        telephony session has ended: PUSH-AND-ADMIN §A7)."""
        params = [
            ("dateFrom", format_time(date_from or dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))),
            ("recordingType", "All"),
            ("perPage", str(max(1, min(1000, per_page)))),
        ]
        if date_to is not None:
            params.insert(1, ("dateTo", format_time(date_to)))
        if telephony_session_id is not None:
            params.append(("telephonySessionId", telephony_session_id))
        return await self._all_pages(f"{extension_path(extension_id)}/call-log", params, priority)

    # -- typed calls: the company (admins) ----------------------------------------------

    async def get_authz_profile(self, *, priority: Priority = Priority.FOREGROUND) -> dict:
        """The signed-in user's permissions and their scopes (`…/authz-profile`, Medium)."""
        return await self._json("GET", f"{EXTENSION_PATH}/authz-profile", priority=priority)

    def extension_pages(self, *, per_page: int = 1000, priority: Priority = Priority.FOREGROUND
                        ) -> AsyncIterator[list[dict]]:
        """The account's extensions, one page (at most `per_page`) at a time (Medium), so
        a caller never holds more than one page of a long list besides its own view."""
        params = [("perPage", str(max(1, min(1000, per_page))))]
        return self._pages(f"{ACCOUNT_PATH}/extension", params, priority)

    def account_call_log_pages(
        self,
        date_from: dt.datetime | str | None = None,
        *,
        per_page: int = 1000,
        telephony_session_id: str | None = None,
        priority: Priority = Priority.FOREGROUND,
    ) -> AsyncIterator[list[dict]]:
        """The company call log's recorded calls since `date_from`, newest first, one page
        of up to `per_page` (1000: about one Heavy request per 1,000 calls) at a time;
        with `telephony_session_id`, only that call's legs (a call that just ended)."""
        params = [
            ("dateFrom", format_time(date_from or dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))),
            ("recordingType", "All"),
            ("perPage", str(max(1, min(1000, per_page)))),
        ]
        if telephony_session_id is not None:
            params.append(("telephonySessionId", telephony_session_id))
        return self._pages(f"{ACCOUNT_PATH}/call-log", params, priority)

    async def ws_token(self) -> dict:
        """`POST /restapi/oauth/wstoken` (Auth group): `{uri, ws_access_token, expires_in}`
        for the push gateway. Sent with an empty body, as the official clients do. The
        token is a secret: it goes only into the gateway URL (rcfs.push), never a log."""
        body = await self._json("POST", "/restapi/oauth/wstoken")
        if not isinstance(body.get("ws_access_token"), str) or not isinstance(body.get("uri"), str):
            raise BadResponse("wstoken answer lacks ws_access_token or uri")
        return body

    async def get_recording(self, recording_id: str | int, *, priority: Priority = Priority.FOREGROUND) -> dict:
        """Recording metadata {id, contentUri, contentType, duration} (Heavy group)."""
        return await self._json("GET", f"{ACCOUNT_PATH}/recording/{recording_id}", priority=priority)

    # -- media ------------------------------------------------------------------------------

    async def fetch(
        self,
        url: str,
        start: int = 0,
        end: int | None = None,
        priority: Priority = Priority.FOREGROUND,
        on_piece: Callable[[int, bytes], None] | None = None,
    ) -> Chunk:
        """One ranged GET of media: bytes [start, end] (inclusive), or [start, EOF) if end is None.

        `on_piece(offset, piece)`, when given, sees every kept piece of the body as it
        arrives (file offset, bytes), before the Chunk of them all is returned: a reader
        waiting for the first bytes of the range need not wait for its last.

        206 → Chunk at the Content-Range start (may be shorter than asked); 416 →
        RangeNotSatisfiable with the size when the server said. The body is read as it
        arrives and only the asked bytes are kept, so memory stays bounded by the range:
        a 200 (the whole body: the server ignored Range) costs the bytes before `start`
        on the wire, never in memory, and its connection is closed once `end` is in; the
        Chunk then still starts at `start`. A body that drops mid-way is continued from
        where it stopped (bounded by the retry policy's attempts and total time); when
        those run out, what arrived is returned (a short Chunk), and NetworkError is
        raised only if nothing did.
        `total` is the file size when the server said, or when a 200's whole body arrived.
        """
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad range {start}-{end}")
        want = None if end is None else end - start + 1
        data = bytearray()
        failures = 0
        began = trio.current_time()
        while True:
            at = start + len(data)
            dropped: NetworkError | None = None
            async with self._media(url, at, end, priority) as s:
                if s.start > at:
                    return Chunk(bytes(data), s.start if not data else start, s.total, s.content_type)
                skip = at - s.start  # a 200 starts at 0
                complete = False
                try:
                    async for piece in s.aiter_bytes():
                        if skip:
                            if len(piece) <= skip:
                                skip -= len(piece)
                                continue
                            piece = piece[skip:]
                            skip = 0
                        last = want is not None and len(data) + len(piece) >= want
                        if last:
                            piece = piece[: want - len(data)]
                        if on_piece is not None:
                            on_piece(start + len(data), piece)
                        data += piece
                        if last:
                            break
                    else:
                        complete = True
                except NetworkError as exc:  # the body dropped (the request itself was retried in _request)
                    dropped = exc
                if dropped is None:
                    total = s.total
                    if complete and s.whole_file and total is None:
                        total = s.start + s.received  # a 200 that ended cleanly: the end of the file
                    return Chunk(bytes(data), start, total, s.content_type)
            failures += 1
            self.stats.retries += 1
            self.stats.transport_errors += 1
            delay = self.retry.backoff(failures, None, self._rng)
            if failures >= self.retry.attempts or trio.current_time() + delay - began > self.retry.total:
                if data:  # keep what arrived: a short chunk, the caller continues after it
                    return Chunk(bytes(data), start, s.total, s.content_type)
                raise dropped
            log.info("media body from %s dropped at %d; continuing (%d/%d)",
                     _safe_url(url), start + len(data), failures, self.retry.attempts)
            await trio.sleep(delay)

    @contextlib.asynccontextmanager
    async def stream(
        self, url: str, start: int = 0, priority: Priority = Priority.READAHEAD
    ) -> AsyncIterator[Stream]:
        """Open `GET url` with `Range: bytes=start-` and yield a Stream once headers arrived.

        The connection is released on exit, also when the caller is cancelled.
        """
        if start < 0:
            raise ValueError(f"bad stream start {start}")
        async with self._media(url, start, None, priority) as handle:
            yield handle

    @contextlib.asynccontextmanager
    async def _media(
        self, url: str, start: int, end: int | None, priority: Priority
    ) -> AsyncIterator[_ResponseStream]:
        headers = {"Range": f"bytes={start}-" if end is None else f"bytes={start}-{end}", "Accept-Encoding": "identity"}
        resp = await self._request("GET", url, headers=headers, priority=priority, stream=True)
        handle: _ResponseStream | None = None
        try:
            start_at, total = self._media_position(resp)
            handle = _ResponseStream(
                resp,
                start=start_at,
                total=total,
                content_type=resp.headers.get("content-type"),
                piece_timeout=self.timeout.read or 30.0,
                stats=self.stats,
                scrub=self._scrub,
            )
            yield handle
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 5.0
                if handle is not None:
                    await handle._finish()  # a body all in: its connection is reused
                    await handle._close_pieces()
            await self._close_response(resp)

    def budget_for(self, url: str, method: str = "GET") -> Budget:
        """The rate-limit budget of the group `url` belongs to (e.g. to size read-ahead)."""
        kind, group = classify(method, url)
        return self.governor.budget(self._learned_groups.get(kind, group))

    # -- sending ------------------------------------------------------------------------------

    async def send_fax(
        self,
        to: Sequence[str],
        files: Sequence[tuple[str, bytes, str | None]],
        *,
        cover_index: int | None = None,
        cover_page_text: str | None = None,
        resolution: str | None = None,
        send_time: dt.datetime | str | None = None,
        priority: Priority = Priority.FOREGROUND,
    ) -> dict:
        """Send a fax: `files` are (file name, bytes, MIME type or None). Returns FaxResponse.

        Multipart like the official SDK: a `json` envelope part, then `attachment` parts.
        """
        envelope: dict[str, Any] = {"to": [{"phoneNumber": n} for n in to]}
        if cover_index is not None:
            envelope["coverIndex"] = cover_index
        if cover_page_text is not None:
            envelope["coverPageText"] = cover_page_text
        if resolution is not None:
            envelope["faxResolution"] = resolution
        if send_time is not None:
            envelope["sendTime"] = format_time(send_time)
        return await self._multipart(f"{EXTENSION_PATH}/fax", envelope, files, "attachment", priority=priority)

    async def send_mms(
        self,
        from_number: str,
        to: Sequence[str],
        files: Sequence[tuple[str, bytes, str | None]],
        *,
        text: str | None = None,
        priority: Priority = Priority.FOREGROUND,
    ) -> dict:
        """Send an MMS (`POST …/mms`): attachments plus optional text. Returns the record."""
        envelope: dict[str, Any] = {
            "from": {"phoneNumber": from_number},
            "to": [{"phoneNumber": n} for n in to],
        }
        if text:
            envelope["text"] = text
        return await self._multipart(f"{EXTENSION_PATH}/mms", envelope, files, "attachment", priority=priority)

    async def send_sms(self, from_number: str, to: Sequence[str], text: str, *,
                       priority: Priority = Priority.FOREGROUND) -> dict:
        """Send a plain SMS (JSON body). Returns the message record."""
        body = {"from": {"phoneNumber": from_number}, "to": [{"phoneNumber": n} for n in to], "text": text}
        return await self._json("POST", f"{EXTENSION_PATH}/sms", json=body, priority=priority)

    async def upload_greeting(
        self,
        greeting_type: str,
        audio: tuple[str, bytes, str | None],
        *,
        answering_rule_id: str | None = None,
        apply: bool | None = None,
        priority: Priority = Priority.FOREGROUND,
    ) -> dict:
        """Upload a custom user greeting (`type` e.g. "Voicemail"; audio MP3 or WAV)."""
        envelope: dict[str, Any] = {"type": greeting_type}
        if answering_rule_id is not None:
            envelope["answeringRule"] = {"id": answering_rule_id}
        params = None if apply is None else [("apply", "true" if apply else "false")]
        return await self._multipart(f"{EXTENSION_PATH}/greeting", envelope, [audio], "binary", params=params,
                                     priority=priority)

    async def get_extension(self, *, priority: Priority = Priority.FOREGROUND) -> dict:
        """The extension's own record (`GET …/extension/~`): regional settings, numbers."""
        return await self._json("GET", EXTENSION_PATH, priority=priority)

    async def list_phone_numbers(self, *, priority: Priority = Priority.FOREGROUND) -> list[dict]:
        """The extension's phone numbers with their features (`GET …/phone-number`, Light)."""
        return await self._all_pages(f"{EXTENSION_PATH}/phone-number", [("perPage", "1000")], priority)

    # -- typed calls: answering rules, greetings, message-store reports (issue 10) -------------
    # Added as one block; content (greeting audio, report zips) is read through the Reader
    # (`Source(key, url, size)`), never here.

    async def list_answering_rules(self, *, priority: Priority = Priority.BACKGROUND) -> list[dict]:
        """Every answering rule of the extension in the Detailed view, so each carries its
        `greetings` (`{type, custom: {id}}` or `{type, preset: {...}}`). Medium group."""
        params = [("view", "Detailed"), ("perPage", "1000")]
        rules = await self._all_pages(f"{EXTENSION_PATH}/answering-rule", params, priority)
        for rule in rules:
            if not isinstance(rule.get("id"), (str, int)) or not isinstance(rule.get("greetings", []), list):
                raise BadResponse("answering-rule answer has a rule without id or with malformed greetings")
        return rules

    async def get_greeting(self, greeting_id: str | int, *, priority: Priority = Priority.BACKGROUND) -> dict:
        """Custom greeting metadata (`CustomUserGreetingInfo`: id, type, contentType,
        contentUri, answeringRule). Medium group; NotFound if unknown."""
        body = await self._json("GET", f"{EXTENSION_PATH}/greeting/{greeting_id}", priority=priority)
        if not isinstance(body.get("contentUri"), str):
            raise BadResponse("greeting answer lacks contentUri")
        return body

    async def create_message_store_report(
        self,
        date_from: dt.datetime | str,
        date_to: dt.datetime | str,
        message_types: Sequence[str] | None = None,
    ) -> dict:
        """Start a message-store report task (202 `MessageStoreReport`: id, uri, status…).

        Heavy group. A refusal (e.g. the account's two-task limit) raises `Rejected` with
        the server's `code`. `message_types` ⊆ Fax, SMS, VoiceMail, Pager; None = all.
        """
        body: dict[str, Any] = {"dateFrom": format_time(date_from), "dateTo": format_time(date_to)}
        if message_types:
            body["messageTypes"] = list(message_types)
        task = await self._json("POST", f"{ACCOUNT_PATH}/message-store-report", json=body)
        if not isinstance(task.get("id"), str) or not isinstance(task.get("status"), str):
            raise BadResponse("message-store-report answer lacks id or status")
        return task

    async def get_message_store_report(self, task_id: str, *, priority: Priority = Priority.BACKGROUND) -> dict:
        """The report task's current state (`status` Accepted … Completed / Failed). Heavy."""
        task = await self._json("GET", f"{ACCOUNT_PATH}/message-store-report/{task_id}", priority=priority)
        if not isinstance(task.get("status"), str):
            raise BadResponse("message-store-report answer lacks status")
        return task

    async def list_message_store_report_archives(
        self, task_id: str, *, priority: Priority = Priority.BACKGROUND
    ) -> list[dict]:
        """The completed report's archives, in order: `[{"size": bytes, "uri": url}, …]`
        (archive 0 is the metadata). Heavy. The URIs are on the platform host and take
        Range; read them through the Reader like any media."""
        body = await self._json("GET", f"{ACCOUNT_PATH}/message-store-report/{task_id}/archive", priority=priority)
        records = body.get("records")
        if not isinstance(records, list):
            raise BadResponse("message-store-report archive answer lacks records")
        for rec in records:
            size = rec.get("size") if isinstance(rec, dict) else None
            if not isinstance(rec, dict) or not isinstance(rec.get("uri"), str) \
                    or not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadResponse("message-store-report archive record without uri or size")
        return records

    async def logout(self) -> None:
        """Revoke the session on the server (errors ignored) and forget the stored tokens."""
        await self.auth.logout()

    # -- plumbing -----------------------------------------------------------------------------

    @staticmethod
    def _types(name: str, value: str | Sequence[str] | None) -> list[tuple[str, str]]:
        if value is None:
            return []
        if isinstance(value, str):
            return [(name, value)]
        return [(name, v) for v in value]

    @staticmethod
    def _trusted_origins(server_url: str, extra: Iterable[str]) -> frozenset[tuple[str, str, int]]:
        platform = origin_of(server_url)
        origins = {platform, *(origin_of(u) for u in extra if u)}
        if platform is not None and platform[1].startswith("platform."):
            scheme, host, port = platform
            origins.add((scheme, "media." + host[len("platform."):], port))
        return frozenset(o for o in origins if o is not None)

    def check_url(self, url: str) -> None:
        """Raise UntrustedURL unless `url` may receive the access token (see the class doc)."""
        origin = origin_of(url)
        secure = origin is not None and (origin[0] == "https" or (origin[0] == "http" and _stays_local(origin[1])))
        if origin in self.trusted_origins and secure:
            return
        why = "not https" if origin in self.trusted_origins else "not the platform or a media origin of this account"
        shown = _safe_url(url)
        log.error("refusing to send the access token to %s (%s)", shown, why)
        trusted = ", ".join(sorted(_origin_text(o) for o in self.trusted_origins))
        raise UntrustedURL(self._scrub(f"refusing {shown}: {why} (trusted: {trusted})"))

    def _url(self, url: str) -> str:
        if url.startswith(("http://", "https://")):
            return url
        if not url.startswith("/"):
            url = "/" + url
        return self.credentials.server_url + url

    def _scrub(self, text: str) -> str:
        for secret in self.auth.secrets():
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    async def _json(self, method: str, url: str, **kw: Any) -> dict:
        resp = await self._request(method, url, **kw)
        return self._decode(resp, method, url)

    def _decode(self, resp: httpx.Response, method: str, url: str) -> dict:
        try:
            body = jsonlib.loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            raise BadResponse(
                f"{method} {_safe_url(url)}: answer is not JSON", status=resp.status_code
            ) from None
        if not isinstance(body, dict):
            raise BadResponse(f"{method} {_safe_url(url)}: answer is not a JSON object", status=resp.status_code)
        return body

    async def _all_pages(self, path: str, params: list[tuple[str, str]], priority: Priority) -> list[dict]:
        records: list[dict] = []
        async for page in self._pages(path, params, priority):
            records.extend(page)
        return records

    async def _pages(self, path: str, params: list[tuple[str, str]], priority: Priority
                     ) -> AsyncIterator[list[dict]]:
        """Each page's records, following `navigation.nextPage` (bounded by MAX_PAGES)."""
        url: str | None = path
        seen: set[str] = set()
        query: list[tuple[str, str]] | None = params
        for _ in range(MAX_PAGES):
            assert url is not None
            body = await self._json("GET", url, params=query, priority=priority)
            page = body.get("records")
            if not isinstance(page, list):
                raise BadResponse(f"GET {_safe_url(self._url(path))}: answer lacks a records list")
            yield [r for r in page if isinstance(r, dict)]
            nav = body.get("navigation")
            nxt = nav.get("nextPage") if isinstance(nav, dict) else None
            nxt_uri = nxt.get("uri") if isinstance(nxt, dict) else None
            if not nxt_uri or not page:
                return
            if not isinstance(nxt_uri, str) or nxt_uri in seen:
                raise BadResponse(f"GET {_safe_url(self._url(path))}: paging loops or is malformed")
            seen.add(nxt_uri)
            url, query = nxt_uri, None  # nextPage.uri already carries the whole query
        raise BadResponse(f"GET {_safe_url(self._url(path))}: more than {MAX_PAGES} pages")

    async def _multipart(
        self,
        path: str,
        envelope: dict[str, Any],
        files: Iterable[tuple[str, bytes, str | None]],
        part_name: str,
        params: list[tuple[str, str]] | None = None,
        priority: Priority = Priority.FOREGROUND,
    ) -> dict:
        parts: list[tuple[str, tuple[str, bytes] | tuple[str, bytes, str]]] = [
            ("json", ("request.json", jsonlib.dumps(envelope).encode(), "application/json"))
        ]
        for name, data, ctype in files:
            parts.append((part_name, (name, data, ctype) if ctype else (name, data)))
        return await self._json("POST", path, files=parts, params=params, priority=priority)

    def _media_position(self, resp: httpx.Response) -> tuple[int, int | None]:
        """(offset of the body's first byte, file size or None) for a 200/206 answer."""
        if resp.status_code == 206:
            parsed = _content_range(resp.headers.get("content-range"))
            if parsed is None:
                raise BadResponse("206 answer with a missing or malformed Content-Range", status=206)
            return parsed[0], parsed[2]
        return 0, _content_length(resp.headers)

    async def _close_response(self, resp: httpx.Response) -> None:
        # Shielded, with its own deadline: a cancelled reader must still give the
        # connection back, and a stuck close must not hang the cancellation.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 5.0
            try:
                await resp.aclose()
            except httpx.HTTPError:
                pass

    async def _token_request(self, form: dict[str, str]) -> Any:
        resp = await self._request(
            "POST", "/restapi/oauth/token", data=form, auth=False, basic=True, idempotent=True
        )
        try:
            return jsonlib.loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            raise BadResponse("token endpoint answered something that is not JSON", status=resp.status_code) from None

    async def _revoke_request(self, token: str) -> None:
        policy = dataclasses.replace(self.retry, attempts=1, max_429=0)
        await self._request("POST", "/restapi/oauth/revoke", data={"token": token}, auth=False, basic=True, policy=policy)

    async def _request(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Any = None,
        priority: Priority = Priority.FOREGROUND,
        auth: bool = True,
        basic: bool = False,
        stream: bool = False,
        idempotent: bool | None = None,
        policy: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send one logical request with auth, pacing and bounded retries.

        Returns a 2xx response (body read unless `stream`; then the caller closes it).
        Raises only ApiError subclasses.
        """
        policy = policy or self.retry
        full_url = self._url(url)
        self.check_url(full_url)
        where = f"{method} {_safe_url(full_url)}"
        kind, group = classify(method, full_url)
        if idempotent is None:
            # Not DELETE: a second delete purges a message the first one only deleted.
            idempotent = method.upper() in ("GET", "PUT", "HEAD")
        started = trio.current_time()
        attempt = 0  # requests sent for this call
        failures = 0  # of those, 5xx answers and transport errors (bounded by policy.attempts)
        renewed = False
        seen_429 = 0
        paced = 0.0  # time spent waiting for rate-limit slots: not part of policy.total
        while True:
            token = await self.auth.access_token() if auth else None
            try:
                request = self._http.build_request(
                    method,
                    full_url,
                    params=params,
                    headers=self._headers(headers, token, basic),
                    json=json,
                    data=data,
                    files=files,
                )
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                raise BadResponse(self._scrub(f"{where}: unusable URL ({type(exc).__name__})")) from None
            group = self._learned_groups.get(kind, group)
            blocked = self.governor.budget(group).blocked_for
            if blocked > policy.max_penalty:
                raise RateLimited(
                    f"{where}: rate group {group.value} is blocked for {blocked:.0f} s more", status=429
                )
            waited_from = trio.current_time()
            ticket = await self.governor.acquire(group, priority)
            paced += trio.current_time() - waited_from
            if auth:
                # The wait for a slot may have outlasted a refresh done by another task.
                latest = self.auth.current()
                if latest is not None and latest != token:
                    token = latest
                    request.headers["Authorization"] = self.auth.authorization(token)
            attempt += 1
            self.stats.requests[group.value] = self.stats.requests.get(group.value, 0) + 1
            if attempt > 1:
                self.stats.retries += 1
            self.stats.bytes_sent += int(request.headers.get("content-length") or 0)
            failure: httpx.HTTPError | None = None
            resp: httpx.Response | None = None
            try:
                resp = await self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                failure = exc
            finally:
                if resp is None:
                    self.governor.release(ticket)
            if resp is not None:
                self.governor.observe(ticket, resp.status_code, resp.headers)
                self._learn_group(kind, group, resp.headers)
                self.stats.statuses[resp.status_code] = self.stats.statuses.get(resp.status_code, 0) + 1
                if 200 <= resp.status_code < 300:
                    if auth:
                        self.auth.mark_verified()
                    if stream:
                        log.debug("%s -> %d (streaming)", where, resp.status_code)
                        return resp
                    try:
                        await resp.aread()
                    except httpx.HTTPError as exc:
                        failure = exc
                    finally:
                        await self._close_response(resp)
                    if failure is None:
                        self.stats.bytes_received += len(resp.content)
                        log.debug("%s -> %d (%d bytes)", where, resp.status_code, len(resp.content))
                        return resp
                else:
                    body = await self._error_body(resp)
                    status = resp.status_code
                    log.debug("%s -> %d", where, status)
                    if status == 401 and auth and not renewed:
                        renewed = True
                        assert token is not None
                        log.info("%s: 401, renewing the access token once", where)
                        await self.auth.on_unauthorized(token)
                        continue
                    if status == 429:
                        seen_429 += 1
                        self.stats.rate_limited += 1
                        self.stats.rate_limited_groups[group.value] = self.stats.rate_limited_groups.get(group.value, 0) + 1
                        wait = self.governor.retry_after(resp.headers)
                        if seen_429 > policy.max_429 or (wait is not None and wait > policy.max_penalty):
                            raise self._error(RateLimited, where, status, body, resp.headers)
                        log.info("%s: 429, group %s blocked; will resend", where, group.value)
                        continue
                    if status >= 500:
                        failures += 1
                    if status >= 500 and (idempotent or status == 503) and failures < policy.attempts:
                        delay = policy.backoff(failures, self.governor.retry_after(resp.headers), self._rng)
                        if trio.current_time() + delay - started - paced <= policy.total:
                            log.info("%s: HTTP %d, retry %d in %.2f s", where, status, failures, delay)
                            await trio.sleep(delay)
                            continue
                    raise self._map_error(where, status, body, resp.headers)
            # No usable answer: a transport error before or during the body.
            assert failure is not None
            self.stats.transport_errors += 1
            failures += 1
            desc = f"{type(failure).__name__}"
            retryable = is_retryable_transport_error(failure) and (idempotent or never_reached_server(failure))
            if retryable and failures < policy.attempts:
                delay = policy.backoff(failures, None, self._rng)
                if trio.current_time() + delay - started - paced <= policy.total:
                    log.info("%s: %s, retry %d in %.2f s", where, desc, failures, delay)
                    await trio.sleep(delay)
                    continue
            if isinstance(failure, httpx.DecodingError):
                raise BadResponse(self._scrub(f"{where}: undecodable body ({desc})"))
            raise NetworkError(self._scrub(f"{where}: {desc} after {attempt} attempt(s)"))

    def _headers(self, extra: Mapping[str, str] | None, token: str | None, basic: bool) -> dict[str, str]:
        headers = dict(extra or {})
        if token is not None:
            headers["Authorization"] = self.auth.authorization(token)
        elif basic:
            pair = f"{self.credentials.client_id}:{self.credentials.client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return headers

    def _learn_group(self, kind: str, assumed: Group, headers: httpx.Headers) -> None:
        told = Group.from_header(headers.get("x-rate-limit-group"))
        if told is not None and told is not assumed and self._learned_groups.get(kind) is not told:
            log.info("server puts %s requests in group %s (assumed %s)", kind, told.value, assumed.value)
            self._learned_groups[kind] = told

    async def _error_body(self, resp: httpx.Response) -> bytes:
        """Read at most 64 KiB of an error answer (decoded: our JSON requests accept gzip
        and deflate, so any server or proxy may compress error bodies), then close it."""
        data = b""
        try:
            async with contextlib.aclosing(_decoded_pieces(resp)) as pieces:
                async for piece in pieces:
                    data += piece
                    if len(data) >= _ERROR_BODY_LIMIT:
                        break
        except httpx.HTTPError:
            pass  # (an undecodable body: keep what decoded, the status still tells a lot)
        finally:
            await self._close_response(resp)
        self.stats.bytes_received += len(data)
        return data[:_ERROR_BODY_LIMIT]

    def _map_error(self, where: str, status: int, body: bytes, headers: httpx.Headers) -> ApiError:
        if status == 401 or (status == 400 and "/restapi/oauth/" in where and self._oauth_error(body) == "invalid_client"):
            return self._error(AuthError, where, status, body, headers)
        if status == 404:
            return self._error(NotFound, where, status, body, headers)
        if status == 403:
            permission = self._missing_permission(body)
            if permission is not None:
                return self._permission_denied(where, body, headers, permission)
        if status == 416:
            err = self._error(RangeNotSatisfiable, where, status, body, headers)
            assert isinstance(err, RangeNotSatisfiable)
            err.total = _unsatisfied_total(headers.get("content-range"))
            return err
        if status == 429:
            return self._error(RateLimited, where, status, body, headers)
        if status >= 500:
            return self._error(ServerError, where, status, body, headers)
        if 400 <= status < 500:
            return self._error(Rejected, where, status, body, headers)
        return self._error(BadResponse, where, status, body, headers)  # 1xx/3xx: not expected

    @staticmethod
    def _missing_permission(body: bytes) -> str | None:
        """The permission a 403 names (`permissionName`, CMN-401/402/408), None if it is
        some other refusal. "(unnamed)" when the code says permission but not which."""
        try:
            doc = jsonlib.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict):
            return None
        items = [doc] + [e for e in doc.get("errors") or [] if isinstance(e, dict)]
        for item in items:
            name = item.get("permissionName")
            if isinstance(name, str) and name:
                return _sanitise_token(name)
        codes = {str(item.get("errorCode")) for item in items}
        if codes & {"CMN-401", "CMN-402", "CMN-408", "InsufficientPermissions"}:
            return "(unnamed)"
        return None

    def _permission_denied(self, where: str, body: bytes, headers: httpx.Headers, permission: str) -> ApiError:
        plain = self._error(Rejected, where, 403, body, headers)
        if plain.code == "CMN-408":
            # A *user* permission for this resource (another extension's mailbox, the
            # company call log): the user's role, not the app, lacks it.
            who = "the signed-in user"
            text = (f"{plain}; the signed-in user lacks the [{permission}] permission for this resource "
                    f"(ask the account admin for a role that has it)")
        else:
            who = "the app"
            text = (f"{plain}; the RingCentral app lacks the [{permission}] permission: add it to the app "
                    f"in the RingCentral developer console (or ask the account admin), then mount again")
        seen = permission if who == "the app" else f"user:{permission}"
        if seen not in self._denied_permissions:
            self._denied_permissions.add(seen)
            log.error("permission missing: %s may not use [%s] (%s)", who, permission,
                      _safe_url(where.split(" ", 1)[-1]))
        else:
            log.warning("permission [%s] missing: %s", permission, where)
        return PermissionDenied(self._scrub(text), permission=permission, status=403, code=plain.code)

    @staticmethod
    def _oauth_error(body: bytes) -> str | None:
        try:
            doc = jsonlib.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        return doc.get("error") if isinstance(doc, dict) and isinstance(doc.get("error"), str) else None

    def _error(self, cls: type[ApiError], where: str, status: int, body: bytes, headers: httpx.Headers) -> ApiError:
        code, message = self._parse_error(body)
        text = f"{where}: HTTP {status}"
        if code:
            text += f" {code}"
        if message:
            text += f": {message[:300]}"
        text = self._scrub(text)
        if cls is RangeNotSatisfiable:
            return RangeNotSatisfiable(text, code=code)
        return cls(text, status=status, code=code)

    @staticmethod
    def _parse_error(body: bytes) -> tuple[str | None, str | None]:
        """(first errors[].errorCode, its message) of a RingCentral error body."""
        try:
            doc = jsonlib.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None, None
        if not isinstance(doc, dict):
            return None, None
        errors = doc.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            code = first.get("errorCode")
            msg = first.get("message")
            return (str(code) if code else None), (str(msg) if msg else None)
        code = doc.get("errorCode") or doc.get("error")
        msg = doc.get("message") or doc.get("error_description")
        return (str(code) if code else None), (str(msg) if msg else None)
