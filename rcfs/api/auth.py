"""OAuth tokens: JWT grant, single-flight refresh, and a private on-disk token store.

Rules this module enforces (CONTRACT §2):

* Refresh tokens are single-use, so two tasks that both find the access token stale must
  produce ONE refresh request: renewals run under a lock and re-check after waiting.
* The Auth group allows 5 requests a minute, so tokens are persisted (file mode 0600 from
  creation, written atomically) and a remount reuses them instead of logging in again.
* Access tokens are renewed proactively, `min(60 s, 10 % of their lifetime)` before they
  expire, and once more when the API answers 401 anyway.
* A refresh token that ran out by the clock leads to a new JWT grant. So does a refresh
  the server *refuses* while the JWT may still be good: production ends sessions on an
  admin logout, a password change, a revoke elsewhere, or when the user opens more than
  about five parallel sessions of one app. That re-login happens at most once per
  `RELOGIN_INTERVAL` (5 minutes; one Auth request, paced like any other): a session
  ended again within that time (the session cap taking it back) ends the mount's
  session for good, as does a JWT grant the server rejects. Then: AuthError with a
  message that says what to do, logged once, and every later call fails fast with the
  same error instead of looping on the Auth group. A session loaded from disk that was
  never confirmed in this process is replaced by one JWT grant as well (the stored
  tokens were merely stale).
* No token, JWT or secret ever appears in a log line, exception message or repr.
* A fleet (issue 18, `shared`: rcfs.api.shared_budget.SharedTokens): the token pair lives in
  Redis. A mount whose token is due first takes the pair in Redis if another mount renewed
  it; otherwise it takes the fleet's renewal lock, looks again, and only then refreshes (or,
  after a refused refresh, logs in with the JWT) and stores the new pair for all. So six
  mounts are one session at the service, and a refresh by one (which ends the old access
  token at once) is followed by the others' 401s taking the new pair, not a login each.
  Without Redis (down, slow) a mount renews on its own, as without a fleet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import trio

from ..atomic import write_atomic
from .errors import ApiError, AuthError, BadResponse, Rejected

log = logging.getLogger(__name__)

__all__ = ["TokenManager", "TokenSet", "TokenStore", "JWT_GRANT", "refresh_margin"]

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_FILE_VERSION = 1
RELOGIN_INTERVAL = 300.0  # seconds: at most one JWT re-login after an ended session per this
SESSION_ENDED_AGAIN = (
    "the server ended the session again within {minutes:g} minutes of a new login: RingCentral "
    "allows about 5 parallel sessions per user and app and ends the oldest, so close other "
    "sessions of this app (other rcfs mounts, scripts with the same client id), then mount again"
)
CLIENT_REJECTED = (
    "the app's client id or secret is rejected: check RC_CLIENT_ID and RC_CLIENT_SECRET "
    "against the app in the RingCentral developer console, then mount again"
)
_CLIENT_CODES = frozenset({"invalid_client", "OAU-123", "OAU-146", "OAU-153"})
JWT_REJECTED = (
    "the JWT credential is no longer accepted (expired, revoked, or its user disabled): create "
    "a new JWT in the RingCentral developer console, set RC_JWT to it, and mount again"
)


def refresh_margin(ttl: float) -> float:
    """How long before expiry a token counts as stale: min(60 s, 10 % of its lifetime)."""
    return max(0.0, min(60.0, 0.1 * ttl))


@dataclasses.dataclass
class TokenSet:
    """One OAuth session's tokens with absolute (wall-clock) expiry times."""

    access_token: str = dataclasses.field(repr=False)
    token_type: str
    expires_at: float
    access_ttl: float
    refresh_token: str | None = dataclasses.field(default=None, repr=False)
    refresh_expires_at: float = 0.0
    refresh_ttl: float = 0.0
    owner_id: str | None = None
    scope: str | None = None

    @classmethod
    def from_response(cls, body: Any, now: float) -> TokenSet:
        """Build from a `/restapi/oauth/token` 200 body; BadResponse if it is not one."""
        if not isinstance(body, dict):
            raise BadResponse("token endpoint answered something that is not a JSON object")
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise BadResponse("token endpoint answered without an access_token")
        try:
            ttl = float(body.get("expires_in", 3600))
            rttl = float(body.get("refresh_token_expires_in", 0) or 0)
        except (TypeError, ValueError):
            raise BadResponse("token endpoint answered a non-numeric expires_in") from None
        refresh = body.get("refresh_token")
        if refresh is not None and not isinstance(refresh, str):
            raise BadResponse("token endpoint answered a malformed refresh_token")
        return cls(
            access_token=access,
            token_type=str(body.get("token_type") or "bearer"),
            expires_at=now + ttl,
            access_ttl=ttl,
            refresh_token=refresh or None,
            refresh_expires_at=now + rttl if refresh else 0.0,
            refresh_ttl=rttl if refresh else 0.0,
            owner_id=None if body.get("owner_id") is None else str(body.get("owner_id")),
            scope=body.get("scope") if isinstance(body.get("scope"), str) else None,
        )

    def access_fresh(self, now: float) -> bool:
        """True while the access token is usable and not yet due for a proactive refresh."""
        return now < self.expires_at - refresh_margin(self.access_ttl)

    def refresh_usable(self, now: float) -> bool:
        """True while the refresh token exists and has not run out by the clock."""
        return bool(self.refresh_token) and now < self.refresh_expires_at - refresh_margin(self.refresh_ttl)

    def to_json(self) -> dict[str, Any]:
        """The persisted form (secrets included: it only ever goes to the 0600 store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> TokenSet | None:
        """Inverse of `to_json`; None for anything malformed (treated as no stored session)."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                access_token=str(data["access_token"]),
                token_type=str(data.get("token_type") or "bearer"),
                expires_at=float(data["expires_at"]),
                access_ttl=float(data.get("access_ttl", 3600)),
                refresh_token=data.get("refresh_token") or None,
                refresh_expires_at=float(data.get("refresh_expires_at", 0)),
                refresh_ttl=float(data.get("refresh_ttl", 0)),
                owner_id=data.get("owner_id"),
                scope=data.get("scope"),
            )
        except (KeyError, TypeError, ValueError):
            return None


