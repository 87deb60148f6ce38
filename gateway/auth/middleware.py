"""The aiohttp middleware that authenticates every request of the local listener and checks its scope.

Install it once, on the listener's root application; it then covers every sub-application
(``/api/v1``, ``/admin/v1``, ``/audit/v1``, ``/oauth2``) and every unknown path:

1. The route's rule is looked up in the route table (routes.py). PUBLIC routes go straight on.
2. The caller is authenticated: ``Authorization: Bearer …`` if present, else the TLS client
   certificate (pinned local systems only). Failure: 401 with ``WWW-Authenticate: Bearer``
   (RFC 6750 §3), or 503 when the OIDC provider's keys cannot be had.
3. A route absent from the table: 403 for everyone. A principal without the route's scope:
   403 ``insufficient_scope`` naming the scope needed.
4. SECURITY: on routes with a ``{participant}`` segment, a system not bound to that participant
   gets 404, as if the participant did not exist (the handlers check this too; this is the
   second lock on the same door).
5. ``request[PRINCIPAL]`` is set and the handler runs.

Console pages (``sessions``, see gateway/console) take the same table and the same checks, but
the credential is the server-side session behind the console's cookie, never a bearer token or
a certificate; a missing session answers with the console's login redirect, a missing scope
with its 403 page.

Log lines name the route pattern and the reason, never a token, a path value or a claim.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from ..ids import InvalidIdentifier, ParticipantId
from .authenticator import Authenticator
from .errors import AuthError
from .principal import Principal, PrincipalKind, Scope
from .routes import PUBLIC, ROUTE_SCOPES, Rule, check_table, required

log = logging.getLogger("drehscheibe.auth")

PRINCIPAL = web.RequestKey("principal", Principal)


@dataclass(frozen=True)
class _Verified:
    bearer: str
    principal: Principal


# The credential verified for the request being handled (one task per request in aiohttp), so a
# sub-application with its own token check (the auditor API) can reuse the verdict.
_VERIFIED: contextvars.ContextVar[_Verified | None] = contextvars.ContextVar("drehscheibe_auth_verified", default=None)


def _quoted(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in '"\\')


def _challenge(realm: str, error: AuthError | None = None, scope: Scope | None = None) -> str:
    parts = [f'Bearer realm="{realm}"']
    if error is not None and error.error:
        parts.append(f'error="{error.error}", error_description="{_quoted(error.reason)}"')
    if scope is not None:
        parts.append(f'error="insufficient_scope", scope="{scope.value}"')
    return ", ".join(parts)


def _bearer(request: web.Request) -> str | None:
    """The bearer token, '' for a malformed Authorization header, None when there is none."""
    headers = request.headers.getall("Authorization", [])
    if not headers:
        return None
    if len(headers) > 1:
        return ""
    scheme, _, token = headers[0].partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _peer_certificate(request: web.Request) -> bytes | None:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


def _bound_elsewhere(request: web.Request, principal: Principal) -> bool:
    raw = request.match_info.get("participant")
    if raw is None or principal.kind is not PrincipalKind.SYSTEM:
        return False
    try:
        participant = ParticipantId.parse(raw)
    except InvalidIdentifier:
        return False  # the handler answers 400 for a malformed ID
    return not principal.may_act_for(participant)


class SessionAuthentication(Protocol):
    """What the console hands the middleware: which routes are its pages, and who a session is."""

    def covers(self, pattern: str) -> bool: ...
    def principal(self, request: web.Request) -> Principal | None: ...
    def unauthenticated(self, request: web.Request) -> web.StreamResponse: ...
    def forbidden(self, request: web.Request, principal: Principal) -> web.StreamResponse: ...


def require_scopes(
    authenticator: Authenticator,
    *,
    route_scopes: Mapping[tuple[str, str], Rule] = ROUTE_SCOPES,
    realm: str = "drehscheibe",
    sessions: SessionAuthentication | None = None,
):
    """The middleware (a factory, options checked here, not at the first request)."""
    if not all(callable(getattr(authenticator, name, None)) for name in ("from_bearer", "from_certificate")):
        raise TypeError("authenticator must provide from_bearer and from_certificate")
    check_table(route_scopes)
    if not realm or '"' in realm:
        raise ValueError("realm must be a non-empty string without quotes")
    table = dict(route_scopes)

    @web.middleware
    async def middleware(request: web.Request, handler):
        resource = request.match_info.route.resource
        pattern = resource.canonical if resource is not None else None
        rule = required(table, request.method, pattern)
        if rule is PUBLIC:
            return await handler(request)
        if sessions is not None and pattern is not None and sessions.covers(pattern):
            # SECURITY: console pages accept the session cookie only (CSRF-protected forms), so a
            # bearer token or a certificate never opens them, and the cookie never opens the APIs.
            principal = sessions.principal(request)
            if principal is None:
                return sessions.unauthenticated(request)
            if rule is None or not principal.has(rule):
                log.info("refused %s %s for %s: no session scope grants this route", request.method, pattern, principal.name)
                return sessions.forbidden(request, principal)
            if _bound_elsewhere(request, principal):
                raise web.HTTPNotFound(text="no such participant for this system")
            request[PRINCIPAL] = principal
            return await handler(request)
        bearer = _bearer(request)
        try:
            if bearer is None:
                principal = await authenticator.from_certificate(_peer_certificate(request))
            else:
                principal = await authenticator.from_bearer(bearer)
        except AuthError as error:
            log.info("refused %s %s: %s", request.method, pattern or "(unknown route)", error.reason)
            headers = {"WWW-Authenticate": _challenge(realm, error)} if error.status == 401 else {"Retry-After": "30"}
            return web.json_response({"error": error.error or "unauthorized", "error_description": error.reason},
                                     status=error.status, headers=headers)  # fmt: skip
        if rule is None:
            log.info("refused %s %s for %s: no scope grants this route", request.method, pattern or "(unknown route)",
                     principal.name)  # fmt: skip
            return web.json_response({"error": "access_denied", "error_description": "no scope grants this route"}, status=403)
        if not principal.has(rule):
            log.info("refused %s %s for %s: scope %s needed", request.method, pattern, principal.name, rule.value)
            return web.json_response(
                {"error": "insufficient_scope", "error_description": f"this route needs the scope {rule.value}"},
                status=403, headers={"WWW-Authenticate": _challenge(realm, scope=rule)},
            )  # fmt: skip
        if _bound_elsewhere(request, principal):
            raise web.HTTPNotFound(text="no such participant for this system")
        request[PRINCIPAL] = principal
        token = _VERIFIED.set(_Verified(bearer or "", principal))
        try:
            return await handler(request)
        finally:
            _VERIFIED.reset(token)

    return middleware


def audit_authenticator(
    kind: PrincipalKind = PrincipalKind.AUDITOR, scope: Scope = Scope.AUDIT_READ
) -> Callable[[str], str | None]:
    """The ``authenticate`` callable for ``auditor_app``: the name of the auditor this request proved to be.

    It does not verify anything itself: it answers only for the bearer token that
    :func:`require_scopes` verified for the current request, and only for an auditor holding
    ``audit:read``. Without the middleware in front it refuses everyone (fail closed).
    """

    def authenticate(token: str) -> str | None:
        verified = _VERIFIED.get()
        if verified is None or not token or not verified.bearer:
            return None
        if not hmac.compare_digest(verified.bearer.encode(), token.encode()):
            return None
        principal = verified.principal
        return principal.name if principal.kind is kind and principal.has(scope) else None

    return authenticate
