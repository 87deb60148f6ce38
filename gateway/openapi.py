"""The OpenAPI 3.1 description of the local listener: /api/v1, /admin/v1, /audit/v1 and /oauth2/token.

Built in Python so enumerations (audit actions and outcomes, scopes) come from the code they
describe. ``openapi_document()`` returns a fresh dict each call; the node serves it at
``GET /openapi.json``. tests/gateway/test_openapi.py checks that it is valid OpenAPI 3.1, that
it names exactly the routes ``local_api`` mounts, and runs schemathesis against a real node.
"""

from __future__ import annotations

import copy
from typing import Any

from .audit.record import Action, Outcome
from .auth.principal import Scope

OPENAPI_PATH = "/openapi.json"

_JSON = "application/json"
_TEXT = "text/plain"
_PARTICIPANT_PATTERN = r"^(sedex://)?(T?[1-9]-[0-9A-Z]+-[0-9]+|T?0-sedex-[0-9])$"
_MESSAGE_ID_PATTERN = r"^[a-zA-Z0-9-]{1,36}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {_JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_TEXT: {"schema": {"type": "string"}}}}


_NULLABLE_STR = {"type": ["string", "null"]}

_SCHEMAS: dict[str, Any] = {
    "AuthError": {
        "type": "object",
        "description": "Refusal by the authentication middleware (docs/authentication.md).",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "parameter": {"type": "string"}},
    },
    "OAuthError": {
        "type": "object",
        "description": "RFC 6749 §5.2 error.",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    },
    "StageError": {
        "type": "object",
        "description": "Refusal by a stage: the sedex status code and, when the envelope could be read, the eCH-0090 receipt (wire-format.md §10.2).",
        "required": ["statusCode", "statusInfo"],
        "properties": {
            "statusCode": {"type": "integer"},
            "statusInfo": {"type": "string"},
            "receipt": {"type": "string", "description": "eCH-0090 receipt XML"},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["messageId", "senderId", "recipientIds", "duplicate", "status"],
        "properties": {
            "messageId": {"type": "string"},
            "senderId": {"type": "string"},
            "recipientIds": {"type": "array", "items": {"type": "string"}},
            "duplicate": {"type": "boolean"},
            "status": {"type": "string", "description": "path of the message status resource"},
        },
    },
    "Receipt": {
        "type": "object",
        "required": ["statusCode", "statusInfo", "messageId", "messageType", "messageClass", "senderId", "recipientId",
                     "eventDate", "receipt"],
        "properties": {
            "statusCode": {"type": "integer"},
            "statusInfo": {"type": "string"},
            "messageId": {"type": "string"},
            "messageType": {"type": ["string", "integer"]},
            "messageClass": {"type": ["string", "integer"]},
            "senderId": {"type": "string"},
            "recipientId": {"type": "string"},
            "eventDate": {"type": "string"},
            "receipt": {"type": "string", "description": "eCH-0090 receipt XML"},
            "signature": {"type": "string", "description": "JWS of the signed receipt (wire-format.md §9)"},
        },
    },
    "MessageStatus": {
        "type": "object",
        "required": ["messageId", "senderId", "recipients", "receipts", "events"],
        "properties": {
            "messageId": {"type": "string"},
            "senderId": {"type": "string"},
            "recipients": {"type": "array", "items": {
                "type": "object",
                "required": ["recipientId", "state", "attempts"],
                "properties": {
                    "recipientId": {"type": "string"},
                    "state": {"type": "string", "enum": ["queued", "handed", "delivered", "failed", "expired"]},
                    "attempts": {"type": "integer"},
                    "receiptStatus": {"type": ["integer", "null"]},
                },
            }},
            "receipts": {"type": "array", "items": _ref("Receipt")},
            "events": {"type": "array", "items": {
                "type": "object",
                "required": ["time", "node", "kind"],
                "properties": {
                    "time": {"type": "string"}, "node": {"type": "string"}, "kind": {"type": "string"},
                    "recipient": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
                },
            }},
        },
    },
    "InboxEntry": {
        "type": "object",
        "required": ["messageId", "senderId", "messageType", "received", "state", "envelope", "payload"],
        "properties": {
            "messageId": {"type": "string"},
            "senderId": {"type": "string"},
            "messageType": {"type": ["string", "integer"]},
            "received": {"type": "string"},
            "state": {"type": "string", "enum": ["delivered", "acknowledged"]},
            "envelope": {"type": "string"},
            "payload": {"type": "string"},
        },
    },
    "PolicyStatus": {
        "type": "object",
        "required": ["revision", "rules"],
        "properties": {
            "revision": _NULLABLE_STR,
            "rules": {"type": "array", "items": {
                "type": "object",
                "required": ["id", "effect"],
                "properties": {
                    "id": {"type": "string"}, "effect": {"type": "string"}, "purpose": _NULLABLE_STR,
                    "legalBasis": _NULLABLE_STR, "legalReference": _NULLABLE_STR,
                },
            }},
        },
    },
    "RoutesStatus": {
        "type": "object",
        "required": ["routes", "peers"],
        "properties": {
            "routes": {"type": "array", "items": {
                "type": "object",
                "required": ["recipient", "members", "via", "payload"],
                "properties": {"recipient": {"type": "string"}, "members": {"type": "array", "items": {"type": "string"}},
                               "via": {"type": "string"}, "payload": {"type": "string"}},
            }},
            "peers": {"type": "array", "items": {
                "type": "object",
                "required": ["id", "url", "breaker"],
                "properties": {"id": {"type": "string"}, "url": {"type": "string"}, "breaker": {"type": "string"}},
            }},
        },
    },
    "ReloadResult": {
        "type": "object",
        "description": "Outcome of a reload; 200 when the new set was accepted, 422 when the old one stays.",
        "required": ["accepted"],
        "properties": {"accepted": {"type": "boolean"}},
    },
    "Checkpoint": {
        "type": "object",
        "required": ["note", "signature", "origin", "size", "root", "time"],
        "properties": {
            "note": {"type": "string"}, "signature": {"type": "string"}, "origin": {"type": "string"},
            "size": {"type": "integer"}, "root": {"type": "string"}, "time": {"type": "string"},
        },
    },
    "AuditStatus": {
        "type": "object",
        "required": ["node", "size", "checkpoint", "read_index"],
        "properties": {
            "node": {"type": "string"}, "size": {"type": "integer"},
            "checkpoint": {"oneOf": [_ref("Checkpoint"), {"type": "null"}]},
            "read_index": {"type": "integer"},
        },
    },
    "AuditVerification": {
        "type": "object",
        "required": ["valid", "read_index"],
        "properties": {
            "valid": {"type": "boolean"},
            "size": {"type": "integer"}, "checkpoints": {"type": "integer"}, "signed_size": {"type": "integer"},
            "unsigned_tail": {"type": "integer"}, "pruned": {"type": "integer"},
            "reason": {"type": "string"}, "first_bad_index": {"type": ["integer", "null"]},
            "read_index": {"type": "integer"},
        },
    },
    "AuditQuery": {
        "type": "object",
        "additionalProperties": False,
        "description": "Filters (AND). `person` is an AHV number (756…) or local:CATEGORY:ID; it is never echoed.",
        "properties": {
            "participant": {"type": "string", "minLength": 1},
            "message_type": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
            "since": {"type": "string", "format": "date-time"},
            "until": {"type": "string", "format": "date-time"},
            "message_id": {"type": "string", "pattern": _MESSAGE_ID_PATTERN},
            "action": {"type": "string", "enum": [a.value for a in Action]},
            "outcome": {"type": "string", "enum": [o.value for o in Outcome]},
            "person": {"type": "string", "minLength": 1},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10_000},
        },
    },
    "AuditQueryResult": {
        "type": "object",
        "required": ["query", "records", "truncated"],
        "properties": {
            "query": {"type": "object"},
            "records": {"type": "array", "items": {
                "type": "object", "required": ["index", "record"],
                "properties": {"index": {"type": "integer"}, "record": {"type": "object"}},
            }},
            "truncated": {"type": "boolean"},
        },
    },
    "SubjectAccessReport": {
        "type": "object",
        "required": ["generated", "node", "messages"],
        "properties": {"generated": {"type": "string"}, "node": {"type": "string"},
                       "messages": {"type": "array", "items": {"type": "object"}}},
    },
    "InclusionProof": {
        "type": "object",
        "required": ["index", "size", "leaf_hash", "body", "proof", "checkpoint"],
        "properties": {
            "index": {"type": "integer"}, "size": {"type": "integer"}, "leaf_hash": {"type": "string"},
            "body": _NULLABLE_STR, "proof": {"type": "array", "items": {"type": "string"}},
            "checkpoint": _ref("Checkpoint"),
        },
    },
    "ConsistencyProof": {
        "type": "object",
        "required": ["first", "second", "proof", "first_checkpoint", "checkpoint"],
        "properties": {
            "first": {"type": "integer"}, "second": {"type": "integer"},
            "proof": {"type": "array", "items": {"type": "string"}},
            "first_checkpoint": {"oneOf": [_ref("Checkpoint"), {"type": "null"}]},
            "checkpoint": _ref("Checkpoint"),
        },
    },
    "TokenRequest": {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "scope": {"type": "string", "description": "space-separated scopes; none = every scope of the client"},
            "client_id": {"type": "string", "description": "client_secret_post only"},
            "client_secret": {"type": "string", "description": "client_secret_post only"},
        },
    },
    "Token": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "scope"],
        "properties": {
            "access_token": {"type": "string"}, "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {"type": "integer"}, "scope": {"type": "string"},
        },
    },
}

