"""Console login through the node's OpenID Connect provider: authorization code flow with PKCE (S256).

The provider says who someone is and which role value they hold; the node maps that role with
the same ``[[oidc.roles]]`` as for API tokens (:meth:`OidcVerifier.principal_from`) and keeps
the session itself (sessions.py). Library: authlib builds the authorization request, the PKCE
challenge and the token request; the ID token is verified with joserfc (authlib's JOSE
successor) through the same header, signature and claims checks and the same cached JWKS as
the provider's access tokens (gateway/auth/oidc.py). Nothing JOSE is written by hand here.

What the callback MUST check, and :meth:`OidcLogin.finish` does, in this order:

1. a pending login exists for the browser's flow cookie, at most 10 minutes old; it is taken
   out of the store at once, so a callback (or a replayed code) can be used once only;
2. ``state`` equals the pending login's (constant-time); a provider ``error`` ends the login;
3. the code is exchanged at the token endpoint with the client secret and the PKCE verifier
   (the provider checks the verifier against the S256 challenge it got);
4. the ID token: an accepted asymmetric ``alg``, no key-bearing header, a ``kid`` of the
   provider's JWKS, its signature; ``iss`` = the configured issuer, ``aud`` contains the
   console's client_id (and ``azp`` names it when there are several audiences), ``exp`` not
   passed, ``iat`` present, ``nonce`` = the pending login's;
5. exactly one mapped role (deny by default: none, or several, is a refusal, and no session).

SECURITY, the cookies: the pending login is found through its own cookie
(``__Host-drehscheibe-oidc``), ``HttpOnly``, ``Secure``, ``SameSite=Lax``, 10 minutes. Lax,
not Strict, because the provider sends the browser back with a cross-site top-level GET that a
Strict cookie would not accompany; that cookie grants nothing, it only finds the state, nonce
and verifier. The signed-in session is a *new* console session (fresh id, Strict cookie), and
the anonymous login-page session the flow started from is ended. Since the callback itself is
a cross-site navigation, it answers with a small page that moves on to ``/console/`` from this
site (so the Strict cookie goes along), not with a redirect.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlparse

import aiohttp
from aiohttp import web
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc.jwt import JWTClaimsRegistry

from ..auth.clients import OidcConsoleSettings
from ..auth.errors import AuthUnavailable, InvalidCredentials
from ..auth.oidc import OidcVerifier
from ..auth.principal import Principal
from ..auth.tokens import check_claims, check_header, unverified_part, verify_signature
from .sessions import Session

FLOW_COOKIE = "__Host-drehscheibe-oidc"
FLOW_SECONDS = 600  # a login at the provider must finish within this
MAX_PENDING = 1_000  # pending logins; the oldest go first beyond this (loading /start in a loop evicts only its own kind)
MAX_DOCUMENT_BYTES = 64 * 1024  # discovery document and token response
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")  # an OAuth2 error code is safe to log; anything else is not echoed


class OidcLoginRefused(Exception):
    """The login is refused; the message names the failed check, never a claim value or a code."""


@dataclass
class PendingLogin:
    """What the node remembers between sending a browser to the provider and its return."""

    state: str
    nonce: str
    verifier: str  # the PKCE code verifier; only its S256 challenge left the node
    created: float
    lang: str | None
    presession: Session | None  # the anonymous login-page session, ended at success


@dataclass(frozen=True)
class Endpoints:
    """From the provider's discovery document."""

    authorization: str
    token: str


