"""The node's access tokens: what the issuer signs, and every way a forged or stale token is refused."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

from gateway.auth import AccessTokenIssuer, AccessTokenVerifier, AuthMethod, InvalidCredentials, PrincipalKind, Scope
from gateway.ids import ParticipantId

from .conftest import KRIENS, NODE_ID, b64, forge_hs256

AUDIENCE = "urn:drehscheibe:node:node-luzern:local-api"


def parts(token: str) -> tuple[dict, dict, str]:
    header, claims, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(base64.urlsafe_b64decode(pad(claims))), signature


@pytest.fixture
def issuer(node_key, clock) -> AccessTokenIssuer:
    return AccessTokenIssuer(issuer=NODE_ID, audience=AUDIENCE, signing_key=node_key, now=clock.now, token_id=lambda: "jti-1")


@pytest.fixture
def verifier(node_key, clients, clock) -> AccessTokenVerifier:
    return AccessTokenVerifier(issuer=NODE_ID, audience=AUDIENCE, keys=[node_key.public_key()], clients=clients, now=clock.now)


def client(clients, client_id):
    return next(c for c in clients if c.client_id == client_id)


def sign(node_key, header: dict, claims: dict) -> str:
    key = ECKey.import_key(node_key)
    return jwt.encode(header, claims, key, algorithms=[header["alg"]], default_type=None)


def test_an_issued_token_carries_the_rfc9068_claims(issuer, clients, clock):
    """Header ES256 / at+jwt / kid thumbprint; claims iss, sub, client_id, aud, scope, iat, exp (+300 s), jti."""
    issued = issuer.issue(client(clients, "kriens-register"), [Scope.MESSAGES_READ])
    header, claims, _ = parts(issued.access_token)
    now = int(clock.now().timestamp())
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": issuer.kid}
    assert claims == {"iss": NODE_ID, "sub": "kriens-register", "client_id": "kriens-register", "aud": AUDIENCE,
                      "scope": "messages:read", "iat": now, "exp": now + 300, "jti": "jti-1"}  # fmt: skip
    assert issued.expires_in == 300


def test_a_fresh_token_verifies_to_the_clients_principal(issuer, verifier, clients):
    """The principal has the client's kind, name and participants, and the token's scopes."""
    token = issuer.issue(client(clients, "kriens-register"), [Scope.MESSAGES_SEND]).access_token
    principal = verifier.verify(token)
    assert principal.kind is PrincipalKind.SYSTEM and principal.name == "kriens-register"
    assert principal.scopes == {Scope.MESSAGES_SEND} and principal.method is AuthMethod.OAUTH2
    assert {str(p) for p in principal.participants} == {KRIENS}


def test_the_issuer_never_grants_a_scope_the_client_lacks(issuer, verifier, clients):
    """Asking the issuer for admin on behalf of a system yields a token without it."""
    issued = issuer.issue(client(clients, "kriens-sender"), [Scope.MESSAGES_SEND, Scope.MESSAGES_READ])
    assert issued.scopes == {Scope.MESSAGES_SEND}
    assert verifier.verify(issued.access_token).scopes == {Scope.MESSAGES_SEND}


def test_a_token_expires_after_its_lifetime(issuer, verifier, clients, clock):
    """Valid at 299 s, refused as expired at 300 s (time injected, no sleeping)."""
    token = issuer.issue(client(clients, "ops-admin"), [Scope.ADMIN]).access_token
    clock.advance(seconds=299)
    verifier.verify(token)
    clock.advance(seconds=1)
    with pytest.raises(InvalidCredentials, match="expired"):
        verifier.verify(token)


def test_a_token_issued_in_the_future_is_refused(issuer, verifier, clients, clock):
    """An iat after now (a clock set forward at issue) is refused."""
    token = issuer.issue(client(clients, "ops-admin"), [Scope.ADMIN]).access_token
    clock.advance(seconds=-60)
    with pytest.raises(InvalidCredentials, match="iat"):
        verifier.verify(token)


def test_a_tampered_claim_breaks_the_signature(issuer, verifier, clients):
    """Changing the scope (or anything else) in the payload makes the signature fail."""
    token = issuer.issue(client(clients, "kriens-sender"), [Scope.MESSAGES_SEND]).access_token
    header, claims, signature = token.split(".")
    forged = parts(token)[1] | {"scope": "messages:send messages:read"}
    with pytest.raises(InvalidCredentials, match="bad signature"):
        verifier.verify(f"{header}.{b64(forged)}.{signature}")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(InvalidCredentials, match="bad signature"):
        verifier.verify(f"{header}.{claims}.{flipped}")


def test_alg_none_is_refused(issuer, verifier, clients):
    """An unsigned token (alg none, empty signature) with valid claims is refused before any key is used."""
    token = issuer.issue(client(clients, "ops-admin"), [Scope.ADMIN]).access_token
    header, claims, _ = parts(token)
    with pytest.raises(InvalidCredentials, match="algorithm"):
        verifier.verify(f"{b64(header | {'alg': 'none'})}.{b64(claims)}.")


def test_hs256_keyed_with_the_nodes_public_key_is_refused(issuer, verifier, clients, node_key):
    """Algorithm confusion: HMAC over the token with the public key (PEM and raw point) as secret is refused."""
    token = issuer.issue(client(clients, "ops-admin"), [Scope.ADMIN]).access_token
    header, claims, _ = parts(token)
    public = node_key.public_key()
    for secret in (public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
                   public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)):  # fmt: skip
        with pytest.raises(InvalidCredentials, match="algorithm"):
            verifier.verify(forge_hs256(header, claims, secret))


def test_a_token_signed_by_another_key_under_the_nodes_kid_is_refused(issuer, verifier, clients, clock):
    """Right kid, wrong key: the signature check fails."""
    other = ec.generate_private_key(ec.SECP256R1())
    token = issuer.issue(client(clients, "ops-admin"), [Scope.ADMIN]).access_token
    header, claims, _ = parts(token)
    with pytest.raises(InvalidCredentials, match="bad signature"):
        verifier.verify(sign(other, header, claims))


@pytest.mark.parametrize("change, reason", [
    ({"kid": "someone-elses-key"}, "unknown kid"),
    ({"kid": None}, "no kid"),
    ({"typ": "JWT"}, "typ"),
    ({"jwk": {"kty": "EC"}}, "key-bearing"),
    ({"jku": "https://attacker.example/jwks"}, "key-bearing"),
    ({"x5u": "https://attacker.example/cert"}, "key-bearing"),
], ids=["wrong-kid", "no-kid", "wrong-typ", "embedded-jwk", "jku", "x5u"])  # fmt: skip
def test_header_games_are_refused(issuer, verifier, clients, node_key, change, reason):
    """Properly signed by the node's key, but with a header the verifier must not accept."""
    token = issuer.issue(client(clients, "ops-admin"), [Scope.ADMIN]).access_token
    header, claims, _ = parts(token)
    header = {k: v for k, v in (header | change).items() if v is not None}
    with pytest.raises(InvalidCredentials, match=reason):
        verifier.verify(sign(node_key, header, claims))


