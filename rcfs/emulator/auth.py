"""OAuth for the emulator: the token table and the `/restapi/oauth/*` endpoints.

Behaviour (CONTRACT §2):

* `POST /restapi/oauth/token` takes only `application/x-www-form-urlencoded` (415
  otherwise) and Basic client authentication. Grants: JWT bearer (the assertion must
  equal `config.jwt`), `refresh_token`, and `password` when `config.password_grant` is
  on (the password must equal `config.jwt`, the account's one user credential; any
  non-empty username is taken).
* TTLs: the requested `access_token_ttl` is clamped to [600, 3600] (default 3600) and
  `refresh_token_ttl` to [1, 2592000] (default 604800), unless `config.access_token_ttl`
  / `config.refresh_token_ttl` is set: then the configured value wins, even below 600 s,
  so tests can expire tokens within seconds.
* Every grant returns a refresh token, `expires_in`, `refresh_token_expires_in`,
  `scope`, `owner_id`, `endpoint_id`, `session_id` and `token_type: "bearer"`.
* Refresh tokens are single use. A refresh kills the previous access token at once.
  Grace (documented RingCentral behaviour, `TokenTable.refresh_grace` seconds, default
  10, 0 turns it off): the old refresh token may be presented again and returns the
  *same* new pair until `refresh_grace` seconds after the new access token was first
  used, or for at most an hour if it never is. Outside the grace it is refused.
* `POST /restapi/oauth/revoke` (form `token`, access or refresh) ends the whole session,
  and with it the push sockets opened with its ws tokens (gateway.py).
* Sessions also end without a revoke (production: admin logout, password change, the
  parallel-session cap): `TokenTable.end_sessions` (admin endpoint) and
  `config.session_cap` (a new session beyond the cap for one user and app ends the
  oldest). An ended session's tokens are refused like revoked ones, while the JWT stays
  good.
* Errors of the token endpoints carry `error` (RFC 6749) plus `errors[]` with a
  RingCentral code: bad client 401 `invalid_client`/OAU-146, missing or malformed Basic
  header 401 OAU-123, bad user credential 400 `invalid_grant`/OAU-140, unknown, used or
  revoked refresh token 400 `invalid_grant`/OAU-149, expired refresh token 400
  `invalid_grant`/OAU-128, disabled password grant 401 `unauthorized_client`/OAU-125,
  bad or missing parameters 400 `invalid_request`/CMN-101.

Using tokens: `Authorization: Bearer <token>` with the scheme matched case-insensitively;
the `access_token` query parameter only where the caller allows it (the media host).
Missing credentials answer 401 AGW-401; an unknown, superseded or revoked token 401
`TokenInvalid`/OAU-149; an expired one 401 `TokenExpired`/OAU-128. Tokens are never
logged.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import secrets
import time
from typing import TYPE_CHECKING, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .config import EmulatorConfig

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger(__name__)

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = ("ReadAccounts ReadMessages EditMessages ReadCallLog ReadCallRecording Faxes SMS "
         "EditExtensions ReadContacts")
ACCESS_TTL_DEFAULT, ACCESS_TTL_MIN, ACCESS_TTL_MAX = 3600, 600, 3600
REFRESH_TTL_DEFAULT, REFRESH_TTL_MAX = 604800, 2592000
GRACE_IF_UNUSED = 3600.0


class AuthFailure(Exception):
    """A request failed authentication; `response` is the 401/4xx answer to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclasses.dataclass
class Session:
    """One OAuth session: the current token pair and what the grace rules need."""

    id: str
    client_id: str
    owner_id: str
    endpoint_id: str
    scope: str
    access_token: str
    access_expires: float
    access_ttl: int
    refresh_token: str
    refresh_expires: float
    refresh_ttl: int
    access_used_at: float | None = None
    previous_refresh: str | None = None
    previous_refresh_issued: float = 0.0
    revoked: bool = False


