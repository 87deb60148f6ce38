"""Tokens of an external OpenID Connect provider, checked against its JWKS fetched over real HTTPS on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from gateway.auth import (
    AuthMethod, AuthUnavailable, InvalidCredentials, OidcRole, OidcSettings, OidcVerifier, PrincipalKind, Scope,
)  # fmt: skip
from gateway.auth.oidc import parse_jwks
from gateway.auth.principal import KIND_SCOPES
from gateway.ids import ParticipantId

from .conftest import KRIENS, b64, forge_hs256, make_auth, start_listener

ISSUER = "https://idp.lu.example/realms/verwaltung"
AUDIENCE = "drehscheibe-node-luzern"
ROLES = (
    OidcRole("drehscheibe-admin", PrincipalKind.ADMIN, KIND_SCOPES[PrincipalKind.ADMIN]),
    OidcRole("drehscheibe-auditor", PrincipalKind.AUDITOR, KIND_SCOPES[PrincipalKind.AUDITOR]),
    OidcRole("kriens-einwohnerkontrolle", PrincipalKind.SYSTEM, frozenset({Scope.MESSAGES_READ}), frozenset({ParticipantId(KRIENS)})),
)


@dataclass
class Provider:
    """The provider's JWKS endpoint: serves whatever key set the test puts in, and counts requests."""

    keys: list = field(default_factory=list)
    status: int = 200
    hits: int = 0
    url: str = ""

    async def jwks(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response({"keys": [k if isinstance(k, dict) else k.as_dict(private=False) for k in self.keys]})


def rsa(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid})


@pytest.fixture(scope="session")
def k1() -> RSAKey:
    return rsa("k1")


@pytest.fixture(scope="session")
def k2() -> RSAKey:
    return rsa("k2")


@pytest.fixture
async def provider(pki, k1) -> AsyncIterator[Provider]:
    state = Provider(keys=[k1])
    app = web.Application()
    app.router.add_get("/certs", state.jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context(pki.idp))
    await site.start()
    state.url = f"https://127.0.0.1:{runner.addresses[0][1]}/certs"
    yield state
    await runner.cleanup()


@pytest.fixture
def settings(provider, pki) -> OidcSettings:
    return OidcSettings(issuer=ISSUER, jwks_uri=provider.url, audience=AUDIENCE, roles=ROLES,
                        role_claim="realm_access.roles", name_claim="preferred_username", ca_file=pki.ca_file)  # fmt: skip


@pytest.fixture
async def verifier(settings, clock) -> AsyncIterator[OidcVerifier]:
    verifier = OidcVerifier(settings, now=clock.now)
    yield verifier
    await verifier.aclose()


def token(key, clock, *, roles=("drehscheibe-admin",), alg="RS256", lifetime=300, header=None, **claims) -> str:
    now = int(clock.now().timestamp())
    body = {"iss": ISSUER, "aud": [AUDIENCE, "account"], "sub": "f1e2d3", "preferred_username": "m.muster",
            "iat": now, "exp": now + lifetime, "realm_access": {"roles": list(roles)}} | claims  # fmt: skip
    head = {"alg": alg, "kid": key.kid, "typ": "JWT"} | (header or {})
    return jwt.encode(head, {k: v for k, v in body.items() if v is not None}, key, algorithms=[alg], default_type=None)


async def test_a_provider_token_maps_its_role_to_a_principal(verifier, clock, k1, provider):
    """Happy path: signature by the JWKS key, iss/aud/exp checked, role claim → kind and scopes; name from the name claim."""
    principal = await verifier.verify(token(k1, clock))
    assert (principal.kind, principal.name, principal.method) == (PrincipalKind.ADMIN, "m.muster", AuthMethod.OIDC)
    assert principal.scopes == {Scope.ADMIN}
    assert provider.hits == 1
    await verifier.verify(token(k1, clock, roles=("drehscheibe-auditor",)))
    assert provider.hits == 1  # cached


