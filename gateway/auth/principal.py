"""Who is calling: a :class:`Principal` with its kind, the participants it is bound to and its scopes.

A principal is built only by an authenticator, after its credential was verified, and it is
frozen. Its scopes can never exceed what its kind may hold (:data:`KIND_SCOPES`), whatever a
token or a configuration file says: an admin token cannot carry ``audit:read``, an auditor
token cannot carry ``messages:send``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..ids import ParticipantId


class PrincipalKind(Enum):
    """The three roles of issue 7."""

    SYSTEM = "system"  # a local system: sends and receives for the participants it is bound to
    ADMIN = "admin"  # participants, routes, policies; never payloads or audit content
    AUDITOR = "auditor"  # the audit trail, read-only; every read is itself audited


class AuthMethod(Enum):
    """How a principal proved who it is."""

    STATIC_TOKEN = "static-token"  # a configured bearer token (token_sha256 in the node file)
    OAUTH2 = "oauth2"  # an access token from this node's own token endpoint
    OIDC = "oidc"  # an access token from the configured external OpenID Connect provider
    CLIENT_CERT = "client-cert"  # the pinned TLS client certificate of a local system


class Scope(Enum):
    """What a principal may do; each route of the local listener requires exactly one (see routes.py)."""

    MESSAGES_SEND = "messages:send"  # submit messages for a bound participant
    MESSAGES_READ = "messages:read"  # status, receipts, inbox, payloads and acks of a bound participant
    ADMIN = "admin"  # policies and routes: status and reload
    AUDIT_READ = "audit:read"  # the auditor API

    @classmethod
    def parse_list(cls, text: str | None) -> tuple[Scope, ...]:
        """Scopes from an OAuth2 ``scope`` string (space-separated); unknown names raise ValueError."""
        return tuple(cls(name) for name in (text or "").split())


# SECURITY: the ceiling of each kind. A forbid beats any permit: a scope outside this table is
# refused when a principal is built, so no configuration or token can widen a role.
KIND_SCOPES: dict[PrincipalKind, frozenset[Scope]] = {
    PrincipalKind.SYSTEM: frozenset({Scope.MESSAGES_SEND, Scope.MESSAGES_READ}),
    PrincipalKind.ADMIN: frozenset({Scope.ADMIN}),
    PrincipalKind.AUDITOR: frozenset({Scope.AUDIT_READ}),
}


def scope_string(scopes: frozenset[Scope] | tuple[Scope, ...]) -> str:
    """The OAuth2 form of a scope set: names in a stable order, space-separated."""
    return " ".join(sorted(scope.value for scope in scopes))


@dataclass(frozen=True)
class Principal:
    """An authenticated caller of the local listener.

    ``participants`` is empty except for systems; for a system it is the set of hosted
    participants it may act for (Kriens' system never sees Emmen's inbox).
    """

    kind: PrincipalKind
    name: str
    scopes: frozenset[Scope]
    method: AuthMethod
    participants: frozenset[ParticipantId] = frozenset()

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a principal needs a name")
        beyond = self.scopes - KIND_SCOPES[self.kind]
        if beyond:
            raise ValueError(f"a {self.kind.value} cannot hold the scopes {scope_string(frozenset(beyond))}")
        if self.participants and self.kind is not PrincipalKind.SYSTEM:
            raise ValueError(f"only systems are bound to participants, not a {self.kind.value}")

    def may_act_for(self, participant: ParticipantId) -> bool:
        """True for a system bound to ``participant``; never for admins and auditors."""
        return self.kind is PrincipalKind.SYSTEM and participant in self.participants

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes
