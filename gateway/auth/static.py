"""Credentials configured in the node file: static bearer tokens and pinned client certificates.

Static tokens are the ``token_sha256`` entries of ``[[local_systems]]`` and ``[[operators]]``
(gateway.config); they keep working beside OAuth2 so existing deployments are not cut off.
Every configured hash is compared, in constant time, for every token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .clients import OAuthClient
from .errors import InvalidCredentials
from .principal import KIND_SCOPES, AuthMethod, Principal, PrincipalKind

if TYPE_CHECKING:  # gateway.config imports this package; no import back at run time
    from ..config import LocalSystem, Operator


class StaticTokens:
    """Bearer tokens of ``[[local_systems]]`` and ``[[operators]]``; each gets its kind's full scopes."""

    def __init__(self, local_systems: Iterable[LocalSystem], operators: Iterable[Operator]) -> None:
        entries: list[tuple[object, Principal]] = []
        for system in local_systems:
            kind = PrincipalKind.SYSTEM
            principal = Principal(kind, system.name, KIND_SCOPES[kind], AuthMethod.STATIC_TOKEN, system.participants)
            entries.append((system, principal))
        for operator in operators:
            kind = PrincipalKind(operator.role.value)  # OperatorRole: "admin" | "auditor"
            entries.append((operator, Principal(kind, operator.name, KIND_SCOPES[kind], AuthMethod.STATIC_TOKEN)))
        self._entries = tuple(entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def resolve(self, token: str) -> Principal | None:
        """The principal whose configured hash matches ``token``, or None (not a static token)."""
        if not token:
            return None
        # SECURITY: no early exit, so the time taken does not tell which entry (if any) matched.
        matches = [principal for entry, principal in self._entries if entry.accepts(token)]  # type: ignore[attr-defined]
        if len(matches) > 1:
            # Two entries share one token: refuse rather than pick one (and say why in the log).
            raise InvalidCredentials("the token is configured for several principals")
        return matches[0] if matches else None


class ClientCertificates:
    """Local systems that authenticate with their TLS client certificate, pinned by SHA-256.

    SECURITY: the TLS layer has already checked the chain against the listener's trust anchors;
    the pin then names exactly one system. Names in the certificate are never trusted, because
    every node certificate of the federation CA would chain as well.
    """

    def __init__(self, clients: Iterable[OAuthClient]) -> None:
        self._pins = {c.certificate_sha256: c for c in clients if c.certificate_sha256 is not None}

    def __bool__(self) -> bool:
        return bool(self._pins)

    def resolve(self, certificate_der: bytes) -> Principal:
        client = self._pins.get(hashlib.sha256(certificate_der).hexdigest())
        if client is None:
            raise InvalidCredentials("client certificate not pinned for any local system")
        return client.principal(client.scopes, AuthMethod.CLIENT_CERT)