async def test_participants_come_from_the_nodes_mapping_not_from_the_token(verifier, clock, k1):
    """A system role gets the participants configured for it; a participants claim in the token is ignored."""
    principal = await verifier.verify(token(k1, clock, roles=("kriens-einwohnerkontrolle",), participants=["1-1024-1"]))
    assert principal.kind is PrincipalKind.SYSTEM
    assert {str(p) for p in principal.participants} == {KRIENS} and principal.scopes == {Scope.MESSAGES_READ}


async def test_a_rotated_key_is_fetched_and_a_withdrawn_key_refused(verifier, clock, k1, k2, provider):
    """The provider rotates k1 → k2: a k2 token triggers one fetch and verifies; k1 tokens are refused from then on."""
    await verifier.verify(token(k1, clock))
    provider.keys = [k2]
    clock.advance(seconds=61)  # past min_refresh_seconds
    principal = await verifier.verify(token(k2, clock))
    assert principal.name == "m.muster" and provider.hits == 2
    with pytest.raises(InvalidCredentials, match="unknown kid"):
        await verifier.verify(token(k1, clock))
    assert provider.hits == 2  # the refused k1 token did not cause another fetch within the minimum interval


async def test_an_unknown_kid_is_refused_and_cannot_make_the_node_hammer_the_provider(verifier, clock, k1, provider):
    """A token signed by a key the provider never published is refused; made-up kids fetch at most once per minute."""
    await verifier.verify(token(k1, clock))
    clock.advance(seconds=61)
    for n in range(5):
        with pytest.raises(InvalidCredentials, match="unknown kid"):
            await verifier.verify(token(rsa(f"forged-{n}"), clock))
    assert provider.hits == 2
    clock.advance(seconds=61)
    with pytest.raises(InvalidCredentials, match="unknown kid"):
        await verifier.verify(token(rsa("forged-later"), clock))
    assert provider.hits == 3


async def test_a_forged_token_under_a_published_kid_is_refused(verifier, clock, k1):
    """An attacker's key with the provider's kid: bad signature."""
    forged = rsa("k1")
    with pytest.raises(InvalidCredentials, match="bad signature"):
        await verifier.verify(token(forged, clock))


@pytest.mark.parametrize("claims, reason", [
    ({"iss": "https://idp.evil.example/realms/verwaltung"}, "iss"),
    ({"aud": "some-other-app"}, "aud"),
    ({"exp": None}, "exp"),
    ({"preferred_username": None}, "no preferred_username claim"),
    ({"realm_access": {"roles": ["offline_access"]}}, "no role mapped"),
    ({"realm_access": {"roles": ["drehscheibe-admin", "drehscheibe-auditor"]}}, "several mapped roles"),
], ids=["wrong-issuer", "wrong-audience", "no-exp", "no-name", "no-mapped-role", "two-roles"])  # fmt: skip
async def test_claims_the_node_does_not_accept_are_refused(verifier, clock, k1, claims, reason):
    """Signed by the provider's real key, but not for this node or not mapping to exactly one role."""
    with pytest.raises(InvalidCredentials, match=reason):
        await verifier.verify(token(k1, clock, **claims))


async def test_an_expired_provider_token_is_refused_after_the_leeway(verifier, clock, k1):
    """exp is checked against the injected clock with the configured leeway (60 s)."""
    issued = token(k1, clock, lifetime=300)
    clock.advance(seconds=359)
    await verifier.verify(issued)
    clock.advance(seconds=1)
    with pytest.raises(InvalidCredentials, match="expired"):
        await verifier.verify(issued)


async def test_alg_none_and_hs256_keyed_with_the_public_key_are_refused(verifier, clock, k1):
    """Only the configured asymmetric algorithms are accepted, whatever key the JWKS holds."""
    header, claims = {"alg": "RS256", "kid": "k1"}, {"iss": ISSUER, "aud": AUDIENCE, "exp": 4102444800,
                                                      "preferred_username": "x", "realm_access": {"roles": ["drehscheibe-admin"]}}
    with pytest.raises(InvalidCredentials, match="algorithm"):
        await verifier.verify(forge_hs256(header, claims, k1.as_pem(private=False)))
    with pytest.raises(InvalidCredentials, match="algorithm"):
        await verifier.verify(f"{b64(header | {'alg': 'none'})}.{b64(claims)}.")


