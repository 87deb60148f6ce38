"""Everything the local listener needs, built once from the node's configuration.

``api.local_api`` builds one :class:`NodeAuthentication`, installs :meth:`middleware` on the
listener's root application, mounts :meth:`token_app` at ``/oauth2`` and appends
:meth:`cleanup_ctx` (which closes the OIDC key fetcher). docs/authentication.md shows the code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from .authenticator import Authenticator
from .clients import OAuth2Settings, OAuthClient, OidcSettings, default_audience
from .middleware import SessionAuthentication, require_scopes
from .oidc import OidcVerifier
from .static import ClientCertificates, StaticTokens
from .token_endpoint import token_app
from .tokens import AccessTokenIssuer, AccessTokenVerifier

if TYPE_CHECKING:
    from ..config import LocalSystem, Operator


@dataclass(frozen=True)
class NodeAuthentication:
    authenticator: Authenticator
    issuer: AccessTokenIssuer
    clients: tuple[OAuthClient, ...]

    @classmethod
    def create(
        cls,
        *,
        node_id: str,
        signing_key: ec.EllipticCurvePrivateKey,
        now: Callable[[], datetime],
        local_systems: Iterable[LocalSystem] = (),
        operators: Iterable[Operator] = (),
        clients: Iterable[OAuthClient] = (),
        oauth2: OAuth2Settings | None = None,
        oidc: OidcSettings | None = None,
        previous_keys: Sequence[ec.EllipticCurvePublicKey] = (),
    ) -> NodeAuthentication:
        """``signing_key``: the node's TLS key (ES256, P-256); ``previous_keys``: still-accepted older ones."""
        clients = tuple(clients)
        settings = oauth2 or OAuth2Settings(audience=default_audience(node_id))
        issuer = AccessTokenIssuer(issuer=node_id, audience=settings.audience, signing_key=signing_key, now=now,
                                   lifetime_seconds=settings.lifetime_seconds)  # fmt: skip
        verifier = AccessTokenVerifier(issuer=node_id, audience=settings.audience, clients=clients, now=now,
                                       keys=[signing_key.public_key(), *previous_keys])  # fmt: skip
        authenticator = Authenticator(
            static=StaticTokens(local_systems, operators),
            access_tokens=verifier,
            oidc=OidcVerifier(oidc, now=now) if oidc is not None else None,
            certificates=ClientCertificates(clients),
        )
        return cls(authenticator, issuer, clients)

    def middleware(self, sessions: SessionAuthentication | None = None):
        return require_scopes(self.authenticator, sessions=sessions)

    def token_app(self) -> web.Application:
        return token_app(self.issuer, self.clients)

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        yield
        await self.authenticator.aclose()
