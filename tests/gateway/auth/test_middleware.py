"""Each role reaches exactly its routes of the local listener; everything else is refused (real HTTPS on loopback)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.audit import Action, AuditLog
from gateway.auth import PUBLIC, ROUTE_SCOPES, Authenticator, Scope, require_scopes

from .conftest import EMMEN, KRIENS, STATIC_TOKENS

MSG = "0123456789abcdef0123"
# One concrete request per route in ROUTE_SCOPES (PUBLIC excepted), with the participant Kriens.
REQUESTS = {
    ("POST", "/api/v1/messages"): "/api/v1/messages",
    ("GET", "/api/v1/messages/{participant}/{message_id}"): f"/api/v1/messages/{KRIENS}/{MSG}",
    ("GET", "/api/v1/participants/{participant}/receipts"): f"/api/v1/participants/{KRIENS}/receipts",
    ("GET", "/api/v1/participants/{participant}/inbox"): f"/api/v1/participants/{KRIENS}/inbox",
    ("GET", "/api/v1/participants/{participant}/inbox/{sender}/{message_id}/envelope"):
        f"/api/v1/participants/{KRIENS}/inbox/{EMMEN}/{MSG}/envelope",
    ("GET", "/api/v1/participants/{participant}/inbox/{sender}/{message_id}/payload"):
        f"/api/v1/participants/{KRIENS}/inbox/{EMMEN}/{MSG}/payload",
    ("POST", "/api/v1/participants/{participant}/inbox/{sender}/{message_id}/ack"):
        f"/api/v1/participants/{KRIENS}/inbox/{EMMEN}/{MSG}/ack",
    ("GET", "/admin/v1/policies"): "/admin/v1/policies",
    ("POST", "/admin/v1/policies/reload"): "/admin/v1/policies/reload",
    ("GET", "/admin/v1/routes"): "/admin/v1/routes",
    ("POST", "/admin/v1/routes/reload"): "/admin/v1/routes/reload",
    ("GET", "/audit/v1/status"): "/audit/v1/status",
    ("GET", "/audit/v1/verify"): "/audit/v1/verify",
    ("POST", "/audit/v1/query"): "/audit/v1/query",
    ("POST", "/audit/v1/report"): "/audit/v1/report",
    ("GET", "/audit/v1/export"): "/audit/v1/export",
    ("GET", "/audit/v1/proofs/inclusion"): "/audit/v1/proofs/inclusion?index=0",
    ("GET", "/audit/v1/proofs/consistency"): "/audit/v1/proofs/consistency?first=1",
}
# OAuth2 clients and the scopes each may use, as configured in conftest.clients.
ROLES = {
    "kriens-register": {Scope.MESSAGES_SEND, Scope.MESSAGES_READ},
    "kriens-sender": {Scope.MESSAGES_SEND},
    "ops-admin": {Scope.ADMIN},
    "dpo-lu": {Scope.AUDIT_READ},
}


def test_every_protected_route_of_the_table_has_a_request_in_this_matrix():
    """The matrix below covers the whole route table (console pages: their own matrix with sessions,
    tests/gateway/console/test_pages.py), so a new route cannot escape it."""
    assert set(REQUESTS) == {key for key, rule in ROUTE_SCOPES.items() if rule is not PUBLIC and not key[1].startswith("/console/")}


async def test_each_role_reaches_exactly_the_routes_its_scopes_name(listener, secrets):
    """Matrix: every route × every client; allowed routes pass the middleware, all others answer 403."""
    for client_id, scopes in ROLES.items():
        token = await listener.access_token(client_id, secrets)
        for (method, pattern), path in REQUESTS.items():
            status, body, headers = await listener.call(method, path, token=token, json={})
            if ROUTE_SCOPES[(method, pattern)] in scopes:
                # Past the middleware: stand-ins answer 200; the real auditor API may refuse the empty query (400).
                assert status in (200, 400), (client_id, method, path, status, body)
                assert body.get("error") != "insufficient_scope"
            else:
                assert status == 403, (client_id, method, path, status, body)
                assert body["error"] == "insufficient_scope"
                assert f'scope="{ROUTE_SCOPES[(method, pattern)].value}"' in headers["WWW-Authenticate"]


async def test_a_system_token_cannot_reach_the_admin_or_audit_api(listener, secrets):
    """A local system's access token gets 403 on /admin/v1 and /audit/v1."""
    token = await listener.access_token("kriens-register", secrets)
    assert (await listener.call("GET", "/admin/v1/policies", token=token))[0] == 403
    assert (await listener.call("GET", "/audit/v1/status", token=token))[0] == 403


