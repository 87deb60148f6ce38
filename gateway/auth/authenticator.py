"""One authenticator for the local listener: which verifier a credential goes to, decided explicitly.

* A bearer token configured as a static token is that static principal.
* Otherwise a JWT goes by its (unverified) ``iss`` to exactly one verifier: the node's own
  access tokens or the OIDC provider's. The verifier checks ``iss`` again after the signature;
  the unverified value only chooses who looks, so no token is tried against several key sets.
* A request without a bearer token may present a pinned TLS client certificate (systems only).

Anything else is refused. Verifiers are disjoint, so the order of these checks decides nothing.
"""

from __future__ import annotations

import re

from .errors import InvalidCredentials, MissingCredentials
from .oidc import OidcVerifier
from .principal import Principal
from .static import ClientCertificates, StaticTokens
from .tokens import MAX_TOKEN_BYTES, AccessTokenVerifier, unverified_part


# RFC 6750 §2.1 b64token. SECURITY: checked before anything else touches the token, so a header
# with bytes that are not ASCII (aiohttp hands them over surrogate-escaped) is a plain 401, never
# an encoding error deeper down.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class Authenticator:
    """Resolves credentials to principals; raises :class:`~gateway.auth.errors.AuthError` otherwise."""

    def __init__(
        self,
        *,
        static: StaticTokens | None = None,
        access_tokens: AccessTokenVerifier | None = None,
        oidc: OidcVerifier | None = None,
        certificates: ClientCertificates | None = None,
    ) -> None:
        if access_tokens and oidc and access_tokens.issuer == oidc.issuer:
            raise ValueError("the OIDC issuer must differ from the node's own token issuer")
        self.static = static
        self.access_tokens = access_tokens
        self.oidc = oidc
        self.certificates = certificates

    async def from_bearer(self, token: str) -> Principal:
        if not token:
            raise MissingCredentials("no bearer token")
        if len(token) > MAX_TOKEN_BYTES or not _B64TOKEN.fullmatch(token):
            raise InvalidCredentials("malformed bearer token")
        if self.static:
            principal = self.static.resolve(token)
            if principal is not None:
                return principal
        if token.count(".") != 2:
            raise InvalidCredentials("unknown token")
        issuer = unverified_part(token, 1).get("iss")
        if self.access_tokens is not None and issuer == self.access_tokens.issuer:
            return self.access_tokens.verify(token)
        if self.oidc is not None and issuer == self.oidc.issuer:
            return await self.oidc.verify(token)
        raise InvalidCredentials("unknown issuer")

    async def from_certificate(self, certificate_der: bytes | None) -> Principal:
        if not certificate_der:
            raise MissingCredentials("no bearer token and no client certificate")
        if not self.certificates:
            raise MissingCredentials("no bearer token (client certificates are not configured)")
        return self.certificates.resolve(certificate_der)

    async def aclose(self) -> None:
        if self.oidc is not None:
            await self.oidc.aclose()