_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "RFC 6750 §3 challenge", "schema": {"type": "string"}}}

# Every authenticated route may answer these (the middleware, docs/authentication.md).
_AUTH_RESPONSES = {
    "401": _json(_ref("AuthError"), "No credential, or an invalid one.", _WWW_AUTHENTICATE),
    "403": _json(_ref("AuthError"), "The principal lacks the route's scope (insufficient_scope)."),
    "503": _json(_ref("AuthError"), "The credential cannot be checked now (OIDC keys unreachable), or a temporary refusal."),
}


def _participant_param(name: str = "participant") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": _PARTICIPANT_PATTERN},
            "description": "sedex participant ID; a participant the caller is not bound to answers 404"}


_MESSAGE_ID_PARAM = {"name": "message_id", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": _MESSAGE_ID_PATTERN}, "description": "eCH-0090 messageId"}


def _operation(op_id: str, tag: str, summary: str, scope: Scope, responses: dict[str, Any],
               parameters: list | None = None, body: dict | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": op_id, "tags": [tag], "summary": summary,
        "security": [{"bearerAuth": [scope.value]}] + ([{"mutualTLS": []}] if tag == "local systems" else []),
        "x-required-scope": scope.value,
        "responses": {**_AUTH_RESPONSES, **responses},
    }
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = body
    return operation


def _local(op_id: str, summary: str, scope: Scope, responses: dict[str, Any], parameters: list, body: dict | None = None):
    common = {"400": _text("A path segment is not a participant ID or messageId."),
              "404": _text("Unknown participant (or one the system is not bound to), unknown message.")}
    return _operation(op_id, "local systems", summary, scope, {**common, **responses}, parameters, body)


def _audit(op_id: str, summary: str, responses: dict[str, Any], parameters: list | None = None, body: dict | None = None):
    common = {"400": _json(_ref("Error"), "A parameter is missing, unknown or malformed (named, never echoed)."),
              "503": _json({"oneOf": [_ref("AuthError"), _ref("Error")]},
                           "The read cannot be recorded in the audit log (nothing was read), or auth unavailable.")}
    return _operation(op_id, "auditors", summary, Scope.AUDIT_READ, {**common, **responses}, parameters, body)


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _paths() -> dict[str, Any]:
    inbox_item = [_participant_param(), _participant_param("sender"), _MESSAGE_ID_PARAM]
    stage_errors = {
        "403": _json({"oneOf": [_ref("AuthError"), _ref("StageError")]}, "Missing scope, or sedex 310–313 (not allowed, certificate not valid)."),
        "409": _json(_ref("StageError"), "sedex 201: the messageId was already used for different content."),
        "413": _json(_ref("StageError"), "sedex 330: message too large."),
        "422": _json(_ref("StageError"), "Any other refusal (invalid envelope, no payload part, …)."),
        "503": _json({"oneOf": [_ref("AuthError"), _ref("StageError")]}, "Temporary refusal (sedex 4xx/5xx); retry."),
    }
    audit_json_body = lambda schema: {"required": True, "content": {_JSON: {"schema": schema}}}  # noqa: E731
    proof_errors = {"404": _json(_ref("Error"), "No signed checkpoint of that size."),
                    "409": _json(_ref("Error"), "Stored leaf hashes disagree with the checkpoint; run verify.")}
    return {
        "/api/v1/messages": {"post": _operation(
            "submitMessage", "local systems", "Submit a message: envelope then payload (streamed).", Scope.MESSAGES_SEND,
            {"202": _json(_ref("Accepted"), "Accepted (or an identical duplicate)."),
             "400": _json(_ref("Error"), "Not multipart, or the first part is not `envelope`."),
             "404": _text("A participant the system is not bound to."), **stage_errors},
            body={"required": True, "content": {"multipart/form-data": {
                "schema": {"type": "object", "required": ["envelope", "payload"], "properties": {
                    "envelope": {"type": "string", "description": "eCH-0090 envelope XML (v1 or v2); must be the first part"},
                    "payload": {"type": "string", "format": "binary", "description": "its filename becomes payload.name"},
                }},
                "encoding": {"envelope": {"contentType": "application/xml"}, "payload": {"contentType": "application/octet-stream"}},
            }}})},
        "/api/v1/messages/{participant}/{message_id}": {"get": _local(
            "messageStatus", "State, receipts and event timeline of a sent message.", Scope.MESSAGES_READ,
            {"200": _json(_ref("MessageStatus"), "The message's status.")}, [_participant_param(), _MESSAGE_ID_PARAM])},
        "/api/v1/participants/{participant}/receipts": {"get": _local(
            "listReceipts", "Receipts for messages the participant sent, oldest first.", Scope.MESSAGES_READ,
            {"200": _json({"type": "array", "items": {"allOf": [_ref("Receipt"), {
                "type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}]}}, "Receipts after `after`.")},
            [_participant_param(), _query("after", {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**63 - 1},
                                           "last receipt id seen (default 0)")])},
        "/api/v1/participants/{participant}/inbox": {"get": _local(
            "listInbox", "Delivered, not yet acknowledged messages.", Scope.MESSAGES_READ,
            {"200": _json({"type": "array", "items": _ref("InboxEntry")}, "The inbox.")},
            [_participant_param(), _query("all", {"type": "string", "enum": ["1"]}, "`1` includes acknowledged messages")])},
        "/api/v1/participants/{participant}/inbox/{sender}/{message_id}/envelope": {"get": _local(
            "inboxEnvelope", "The exact envelope bytes of a delivered message.", Scope.MESSAGES_READ,
            {"200": {"description": "The envelope.", "content": {"application/xml": {"schema": {"type": "string"}}}}}, inbox_item)},
        "/api/v1/participants/{participant}/inbox/{sender}/{message_id}/payload": {"get": _local(
            "inboxPayload", "The decrypted payload; the seal is verified again before the first byte (audited).",
            Scope.MESSAGES_READ,
            {"200": {"description": "The payload.", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                     "headers": {"Content-Disposition": {"schema": {"type": "string"}}}},
             "403": _json({"oneOf": [_ref("AuthError"), _ref("StageError")]}, "Missing scope, or the fetch cannot be audited."),
             "422": _json(_ref("StageError"), "The seal does not verify."),
             "503": _json({"oneOf": [_ref("AuthError"), _ref("StageError")]}, "Temporary failure.")},
            inbox_item)},
        "/api/v1/participants/{participant}/inbox/{sender}/{message_id}/ack": {"post": _local(
            "inboxAck", "Acknowledge a delivered message (idempotent).", Scope.MESSAGES_READ,
            {"204": {"description": "Acknowledged (also when already acknowledged)."}}, inbox_item)},
        "/admin/v1/policies": {"get": _operation(
            "policyStatus", "admins", "The active policy set's revision and rules.", Scope.ADMIN,
            {"200": _json(_ref("PolicyStatus"), "The active policy set.")})},
        "/admin/v1/policies/reload": {"post": _operation(
            "policyReload", "admins", "Load the policy files again (audited); a bad set keeps the old one.", Scope.ADMIN,
            {"200": _json(_ref("ReloadResult"), "The new set is active."),
             "403": _json({"oneOf": [_ref("AuthError"), _ref("StageError")]}, "Missing scope, or the audit log cannot record it."),
             "422": _json({"oneOf": [_ref("ReloadResult"), _ref("StageError")]}, "Refused; the old set stays."),
             "503": _json({"oneOf": [_ref("AuthError"), _ref("StageError")]}, "Temporary failure.")})},
        "/admin/v1/routes": {"get": _operation(
            "routesStatus", "admins", "The active routes and peers.", Scope.ADMIN,
            {"200": _json(_ref("RoutesStatus"), "Routes and peers with their circuit-breaker state.")})},
        "/admin/v1/routes/reload": {"post": _operation(
            "routesReload", "admins", "Read the node file again, swap routes and peers (audited).", Scope.ADMIN,
            {"200": _json(_ref("ReloadResult"), "The new routes are active."),
             "403": _json({"oneOf": [_ref("AuthError"), _ref("StageError")]}, "Missing scope, or the audit log cannot record it."),
             "422": _json({"oneOf": [_ref("ReloadResult"), _ref("StageError")]}, "Refused; the old routes stay."),
             "503": _json({"oneOf": [_ref("AuthError"), _ref("StageError")]}, "Temporary failure.")})},
        "/audit/v1/status": {"get": _audit(
            "auditStatus", "Size of the log and its newest signed checkpoint (the read is recorded).",
            {"200": _json(_ref("AuditStatus"), "Log status.")})},
        "/audit/v1/verify": {"get": _audit(
            "auditVerify", "Verify the whole log against its signed checkpoints with the node's key.",
            {"200": _json(_ref("AuditVerification"), "`valid` false names the reason and the first bad index.")})},
        "/audit/v1/query": {"post": _audit(
            "auditQuery", "Records matching all the given filters.",
            {"200": _json(_ref("AuditQueryResult"), "Matching records."),
             "501": _json(_ref("Error"), "Person search is not configured on this node.")},
            body=audit_json_body(_ref("AuditQuery")))},
        "/audit/v1/report": {"post": _audit(
            "auditReport", "Data-subject access report: every message about one person.",
            {"200": _json(_ref("SubjectAccessReport"), "The report."),
             "501": _json(_ref("Error"), "Person search is not configured on this node.")},
            body=audit_json_body({"type": "object", "additionalProperties": False, "required": ["person"],
                                  "properties": {"person": {"type": "string", "minLength": 1}}}))},
        "/audit/v1/export": {"get": _audit(
            "auditExport", "Streamed export, verifiable offline (checkpoint and inclusion proofs).",
            {"200": {"description": "JSON lines or CSV; a broken connection without the final chunk means incomplete.",
                     "content": {"application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}},
                     "headers": {"Content-Disposition": {"schema": {"type": "string"}}}}},
            [_query("since", {"type": "string", "format": "date-time"}, "ISO 8601 with timezone"),
             _query("until", {"type": "string", "format": "date-time"}, "ISO 8601 with timezone"),
             _query("format", {"type": "string", "enum": ["jsonl", "csv"], "default": "jsonl"}, "output format"),
             _query("message_id", {"type": "string", "pattern": _MESSAGE_ID_PATTERN}, "only this message")])},
        "/audit/v1/proofs/inclusion": {"get": _audit(
            "auditInclusionProof", "Inclusion proof of one record against a signed checkpoint.",
            {"200": _json(_ref("InclusionProof"), "The proof."), **proof_errors},
            [_query("index", {"type": "integer", "minimum": 0}, "record index", required=True),
             _query("size", {"type": "integer", "minimum": 1}, "a signed checkpoint's size (default: sign one now)")])},
        "/audit/v1/proofs/consistency": {"get": _audit(
            "auditConsistencyProof", "Consistency proof from a size the auditor kept to a signed checkpoint.",
            {"200": _json(_ref("ConsistencyProof"), "The proof."), **proof_errors},
            [_query("first", {"type": "integer", "minimum": 1}, "the earlier size", required=True),
             _query("second", {"type": "integer", "minimum": 1}, "a signed checkpoint's size (default: sign one now)")])},
        "/oauth2/token": {"post": {
            "operationId": "token", "tags": ["oauth2"],
            "summary": "OAuth2 client credentials (RFC 6749 §4.4); client_secret_basic or client_secret_post, TLS only.",
            "security": [{}, {"clientBasic": []}],
            "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": _ref("TokenRequest")}}},
            "responses": {
                "200": _json(_ref("Token"), "An access token (JWT, RFC 9068 profile, ES256 with the node's key)."),
                "400": _json(_ref("OAuthError"), "invalid_request, unsupported_grant_type, invalid_scope, insecure_transport, …"),
                "401": _json(_ref("OAuthError"), "invalid_client (with WWW-Authenticate: Basic when Basic was used)."),
                "503": _json(_ref("OAuthError"), "Too many waiting token requests; retry.",
                             {"Retry-After": {"schema": {"type": "string"}}}),
            },
        }},
        OPENAPI_PATH: {"get": {
            "operationId": "openapi", "tags": ["meta"], "summary": "This document.", "security": [{}],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 description of the local listener.")},
        }},
    }


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Drehscheibe local listener",
        "version": "1",
        "description": "Local systems (/api/v1), admins (/admin/v1), auditors (/audit/v1) and the OAuth2 token endpoint. "
                       "See docs/wire-format.md §10 and docs/authentication.md. HEAD and any route not listed here are refused (403).",
    },
    "servers": [{"url": "/"}],
    "tags": [{"name": "local systems"}, {"name": "admins"}, {"name": "auditors"}, {"name": "oauth2"}, {"name": "meta"}],
    "security": [{"bearerAuth": []}],
    "paths": _paths(),
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer",
                           "description": "A static token, a node access token (/oauth2/token) or an OIDC token. Scopes: "
                                          + ", ".join(s.value for s in Scope)},
            "mutualTLS": {"type": "mutualTLS", "description": "A pinned client certificate of a local system (no bearer token)."},
            "clientBasic": {"type": "http", "scheme": "basic", "description": "client_secret_basic at the token endpoint."},
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the local listener (a fresh copy the caller may change)."""
    return copy.deepcopy(_DOCUMENT)
