"""Authentication and scopes of the local listener (issue 7, item 1).

Who may call what, in one package:

* :class:`Principal` — a verified caller: kind (system | admin | auditor), name, bound
  participants (systems), scopes, and how it authenticated.
* :data:`ROUTE_SCOPES` — the one table from (method, route) to the required scope; anything
  not in it is denied.
* :func:`require_scopes` — the aiohttp middleware that authenticates every request (bearer
  token, or a pinned TLS client certificate) and checks the route's scope.
* :func:`token_app` — the OAuth2 client-credentials token endpoint (authlib), issuing
  short-lived ES256 JWTs signed with the node's TLS key (joserfc).
* :class:`OidcVerifier` — tokens of an external OpenID Connect provider, checked against its JWKS.
* :class:`StaticTokens` — the configured ``token_sha256`` entries, still accepted.
* :func:`parse_clients`, :func:`parse_oidc`, :func:`parse_oauth2` — the configuration sections.

Threat model and configuration: docs/authentication.md.
"""

from .authenticator import Authenticator
from .clients import (
    OAuth2Settings, OAuthClient, OidcRole, OidcSettings, default_audience, parse_clients, parse_oauth2, parse_oidc,
)  # fmt: skip
from .errors import AuthConfigError, AuthError, AuthUnavailable, InvalidCredentials, MissingCredentials
from .hashing import SecretHash, hash_secret, new_client_secret
from .middleware import PRINCIPAL, audit_authenticator, require_scopes
from .oidc import JwksCache, OidcVerifier
from .principal import KIND_SCOPES, AuthMethod, Principal, PrincipalKind, Scope
from .routes import PUBLIC, ROUTE_SCOPES
from .static import ClientCertificates, StaticTokens
from .token_endpoint import token_app
from .tokens import AccessTokenIssuer, AccessTokenVerifier, IssuedToken
from .wiring import NodeAuthentication

__all__ = [
    "PRINCIPAL", "PUBLIC", "ROUTE_SCOPES", "KIND_SCOPES",
    "AccessTokenIssuer", "AccessTokenVerifier", "AuthConfigError", "AuthError", "AuthMethod", "AuthUnavailable",
    "Authenticator", "ClientCertificates", "InvalidCredentials", "IssuedToken", "JwksCache", "MissingCredentials",
    "NodeAuthentication", "OAuth2Settings", "OAuthClient", "OidcRole", "OidcSettings", "OidcVerifier", "Principal",
    "PrincipalKind", "Scope", "SecretHash", "StaticTokens",
    "audit_authenticator", "default_audience", "hash_secret", "new_client_secret", "parse_clients", "parse_oauth2",
    "parse_oidc", "require_scopes", "token_app",
]  # fmt: skip
