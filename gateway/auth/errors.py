"""The authentication errors; each knows the HTTP status the edge answers with.

Messages name what failed ("expired", "unknown kid", "wrong issuer"), never a token, a
secret or a claim value a caller sent.
"""

from __future__ import annotations


class AuthError(Exception):
    """Base of the errors raised while authenticating a request."""

    status = 401
    error = "invalid_token"  # RFC 6750 §3.1 error code for the WWW-Authenticate header

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidCredentials(AuthError):
    """A credential was presented and is not valid: bad signature, expired, unknown, revoked client."""


class MissingCredentials(AuthError):
    """No credential at all (no bearer token, no pinned client certificate)."""

    error = ""  # RFC 6750 §3.1: no error code when the request carried no authentication


class AuthUnavailable(AuthError):
    """The credential cannot be checked right now (the OIDC provider's keys are unreachable)."""

    status = 503
    error = "temporarily_unavailable"


class AuthConfigError(ValueError):
    """An ``[[oauth_clients]]``, ``[oauth2]`` or ``[oidc]`` entry that cannot be used.

    The message names the source file, the key and the value, like ``gateway.config.ConfigError``
    (which the node configuration loader may raise in its place).
    """