class TokenStore:
    """Tokens persisted in one JSON file, private to the user.

    The directory is created 0700, the file is created 0600 (never wider, not even for
    an instant) and replaced atomically, so a crash leaves the old or the new content.
    Entries are keyed by `TokenStore.key(server_url, client_id, jwt)`: the JWT itself is
    only stored as a hash.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r})"

    @staticmethod
    def key(server_url: str, client_id: str, jwt: str) -> str:
        """Entry key: server, app and a hash of the user credential."""
        digest = hashlib.sha256(jwt.encode()).hexdigest()[:32]
        return f"{server_url.rstrip('/')}|{client_id}|{digest}"

    def load(self, key: str) -> TokenSet | None:
        """The stored session for `key`, or None (missing, unreadable or malformed file)."""
        return TokenSet.from_json(self._read().get(key))

    def save(self, key: str, tokens: TokenSet) -> None:
        """Store (or replace) the session for `key`."""
        data = self._read()
        data[key] = tokens.to_json()
        self._write(data)

    def delete(self, key: str) -> None:
        """Forget the session for `key` (no error if there was none)."""
        data = self._read()
        if data.pop(key, None) is not None:
            self._write(data)

    def _read(self) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("token store %s unreadable: %s", self.path, exc.strerror)
            return {}
        if st.st_mode & 0o077:
            log.warning("token store %s was readable by others; restricting it to 0600", self.path)
            try:
                os.chmod(self.path, 0o600)
            except OSError:
                pass
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            log.warning("token store %s is corrupt; ignoring it", self.path)
            return {}
        if not isinstance(doc, dict) or not isinstance(doc.get("tokens"), dict):
            return {}
        return dict(doc["tokens"])

    def _write(self, tokens: dict[str, Any]) -> None:
        directory = self.path.parent
        if not directory.exists():
            os.makedirs(directory, mode=0o700, exist_ok=True)
            # makedirs' mode is filtered by the umask; the directory must really be 0700.
            os.chmod(directory, 0o700)
        payload = json.dumps({"version": _FILE_VERSION, "tokens": tokens}, indent=1).encode()
        # Created 0600 by open(2) itself: the secrets are never readable by others.
        write_atomic(self.path, payload, mode=0o600)


# (form fields) -> token response JSON; raises ApiError subclasses.
TokenRequester = Callable[[dict[str, str]], Awaitable[Any]]
Revoker = Callable[[str], Awaitable[None]]


class TokenManager:
    """Hands out a valid access token; obtains, refreshes, persists and revokes tokens.

    It does no HTTP itself: `request_token(form)` posts the form to the token endpoint
    (with Basic client auth, through the Auth rate-limit group) and `revoke(token)`
    calls the revoke endpoint; the client provides both.

    **Parameters:**
    * `credentials`: `rcfs.api.client.Credentials` (server_url, client_id, jwt used here).
    * `store`: a TokenStore, or None to keep tokens in memory only.
    * `wall_clock`: seconds since the epoch (token expiry survives remounts, so it is
      wall-clock time, not monotonic).
    """

    def __init__(
        self,
        credentials: Any,
        *,
        request_token: TokenRequester,
        revoke: Revoker,
        store: TokenStore | None = None,
        wall_clock: Callable[[], float] = time.time,
        shared: Any = None,
    ) -> None:
        self._creds = credentials
        self._shared = shared  # SharedTokens (a fleet's one login) or None
        self._request_token = request_token
        self._revoke = revoke
        self._store = store
        self._clock = wall_clock
        self._key = TokenStore.key(credentials.server_url, credentials.client_id, credentials.jwt)
        self._tokens: TokenSet | None = None
        self._loaded = False
        self._verified = False  # the current session is known to be accepted by the server
        self._failed: str | None = None
        self._lock = trio.Lock()
        self._old_secrets: list[str] = []
        self.logins = 0
        self.refreshes = 0
        # Called (no arguments) after every successful JWT grant, i.e. a new OAuth session:
        # the push channel's socket belongs to the session it was opened with (rcfs.push).
        self.on_login: list[Callable[[], None]] = []
        self._relogin_at: float | None = None  # when a refused refresh last led to a JWT grant

    def __repr__(self) -> str:
        state = "failed" if self._failed else ("active" if self._tokens else "empty")
        return f"TokenManager({self._creds.server_url!r}, {state})"

    @property
    def failed(self) -> bool:
        """True once the session ended for good (credentials rejected or revoked)."""
        return self._failed is not None

    def secrets(self) -> list[str]:
        """Every secret that must never be shown: for the client's redaction of messages."""
        out = [self._creds.jwt, self._creds.client_secret, *self._old_secrets]
        if self._tokens:
            out.append(self._tokens.access_token)
            if self._tokens.refresh_token:
                out.append(self._tokens.refresh_token)
        return [s for s in out if s]

    def current(self) -> str | None:
        """The access token in hand, without any check or I/O (None if there is none)."""
        return self._tokens.access_token if self._tokens else None

    def authorization(self, token: str) -> str:
        """The Authorization header value for `token`."""
        return f"Bearer {token}"

    def mark_verified(self) -> None:
        """The server accepted the current access token (an authenticated 2xx)."""
        self._verified = True

    async def access_token(self) -> str:
        """A usable access token, renewing it first when it is due (single-flight)."""
        self._raise_if_failed()
        tokens = self._tokens
        if tokens is not None and tokens.access_fresh(self._clock()):
            return tokens.access_token
        await self._renew(stale=tokens, force=False)
        assert self._tokens is not None
        return self._tokens.access_token

    async def on_unauthorized(self, token: str) -> None:
        """The API answered 401 to `token`: renew once, unless someone already did."""
        self._raise_if_failed()
        tokens = self._tokens
        if tokens is None or tokens.access_token != token:
            return
        await self._renew(stale=tokens, force=True)

    async def logout(self) -> None:
        """Revoke the session on the server (errors ignored) and forget it locally."""
        async with self._lock:
            if self._tokens is None and not self._loaded:
                self._tokens = await self._load()
            tokens = self._tokens
            self._retire(tokens)
            self._tokens = None
            self._verified = False
            await self._forget_stored()
        if tokens is None:
            return
        try:
            await self._revoke(tokens.access_token)
        except ApiError as exc:
            # CONTRACT §2.2: clients should ignore revoke errors and not retry.
            log.info("token revoke failed (ignored): %s", exc)

    # -- internals -----------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise AuthError(self._failed, status=401)

    async def _renew(self, *, stale: TokenSet | None, force: bool) -> None:
        async with self._lock:
            self._raise_if_failed()
            now = self._clock()
            if self._tokens is not stale:
                # Another task renewed while we waited for the lock.
                if self._tokens is not None and self._tokens.access_fresh(now):
                    return
            if self._shared is None:
                await self._renew_alone(force, now)
                return
            if await self._take_shared(stale, now):
                return
            held = await self._shared.lock()
            try:
                # Look again under the lock: the mount that held it may have renewed.
                if held is not None and await self._take_shared(stale, self._clock()):
                    return
                await self._renew_alone(force, self._clock())
            finally:
                if held is not None:
                    await self._shared.unlock(held)

    async def _take_shared(self, stale: TokenSet | None, now: float) -> bool:
        """Adopt the fleet's pair when another mount renewed it (True: nothing left to do).

        A pair newer than ours but itself due is still taken as the base of our refresh:
        its refresh token is the live one (refresh tokens are single use).
        """
        assert self._shared is not None
        tokens = TokenSet.from_json(await self._shared.load())
        if tokens is None:
            return False
        mine = self._tokens or stale
        if mine is not None and tokens.access_token == mine.access_token:
            return False
        if stale is not None and tokens.access_token == stale.access_token:
            return False
        self._retire(self._tokens)
        self._tokens = tokens
        self._loaded = True
        self._verified = False  # not yet accepted in this process
        if tokens.access_fresh(now):
            log.debug("using the fleet's access token")
            return True
        return False

    async def _renew_alone(self, force: bool, now: float) -> None:
        if self._tokens is None and not self._loaded:
            self._tokens = await self._load()
            if self._tokens is not None and not force and self._tokens.access_fresh(now):
                log.debug("using stored access token")
                if self._shared is not None:
                    await self._shared.save(self._tokens.to_json(),
                                            max(self._tokens.refresh_ttl, self._tokens.access_ttl))
                return
        tokens = self._tokens
        if tokens is not None and tokens.refresh_usable(now):
            await self._refresh(tokens)
        else:
            if tokens is not None:
                log.info("refresh token expired by the clock; logging in again (JWT grant)")
            await self._login()

    async def _load(self) -> TokenSet | None:
        self._loaded = True
        if self._store is None:
            return None
        tokens = await trio.to_thread.run_sync(self._store.load, self._key)
        self._verified = False
        if tokens is not None:
            log.debug("loaded stored session for %s", self._creds.server_url)
        return tokens

    async def _refresh(self, tokens: TokenSet) -> None:
        assert tokens.refresh_token is not None
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        try:
            body = await self._request_token(form)
        except (AuthError, Rejected) as exc:
            if not self._verified:
                log.info("stored session no longer accepted; logging in again (JWT grant)")
                self._retire(tokens)
                self._tokens = None
                await self._forget_stored()
                await self._login()
                return
            now = self._clock()
            if self._relogin_at is not None and now - self._relogin_at < RELOGIN_INTERVAL:
                await self._fail(SESSION_ENDED_AGAIN.format(minutes=RELOGIN_INTERVAL / 60), exc)
            log.warning("the server ended the session (refresh refused: %s); logging in again with the JWT",
                        exc.code or f"HTTP {exc.status}")
            self._retire(tokens)
            self._tokens = None
            await self._forget_stored()
            await self._login()  # (a 429 or a network error here is not a re-login: try again later)
            self._relogin_at = now
            return
        self.refreshes += 1
        self._retire(tokens)
        await self._adopt(TokenSet.from_response(body, self._clock()))
        log.info("access token refreshed")

    async def _login(self) -> None:
        form = {"grant_type": JWT_GRANT, "assertion": self._creds.jwt}
        try:
            body = await self._request_token(form)
        except (AuthError, Rejected) as exc:
            await self._fail(CLIENT_REJECTED if exc.code in _CLIENT_CODES else JWT_REJECTED, exc)
        self.logins += 1
        await self._adopt(TokenSet.from_response(body, self._clock()))
        log.info("logged in to %s (JWT grant)", self._creds.server_url)
        for listener in self.on_login:
            try:
                listener()
            except Exception:  # noqa: BLE001 - a listener's bug must not fail the login
                log.exception("a login listener failed")

    async def _adopt(self, tokens: TokenSet) -> None:
        self._tokens = tokens
        self._verified = True  # the server just issued it
        if self._shared is not None:
            # For the whole fleet, for as long as its refresh token lives.
            await self._shared.save(tokens.to_json(), max(tokens.refresh_ttl, tokens.access_ttl))
        if self._store is not None:
            try:
                await trio.to_thread.run_sync(self._store.save, self._key, tokens)
            except OSError as exc:
                log.warning("could not persist tokens to %s: %s", self._store.path, exc.strerror)

    async def _forget_stored(self) -> None:
        if self._store is not None:
            try:
                await trio.to_thread.run_sync(self._store.delete, self._key)
            except OSError as exc:
                log.warning("could not update token store %s: %s", self._store.path, exc.strerror)

    def _retire(self, tokens: TokenSet | None) -> None:
        if tokens is None:
            return
        self._old_secrets.append(tokens.access_token)
        if tokens.refresh_token:
            self._old_secrets.append(tokens.refresh_token)
        del self._old_secrets[:-16]

    async def _fail(self, what: str, exc: ApiError) -> None:
        self._failed = f"session ended, credentials rejected: {what} (last answer: {exc})"
        log.error("%s", self._failed)
        self._retire(self._tokens)
        self._tokens = None
        # A later mount starts with a fresh JWT grant instead of the dead session.
        await self._forget_stored()
        raise AuthError(self._failed, status=exc.status or 401, code=exc.code) from None
