"""A minimal but real OpenID Connect provider for tests, served over HTTPS on loopback.

It does what a provider such as Keycloak does for the code flow, and checks what a provider
must check, so a node that skips a step fails against it:

* ``/.well-known/openid-configuration`` — discovery (issuer, endpoints, ``S256``);
* ``/auth`` — the authorization endpoint: checks client, redirect URI, ``response_type=code``,
  the ``openid`` scope and an S256 ``code_challenge``, "logs in" :attr:`Provider.user` and
  redirects back with a one-time code and the ``state``; with :attr:`Provider.interactive` it
  first shows a login page whose form (POST ``/auth``) does that, as a real provider would;
* ``/token`` — the token endpoint: client_secret_basic, the code once only, the same redirect
  URI, and ``BASE64URL(SHA256(code_verifier)) == code_challenge`` (RFC 7636 §4.6); answers
  an ID token signed with :attr:`Provider.signing_key`;
* ``/certs`` — the JWKS (:attr:`Provider.keys`, which a test may change to rotate keys).

A test tampers with the ID token through :attr:`Provider.id_token_claims` (claims merged over
the real ones; a value of None drops the claim) and :attr:`Provider.signing_key`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import unquote, urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey

PATH = "/realms/verwaltung"


@dataclass
class Grant:
    """What the provider remembers about one issued code."""

    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    user: dict


@dataclass
class Provider:
    client_id: str
    client_secret: str
    redirect_uri: str
    signing_key: RSAKey
    now: Callable[[], datetime]
    keys: list = field(default_factory=list)  # published in the JWKS; by default [signing_key]
    user: dict = field(default_factory=lambda: {"sub": "5c1e-77", "preferred_username": "m.muster",
                                                "realm_access": {"roles": ["drehscheibe-auditor"]}})  # fmt: skip
    id_token_claims: dict = field(default_factory=dict)
    discovery_issuer: str | None = None  # None: the real issuer
    interactive: bool = False  # show a login form (for a browser) instead of redirecting at once
    base: str = ""
    grants: dict[str, Grant] = field(default_factory=dict)
    used_codes: set[str] = field(default_factory=set)
    token_refusals: list[str] = field(default_factory=list)  # "error: why" of every refused token request
    authorize_requests: list[dict] = field(default_factory=list)
    jwks_hits: int = 0

    @property
    def issuer(self) -> str:
        return self.base + PATH

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(f"{PATH}/.well-known/openid-configuration", self.discovery)
        app.router.add_get(f"{PATH}/auth", self.authorize)
        app.router.add_post(f"{PATH}/auth", self.authorize)
        app.router.add_post(f"{PATH}/token", self.token)
        app.router.add_get(f"{PATH}/certs", self.jwks)
        return app

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.discovery_issuer or self.issuer, "authorization_endpoint": f"{self.issuer}/auth",
            "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/certs",
            "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"], "subject_types_supported": ["public"],
        })  # fmt: skip

    async def authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query) if request.method == "GET" else {k: str(v) for k, v in (await request.post()).items()}
        if self.interactive and request.method == "GET":
            fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in query.items())
            return web.Response(content_type="text/html", text=f'<!doctype html><html lang="de"><title>IdP</title><form method="post">'
                                f'{fields}<button id="idp-login" type="submit">Anmelden</button></form></html>')  # fmt: skip
        self.authorize_requests.append(query)
        if query.get("client_id") != self.client_id or query.get("redirect_uri") != self.redirect_uri:
            return web.Response(status=400, text="unknown client or redirect_uri")  # never redirect to an unknown URI
        problem = None
        if query.get("response_type") != "code":
            problem = "unsupported_response_type"
        elif "openid" not in query.get("scope", "").split():
            problem = "invalid_scope"
        elif query.get("code_challenge_method") != "S256" or len(query.get("code_challenge", "")) != 43:
            problem = "invalid_request"
        back = {"state": query["state"]} if "state" in query else {}
        if problem:
            raise web.HTTPFound(f"{self.redirect_uri}?{urlencode({'error': problem, **back})}")
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(self.client_id, self.redirect_uri, query["code_challenge"], query.get("nonce"), dict(self.user))
        raise web.HTTPFound(f"{self.redirect_uri}?{urlencode({'code': code, **back})}")

    def _refuse(self, error: str, why: str, status: int = 400) -> web.Response:
        self.token_refusals.append(f"{error}: {why}")
        return web.json_response({"error": error}, status=status)

    async def token(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        try:
            pair = base64.b64decode(authorization.removeprefix("Basic ")).decode()
            client_id, secret = (unquote(part) for part in pair.split(":", 1))
        except (ValueError, UnicodeDecodeError):
            return self._refuse("invalid_client", "no basic authentication", 401)
        if (client_id, secret) != (self.client_id, self.client_secret):
            return self._refuse("invalid_client", "wrong client id or secret", 401)
        form = await request.post()
        if form.get("grant_type") != "authorization_code":
            return self._refuse("unsupported_grant_type", str(form.get("grant_type")))
        code = str(form.get("code", ""))
        if code in self.used_codes:
            return self._refuse("invalid_grant", "code used before")  # RFC 6749 §4.1.2: a code is used once
        grant = self.grants.pop(code, None)
        if grant is None or grant.client_id != client_id or form.get("redirect_uri") != grant.redirect_uri:
            return self._refuse("invalid_grant", "unknown code or another redirect_uri")
        self.used_codes.add(code)
        verifier = str(form.get("code_verifier", ""))
        expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not verifier or expected != grant.challenge:
            return self._refuse("invalid_grant", "code_verifier does not match the challenge")  # RFC 7636 §4.6
        now = int(self.now().timestamp())
        claims = {"iss": self.issuer, "aud": client_id, "azp": client_id, "iat": now, "exp": now + 300,
                  "auth_time": now, "nonce": grant.nonce, **grant.user} | self.id_token_claims  # fmt: skip
        header = {"alg": "RS256", "kid": self.signing_key.kid, "typ": "JWT"}
        id_token = jwt.encode(header, {k: v for k, v in claims.items() if v is not None}, self.signing_key,
                              algorithms=["RS256"], default_type=None)  # fmt: skip
        return web.json_response({"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                                  "expires_in": 300, "id_token": id_token})  # fmt: skip

    async def jwks(self, request: web.Request) -> web.Response:
        self.jwks_hits += 1
        keys = self.keys or [self.signing_key]
        return web.json_response({"keys": [k.as_dict(private=False) for k in keys]})
