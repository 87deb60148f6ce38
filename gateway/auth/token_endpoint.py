"""The OAuth2 token endpoint (RFC 6749 §4.4, client credentials) as an aiohttp sub-application.

Mounted at ``/oauth2``: ``POST /oauth2/token``, form-encoded, the client authenticating with
HTTP Basic (``client_secret_basic``) or in the body (``client_secret_post``). Library: authlib's
RFC 6749 server (grant dispatch, client-authentication methods, error bodies and headers)
with a thin aiohttp adapter, because authlib ships no aiohttp integration; the tokens themselves
are signed by :class:`~gateway.auth.tokens.AccessTokenIssuer` (joserfc).

Threat model:

* SECURITY: secrets are checked against scrypt hashes in a small thread pool of this app (two
  threads), so guessing costs the attacker memory-hard work, cannot block the event loop, and
  cannot take more than two hashes' worth of memory at once; beyond 32 waiting requests the
  endpoint answers 503 at once.
* SECURITY: an unknown client_id costs the same hash as a wrong secret and gets the same
  answer, so the endpoint does not tell which client IDs exist.
* RFC 6749 §3.2 / §2.3: parameters may not repeat; only one client-authentication method per
  request; TLS is required, judged by the connection itself (never by the Host header).
* Responses carry ``Cache-Control: no-store`` and ``Pragma: no-cache``; nothing is stored:
  tokens are short-lived JWTs, and removing a client from the configuration invalidates its
  tokens at the resource (tokens.py checks the client on every request).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import logging
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from aiohttp import web
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError, InvalidRequestError, InvalidScopeError, OAuth2Error
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant

from .clients import OAuthClient
from .errors import InvalidCredentials
from .hashing import DEFAULT_LOG2_N, SecretHash, hash_secret
from .principal import Scope, scope_string
from .tokens import AccessTokenIssuer

log = logging.getLogger("drehscheibe.auth.token")

MAX_FORM_BYTES = 4096
MAX_WAITING = 32  # token requests queued for the hashing threads before new ones get 503
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
_SINGLE = ("grant_type", "scope", "client_id", "client_secret")


class _Client(ClientMixin):
    """authlib's view of one configured client."""

    def __init__(self, client: OAuthClient | None, client_id: str, decoy: SecretHash) -> None:
        self.client = client
        self.client_id = client_id
        self._decoy = decoy

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self.client.secret_hash if self.client is not None else None
        if stored is None:
            # An unknown client, or one with a certificate only: the same hashing work as a wrong
            # secret (against a hash of a random, forgotten secret), then refusal.
            with contextlib.suppress(InvalidCredentials):
                self._decoy.verify(client_secret)
            return False
        try:
            stored.verify(client_secret)
        except InvalidCredentials:
            return False
        return True

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        return self.client is not None and grant_type == ClientCredentialsGrant.GRANT_TYPE

    def get_allowed_scope(self, scope: str) -> str:
        assert self.client is not None
        return scope_string(tuple(s for s in self.client.scopes if s.value in (scope or "").split()))


