"""Console sessions: login against the node's own credentials, a server-side session, CSRF tokens.

SECURITY, in short:

* The cookie holds only a random session id (256 bits); who the user is lives on the server.
  It is ``HttpOnly`` (no script reads it), ``Secure`` (TLS only), ``SameSite=Strict`` (no
  cross-site request carries it) and ``__Host-`` prefixed (no Domain, Path=/, Secure).
* Session fixation: the login form runs on an anonymous pre-session (it carries the login
  form's CSRF token). A successful login destroys that session and creates a new one with a
  new id, so an id planted in a victim's browser before login is worth nothing after it.
* CSRF: every session has its own token; every form carries it in a hidden field, and every
  POST without the matching token is refused (403) before its handler runs. ``Origin``, when
  sent, must be this listener.
* Credentials are the node's own: an ``[[oauth_clients]]`` entry (client id and secret,
  checked against its scrypt hash exactly as the token endpoint does) or a configured
  static credential (an ``[[operators]]`` or ``[[local_systems]]`` name with its token).
  An unknown name costs the same hashing work as a wrong secret and gets the same answer.
  People can also log in through the OIDC provider (oidc.py), which ends in the same
  :meth:`ConsoleSessions.start` of a new session.
* Sessions end after 15 minutes without a request and after 8 hours in any case, and at
  logout; a node restart ends all of them (they live in this process only). Pre-login sessions
  are kept apart and capped, so loading the login page in a loop cannot push people out; at most
  32 logins wait for the hashing threads, further ones are refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import web

from ..auth.clients import OAuthClient
from ..auth.errors import AuthError, InvalidCredentials
from ..auth.hashing import hash_secret
from ..auth.principal import AuthMethod, Principal
from ..auth.static import StaticTokens

COOKIE = "__Host-drehscheibe-console"
PREFIX = "/console/"
IDLE_SECONDS = 15 * 60
MAX_AGE_SECONDS = 8 * 3600
MAX_SESSIONS = 10_000  # signed-in sessions; the least recently used go first beyond this
MAX_ANONYMOUS = 1_000  # pre-login sessions, kept apart: a flood of login-page loads evicts only its own kind
MAX_WAITING = 32  # logins queued for the two hashing threads before new ones are refused at once
MAX_CREDENTIAL_CHARS = 512


@dataclass
class Session:
    """One browser's state on the server. ``principal`` is None before login."""

    id: str
    csrf: str
    created: float
    seen: float
    principal: Principal | None = None
    lang: str | None = None
    data: dict[str, str] = field(default_factory=dict)  # e.g. the person ref of the last report (never the AHV number)


class ConsoleSessions:
    """The session store, and what the auth middleware asks it (see gateway.auth.middleware)."""

    def __init__(self, *, clients: tuple[OAuthClient, ...], static: StaticTokens | None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._anonymous: OrderedDict[str, Session] = OrderedDict()
        self._waiting = 0
        self._clients = {client.client_id: client for client in clients if client.secret_hash is not None}
        self._static = static
        self._clock = clock
        self._decoy = hash_secret(secrets.token_urlsafe(32))
        self._hashing = ThreadPoolExecutor(2, thread_name_prefix="console-login")
        self.render_forbidden: Callable[[web.Request, Principal], web.StreamResponse] | None = None

    # -- the middleware's questions ------------------------------------------------------

    def covers(self, pattern: str) -> bool:
        return pattern.startswith(PREFIX)

    def principal(self, request: web.Request) -> Principal | None:
        session = self.current(request)
        return session.principal if session is not None else None

    def unauthenticated(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.Response(status=303, headers={"Location": "/console/login", "Cache-Control": "no-store"})
        return web.Response(status=401, text="login required", headers={"Cache-Control": "no-store"})

    def forbidden(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        if self.render_forbidden is not None:
            return self.render_forbidden(request, principal)
        return web.Response(status=403, text="forbidden")

    # -- sessions ------------------------------------------------------------------------

    @staticmethod
    def _key(session_id: str) -> str:
        # Stored under a hash of the id: a dump of this table holds no usable cookie.
        return hashlib.sha256(session_id.encode("ascii", "replace")).hexdigest()

    def current(self, request: web.Request) -> Session | None:
        """The live session named by the request's cookie, or None (unknown, idle or too old)."""
        session_id = request.cookies.get(COOKIE)
        if not session_id or len(session_id) > 100:
            return None
        key = self._key(session_id)
        table = self._sessions if key in self._sessions else self._anonymous
        session = table.get(key)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen > IDLE_SECONDS or now - session.created > MAX_AGE_SECONDS:
            del table[key]
            return None
        session.seen = now
        table.move_to_end(key)
        return session

    def start(self, principal: Principal | None = None, *, lang: str | None = None) -> Session:
        """A new session with a fresh id and a fresh CSRF token."""
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, principal, lang)
        table, limit = (self._sessions, MAX_SESSIONS) if principal is not None else (self._anonymous, MAX_ANONYMOUS)
        table[self._key(session.id)] = session
        while len(table) > limit:
            table.popitem(last=False)
        return session

    def end(self, session: Session) -> None:
        key = self._key(session.id)
        self._sessions.pop(key, None)
        self._anonymous.pop(key, None)

    def rotate(self, old: Session | None, principal: Principal) -> Session:
        """SECURITY: login = the old session is gone and a new id is issued (no session fixation)."""
        lang = old.lang if old is not None else None
        if old is not None:
            self.end(old)
        return self.start(principal, lang=lang)

    @staticmethod
    def set_cookie(response: web.StreamResponse, session: Session) -> None:
        response.set_cookie(COOKIE, session.id, path="/", secure=True, httponly=True, samesite="Strict")

    @staticmethod
    def clear_cookie(response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")

    @staticmethod
    def csrf_valid(session: Session | None, token: object) -> bool:
        if session is None or not isinstance(token, str) or not token:
            return False
        return hmac.compare_digest(session.csrf.encode(), token.encode("utf-8", "replace"))

    # -- credentials -----------------------------------------------------------------------

    async def authenticate(self, name: str, secret: str) -> Principal | None:
        """The principal these credentials prove, or None; the same work whether the name exists or not."""
        if not name or not secret or len(name) > MAX_CREDENTIAL_CHARS or len(secret) > MAX_CREDENTIAL_CHARS:
            return None
        if self._waiting >= MAX_WAITING:
            return None  # SECURITY: guessing cannot queue unbounded scrypt work (each check takes 32 MiB)
        self._waiting += 1
        try:
            return await self._authenticate(name, secret)
        finally:
            self._waiting -= 1

    async def _authenticate(self, name: str, secret: str) -> Principal | None:
        loop = asyncio.get_running_loop()
        client = self._clients.get(name)
        if client is not None:
            try:
                await loop.run_in_executor(self._hashing, client.secret_hash.verify, secret)  # type: ignore[union-attr]
            except InvalidCredentials:
                return None
            return client.principal(client.scopes, AuthMethod.OAUTH2)
        # Not a client: the same scrypt work as a wrong client secret, so timing does not tell.
        with contextlib.suppress(InvalidCredentials):
            await loop.run_in_executor(self._hashing, self._decoy.verify, secret)
        if self._static is None:
            return None
        try:
            principal = self._static.resolve(secret)
        except AuthError:
            return None
        # SECURITY: the token alone is not enough; it must be the token of the name given.
        if principal is None or not hmac.compare_digest(principal.name.encode(), name.encode("utf-8", "replace")):
            return None
        return principal

    def close(self) -> None:
        self._hashing.shutdown(wait=False)
        self._sessions.clear()
        self._anonymous.clear()
