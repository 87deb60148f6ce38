"""A principal can never hold more than its kind allows, whatever builds it."""

from __future__ import annotations

import pytest

from gateway.auth import KIND_SCOPES, AuthMethod, Principal, PrincipalKind, Scope
from gateway.ids import ParticipantId


@pytest.mark.parametrize("kind, scope", [
    (PrincipalKind.ADMIN, Scope.AUDIT_READ), (PrincipalKind.ADMIN, Scope.MESSAGES_READ),
    (PrincipalKind.AUDITOR, Scope.MESSAGES_SEND), (PrincipalKind.AUDITOR, Scope.ADMIN),
    (PrincipalKind.SYSTEM, Scope.ADMIN), (PrincipalKind.SYSTEM, Scope.AUDIT_READ),
])  # fmt: skip
def test_a_scope_outside_the_kinds_ceiling_cannot_be_held(kind, scope):
    with pytest.raises(ValueError, match="cannot hold"):
        Principal(kind, "x", frozenset({scope}), AuthMethod.OAUTH2)


def test_only_systems_are_bound_to_participants():
    """An admin bound to a participant is refused; a system acts only for its own participants."""
    kriens = ParticipantId("1-1059-1")
    with pytest.raises(ValueError, match="only systems"):
        Principal(PrincipalKind.ADMIN, "ops", KIND_SCOPES[PrincipalKind.ADMIN], AuthMethod.OAUTH2, frozenset({kriens}))
    system = Principal(PrincipalKind.SYSTEM, "kriens", KIND_SCOPES[PrincipalKind.SYSTEM], AuthMethod.OAUTH2, frozenset({kriens}))
    assert system.may_act_for(kriens) and not system.may_act_for(ParticipantId("1-1024-1"))


def test_each_scope_belongs_to_exactly_one_kind():
    """The kinds' ceilings are disjoint and together cover every scope."""
    ceilings = list(KIND_SCOPES.values())
    assert set().union(*ceilings) == set(Scope)
    assert sum(len(c) for c in ceilings) == len(Scope)


def test_scope_strings_parse_and_unknown_names_raise():
    assert Scope.parse_list("messages:read  messages:send") == (Scope.MESSAGES_READ, Scope.MESSAGES_SEND)
    assert Scope.parse_list(None) == ()
    with pytest.raises(ValueError):
        Scope.parse_list("messages:read root")
