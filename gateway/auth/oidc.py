"""Access tokens from an external OpenID Connect provider, verified against its JWKS.

The provider says who someone is and which role value they hold; this node decides what the
role may do (``[[oidc.roles]]``: kind, scopes, participants). Participants never come from the
token.

Threat model of the key set (:class:`JwksCache`):

* SECURITY: it is fetched only over HTTPS, verified against the system store or ``ca_file``,
  without redirects, with a timeout and a size cap.
* Rotation: the set is fetched again after ``refresh_seconds``, and early when a token names a
  ``kid`` the cache does not know — at most once per ``min_refresh_seconds``, so a flood of
  made-up kids cannot turn the node into a load generator against the provider. A fetched set
  replaces the old one whole: a key the provider withdrew is refused from then on.
* Outage: while the provider is unreachable the last good set serves up to
  ``max_stale_seconds``; beyond that tokens cannot be checked and the request gets 503 (fail
  closed, but not blamed on the caller).
* Symmetric (``oct``) keys and keys marked ``use: enc`` in the set are ignored; a ``kid`` that
  appears twice is dropped altogether rather than guessed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key
from joserfc.jwt import JWTClaimsRegistry

from .clients import OidcSettings
from .errors import AuthUnavailable, InvalidCredentials
from .principal import Principal
from .tokens import check_claims, check_header, unverified_part, verify_signature

log = logging.getLogger("drehscheibe.auth.oidc")

MAX_JWKS_BYTES = 256 * 1024


class JwksFetchError(Exception):
    """The key set could not be fetched or read; the message names the reason, not the body."""


def parse_jwks(document: object) -> dict[str, Key]:
    """The signing keys of a JWKS document by kid (see the module docstring for what is skipped)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksFetchError("not a JWKS document")
    keys: dict[str, Key] = {}
    duplicates: set[str] = set()
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") == "oct" or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        public = {k: v for k, v in entry.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth")}
        try:
            key = JWKRegistry.import_key(public)
        except (JoseError, ValueError, TypeError):
            continue
        if kid in keys:
            duplicates.add(kid)
        keys[kid] = key
    for kid in duplicates:
        del keys[kid]
    return keys


class JwksCache:
    """The provider's signing keys, fetched on demand and refreshed as described above."""

    def __init__(
        self,
        url: str,
        *,
        now: Callable[[], datetime],
        ssl_context: ssl.SSLContext | None = None,
        refresh_seconds: float = 3600.0,
        min_refresh_seconds: float = 60.0,
        max_stale_seconds: float = 86400.0,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self._now = now
        self._ssl = ssl_context or ssl.create_default_context()
        self._refresh = refresh_seconds
        self._min_refresh = min_refresh_seconds
        self._max_stale = max_stale_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._keys: dict[str, Key] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0  # attempts so far (for metrics and tests)

    @classmethod
    def for_settings(cls, settings: OidcSettings, *, now: Callable[[], datetime]) -> JwksCache:
        context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return cls(
            settings.jwks_uri, now=now, ssl_context=context, refresh_seconds=settings.refresh_seconds,
            min_refresh_seconds=settings.min_refresh_seconds, max_stale_seconds=settings.max_stale_seconds,
            timeout_seconds=settings.timeout_seconds,
        )  # fmt: skip

    async def key(self, kid: str) -> Key:
        """The key for ``kid``; raises InvalidCredentials (unknown kid) or AuthUnavailable (no usable set)."""
        now = self._now().timestamp()
        if self._fetched_at is None or now - self._fetched_at >= self._refresh:
            await self._fetch(now, reason="due")
        if self._fetched_at is None or now - self._fetched_at >= self._max_stale:
            raise AuthUnavailable("the OIDC provider's keys cannot be fetched")
        if kid not in self._keys:
            await self._fetch(now, reason="unknown kid")
        key = self._keys.get(kid)
        if key is None:
            raise InvalidCredentials("unknown kid")
        return key

    async def _fetch(self, now: float, *, reason: str) -> None:
        """Fetch the set, at most once per ``min_refresh_seconds`` and once for all waiting requests."""
        generation = self.fetches
        async with self._lock:
            if self.fetches != generation:
                return  # another request fetched while this one waited
            if self._attempted_at is not None and now - self._attempted_at < self._min_refresh:
                return
            self._attempted_at = now
            self.fetches += 1
            try:
                keys = await self._download()
            except JwksFetchError as error:
                log.warning("OIDC key set not refreshed (%s): %s; keeping %d cached keys", reason, error, len(self._keys))
                return
            self._keys, self._fetched_at = keys, now
            log.info("OIDC key set fetched (%s): %d signing keys", reason, len(keys))

    async def _download(self) -> dict[str, Key]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(self.url, ssl=self._ssl, allow_redirects=False) as response:
                if response.status != 200:
                    raise JwksFetchError(f"HTTP {response.status}")
                body = await response.content.read(MAX_JWKS_BYTES + 1)
        except (aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError, OSError) as error:
            raise JwksFetchError(type(error).__name__) from None
        if len(body) > MAX_JWKS_BYTES:
            raise JwksFetchError("key set larger than 256 KiB")
        try:
            document = json.loads(body)
        except ValueError:
            raise JwksFetchError("not JSON") from None
        return parse_jwks(document)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True)
class _Claim:
    path: tuple[str, ...]

    def read(self, claims: dict) -> object:
        value: object = claims
        for part in self.path:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value


class OidcVerifier:
    """Turns an access token of the configured provider into a :class:`Principal` (or raises)."""

    def __init__(self, settings: OidcSettings, *, now: Callable[[], datetime], jwks: JwksCache | None = None) -> None:
        self.settings = settings
        self.issuer = settings.issuer
        self.jwks = jwks or JwksCache.for_settings(settings, now=now)
        self._now = now
        self._roles = {role.value: role for role in settings.roles}
        self._role_claim = _Claim(tuple(settings.role_claim.split(".")))
        self._name_claim = _Claim(tuple(settings.name_claim.split(".")))

    async def verify(self, token: str) -> Principal:
        alg, kid = check_header(unverified_part(token, 0), self.settings.algorithms)
        key = await self.jwks.key(kid)
        if key.alg not in (None, alg):
            raise InvalidCredentials("the key is published for another algorithm")
        claims = verify_signature(token, key, alg).claims
        check_claims(claims, JWTClaimsRegistry(
            now=lambda: int(self._now().timestamp()), leeway=self.settings.leeway_seconds,
            iss={"essential": True, "value": self.settings.issuer},
            aud={"essential": True, "value": self.settings.audience}, exp={"essential": True},
        ))  # fmt: skip
        return self.principal_from(claims)

    def principal_from(self, claims: dict) -> Principal:
        """The principal that verified claims name (name claim, role claim → ``[[oidc.roles]]``); also the console's ID tokens."""
        name = self._name_claim.read(claims)
        if not isinstance(name, str) or not name:
            raise InvalidCredentials(f"no {self.settings.name_claim} claim")
        return self._role(claims).principal(name)

    def _role(self, claims: dict):
        raw = self._role_claim.read(claims)
        values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        matched = {self._roles[v] for v in values if isinstance(v, str) and v in self._roles}
        if not matched:
            raise InvalidCredentials("the token holds no role mapped on this node")
        if len(matched) > 1:
            # SECURITY: one principal, one role; combining roles would be an order-dependent permit.
            raise InvalidCredentials("the token holds several mapped roles")
        return matched.pop()

    async def aclose(self) -> None:
        await self.jwks.aclose()