class OidcLogin:
    """The console's side of the code flow against the configured provider."""

    def __init__(self, verifier: OidcVerifier, settings: OidcConsoleSettings, *, now: Callable[[], datetime],
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.settings = settings
        self.display_name = settings.display_name
        self._verifier = verifier
        self._provider = verifier.settings
        self._now = now
        self._clock = clock
        self._pending: OrderedDict[str, PendingLogin] = OrderedDict()
        self._endpoints: Endpoints | None = None
        self._endpoints_at = 0.0
        context = ssl.create_default_context(cafile=str(self._provider.ca_file) if self._provider.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ssl = context
        self._timeout = aiohttp.ClientTimeout(total=self._provider.timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    # -- pending logins ------------------------------------------------------------------

    def begin(self, *, lang: str | None, presession: Session | None) -> tuple[str, PendingLogin]:
        """A new pending login with fresh state, nonce and PKCE verifier; returns (flow id, login)."""
        flow_id = secrets.token_urlsafe(32)
        pending = PendingLogin(secrets.token_urlsafe(32), secrets.token_urlsafe(32), generate_token(64),
                               self._clock(), lang, presession)  # fmt: skip
        self._pending[_key(flow_id)] = pending
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        return flow_id, pending

    def take(self, flow_id: str | None) -> PendingLogin | None:
        """SECURITY: the pending login leaves the store on first use, whatever the outcome (one callback each)."""
        if not flow_id or len(flow_id) > 100:
            return None
        pending = self._pending.pop(_key(flow_id), None)
        if pending is None or self._clock() - pending.created > FLOW_SECONDS:
            return None
        return pending

    # -- the provider --------------------------------------------------------------------

    async def endpoints(self) -> Endpoints:
        """Authorization and token endpoints from the discovery document, fetched again after ``refresh_seconds``."""
        now = self._clock()
        if self._endpoints is not None and now - self._endpoints_at < self._provider.refresh_seconds:
            return self._endpoints
        document = await self._json("GET", self._provider.issuer.rstrip("/") + "/.well-known/openid-configuration")
        # SECURITY: OIDC Discovery §4.3 — the document must name exactly the configured issuer.
        if document.get("issuer") != self._provider.issuer:
            raise AuthUnavailable("the discovery document names another issuer")
        found = []
        for name in ("authorization_endpoint", "token_endpoint"):
            url = document.get(name)
            if not isinstance(url, str) or urlparse(url).scheme != "https" or not urlparse(url).hostname:
                raise AuthUnavailable(f"the discovery document has no https {name}")
            found.append(url)
        if "S256" not in document.get("code_challenge_methods_supported", ["S256"]):
            raise AuthUnavailable("the provider does not support PKCE S256")
        self._endpoints, self._endpoints_at = Endpoints(*found), now
        return self._endpoints

    def authorization_url(self, endpoints: Endpoints, pending: PendingLogin) -> str:
        return prepare_grant_uri(
            endpoints.authorization, self.settings.client_id, "code", redirect_uri=self.settings.redirect_uri,
            scope=list(self.settings.scopes), state=pending.state, nonce=pending.nonce,
            code_challenge=create_s256_code_challenge(pending.verifier), code_challenge_method="S256",
        )  # fmt: skip

    async def finish(self, pending: PendingLogin | None, query: dict[str, str]) -> Principal:
        """Steps 1-5 of the module docstring; raises OidcLoginRefused, InvalidCredentials or AuthUnavailable."""
        if pending is None:
            raise OidcLoginRefused("no pending login for this browser (expired, used, or never started)")
        if not hmac.compare_digest(pending.state.encode(), query.get("state", "").encode("utf-8", "replace")):
            raise OidcLoginRefused("state does not match")
        if "error" in query:
            code = query["error"]
            raise OidcLoginRefused(f"the provider answered {code if _ERROR_CODE.fullmatch(code) else 'an error'}")
        code = query.get("code", "")
        if not code or len(code) > 2048:
            raise OidcLoginRefused("no authorization code")
        id_token = await self._exchange(await self.endpoints(), code, pending)
        return await self.verify_id_token(id_token, pending.nonce)

    async def _exchange(self, endpoints: Endpoints, code: str, pending: PendingLogin) -> str:
        body = prepare_token_request("authorization_code", code=code, redirect_uri=self.settings.redirect_uri,
                                     code_verifier=pending.verifier)  # fmt: skip
        # client_secret_basic: RFC 6749 §2.3.1 form-encodes both parts before Base64
        headers = {"Authorization": aiohttp.encode_basic_auth(_form(self.settings.client_id), _form(self.settings.client_secret)),
                   "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
        status, answer = await self._request("POST", endpoints.token, data=body, headers=headers)
        if status >= 500:
            raise AuthUnavailable(f"the token endpoint answered HTTP {status}")  # the provider's fault, not the person's
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            shown = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "no error code"
            raise OidcLoginRefused(f"the token endpoint refused the code (HTTP {status}, {shown})")
        id_token = answer.get("id_token") if isinstance(answer, dict) else None
        if not isinstance(id_token, str) or str(answer.get("token_type", "")).lower() != "bearer":
            raise OidcLoginRefused("the token response holds no ID token")
        return id_token

    async def verify_id_token(self, token: str, nonce: str) -> Principal:
        """OIDC Core §3.1.3.7 as listed in step 4, then the role mapping of step 5."""
        alg, kid = check_header(unverified_part(token, 0), self._provider.algorithms)
        key = await self._verifier.jwks.key(kid)
        if key.alg not in (None, alg):
            raise InvalidCredentials("the key is published for another algorithm")
        claims = verify_signature(token, key, alg).claims
        check_claims(claims, JWTClaimsRegistry(
            now=lambda: int(self._now().timestamp()), leeway=self._provider.leeway_seconds,
            iss={"essential": True, "value": self._provider.issuer},
            aud={"essential": True, "value": self.settings.client_id},
            exp={"essential": True}, iat={"essential": True}, nonce={"essential": True, "value": nonce},
        ))  # fmt: skip
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != self.settings.client_id:
            raise InvalidCredentials("invalid_claim azp")
        return self._verifier.principal_from(claims)

    async def _json(self, method: str, url: str) -> dict:
        status, document = await self._request(method, url)
        if status != 200 or not isinstance(document, dict):
            raise AuthUnavailable(f"the provider's discovery document is not available (HTTP {status})")
        return document

    async def _request(self, method: str, url: str, **kwargs) -> tuple[int, object]:
        """SECURITY: HTTPS against the configured trust anchor, no redirects, a timeout and a size cap."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(method, url, ssl=self._ssl, allow_redirects=False, **kwargs) as response:
                body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError, OSError) as error:
            raise AuthUnavailable(f"the OIDC provider cannot be reached ({type(error).__name__})") from None
        if len(body) > MAX_DOCUMENT_BYTES:
            raise AuthUnavailable("the provider's answer is larger than 64 KiB")
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._pending.clear()


def _key(flow_id: str) -> str:
    # Stored under a hash of the id, like sessions: a dump of the table holds no usable cookie.
    return hashlib.sha256(flow_id.encode("ascii", "replace")).hexdigest()


def _form(text: str) -> str:
    return quote(text, safe="")


def set_flow_cookie(response: web.StreamResponse, flow_id: str) -> None:
    response.set_cookie(FLOW_COOKIE, flow_id, path="/", secure=True, httponly=True, samesite="Lax", max_age=FLOW_SECONDS)


def clear_flow_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(FLOW_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
