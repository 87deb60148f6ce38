"""The node's own access tokens: short-lived JWTs (RFC 9068 profile) signed ES256 with the node's TLS key.

Library: joserfc, the project's JOSE library (docs/MEASURED: maintained successor of
authlib.jose); it needs an explicit algorithm list, knows key types, and its claims registry
takes an injectable ``now``, so expiry is tested without sleeping.

What a verifier MUST check, and :class:`AccessTokenVerifier` does, in this order:

1. the compact form and its size (at most :data:`MAX_TOKEN_BYTES`);
2. the header: ``alg`` exactly ES256 (so ``none``, HS256 keyed with the public key, RS256 are
   refused before any key is touched), ``typ`` ``at+jwt`` (a receipt or directory signed with
   the same key is not a token), a ``kid`` naming one of the node's keys, and no key-bearing
   header (``jwk``, ``jku``, ``x5u``, ``x5c``): keys come from configuration, never from the token;
3. the signature, with that key only;
4. the claims: ``iss`` = node id, ``aud`` = the configured audience, ``exp`` not passed and
   ``iat`` not in the future (both against the injected clock), ``sub`` = ``client_id``, ``jti``;
5. the client still exists; its *current* participants and scopes bound the principal, so removing
   a client or a participant takes effect at once, even for tokens already issued.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError
from joserfc.jwk import ECKey, Key
from joserfc.jwt import JWTClaimsRegistry

from .clients import OAuthClient
from .errors import InvalidCredentials
from .principal import AuthMethod, Principal, Scope, scope_string

ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068 §2.1
SIGNING_ALGORITHM = "ES256"
MAX_TOKEN_BYTES = 8 * 1024
# SECURITY: a token never chooses its own verification key.
KEY_BEARING_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c"})


def unverified_part(token: str, index: int) -> dict:
    """Header (0) or claims (1) of a compact JWS, *not verified*: for dispatch and header checks only."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN_BYTES:
        raise InvalidCredentials("not a compact JWT")
    try:
        value = json.loads(base64.urlsafe_b64decode(parts[index] + "=" * (-len(parts[index]) % 4)))
    except (ValueError, TypeError):
        raise InvalidCredentials("malformed JWT") from None
    if not isinstance(value, dict):
        raise InvalidCredentials("malformed JWT")
    return value


def check_header(header: dict, algorithms: Iterable[str], *, typ: str | None = None) -> tuple[str, str]:
    """Refuse what no key lookup should even see; return (alg, kid)."""
    alg = header.get("alg")
    if alg not in set(algorithms):
        raise InvalidCredentials("signature algorithm not accepted")
    if KEY_BEARING_HEADERS & header.keys():
        raise InvalidCredentials("key-bearing JWT header not accepted")
    if typ is not None and str(header.get("typ", "")).lower() not in (typ, f"application/{typ}"):
        raise InvalidCredentials("not an access token (typ)")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidCredentials("no kid")
    return alg, kid


def verify_signature(token: str, key: Key, alg: str) -> jwt.Token:
    """The signature with exactly this key and algorithm; raise on anything else."""
    try:
        return jwt.decode(token, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError):
        raise InvalidCredentials("bad signature") from None


def check_claims(claims: dict, registry: JWTClaimsRegistry) -> None:
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise InvalidCredentials("expired") from None
    except ClaimError as error:
        # The claim's name only; its value is not echoed.
        raise InvalidCredentials(f"{error.error} {error.claim}") from None


def _node_key(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> ECKey:
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("ES256 needs a P-256 key; the node's TLS key has another curve")
    jwk = ECKey.import_key(key)
    jwk.ensure_kid()  # RFC 7638 thumbprint
    return jwk


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scopes: frozenset[Scope]


class AccessTokenIssuer:
    """Signs access tokens for authenticated clients (used by the token endpoint only)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        signing_key: ec.EllipticCurvePrivateKey,
        now: Callable[[], datetime],
        lifetime_seconds: int = 300,
        token_id: Callable[[], str] = lambda: secrets.token_urlsafe(18),
    ) -> None:
        if lifetime_seconds <= 0:
            raise ValueError("lifetime_seconds must be positive")
        self.issuer = issuer
        self.audience = audience
        self.lifetime_seconds = lifetime_seconds
        self._key = _node_key(signing_key)
        self._now = now
        self._token_id = token_id

    @property
    def kid(self) -> str:
        return self._key.kid or ""

    def issue(self, client: OAuthClient, scopes: Iterable[Scope]) -> IssuedToken:
        granted = frozenset(scopes) & client.scopes
        issued_at = int(self._now().timestamp())
        claims = {
            "iss": self.issuer,
            "sub": client.client_id,
            "client_id": client.client_id,
            "aud": self.audience,
            "scope": scope_string(granted),
            "iat": issued_at,
            "exp": issued_at + self.lifetime_seconds,
            "jti": self._token_id(),
        }
        header = {"alg": SIGNING_ALGORITHM, "typ": ACCESS_TOKEN_TYPE, "kid": self.kid}
        token = jwt.encode(header, claims, self._key, algorithms=[SIGNING_ALGORITHM], default_type=None)
        return IssuedToken(token, self.lifetime_seconds, granted)


class AccessTokenVerifier:
    """Turns one of the node's own access tokens into a :class:`Principal` (or raises)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: Sequence[ec.EllipticCurvePublicKey],
        clients: Iterable[OAuthClient],
        now: Callable[[], datetime],
        leeway_seconds: int = 0,
    ) -> None:
        """``keys``: the node's current public key first, then older ones still accepted (rotation)."""
        if not keys:
            raise ValueError("at least one verification key is needed")
        self.issuer = issuer
        self.audience = audience
        self._keys = {jwk.kid: jwk for jwk in map(_node_key, keys)}
        self._clients = {client.client_id: client for client in clients}
        self._now = now
        self._leeway = leeway_seconds

    def verify(self, token: str) -> Principal:
        _, kid = check_header(unverified_part(token, 0), [SIGNING_ALGORITHM], typ=ACCESS_TOKEN_TYPE)
        key = self._keys.get(kid)
        if key is None:
            raise InvalidCredentials("unknown kid")
        claims = verify_signature(token, key, SIGNING_ALGORITHM).claims
        check_claims(claims, JWTClaimsRegistry(
            now=lambda: int(self._now().timestamp()), leeway=self._leeway,
            iss={"essential": True, "value": self.issuer}, aud={"essential": True, "value": self.audience},
            sub={"essential": True}, client_id={"essential": True}, exp={"essential": True},
            iat={"essential": True}, jti={"essential": True},
        ))  # fmt: skip
        if claims["sub"] != claims["client_id"]:
            raise InvalidCredentials("sub and client_id differ")
        client = self._clients.get(claims["sub"])
        if client is None:
            raise InvalidCredentials("client no longer configured")
        try:
            scopes = Scope.parse_list(claims.get("scope"))
        except (ValueError, AttributeError):
            raise InvalidCredentials("unknown scope in token") from None
        return client.principal(scopes, AuthMethod.OAUTH2)
