"""Exports an auditor can verify without the node, and the hop-by-hop trace of a message.

JSONL export: line 1 is the signed checkpoint, every further line one record::

    {"checkpoint":"<note text>","format":"drehscheibe-audit-export/v1","signature":"<base64 DER>"}
    {"body":"<canonical record JSON>","index":7,"proof":["<hex>",...]}

CSV export: columns ``kind,index,body,proof,signature``; the first row has kind
``checkpoint`` (body = note, signature), the others kind ``record`` (proof hex values
separated by single spaces).

A verifier MUST verify the checkpoint signature first, then for every record hash the
UTF-8 bytes of ``body`` itself (leaf = SHA-256(0x00 || body)), check the inclusion proof
against the checkpoint's root and size, and only then read the record.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric import ec

from .checkpoint import Checkpoint, SignedCheckpoint, verify_checkpoint
from .errors import AuditUnavailable, AuditVerificationError
from .log import AuditLog
from .merkle import leaf_hash, verify_inclusion
from ..ids import check_message_id
from .record import Action, Actor, AuditRecord, Role, format_time

EXPORT_FORMAT = "drehscheibe-audit-export/v1"
FORMATS = ("jsonl", "csv")


def export_lines(
    log: AuditLog,
    *,
    actor: Actor,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: str = "jsonl",
    message_id: str | None = None,
) -> tuple[SignedCheckpoint, Iterator[str]]:
    """Audit the export, sign a checkpoint, and return it with the export's lines (lazily).

    The export itself is audited first (no record, no export), then a checkpoint is
    signed on demand so it covers every exported record, including the export record.
    Both happen before this returns, so a caller can refuse the export cleanly when the
    log cannot write; the lines are produced as they are read. ``message_id`` keeps only
    the records of one message (what a trace needs from each node).
    """
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}")
    if message_id is not None:
        check_message_id(message_id)
    window = {"format": fmt}
    if since is not None:
        window["since"] = format_time(since)
    if until is not None:
        window["until"] = format_time(until)
    if message_id is not None:
        window["message_id"] = message_id
    log.append(
        [AuditRecord(time=now, node=log.node, role=Role.NONE, action=Action.AUDIT_EXPORT, actor=actor, details=window)]
    )
    signed = log.checkpoint(now)
    size = signed.checkpoint.size
    tree = log.tree(size)
    if tree.root(size) != signed.checkpoint.root:
        raise AuditUnavailable("audit log changed under the export")
    note = signed.checkpoint.signed_bytes().decode("ascii")
    signature = base64.b64encode(signed.signature).decode("ascii")
    rows = (
        (index, body.decode("utf-8"), [p.hex() for p in tree.inclusion_proof(index, size)])
        for index, body, record in log.iter_records(since=since, until=until, limit_index=size)
        if message_id is None or record.message_id == message_id
    )

    def jsonl() -> Iterator[str]:
        yield json.dumps({"checkpoint": note, "format": EXPORT_FORMAT, "signature": signature}, sort_keys=True) + "\n"
        for index, body, proof in rows:
            yield json.dumps({"body": body, "index": index, "proof": proof}, sort_keys=True, ensure_ascii=False) + "\n"

    def csv_rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["kind", "index", "body", "proof", "signature"])
        writer.writerow(["checkpoint", "", note, "", signature])
        yield buffer.getvalue()
        for index, body, proof in rows:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(["record", index, body, " ".join(proof), ""])
            yield buffer.getvalue()

    return signed, jsonl() if fmt == "jsonl" else csv_rows()


def export_log(
    log: AuditLog,
    out: TextIO,
    *,
    actor: Actor,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: str = "jsonl",
    message_id: str | None = None,
) -> SignedCheckpoint:
    """Write the records with ``since <= time < until`` plus proofs; return the checkpoint used."""
    signed, lines = export_lines(log, actor=actor, now=now, since=since, until=until, fmt=fmt, message_id=message_id)
    for line in lines:
        out.write(line)
    return signed


@dataclass(frozen=True, slots=True)
class VerifiedExport:
    """Only what the signature and the proofs covered."""

    checkpoint: Checkpoint
    records: tuple[tuple[int, AuditRecord], ...]


def _parse(text: str) -> tuple[str, str, list[tuple[object, object, object]]]:
    if text.startswith("{"):
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        head = lines[0]
        if head.get("format") != EXPORT_FORMAT:
            raise AuditVerificationError("unknown export format")
        return head["checkpoint"], head["signature"], [(x["index"], x["body"], x["proof"]) for x in lines[1:]]
    rows = list(csv.reader(io.StringIO(text)))
    if rows[0] != ["kind", "index", "body", "proof", "signature"] or rows[1][0] != "checkpoint":
        raise AuditVerificationError("unknown export format")
    records = []
    for kind, index, body, proof, _ in rows[2:]:
        if kind != "record":
            raise AuditVerificationError("unexpected row kind in export")
        records.append((int(index), body, proof.split(" ") if proof else []))
    return rows[1][2], rows[1][4], records


def claimed_origin(text: str) -> str:
    """The node an export says it comes from, UNVERIFIED: use it only to pick the key."""
    try:
        return Checkpoint.parse(_parse(text)[0].encode("ascii")).origin
    except (ValueError, KeyError, IndexError, TypeError):
        raise AuditVerificationError("malformed export") from None


def verify_export(
    text: str, public_key: ec.EllipticCurvePublicKey, *, origin: str | None = None
) -> VerifiedExport:
    """Verify a JSONL or CSV export; raise :class:`AuditVerificationError` at the first bad record."""
    try:
        note, signature, rows = _parse(text)
        checkpoint = verify_checkpoint(note.encode("ascii"), base64.b64decode(signature, validate=True), public_key, origin=origin)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise AuditVerificationError(f"malformed export: {type(exc).__name__}") from None
    seen: set[int] = set()
    records = []
    for index, body, proof in rows:
        if not isinstance(index, int) or not isinstance(body, str) or not isinstance(proof, list):
            raise AuditVerificationError("malformed export record")
        if index in seen:
            raise AuditVerificationError("record exported twice", index=index)
        seen.add(index)
        data = body.encode("utf-8")
        try:
            path = [bytes.fromhex(p) for p in proof]
        except ValueError:
            raise AuditVerificationError("malformed proof", index=index) from None
        verify_inclusion(leaf_hash(data), index, checkpoint.size, path, checkpoint.root)
        try:
            record = AuditRecord.from_bytes(data)
        except (ValueError, KeyError, TypeError):
            raise AuditVerificationError("record is not a canonical audit record", index=index) from None
        if record.node != checkpoint.origin:
            raise AuditVerificationError("record of another node", index=index)
        records.append((index, record))
    return VerifiedExport(checkpoint, tuple(records))


_ROLE_ORDER = {Role.ORIGIN: 0, Role.RELAY: 1, Role.DESTINATION: 2}


@dataclass(frozen=True, slots=True)
class Hop:
    node: str
    role: Role
    first_time: datetime
    received_digest: str | None
    sent_digest: str | None
    records: tuple[tuple[int, AuditRecord], ...]


@dataclass(frozen=True, slots=True)
class Trace:
    message_id: str
    hops: tuple[Hop, ...]

    def timeline(self) -> list[str]:
        lines = []
        for number, hop in enumerate(self.hops):
            lines.append(f"hop {number}: node {hop.node} ({hop.role.value})")
            for index, record in hop.records:
                code = f" code {record.receipt_code}" if record.receipt_code is not None else ""
                lines.append(
                    f"  {format_time(record.time)} [{index}] {record.action.value} {record.outcome.value}{code}"
                )
            lines.append(f"  received {hop.received_digest or '-'}  sent {hop.sent_digest or '-'}")
        return lines


class BrokenTrace(AuditVerificationError):
    """The hops of a message do not join up; ``trace`` holds what could be rebuilt."""

    def __init__(self, reason: str, trace: Trace) -> None:
        super().__init__(reason)
        self.trace = trace


def _hop(node: str, records: list[tuple[int, AuditRecord]]) -> Hop:
    roles = {r.role for _, r in records if r.role is not Role.NONE}
    if len(roles) != 1:
        raise AuditVerificationError("a node has no single role for the message")
    received = {r.received_digest for _, r in records if r.received_digest}
    sent = {r.sent_digest for _, r in records if r.sent_digest}
    if len(received) > 1 or len(sent) > 1:
        raise AuditVerificationError("a node recorded different digests for the same message")
    return Hop(
        node=node,
        role=roles.pop(),
        first_time=min(r.time for _, r in records),
        received_digest=next(iter(received), None),
        sent_digest=next(iter(sent), None),
        records=tuple(sorted(records, key=lambda item: (item[1].time, item[0]))),
    )


def trace_message(message_id: str, exports: Sequence[VerifiedExport]) -> Trace:
    """Rebuild the path of ``message_id`` from verified exports of several nodes.

    Hops are ordered origin, relays (by time), destination. The chain holds when the
    digest each hop sent equals the digest the next hop received. Raises
    :class:`BrokenTrace` otherwise, or when the origin or the destination is missing.
    """
    by_node: dict[str, list[tuple[int, AuditRecord]]] = {}
    for export in exports:
        for index, record in export.records:
            if record.message_id == message_id:
                by_node.setdefault(export.checkpoint.origin, []).append((index, record))
    hops = sorted(
        (_hop(node, records) for node, records in by_node.items()),
        key=lambda hop: (_ROLE_ORDER[hop.role], hop.first_time),
    )
    trace = Trace(message_id, tuple(hops))
    if not hops or hops[0].role is not Role.ORIGIN:
        raise BrokenTrace("no origin hop for the message", trace)
    if hops[-1].role is not Role.DESTINATION:
        raise BrokenTrace("no destination hop for the message", trace)
    for number, (hop, following) in enumerate(zip(hops, hops[1:])):
        if hop.sent_digest is None or hop.sent_digest != following.received_digest:
            raise BrokenTrace(f"hop {number + 1} did not receive what hop {number} sent", trace)
    return trace