class TokenTable:
    """All sessions and the token -> session indexes. `clock` returns seconds."""

    def __init__(self, config: EmulatorConfig, owner_id: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.owner_id = owner_id
        self.clock = clock
        self.refresh_grace = 10.0
        self.sessions: dict[str, Session] = {}
        self._by_access: dict[str, Session] = {}
        self._by_refresh: dict[str, Session] = {}
        self._by_previous_refresh: dict[str, Session] = {}
        # Called with each session that ends (revoke, admin end, session cap): the
        # gateway closes the sockets opened with it (gateway.Gateway._oauth_session_ended).
        self.on_end: list[Callable[[Session], None]] = []

    # ttl rules -----------------------------------------------------------
    def access_ttl(self, requested: int | None) -> int:
        """Effective access-token lifetime in seconds."""
        if self.config.access_token_ttl is not None:
            return int(self.config.access_token_ttl)
        if requested is None:
            return ACCESS_TTL_DEFAULT
        return min(ACCESS_TTL_MAX, max(ACCESS_TTL_MIN, requested))

    def refresh_ttl(self, requested: int | None) -> int:
        """Effective refresh-token lifetime in seconds."""
        if self.config.refresh_token_ttl is not None:
            return int(self.config.refresh_token_ttl)
        if requested is None:
            return REFRESH_TTL_DEFAULT
        return min(REFRESH_TTL_MAX, max(1, requested))

    # lifecycle -----------------------------------------------------------
    def create(self, client_id: str, *, access_ttl: int | None = None,
               refresh_ttl: int | None = None, endpoint_id: str | None = None,
               owner_id: str | None = None) -> Session:
        """Open a new session after a successful user-credential grant (`owner_id`: the
        extension signed in; default the account's super admin)."""
        now = self.clock()
        a_ttl, r_ttl = self.access_ttl(access_ttl), self.refresh_ttl(refresh_ttl)
        session = Session(
            id=secrets.token_hex(8), client_id=client_id, owner_id=owner_id or self.owner_id,
            endpoint_id=endpoint_id or secrets.token_urlsafe(12),
            scope=" ".join(p for p in SCOPE.split() if p not in self.config.missing_permissions),
            access_token=_new_token(), access_expires=now + a_ttl, access_ttl=a_ttl,
            refresh_token=_new_token(), refresh_expires=now + r_ttl, refresh_ttl=r_ttl,
        )
        self.sessions[session.id] = session
        self._by_access[session.access_token] = session
        self._by_refresh[session.refresh_token] = session
        cap = self.config.session_cap
        if cap is not None and cap > 0:
            mine = [s for s in self.sessions.values() if (s.client_id, s.owner_id) == (client_id, session.owner_id)]
            for old in mine[: max(0, len(mine) - cap)]:  # insertion order: oldest first
                log.info("session cap %d reached: ending the oldest session", cap)
                self._end(old)
        return session

    def end_sessions(self, which: str = "all") -> int:
        """End sessions as an admin would ("all", "oldest" or "newest"); returns how many."""
        live = list(self.sessions.values())
        chosen = live if which == "all" else live[:1] if which == "oldest" else live[-1:]
        for session in chosen:
            self._end(session)
        return len(chosen)

    def refresh(self, refresh_token: str, client_id: str, *, access_ttl: int | None = None,
                refresh_ttl: int | None = None) -> Session:
        """Rotate the session that owns `refresh_token`. Raises `GrantError`."""
        now = self.clock()
        session = self._by_refresh.get(refresh_token)
        if session is None:
            session = self._by_previous_refresh.get(refresh_token)
            if session is not None and not session.revoked and self._in_grace(session, now):
                return session  # grace: the same new pair again
            raise GrantError("OAU-149", "Token is invalid or has been used already")
        if session.revoked or session.client_id != client_id:
            raise GrantError("OAU-149", "Token is invalid")
        if now >= session.refresh_expires:
            raise GrantError("OAU-128", "Refresh token has expired")

        # Single use: the old access token dies now, the old refresh token only lives on
        # in the grace index.
        self._by_access.pop(session.access_token, None)
        self._by_refresh.pop(session.refresh_token, None)
        if session.previous_refresh is not None:
            self._by_previous_refresh.pop(session.previous_refresh, None)
        session.previous_refresh = session.refresh_token
        session.previous_refresh_issued = now
        self._by_previous_refresh[session.refresh_token] = session

        a_ttl, r_ttl = self.access_ttl(access_ttl), self.refresh_ttl(refresh_ttl)
        session.access_token, session.access_expires, session.access_ttl = _new_token(), now + a_ttl, a_ttl
        session.refresh_token, session.refresh_expires, session.refresh_ttl = _new_token(), now + r_ttl, r_ttl
        session.access_used_at = None
        self._by_access[session.access_token] = session
        self._by_refresh[session.refresh_token] = session
        return session

    def _in_grace(self, session: Session, now: float) -> bool:
        if self.refresh_grace <= 0:
            return False
        deadline = session.previous_refresh_issued + GRACE_IF_UNUSED
        if session.access_used_at is not None:
            deadline = min(deadline, session.access_used_at + self.refresh_grace)
        return now < deadline

    def revoke(self, token: str) -> bool:
        """End the session owning `token` (access, refresh or grace refresh token)."""
        session = (self._by_access.get(token) or self._by_refresh.get(token)
                   or self._by_previous_refresh.get(token))
        if session is None:
            return False
        self._end(session)
        return True

    def _end(self, session: Session) -> None:
        session.revoked = True
        self._by_access.pop(session.access_token, None)
        self._by_refresh.pop(session.refresh_token, None)
        if session.previous_refresh is not None:
            self._by_previous_refresh.pop(session.previous_refresh, None)
        self.sessions.pop(session.id, None)
        for observer in self.on_end:
            observer(session)

    def validate(self, token: str) -> Session:
        """The live session of an access token. Raises `TokenProblem`."""
        session = self._by_access.get(token)
        if session is None or session.revoked:
            raise TokenProblem("TokenInvalid", "OAU-149", "OAuth token is invalid")
        now = self.clock()
        if now >= session.access_expires:
            raise TokenProblem("TokenExpired", "OAU-128", "Access token expired")
        if session.access_used_at is None:
            session.access_used_at = now
        return session

    # rendering -----------------------------------------------------------
    def token_body(self, session: Session) -> dict:
        """The `TokenInfo` JSON of the session's current pair."""
        now = self.clock()
        return {
            "access_token": session.access_token,
            "token_type": "bearer",
            "expires_in": max(0, round(session.access_expires - now)),
            "refresh_token": session.refresh_token,
            "refresh_token_expires_in": max(0, round(session.refresh_expires - now)),
            "scope": session.scope,
            "owner_id": session.owner_id,
            "endpoint_id": session.endpoint_id,
            "session_id": session.id,
        }


class GrantError(Exception):
    """A refresh or credential grant was refused: RingCentral code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TokenProblem(Exception):
    """An access token was refused: legacy `errorCode`, specific code, message."""

    def __init__(self, legacy: str, code: str, message: str) -> None:
        super().__init__(message)
        self.legacy = legacy
        self.code = code
        self.message = message


def _new_token() -> str:
    return secrets.token_urlsafe(32)


def oauth_error(status: int, error: str, code: str, message: str, **extra: str) -> JSONResponse:
    """An OAuth endpoint error body: RFC 6749 `error` plus RingCentral `errors[]`."""
    item: dict = {"errorCode": code, "message": message}
    item.update(extra)
    return JSONResponse({"error": error, "errors": [item], "error_description": message},
                        status_code=status)


def basic_client_id(request: Request) -> str | None:
    """The client id of a well-formed Basic header (not yet checked), else None."""
    creds = _basic_credentials(request)
    return creds[0] if creds else None


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def check_client(config: EmulatorConfig, request: Request) -> str:
    """Verify Basic client authentication; return the client id or raise `AuthFailure`."""
    creds = _basic_credentials(request)
    if creds is None:
        raise AuthFailure(oauth_error(401, "invalid_client", "OAU-123",
                                      "Invalid or missing Authorization header (Basic client credentials)"))
    client_id, secret = creds
    if not (secrets.compare_digest(client_id, config.client_id)
            and secrets.compare_digest(secret, config.client_secret)):
        raise AuthFailure(oauth_error(401, "invalid_client", "OAU-146", "Invalid client credentials",
                                      parameterName="client_id"))
    return client_id


async def _form(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise AuthFailure(oauth_error(415, "invalid_request", "CMN-104",
                                      "Unsupported Media Type: use application/x-www-form-urlencoded"))
    form = await request.form()
    return {k: str(v) for k, v in form.items()}


def _ttl_param(form: dict[str, str], name: str) -> int | None:
    raw = form.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise AuthFailure(oauth_error(400, "invalid_request", "CMN-101",
                                      f"Parameter [{name}] value is invalid", parameterName=name)) from None


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise AuthFailure(oauth_error(400, "invalid_request", "CMN-101",
                                      f"Parameter [{name}] is missing", parameterName=name))
    return value


async def token_endpoint(emu: Emulator, request: Request) -> Response:
    """`POST /restapi/oauth/token`: the JWT, password and refresh-token grants."""
    try:
        form = await _form(request)
        client_id = check_client(emu.config, request)
        grant = _required(form, "grant_type")
        a_ttl, r_ttl = _ttl_param(form, "access_token_ttl"), _ttl_param(form, "refresh_token_ttl")
        tokens = emu.tokens
        if grant in (JWT_GRANT, "password"):
            if grant == JWT_GRANT:
                credential = _required(form, "assertion")
            else:
                if not emu.config.password_grant:
                    return oauth_error(401, "unauthorized_client", "OAU-125",
                                       "Grant type [password] is not allowed for this application")
                _required(form, "username")
                credential = _required(form, "password")
            # Each emulated user has one secret: their JWT (the password grant accepts it too).
            # `jwt` signs in the super admin, `user_jwt` a regular user (company.py).
            owner = emu.owner_of_credential(credential)
            if owner is None:
                return oauth_error(400, "invalid_grant", "OAU-140", "Invalid resource owner credentials")
            session = tokens.create(client_id, access_ttl=a_ttl, refresh_ttl=r_ttl,
                                    endpoint_id=form.get("endpoint_id"), owner_id=owner)
        elif grant == "refresh_token":
            try:
                session = tokens.refresh(_required(form, "refresh_token"), client_id,
                                         access_ttl=a_ttl, refresh_ttl=r_ttl)
            except GrantError as exc:
                return oauth_error(400, "invalid_grant", exc.code, exc.message)
        else:
            return oauth_error(400, "unsupported_grant_type", "CMN-101",
                               "Parameter [grant_type] value is invalid", parameterName="grant_type")
    except AuthFailure as exc:
        return exc.response
    log.info("token issued: grant=%s session=%s", grant, session.id)
    return JSONResponse(tokens.token_body(session))


async def revoke_endpoint(emu: Emulator, request: Request) -> Response:
    """`POST /restapi/oauth/revoke`: end the session of the given token (200 either way)."""
    try:
        form = await _form(request)
        check_client(emu.config, request)
    except AuthFailure as exc:
        return exc.response
    token = form.get("token") or request.query_params.get("token", "")
    if not token:
        return oauth_error(400, "invalid_request", "CMN-101", "Parameter [token] is missing",
                           parameterName="token")
    if emu.tokens.revoke(token):
        log.info("session revoked")
    return Response(status_code=200)


def bearer_token(request: Request, *, allow_query: bool) -> str | None:
    """The presented access token: Bearer header (any case), or `access_token` query."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthFailure(api_401("OAU-151", "InvalidAuthorizationHeader",
                                      "Authorization method is not supported"))
        return value.strip()
    if allow_query:
        token = request.query_params.get("access_token")
        if token:
            return token
    return None


def authenticate(emu: Emulator, request: Request, *, allow_query: bool = False) -> Session:
    """The session behind the request's access token; raises `AuthFailure` (401)."""
    token = bearer_token(request, allow_query=allow_query)
    if token is None:
        raise AuthFailure(api_401("AGW-401", "AGW-401", "Authorization header is not specified"))
    try:
        return emu.tokens.validate(token)
    except TokenProblem as exc:
        raise AuthFailure(api_401(exc.code, exc.legacy, exc.message)) from None


def api_401(code: str, legacy: str, message: str) -> JSONResponse:
    """A 401 body as the API gateway sends it: legacy code on top, specific code in errors."""
    return JSONResponse({"errorCode": legacy, "message": message,
                         "errors": [{"errorCode": code, "message": message}]}, status_code=401)