async def test_a_key_published_for_another_algorithm_is_not_used_for_this_one(settings, clock, provider):
    """A JWKS entry with alg RS512 does not verify an RS256 token, though the key would."""
    key = rsa("k-512")
    provider.keys = [key.as_dict(private=False) | {"alg": "RS512"}]
    verifier = OidcVerifier(settings, now=clock.now)
    try:
        with pytest.raises(InvalidCredentials, match="another algorithm"):
            await verifier.verify(token(key, clock))
    finally:
        await verifier.aclose()


async def test_an_es256_provider_key_works_when_configured(settings, clock, provider):
    """EC keys in the JWKS verify ES256 tokens (algorithms = RS256, ES256 by default)."""
    key = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
    provider.keys = [key]
    verifier = OidcVerifier(settings, now=clock.now)
    try:
        assert (await verifier.verify(token(key, clock, alg="ES256"))).kind is PrincipalKind.ADMIN
    finally:
        await verifier.aclose()


async def test_stale_keys_serve_while_the_provider_is_down_then_fail_closed(verifier, clock, k1, provider):
    """Provider down: cached keys keep working up to max_stale_seconds, then 503-worthy AuthUnavailable."""
    await verifier.verify(token(k1, clock))
    provider.status = 500
    clock.advance(seconds=3601)  # the refresh is due and fails
    await verifier.verify(token(k1, clock))
    assert provider.hits == 2
    clock.advance(seconds=86400)
    with pytest.raises(AuthUnavailable):
        await verifier.verify(token(k1, clock))


async def test_the_jwks_is_only_fetched_from_a_server_the_trust_store_vouches_for(settings, clock, k1, provider):
    """Without the dev CA as trust anchor the provider's HTTPS certificate does not verify: no keys, AuthUnavailable."""
    verifier = OidcVerifier(replace(settings, ca_file=None), now=clock.now)
    try:
        with pytest.raises(AuthUnavailable):
            await verifier.verify(token(k1, clock))
        assert provider.hits == 0  # the TLS handshake failed before any request
    finally:
        await verifier.aclose()


def test_the_jwks_parser_skips_symmetric_encryption_and_ambiguous_keys(k1, k2):
    """oct keys, use=enc keys, keys without kid and a kid listed twice are all left out."""
    document = {"keys": [
        {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
        k2.as_dict(private=False) | {"use": "enc", "kid": "enc"},
        {k: v for k, v in k2.as_dict(private=False).items() if k != "kid"},
        k1.as_dict(private=False) | {"kid": "twice"}, k2.as_dict(private=False) | {"kid": "twice"},
        k1.as_dict(private=False),
        {"kty": "unknown-pq-type", "kid": "pq"},
    ]}  # fmt: skip
    assert set(parse_jwks(document)) == {"k1"}


async def test_an_oidc_admin_reaches_the_admin_api_but_not_the_audit_trail(pki, clients, clock, node_key, settings, k1, tmp_path):
    """Through the listener: the provider's admin gets /admin/v1 (200) and is refused /audit/v1 (403)."""
    listener = await start_listener(pki, make_auth(pki, clients, clock, node_key, oidc=settings), tmp_path / "a.db", clock, node_key)
    try:
        admin = token(k1, clock)
        status, body, _ = await listener.call("GET", "/admin/v1/policies", token=admin)
        assert (status, body["name"], body["method"]) == (200, "m.muster", "oidc")
        assert (await listener.call("GET", "/audit/v1/status", token=admin))[0] == 403
        wrong_issuer = token(k1, clock, iss="https://idp.evil.example/")
        status, body, _ = await listener.call("GET", "/admin/v1/policies", token=wrong_issuer)
        assert (status, body["error_description"]) == (401, "unknown issuer")
    finally:
        await listener.runner.cleanup()