class _ClientCredentials(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

    def validate_requested_scope(self) -> None:
        """Every requested scope must be the client's; no scope asks for all of them (RFC 6749 §3.3)."""
        client: OAuthClient = self.request.client.client
        requested = (self.request.payload.scope or "").split()
        known = {scope.value for scope in client.scopes}
        if any(name not in known for name in requested):
            raise InvalidScopeError(f"allowed scopes for this client: {scope_string(client.scopes)}")


class _Payload(OAuth2Payload):
    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._data = dict(fields)
        self._datalist: dict[str, list[str]] = {}
        for key, value in fields:
            self._datalist.setdefault(key, []).append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


class _Request(OAuth2Request):
    def __init__(self, url: str, headers, fields: list[tuple[str, str]]) -> None:
        super().__init__("POST", url, headers=headers)
        self.payload = _Payload(fields)

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data

    @property
    def args(self) -> dict[str, str]:
        return {}


class _Server(AuthorizationServer):
    """authlib's authorization server over the configured clients, issuing the node's JWTs."""

    def __init__(self, issuer: AccessTokenIssuer, clients: Iterable[OAuthClient]) -> None:
        super().__init__(scopes_supported=[scope.value for scope in Scope])
        self._clients = {client.client_id: client for client in clients}
        self._issuer = issuer
        # The decoy costs as much as the dearest configured hash; its secret is forgotten at once.
        costs = [c.secret_hash.log2_n for c in self._clients.values() if c.secret_hash is not None]
        self._decoy = hash_secret(secrets.token_urlsafe(32), log2_n=max(costs, default=DEFAULT_LOG2_N))
        self.register_grant(_ClientCredentials)
        self.register_token_generator("default", self._generate)

    def query_client(self, client_id: str) -> _Client:
        return _Client(self._clients.get(client_id), client_id, self._decoy)

    def save_token(self, token: dict, request: OAuth2Request) -> None:
        """Nothing to store: the token is a self-contained, short-lived JWT."""

    def send_signal(self, name: str, *args, **kwargs) -> None:
        """authlib's framework hook; nothing listens."""

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request  # built by the aiohttp handler, which has already read the body

    def handle_response(self, status: int, body, headers) -> web.Response:
        return web.Response(status=status, text=json.dumps(body), headers=dict(headers))

    def _generate(self, grant_type, client: _Client, user=None, scope=None, expires_in=None, include_refresh_token=False) -> dict:
        assert client.client is not None
        requested = Scope.parse_list(scope) if scope else tuple(client.client.scopes)
        issued = self._issuer.issue(client.client, requested)
        log.info("access token issued to %s (%s)", client.client_id, scope_string(issued.scopes))
        return {"access_token": issued.access_token, "token_type": "Bearer", "expires_in": issued.expires_in,
                "scope": scope_string(issued.scopes)}  # fmt: skip

    def respond(self, request: _Request) -> web.Response:
        """Runs in the hashing thread: authlib is synchronous and the secret check is slow on purpose."""
        try:
            self._check_request(request)
        except OAuth2Error as error:
            return self.handle_error_response(request, error)
        response = self.create_token_response(request)
        if response.status != 200:
            log.info("token request refused: HTTP %d", response.status)
        return response

    @staticmethod
    def _check_request(request: _Request) -> None:
        repeated = [name for name in _SINGLE if len(request.payload.datalist.get(name, [])) > 1]
        if repeated:
            raise InvalidRequestError(f"repeated parameter: {repeated[0]}")
        if not request.payload.data.get("grant_type"):
            raise InvalidRequestError("missing grant_type")
        basic = request.headers.get("Authorization", "").lower().startswith("basic ")
        if basic and "client_secret" in request.payload.data:
            raise InvalidRequestError("use one client authentication method: HTTP Basic or the request body")


class _NoIssuedTokens(logging.Filter):
    """Drops authlib's debug line that prints every issued token ("Issue token {...}") in full."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_AUTHLIB_GRANT_LOG = logging.getLogger("authlib.oauth2.rfc6749.grants.client_credentials")
_TOKEN_FILTER = _NoIssuedTokens()


@dataclass
class _Hashing:
    """The secret-checking threads and how many requests wait for them."""

    threads: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="oauth2-hash"))
    waiting: int = 0  # touched on the event loop only


SERVER = web.AppKey("oauth2_server", _Server)
HASHING = web.AppKey("oauth2_hashing", _Hashing)


async def token(request: web.Request) -> web.Response:
    """POST /token — grant_type=client_credentials, optional scope; answers an access token or an RFC 6749 error."""
    server = request.app[SERVER]
    if not request.secure:
        # SECURITY: TLS is judged by the connection. authlib's own check reads the URL, whose host
        # comes from the client's Host header, and lets http://localhost through.
        return server.handle_error_response(None, InsecureTransportError())
    if request.content_type != "application/x-www-form-urlencoded":
        return server.handle_error_response(None, InvalidRequestError("expected application/x-www-form-urlencoded"))
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        return server.handle_error_response(None, InvalidRequestError("request body too large"))
    body = await request.content.read(MAX_FORM_BYTES + 1)
    if len(body) > MAX_FORM_BYTES:
        return server.handle_error_response(None, InvalidRequestError("request body too large"))
    try:
        fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=16)
        oauth_request = _Request(str(request.url), request.headers, fields)
    except InsecureTransportError as error:
        return server.handle_error_response(None, error)
    except (UnicodeDecodeError, ValueError):
        return server.handle_error_response(None, InvalidRequestError("malformed form body"))
    hashing = request.app[HASHING]
    if hashing.waiting >= MAX_WAITING:
        # SECURITY: a flood of token requests is turned away here instead of queueing without bound.
        return web.json_response({"error": "temporarily_unavailable"}, status=503, headers={"Retry-After": "1"})
    hashing.waiting += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(hashing.threads, server.respond, oauth_request)
    finally:
        hashing.waiting -= 1


async def _hashing_threads(app: web.Application) -> AsyncIterator[None]:
    """The secret-checking threads (started on first use) end with the application."""
    yield
    app[HASHING].threads.shutdown(wait=True)


def token_app(issuer: AccessTokenIssuer, clients: Iterable[OAuthClient]) -> web.Application:
    """The token endpoint; mount it with ``app.add_subapp("/oauth2", token_app(...))``."""
    # SECURITY: a bearer token in a log line is a credential in the log; authlib logs them at DEBUG.
    if _TOKEN_FILTER not in _AUTHLIB_GRANT_LOG.filters:
        _AUTHLIB_GRANT_LOG.addFilter(_TOKEN_FILTER)
    app = web.Application()
    app[SERVER] = _Server(issuer, clients)
    app[HASHING] = _Hashing()
    app.cleanup_ctx.append(_hashing_threads)
    app.router.add_post("/token", token)
    return app
