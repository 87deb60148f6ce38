"""What one audit record says, and its canonical bytes.

A record holds metadata, digests, the policy decision and keyed hashes of person
identifiers — deliberately never payload content or personal data in clear.
The canonical JSON bytes are what is stored and what is hashed into the log.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..ids import ParticipantId, check_message_id

RECORD_VERSION = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class Role(enum.Enum):
    """The node's role for the message at this hop."""

    ORIGIN = "origin"
    RELAY = "relay"
    DESTINATION = "destination"
    NONE = "none"  # records not about a message: reloads, config changes, audit reads


class Action(enum.Enum):
    ACCEPTED = "accepted"
    VALIDATED = "validated"
    POLICY_DECISION = "policy_decision"
    SEALED = "sealed"
    FORWARDED = "forwarded"
    RECEIVED = "received"
    DELIVERED = "delivered"
    FETCHED = "fetched"
    RECEIPT_ISSUED = "receipt_issued"
    REFUSED = "refused"
    EXPIRED = "expired"
    POLICY_RELOAD = "policy_reload"
    CONFIG_CHANGE = "config_change"
    AUDIT_READ = "audit_read"
    AUDIT_EXPORT = "audit_export"


class ActorKind(enum.Enum):
    LOCAL_SYSTEM = "local_system"
    PEER_NODE = "peer_node"
    ADMIN = "admin"
    AUDITOR = "auditor"
    NODE = "node"


class Outcome(enum.Enum):
    OK = "ok"
    REFUSED = "refused"
    ERROR = "error"


def format_time(moment: datetime) -> str:
    """UTC ISO-8601 with microseconds and ``Z``: fixed width, so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return moment.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)


def _digest(value: str | None, name: str) -> str | None:
    if value is not None and not _HEX64.fullmatch(value):
        raise ValueError(f"{name} must be a lowercase sha256 hex digest")
    return value


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused the action: a local system, a peer node, an admin, an auditor, the node."""

    kind: ActorKind
    id: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "kind": self.kind.value}


@dataclass(frozen=True, slots=True)
class EnvelopeMeta:
    """The eCH-0090 envelope fields an auditor needs; never the payload."""

    sender: str
    recipients: tuple[str, ...]
    message_type: str
    message_class: str = "0"
    message_date: str | None = None

    def __post_init__(self) -> None:
        # Normalise sedex:// URIs so searches by participant find every spelling.
        object.__setattr__(self, "sender", str(ParticipantId.parse(self.sender)))
        object.__setattr__(
            self, "recipients", tuple(str(ParticipantId.parse(r)) for r in self.recipients)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "message_class": self.message_class,
            "message_date": self.message_date,
            "message_type": self.message_type,
            "recipients": list(self.recipients),
            "sender": self.sender,
        }


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """The policy decision that let the message pass (or not), as the engine returned it."""

    rule_ids: tuple[str, ...] = ()
    purpose: str | None = None
    legal_basis: str | None = None
    redactions: tuple[str, ...] = ()  # paths of removed fields, never their values
    revision: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "legal_basis": self.legal_basis,
            "purpose": self.purpose,
            "redactions": list(self.redactions),
            "revision": self.revision,
            "rule_ids": list(self.rule_ids),
        }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One thing a node did, why, and on whose behalf."""

    time: datetime
    node: str
    role: Role
    action: Action
    actor: Actor
    outcome: Outcome = Outcome.OK
    message_id: str | None = None
    envelope: EnvelopeMeta | None = None
    received_digest: str | None = None
    sent_digest: str | None = None
    policy: PolicyRecord | None = None
    receipt_code: int | None = None
    person_refs: tuple[str, ...] = ()
    # Free-form, non-personal details: for config changes (what kind, which id, digests
    # of old and new), for audit reads (the query that was run), for prunes (the cut).
    details: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        format_time(self.time)
        if self.message_id is not None:
            check_message_id(self.message_id)
        _digest(self.received_digest, "received_digest")
        _digest(self.sent_digest, "sent_digest")
        for ref in self.person_refs:
            _digest(ref, "person_refs entry")
        # Sorted and de-duplicated, so the order of persons in a payload does not leak.
        object.__setattr__(self, "person_refs", tuple(sorted(set(self.person_refs))))
        object.__setattr__(self, "details", dict(self.details))
        for key, value in self.details.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError("details must map strings to strings")

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "actor": self.actor.to_json(),
            "details": dict(self.details),
            "envelope": self.envelope.to_json() if self.envelope else None,
            "message_id": self.message_id,
            "node": self.node,
            "outcome": self.outcome.value,
            "person_refs": list(self.person_refs),
            "policy": self.policy.to_json() if self.policy else None,
            "receipt_code": self.receipt_code,
            "received_digest": self.received_digest,
            "role": self.role.value,
            "sent_digest": self.sent_digest,
            "time": format_time(self.time),
            "v": RECORD_VERSION,
        }

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> AuditRecord:
        if obj.get("v") != RECORD_VERSION:
            raise ValueError("unknown audit record version")
        env = obj["envelope"]
        pol = obj["policy"]
        return cls(
            time=parse_time(obj["time"]),
            node=obj["node"],
            role=Role(obj["role"]),
            action=Action(obj["action"]),
            actor=Actor(ActorKind(obj["actor"]["kind"]), obj["actor"]["id"]),
            outcome=Outcome(obj["outcome"]),
            message_id=obj["message_id"],
            envelope=EnvelopeMeta(
                sender=env["sender"],
                recipients=tuple(env["recipients"]),
                message_type=env["message_type"],
                message_class=env["message_class"],
                message_date=env["message_date"],
            )
            if env
            else None,
            received_digest=obj["received_digest"],
            sent_digest=obj["sent_digest"],
            policy=PolicyRecord(
                rule_ids=tuple(pol["rule_ids"]),
                purpose=pol["purpose"],
                legal_basis=pol["legal_basis"],
                redactions=tuple(pol["redactions"]),
                revision=pol["revision"],
            )
            if pol
            else None,
            receipt_code=obj["receipt_code"],
            person_refs=tuple(obj["person_refs"]),
            details=obj["details"],
        )

    @classmethod
    def from_bytes(cls, body: bytes) -> AuditRecord:
        """Parse stored bytes; raise ``ValueError`` unless they are exactly canonical."""
        record = cls.from_json(json.loads(body))
        if record.canonical_bytes() != body:
            raise ValueError("audit record bytes are not canonical")
        return record


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no floats; the exact bytes that are hashed."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
