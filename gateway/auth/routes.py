"""The one place that says which scope each route of the local listener requires.

Keys are (HTTP method, aiohttp route pattern as mounted, i.e. with the sub-application prefix).
SECURITY: deny by default. A route missing from this table is refused (403) to every
principal, so a route added to the API without an entry here cannot be reached; ``HEAD`` is
not listed and is refused too (aiohttp would run the GET handler for it, with its side
effects such as audited payload fetches). Only :data:`PUBLIC` routes skip authentication:
the token endpoint, where a client authenticates with its own credentials.

Acknowledging a delivered message is part of receiving it, so it needs ``messages:read``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Final

from .principal import Scope


class Public(Enum):
    """Marker of a route that needs no principal (see :data:`PUBLIC`)."""

    PUBLIC = "public"


PUBLIC: Final = Public.PUBLIC
Rule = Scope | Public

_P = "/api/v1/participants/{participant}"
ROUTE_SCOPES: Mapping[tuple[str, str], Rule] = {
    # local systems, only for the participants they are bound to
    ("POST", "/api/v1/messages"): Scope.MESSAGES_SEND,
    ("GET", "/api/v1/messages/{participant}/{message_id}"): Scope.MESSAGES_READ,
    ("GET", f"{_P}/receipts"): Scope.MESSAGES_READ,
    ("GET", f"{_P}/inbox"): Scope.MESSAGES_READ,
    ("GET", f"{_P}/inbox/{{sender}}/{{message_id}}/envelope"): Scope.MESSAGES_READ,
    ("GET", f"{_P}/inbox/{{sender}}/{{message_id}}/payload"): Scope.MESSAGES_READ,
    ("POST", f"{_P}/inbox/{{sender}}/{{message_id}}/ack"): Scope.MESSAGES_READ,
    # admins: policies and routes, never payloads or audit content
    ("GET", "/admin/v1/policies"): Scope.ADMIN,
    ("POST", "/admin/v1/policies/reload"): Scope.ADMIN,
    ("GET", "/admin/v1/routes"): Scope.ADMIN,
    ("POST", "/admin/v1/routes/reload"): Scope.ADMIN,
    # auditors: the audit trail, read-only (the auditor API records every read itself)
    ("GET", "/audit/v1/status"): Scope.AUDIT_READ,
    ("GET", "/audit/v1/verify"): Scope.AUDIT_READ,
    ("POST", "/audit/v1/query"): Scope.AUDIT_READ,
    ("POST", "/audit/v1/report"): Scope.AUDIT_READ,
    ("GET", "/audit/v1/export"): Scope.AUDIT_READ,
    ("GET", "/audit/v1/proofs/inclusion"): Scope.AUDIT_READ,
    ("GET", "/audit/v1/proofs/consistency"): Scope.AUDIT_READ,
    # the web console (gateway/console): pages behind the session cookie, same scopes as the APIs;
    # login, logout (CSRF-checked), the landing redirect and the stylesheet need no principal
    ("GET", "/console/"): PUBLIC,
    ("GET", "/console/login"): PUBLIC,
    ("POST", "/console/login"): PUBLIC,
    ("POST", "/console/logout"): PUBLIC,
    # login through the OIDC provider (gateway/console/oidc.py): before login there is no principal to check
    ("GET", "/console/oidc/start"): PUBLIC,
    ("GET", "/console/oidc/callback"): PUBLIC,
    ("GET", "/console/static/{name}"): PUBLIC,
    ("GET", "/console/audit"): Scope.AUDIT_READ,
    ("GET", "/console/audit/search"): Scope.AUDIT_READ,
    ("POST", "/console/audit/search"): Scope.AUDIT_READ,
    ("GET", "/console/audit/messages/{message_id}"): Scope.AUDIT_READ,
    ("GET", "/console/audit/report"): Scope.AUDIT_READ,
    ("POST", "/console/audit/report"): Scope.AUDIT_READ,
    ("GET", "/console/audit/report.csv"): Scope.AUDIT_READ,
    ("GET", "/console/audit/export"): Scope.AUDIT_READ,
    ("POST", "/console/audit/export"): Scope.AUDIT_READ,
    ("GET", "/console/admin"): Scope.ADMIN,
    ("GET", "/console/admin/policies"): Scope.ADMIN,
    ("GET", "/console/admin/policies/diff"): Scope.ADMIN,
    ("POST", "/console/admin/policies/apply"): Scope.ADMIN,
    ("GET", "/console/admin/explain"): Scope.ADMIN,
    ("POST", "/console/admin/explain"): Scope.ADMIN,
    ("GET", "/console/messages"): Scope.MESSAGES_READ,
    ("POST", "/console/messages"): Scope.MESSAGES_READ,
    ("GET", "/console/messages/{participant}/{message_id}"): Scope.MESSAGES_READ,
    # the OAuth2 token endpoint: clients authenticate there with their secret
    ("POST", "/oauth2/token"): PUBLIC,
    # the OpenAPI description of this listener: no data, no secrets
    ("GET", "/openapi.json"): PUBLIC,
}


def check_table(table: Mapping[tuple[str, str], Rule]) -> None:
    """Refuse a malformed table when the middleware is built, not at the first request."""
    for key, rule in table.items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in {"GET", "POST", "PUT", "PATCH", "DELETE"}
                and isinstance(key[1], str) and key[1].startswith("/")):  # fmt: skip
            raise ValueError(f"route table key {key!r}: expected (method, '/pattern')")
        if not isinstance(rule, (Scope, Public)):
            raise ValueError(f"route table entry {key!r}: {rule!r} is neither a Scope nor PUBLIC")


def required(table: Mapping[tuple[str, str], Rule], method: str, pattern: str | None) -> Rule | None:
    """The rule for a matched route; None (deny) for unknown routes, unknown methods and HEAD."""
    if pattern is None:
        return None
    return table.get((method, pattern))
