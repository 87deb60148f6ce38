"""Which verifier a credential goes to is decided explicitly, and ambiguity is refused."""

from __future__ import annotations

import pytest

from gateway.auth import (
    AccessTokenIssuer, AccessTokenVerifier, Authenticator, AuthMethod, ClientCertificates, InvalidCredentials,
    MissingCredentials, PrincipalKind, Scope, StaticTokens,
)  # fmt: skip
from gateway.config import LocalSystem, Operator, OperatorRole
from gateway.ids import ParticipantId

from .conftest import KRIENS, NODE_ID, sha256

AUDIENCE = "aud"


def test_static_tokens_map_each_configured_entry_to_its_role():
    """Local systems become systems with their participants; operators admins or auditors; others None."""
    systems = [LocalSystem("kriens", sha256("t-kriens"), frozenset({ParticipantId(KRIENS)}))]
    operators = [Operator("ops", OperatorRole.ADMIN, sha256("t-ops")), Operator("dpo", OperatorRole.AUDITOR, sha256("t-dpo"))]
    tokens = StaticTokens(systems, operators)
    kriens, ops, dpo = tokens.resolve("t-kriens"), tokens.resolve("t-ops"), tokens.resolve("t-dpo")
    assert (kriens.kind, kriens.method) == (PrincipalKind.SYSTEM, AuthMethod.STATIC_TOKEN)
    assert kriens.participants == {ParticipantId(KRIENS)}
    assert (ops.kind, ops.scopes) == (PrincipalKind.ADMIN, {Scope.ADMIN})
    assert (dpo.kind, dpo.scopes) == (PrincipalKind.AUDITOR, {Scope.AUDIT_READ})
    assert tokens.resolve("t-unknown") is None and tokens.resolve("") is None


def test_one_static_token_configured_for_two_principals_is_refused():
    """A token hash shared by a local system and an admin authenticates neither."""
    tokens = StaticTokens([LocalSystem("kriens", sha256("shared"), frozenset({ParticipantId(KRIENS)}))],
                          [Operator("ops", OperatorRole.ADMIN, sha256("shared"))])  # fmt: skip
    with pytest.raises(InvalidCredentials, match="several principals"):
        tokens.resolve("shared")


async def test_a_jwt_goes_to_the_verifier_of_its_issuer_only(clients, clock, node_key):
    """The node's own token verifies; the same token claiming another issuer reaches no verifier."""
    issuer = AccessTokenIssuer(issuer=NODE_ID, audience=AUDIENCE, signing_key=node_key, now=clock.now)
    other = AccessTokenIssuer(issuer="node-kanton", audience=AUDIENCE, signing_key=node_key, now=clock.now)
    verifier = AccessTokenVerifier(issuer=NODE_ID, audience=AUDIENCE, keys=[node_key.public_key()], clients=clients, now=clock.now)
    authenticator = Authenticator(access_tokens=verifier)
    admin = next(c for c in clients if c.client_id == "ops-admin")
    assert (await authenticator.from_bearer(issuer.issue(admin, [Scope.ADMIN]).access_token)).name == "ops-admin"
    with pytest.raises(InvalidCredentials, match="unknown issuer"):
        await authenticator.from_bearer(other.issue(admin, [Scope.ADMIN]).access_token)
    with pytest.raises(MissingCredentials):
        await authenticator.from_bearer("")


async def test_certificates_are_refused_when_none_are_pinned(clients):
    """Without pins a client certificate is no credential; with pins an unpinned one is invalid."""
    with pytest.raises(MissingCredentials):
        await Authenticator().from_certificate(b"0\x82...")
    with pytest.raises(InvalidCredentials, match="not pinned"):
        await Authenticator(certificates=ClientCertificates(clients)).from_certificate(b"0\x82...")
    with pytest.raises(MissingCredentials):
        await Authenticator(certificates=ClientCertificates(clients)).from_certificate(None)
