"""POST /oauth2/token: client credentials over HTTPS, secrets checked against scrypt hashes, RFC 6749 errors."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from .conftest import EMMEN, KRIENS, basic, make_auth, start_listener


async def test_a_client_gets_a_bearer_token_with_http_basic(listener, secrets):
    """RFC 6749 §4.4.3: 200, token_type Bearer, expires_in 300, the granted scope, no caching."""
    status, body, headers = await listener.token("kriens-register", secrets["kriens-register"][0])
    assert status == 200
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 300, "messages:read messages:send")
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}  # no refresh token (§4.4.3)
    assert (headers["Cache-Control"], headers["Pragma"]) == ("no-store", "no-cache")
    status, who, _ = await listener.call("GET", f"/api/v1/participants/{KRIENS}/inbox", token=body["access_token"])
    assert (status, who["name"]) == (200, "kriens-register")


async def test_a_client_gets_a_token_with_client_secret_post(listener, secrets):
    """Client id and secret in the form body work as well."""
    status, body, _ = await listener.token("ops-admin", secrets["ops-admin"][0], how="post")
    assert (status, body["scope"]) == (200, "admin")
    assert (await listener.call("GET", "/admin/v1/routes", token=body["access_token"]))[0] == 200


async def test_a_narrower_scope_can_be_asked_for(listener, secrets):
    """A system asking only for messages:read gets a token that cannot send."""
    status, body, _ = await listener.token("kriens-register", secrets["kriens-register"][0], "messages:read")
    assert (status, body["scope"]) == (200, "messages:read")
    assert (await listener.call("POST", "/api/v1/messages", token=body["access_token"]))[0] == 403


@pytest.mark.parametrize("client_id, scope", [("kriens-register", "admin"), ("ops-admin", "audit:read"),
                                              ("dpo-lu", "messages:send"), ("kriens-sender", "messages:read"),
                                              ("kriens-register", "root")])  # fmt: skip
async def test_a_scope_beyond_the_clients_is_refused(listener, secrets, client_id, scope):
    """invalid_scope (400), and no token, for a scope the client does not hold or that does not exist."""
    status, body, _ = await listener.token(client_id, secrets[client_id][0], scope)
    assert (status, body["error"]) == (400, "invalid_scope")
    assert "access_token" not in body


async def test_a_wrong_secret_gets_invalid_client_with_a_basic_challenge(listener, secrets):
    """RFC 6749 §5.2: 401 invalid_client and WWW-Authenticate: Basic when HTTP Basic was used."""
    status, body, headers = await listener.token("kriens-register", secrets["emmen-register"][0])
    assert (status, body["error"]) == (401, "invalid_client")
    assert headers["WWW-Authenticate"].startswith("Basic")


async def test_an_unknown_client_gets_the_same_answer_as_a_wrong_secret(listener, secrets):
    """The endpoint does not reveal which client IDs exist."""
    wrong = await listener.token("kriens-register", "not-the-secret")
    unknown = await listener.token("no-such-client", "not-the-secret")
    assert (wrong[0], wrong[1]) == (unknown[0], unknown[1]) == (401, wrong[1])
    wrong_post = await listener.token("kriens-register", "not-the-secret", how="post")
    unknown_post = await listener.token("no-such-client", "not-the-secret", how="post")
    assert (wrong_post[0], wrong_post[1]) == (unknown_post[0], unknown_post[1])
    assert wrong_post[1]["error"] == "invalid_client"


async def test_a_certificate_only_client_cannot_use_the_token_endpoint(listener, pki, secrets, clients, clock, node_key):
    """A system pinned by certificate but configured without a secret gets no token, whatever secret it sends."""
    status, _, _ = await listener.token("emmen-register", secrets["emmen-register"][0])
    assert status == 200  # with its secret configured, Emmen's system gets a token ...
    emmen = next(c for c in clients if c.client_id == "emmen-register")
    only_certificate = replace(emmen, secret_hash=None)
    auth = make_auth(pki, [only_certificate], clock, node_key)
    other = await start_listener(pki, auth, listener.audit_log.with_name("other.db"), clock, node_key)
    try:
        status, body, _ = await other.token("emmen-register", secrets["emmen-register"][0])
        assert (status, body["error"]) == (401, "invalid_client")  # ... without it, none
        status, body, _ = await other.call("GET", f"/api/v1/participants/{EMMEN}/inbox", cert=pki.emmen_system)
        assert (status, body["method"]) == (200, "client-cert")  # its certificate still works
    finally:
        await other.runner.cleanup()


@pytest.mark.parametrize("form, error", [
    ({"grant_type": "password", "username": "u", "password": "p"}, "unsupported_grant_type"),
    ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
    ({"scope": "admin"}, "invalid_request"),
], ids=["password", "authorization-code", "no-grant-type"])  # fmt: skip
async def test_only_the_client_credentials_grant_exists(listener, secrets, form, error):
    """Other grant types are refused with unsupported_grant_type; a missing one is an invalid_request."""
    headers = {"Authorization": basic("kriens-register", secrets["kriens-register"][0])}
    status, body, _ = await listener.call("POST", "/oauth2/token", data=form, headers=headers)
    assert (status, body["error"]) == (400, error)


async def test_two_client_authentication_methods_at_once_are_refused(listener, secrets):
    """RFC 6749 §2.3: HTTP Basic and client_secret in the body together are an invalid_request."""
    secret = secrets["kriens-register"][0]
    form = {"grant_type": "client_credentials", "client_id": "kriens-register", "client_secret": secret}
    status, body, _ = await listener.call("POST", "/oauth2/token", data=form, headers={"Authorization": basic("kriens-register", secret)})
    assert (status, body["error"]) == (400, "invalid_request")


async def test_repeated_parameters_are_refused(listener, secrets):
    """RFC 6749 §3.2: a parameter sent twice is an invalid_request (here: scope)."""
    secret = secrets["kriens-register"][0]
    body_text = "grant_type=client_credentials&scope=messages%3Aread&scope=messages%3Asend"
    status, body, _ = await listener.call("POST", "/oauth2/token", data=body_text, headers={
        "Authorization": basic("kriens-register", secret), "Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body["error"]) == (400, "invalid_request")


async def test_a_json_body_or_an_oversized_form_is_refused(listener, secrets):
    """Only application/x-www-form-urlencoded, at most 4 KiB."""
    headers = {"Authorization": basic("kriens-register", secrets["kriens-register"][0])}
    status, body, _ = await listener.call("POST", "/oauth2/token", json={"grant_type": "client_credentials"}, headers=headers)
    assert (status, body["error"]) == (400, "invalid_request")
    status, body, _ = await listener.call("POST", "/oauth2/token", data={"grant_type": "client_credentials", "pad": "x" * 5000},
                                          headers=headers)  # fmt: skip
    assert (status, body["error"]) == (400, "invalid_request")


async def test_the_token_endpoint_answers_post_only(listener):
    """GET /oauth2/token is no route of the table: without credentials 401, never a token."""
    status, body, _ = await listener.call("GET", "/oauth2/token")
    assert status == 401 and "access_token" not in body


async def test_no_secret_or_token_reaches_the_logs(listener, secrets, caplog):
    """Issuing and refusing tokens logs client IDs and reasons, never secrets or tokens."""
    caplog.set_level(logging.DEBUG)
    secret = secrets["kriens-register"][0]
    _, body, _ = await listener.token("kriens-register", secret)
    await listener.token("kriens-register", secret + "x", how="post")
    await listener.call("GET", "/admin/v1/routes", token=body["access_token"])
    await listener.call("GET", "/admin/v1/routes", token=body["access_token"][:-4] + "AAAA")
    text = caplog.text
    assert "kriens-register" in text
    assert secret not in text and body["access_token"] not in text and body["access_token"].split(".")[2] not in text


async def test_the_token_endpoint_refuses_plain_http(clients, clock, node_key, secrets):
    """RFC 6749 §2.3.1 requires TLS: over plain HTTP the endpoint answers insecure_transport and no token."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.auth import AccessTokenIssuer, token_app

    issuer = AccessTokenIssuer(issuer="node-luzern", audience="a", signing_key=node_key, now=clock.now)
    root = web.Application()
    root.add_subapp("/oauth2", token_app(issuer, clients))
    async with TestClient(TestServer(root, host="127.0.0.1")) as client:
        response = await client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                     headers={"Authorization": basic("ops-admin", secrets["ops-admin"][0])})  # fmt: skip
        body = await response.json()
    assert (response.status, body["error"]) == (400, "insecure_transport")
    assert "access_token" not in body