async def test_an_admin_cannot_read_the_audit_trail(listener, secrets):
    """An admin's token gets 403 on the auditor API, and no audit read is recorded for it."""
    token = await listener.access_token("ops-admin", secrets)
    status, body, _ = await listener.call("GET", "/audit/v1/status", token=token)
    assert (status, body["error"]) == (403, "insufficient_scope")


async def test_an_auditor_reads_the_audit_trail_under_its_own_name(listener, secrets):
    """The auditor's OAuth2 token passes the middleware and the auditor API records the read as that client."""
    token = await listener.access_token("dpo-lu", secrets)
    status, body, _ = await listener.call("GET", "/audit/v1/status", token=token)
    assert status == 200
    with AuditLog.open(listener.audit_log, node=body["node"], signing_key=None) as log:
        reads = [r for _, _, r in log.iter_records() if r.action is Action.AUDIT_READ]
    assert [(r.actor.kind.value, r.actor.id) for r in reads] == [("auditor", "dpo-lu")]


async def test_an_auditor_cannot_send_or_read_messages(listener, secrets):
    """An auditor's token gets 403 on submitting and on reading an inbox."""
    token = await listener.access_token("dpo-lu", secrets)
    assert (await listener.call("POST", "/api/v1/messages", token=token))[0] == 403
    assert (await listener.call("GET", f"/api/v1/participants/{KRIENS}/inbox", token=token))[0] == 403


async def test_kriens_system_never_sees_emmens_inbox(listener, secrets):
    """A system bound to Kriens asking for Emmen's inbox gets 404, as if Emmen did not exist; its own inbox works."""
    token = await listener.access_token("kriens-register", secrets)
    status, _, _ = await listener.call("GET", f"/api/v1/participants/{EMMEN}/inbox", token=token)
    assert status == 404
    status, body, _ = await listener.call("GET", f"/api/v1/participants/{KRIENS}/inbox", token=token)
    assert (status, body["participants"], body["method"]) == (200, [KRIENS], "oauth2")


async def test_a_route_missing_from_the_table_is_denied_to_everyone(listener, secrets):
    """Deny by default: a registered route without a table entry answers 403 even to a fully scoped system."""
    token = await listener.access_token("kriens-register", secrets)
    status, body, _ = await listener.call("GET", "/api/v1/debug/unlisted", token=token)
    assert (status, body["error"]) == (403, "access_denied")


async def test_unknown_paths_and_head_requests_are_denied(listener, secrets):
    """An unknown path needs credentials first (401), then is denied (403); HEAD on a GET route is denied too."""
    assert (await listener.call("GET", "/api/v1/no-such-route"))[0] == 401
    token = await listener.access_token("kriens-register", secrets)
    assert (await listener.call("GET", "/api/v1/no-such-route", token=token))[0] == 403
    assert (await listener.call("GET", "/nowhere", token=token))[0] == 403
    assert (await listener.call("HEAD", f"/api/v1/participants/{KRIENS}/inbox", token=token))[0] == 403


@pytest.mark.parametrize("authorization", [None, "Bearer ", "Basic a3JpZW5zOnNlY3JldA==", "Bearer not-a-known-token",
                                           "Bearer a.b.c", "bearer"])  # fmt: skip
