"""ROUTE_SCOPES is the one map of the local listener: every real route is in it, and nothing else."""

from __future__ import annotations

from aiohttp import web

from gateway.api import local_api
from gateway.auth import PUBLIC, ROUTE_SCOPES, AccessTokenIssuer, Scope, token_app
from gateway.config import load_config
from gateway.node import Node

from .conftest import NODE_ID


def mounted_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, pattern) of every route of ``app`` and its sub-applications, HEAD left out."""
    found = set()
    for resource in app.router.resources():
        subapp = getattr(resource, "_app", None)
        if isinstance(subapp, web.Application):
            found |= mounted_routes(subapp)
            continue
        for route in resource:
            if route.method != "HEAD":
                found.add((route.method, resource.canonical))
    return found


async def test_every_route_of_the_real_local_listener_has_a_rule_and_every_rule_a_route(federation, clock, node_key):
    """The table matches api.local_api exactly (plus the token endpoint at /oauth2), so no route is unmapped."""
    node = Node(load_config(federation.config_path("node-luzern")), clock=clock)
    try:
        app = local_api(node)
        routes = mounted_routes(app)
        if ("POST", "/oauth2/token") not in routes:  # before api.py mounts the token endpoint
            root = web.Application()
            issuer = AccessTokenIssuer(issuer=NODE_ID, audience="a", signing_key=node_key, now=clock.now)
            root.add_subapp("/oauth2", token_app(issuer, ()))
            routes |= mounted_routes(root)
        assert routes == set(ROUTE_SCOPES)
    finally:
        await node.close()


def test_only_the_token_endpoint_the_api_description_and_the_console_login_are_public():
    """Deny by default: besides POST /oauth2/token and GET /openapi.json only the console's login, logout,
    OIDC login start and callback, landing redirect and stylesheet skip authentication (logout and login are
    CSRF-checked by the console, the OIDC callback by its state)."""
    assert [key for key, rule in ROUTE_SCOPES.items() if rule is PUBLIC] == [
        ("GET", "/console/"), ("GET", "/console/login"), ("POST", "/console/login"), ("POST", "/console/logout"),
        ("GET", "/console/oidc/start"), ("GET", "/console/oidc/callback"),
        ("GET", "/console/static/{name}"), ("POST", "/oauth2/token"), ("GET", "/openapi.json"),
    ]  # fmt: skip


def test_each_prefix_is_guarded_by_its_own_scope():
    """/api/v1 needs a messages scope, /admin/v1 admin, /audit/v1 audit:read; no prefix shares a scope."""
    expected = {"/api/v1/": {Scope.MESSAGES_SEND, Scope.MESSAGES_READ}, "/admin/v1/": {Scope.ADMIN}, "/audit/v1/": {Scope.AUDIT_READ},
                "/console/audit": {Scope.AUDIT_READ}, "/console/admin": {Scope.ADMIN}, "/console/messages": {Scope.MESSAGES_READ}}  # fmt: skip
    for prefix, scopes in expected.items():
        assert {rule for (_, pattern), rule in ROUTE_SCOPES.items() if pattern.startswith(prefix)} == scopes
    assert ROUTE_SCOPES[("POST", "/api/v1/messages")] is Scope.MESSAGES_SEND
