"""The auditor's read side: queries and the data-subject access report.

Every read is itself audited before any result is returned (who looked at what);
if that record cannot be written, the read fails closed with AuditUnavailable.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from .log import AuditLog
from .record import Action, Actor, AuditRecord, Outcome, Role, canonical_json, format_time


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters combine with AND; ``participant`` matches the sender or any recipient."""

    participant: str | None = None
    message_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    message_id: str | None = None
    action: Action | None = None
    outcome: Outcome | None = None
    person_ref: str | None = None  # HMAC ref, see persons.person_ref; never the AHV number

    def describe(self) -> str:
        """The query as canonical JSON, for the audit_read record (no personal data)."""
        fields = {
            key: (format_time(value) if isinstance(value, datetime) else getattr(value, "value", value))
            for key, value in asdict(self).items()
            if value is not None
        }
        return canonical_json(fields).decode("utf-8")

    def matches(self, record: AuditRecord) -> bool:
        env = record.envelope
        if self.participant is not None and (
            env is None or (self.participant != env.sender and self.participant not in env.recipients)
        ):
            return False
        if self.message_type is not None and (env is None or env.message_type != self.message_type):
            return False
        if self.message_id is not None and record.message_id != self.message_id:
            return False
        if self.action is not None and record.action is not self.action:
            return False
        if self.outcome is not None and record.outcome is not self.outcome:
            return False
        return self.person_ref is None or self.person_ref in record.person_refs


def audit_read(log: AuditLog, actor: Actor, now: datetime, what: str, description: str) -> int:
    """Append the ``audit_read`` record of one read (``description``: no personal data); return its index."""
    (index,) = log.append(
        [AuditRecord(time=now, node=log.node, role=Role.NONE, action=Action.AUDIT_READ, actor=actor,
                     details={"read": what, "query": description})]
    )
    return index


def query(log: AuditLog, q: AuditQuery, *, actor: Actor, now: datetime) -> list[tuple[int, AuditRecord]]:
    """Records matching ``q``, oldest first, after recording the read itself."""
    audit_index = audit_read(log, actor, now, "query", q.describe())
    return [
        (index, record)
        for index, _, record in log.iter_records(since=q.since, until=q.until, limit_index=audit_index)
        if q.matches(record)
    ]


@dataclass(frozen=True, slots=True)
class MessageAboutPerson:
    message_id: str
    first_time: str
    sender: str | None
    recipients: tuple[str, ...]
    message_type: str | None
    purposes: tuple[str, ...]
    legal_bases: tuple[str, ...]
    removed_fields: tuple[str, ...]
    nodes: tuple[str, ...]
    actions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SubjectAccessReport:
    """Every message that concerned one person, as the log of this node knows it."""

    generated: str
    node: str
    messages: tuple[MessageAboutPerson, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False)

    def to_text(self) -> str:
        lines = [f"Data-subject access report, node {self.node}, generated {self.generated}",
                 f"{len(self.messages)} message(s) concerned this person."]
        for m in self.messages:
            lines += [
                "",
                f"Message {m.message_id} (type {m.message_type or '-'}), first seen {m.first_time}",
                f"  from {m.sender or '-'} to {', '.join(m.recipients) or '-'}",
                f"  purpose: {', '.join(m.purposes) or '-'}",
                f"  legal basis: {', '.join(m.legal_bases) or '-'}",
                f"  removed before sending: {', '.join(m.removed_fields) or 'nothing'}",
                f"  handled as: {', '.join(m.actions)}",
            ]
        return "\n".join(lines) + "\n"


def subject_access_report(log: AuditLog, person_ref: str, *, actor: Actor, now: datetime) -> SubjectAccessReport:
    """Every message with a record that names ``person_ref``, with all of that message's records, after recording the read.

    Two passes: the node writes the person refs on the ``accepted`` record and the purpose and
    legal basis on the separate ``policy_decision`` record, so a message's other records must be
    read too, wherever they stand in the log.
    """
    audit_index = audit_read(log, actor, now, "subject_access_report",
                              canonical_json({"person_ref": person_ref}).decode("utf-8"))
    about = {record.message_id for _, _, record in log.iter_records(limit_index=audit_index)
             if person_ref in record.person_refs and record.message_id is not None}  # fmt: skip
    grouped: dict[str, list[AuditRecord]] = {}
    for _, _, record in log.iter_records(limit_index=audit_index):
        if record.message_id in about:
            grouped.setdefault(record.message_id, []).append(record)
    messages = []
    for message_id, records in grouped.items():
        env = next((r.envelope for r in records if r.envelope), None)
        policies = [r.policy for r in records if r.policy]
        messages.append(
            MessageAboutPerson(
                message_id=message_id,
                first_time=format_time(min(r.time for r in records)),
                sender=env.sender if env else None,
                recipients=env.recipients if env else (),
                message_type=env.message_type if env else None,
                purposes=tuple(sorted({p.purpose for p in policies if p.purpose})),
                legal_bases=tuple(sorted({p.legal_basis for p in policies if p.legal_basis})),
                removed_fields=tuple(sorted({f for p in policies for f in p.redactions})),
                nodes=tuple(sorted({r.node for r in records})),
                actions=tuple(r.action.value for r in sorted(records, key=lambda r: r.time)),
            )
        )
    messages.sort(key=lambda m: (m.first_time, m.message_id))
    return SubjectAccessReport(format_time(now), log.node, tuple(messages))