async def test_requests_without_valid_credentials_get_401_with_a_bearer_challenge(listener, authorization):
    """Missing, empty, non-Bearer, unknown or malformed credentials answer 401 and WWW-Authenticate: Bearer."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    status, body, response_headers = await listener.call("GET", f"/api/v1/participants/{KRIENS}/inbox", headers=headers)
    assert status == 401
    assert response_headers["WWW-Authenticate"].startswith('Bearer realm="drehscheibe"')
    assert "not-a-known-token" not in str(body)


async def test_an_invalid_token_names_the_error_in_the_challenge(listener, secrets, clock):
    """An expired access token gets 401 with error="invalid_token" (RFC 6750 §3.1)."""
    token = await listener.access_token("kriens-register", secrets)
    clock.advance(seconds=301)
    status, body, headers = await listener.call("GET", f"/api/v1/participants/{KRIENS}/inbox", token=token)
    assert (status, body["error_description"]) == (401, "expired")
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]


async def test_static_tokens_still_work_with_their_roles(listener):
    """The configured token_sha256 entries authenticate as before, each limited to its role."""
    kriens, admin, auditor = STATIC_TOKENS["legacy-kriens"], STATIC_TOKENS["legacy-admin"], STATIC_TOKENS["legacy-auditor"]
    status, body, _ = await listener.call("GET", f"/api/v1/participants/{KRIENS}/receipts", token=kriens)
    assert (status, body["name"], body["method"]) == (200, "legacy-kriens", "static-token")
    assert (await listener.call("GET", f"/api/v1/participants/{EMMEN}/receipts", token=kriens))[0] == 404
    assert (await listener.call("GET", "/admin/v1/routes", token=kriens))[0] == 403
    assert (await listener.call("GET", "/admin/v1/routes", token=admin))[0] == 200
    assert (await listener.call("GET", "/audit/v1/status", token=admin))[0] == 403
    assert (await listener.call("GET", "/audit/v1/status", token=auditor))[0] == 200
    assert (await listener.call("POST", "/admin/v1/routes/reload", token=auditor))[0] == 403


async def test_a_pinned_client_certificate_authenticates_its_local_system(listener, pki):
    """Emmen's system, presenting its pinned TLS client certificate and no token, acts for Emmen only."""
    status, body, _ = await listener.call("GET", f"/api/v1/participants/{EMMEN}/inbox", cert=pki.emmen_system)
    assert (status, body["name"], body["method"]) == (200, "emmen-register", "client-cert")
    assert (await listener.call("GET", f"/api/v1/participants/{KRIENS}/inbox", cert=pki.emmen_system))[0] == 404
    assert (await listener.call("GET", "/admin/v1/policies", cert=pki.emmen_system))[0] == 403


async def test_a_certificate_of_the_same_ca_that_nobody_pinned_is_refused(listener, pki):
    """A certificate that chains to the trusted CA but is not pinned (e.g. another node's) gets 401."""
    status, body, _ = await listener.call("GET", f"/api/v1/participants/{EMMEN}/inbox", cert=pki.stranger)
    assert (status, body["error_description"]) == (401, "client certificate not pinned for any local system")


async def test_a_bearer_token_takes_precedence_over_a_client_certificate(listener, pki, secrets):
    """With both, the explicit bearer token decides who is calling."""
    token = await listener.access_token("kriens-register", secrets)
    status, body, _ = await listener.call("GET", f"/api/v1/participants/{KRIENS}/inbox", token=token, cert=pki.emmen_system)
    assert (status, body["name"]) == (200, "kriens-register")


def test_the_middleware_refuses_a_malformed_route_table():
    """A table entry that is neither a Scope nor PUBLIC fails when the middleware is built."""
    with pytest.raises(ValueError, match="neither a Scope nor PUBLIC"):
        require_scopes(Authenticator(), route_scopes={("GET", "/x"): "admin"})
    with pytest.raises(ValueError, match="expected"):
        require_scopes(Authenticator(), route_scopes={("FETCH", "/x"): Scope.ADMIN})


async def test_a_bearer_token_with_bytes_that_are_not_ascii_is_a_401(listener):
    """Raw bytes 0xff 0xfe after 'Bearer' get 401 like any other wrong token, not a 500."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(listener.url.rsplit(":", 1)[1]), ssl=listener.pki.client_context(), server_hostname="127.0.0.1")
    writer.write(f"GET /api/v1/participants/{KRIENS}/inbox HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
                 + b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")  # fmt: skip
    await writer.drain()
    status_line = (await reader.read()).split(b"\r\n", 1)[0]
    writer.close()
    assert status_line.split()[1] == b"401", status_line