@pytest.mark.parametrize("change, reason", [
    ({"iss": "node-kanton"}, "iss"),
    ({"aud": "urn:drehscheibe:node:node-kanton:local-api"}, "aud"),
    ({"client_id": "ops-admin"}, "sub and client_id differ"),
    ({"sub": "removed-client", "client_id": "removed-client"}, "no longer configured"),
    ({"exp": None}, "exp"),
    ({"jti": None}, "jti"),
    ({"scope": "messages:send root"}, "unknown scope"),
], ids=["wrong-iss", "wrong-aud", "sub-mismatch", "unknown-client", "no-exp", "no-jti", "unknown-scope"])  # fmt: skip
def test_claims_games_are_refused(issuer, verifier, clients, node_key, change, reason):
    """Properly signed by the node's key, but with claims the verifier must not accept."""
    token = issuer.issue(client(clients, "kriens-register"), [Scope.MESSAGES_SEND]).access_token
    header, claims, _ = parts(token)
    claims = {k: v for k, v in (claims | change).items() if v is not None}
    with pytest.raises(InvalidCredentials, match=reason):
        verifier.verify(sign(node_key, header, claims))


def test_a_removed_participant_leaves_live_tokens_at_once(issuer, node_key, clients, clock):
    """Participants come from the current configuration, not from the token."""
    kriens = client(clients, "kriens-register")
    token = issuer.issue(kriens, [Scope.MESSAGES_READ]).access_token
    narrowed = replace(kriens, participants=frozenset({ParticipantId("1-1061-1")}))
    verifier = AccessTokenVerifier(issuer=NODE_ID, audience=AUDIENCE, keys=[node_key.public_key()], clients=[narrowed], now=clock.now)
    assert {str(p) for p in verifier.verify(token).participants} == {"1-1061-1"}


def test_tokens_of_the_previous_key_verify_during_rotation(clients, clock, node_key):
    """With the old public key listed after the new one, tokens signed before the rotation still verify."""
    old = ec.generate_private_key(ec.SECP256R1())
    before = AccessTokenIssuer(issuer=NODE_ID, audience=AUDIENCE, signing_key=old, now=clock.now)
    token = before.issue(client(clients, "ops-admin"), [Scope.ADMIN]).access_token
    rotated = AccessTokenVerifier(issuer=NODE_ID, audience=AUDIENCE, keys=[node_key.public_key(), old.public_key()],
                                  clients=clients, now=clock.now)  # fmt: skip
    assert rotated.verify(token).name == "ops-admin"
    retired = AccessTokenVerifier(issuer=NODE_ID, audience=AUDIENCE, keys=[node_key.public_key()], clients=clients, now=clock.now)
    with pytest.raises(InvalidCredentials, match="unknown kid"):
        retired.verify(token)


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "!!!.e30.", "e30.e30." + "A" * 9000],
                         ids=["empty", "opaque", "two-parts", "four-parts", "bad-base64", "oversize"])  # fmt: skip
def test_malformed_tokens_are_refused_cleanly(verifier, token):
    """Anything that is not a compact JWS raises InvalidCredentials, never another exception."""
    with pytest.raises(InvalidCredentials):
        verifier.verify(token)


def test_the_issuer_refuses_a_key_that_cannot_sign_es256(clock):
    """ES256 needs P-256; a P-384 node key is refused when the issuer is built."""
    with pytest.raises(ValueError, match="P-256"):
        AccessTokenIssuer(issuer=NODE_ID, audience=AUDIENCE, signing_key=ec.generate_private_key(ec.SECP384R1()), now=clock.now)
