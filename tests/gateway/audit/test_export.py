"""Exports with checkpoint and inclusion proofs, their independent verification, and message traces."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit import (
    Action, AuditLog, AuditVerificationError, BrokenTrace, Role, export_log, trace_message, verify_export,
)

from .conftest import AUDITOR, NODE, T0, message_record, test_key


def exported(log: AuditLog, fmt: str = "jsonl", **window) -> str:
    out = io.StringIO()
    export_log(log, out, actor=AUDITOR, now=T0 + timedelta(days=1), fmt=fmt, **window)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_verifies_without_the_node(log: AuditLog, fmt: str):
    """Every exported record verifies against the export's checkpoint with only the public key."""
    records = [message_record(i) for i in range(5)]
    log.append(records)
    result = verify_export(exported(log, fmt), test_key().public_key(), origin=NODE)
    assert [r for _, r in result.records][:5] == records
    assert result.records[-1][1].action is Action.AUDIT_EXPORT  # the export audits itself
    assert result.checkpoint.size == 6


def test_an_export_holds_only_the_time_window(log: AuditLog):
    """--from/--to select records with from <= time < to."""
    log.append([message_record(i) for i in range(5)])
    text = exported(log, since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=3))
    result = verify_export(text, test_key().public_key())
    assert [index for index, _ in result.records] == [1, 2]


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def join(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def test_tampered_exports_are_refused(log: AuditLog):
    """A changed body, proof, index, signature or a duplicated record makes verification fail."""
    log.append([message_record(i) for i in range(5)])
    rows = lines(exported(log))
    key = test_key().public_key()
    verify_export(join(rows), key)

    def variant(change) -> str:
        copy = json.loads(json.dumps(rows))
        change(copy)
        return join(copy)

    cases = {
        "body": lambda r: r[2].update(body=r[2]["body"].replace('"outcome":"ok"', '"outcome":"error"')),
        "proof": lambda r: r[2].update(proof=list(reversed(r[2]["proof"]))),
        "index": lambda r: r[2].update(index=r[2]["index"] + 1),
        "signature": lambda r: r[0].update(signature=r[0]["signature"][:-8] + "AAAAAAA="),
        "duplicate": lambda r: r.append(r[2]),
    }
    for name, change in cases.items():
        with pytest.raises(AuditVerificationError):
            verify_export(variant(change), key)
    with pytest.raises(AuditVerificationError):
        verify_export(join(rows), ec.generate_private_key(ec.SECP256R1()).public_key())


def test_malformed_exports_are_refused_without_a_crash(log: AuditLog):
    """Garbage, an empty CSV and a wrong header raise AuditVerificationError."""
    for text in ["{}", '{"format":"x"}\n', "kind,index\n", "not,an,export\n1,2,3\n"]:
        with pytest.raises(AuditVerificationError):
            verify_export(text, test_key().public_key())


# -- trace --------------------------------------------------------------------

HOPS = [("node-gemeinde", Role.ORIGIN), ("node-hub", Role.RELAY), ("node-kanton", Role.DESTINATION)]


def hop_records(node: str, role: Role, received: str, sent: str | None, minute: int):
    """The records one hop writes for the message: what it got, then what it passed on."""
    when = T0 + timedelta(minutes=minute)
    first = Action.ACCEPTED if role is Role.ORIGIN else Action.RECEIVED
    last = Action.DELIVERED if role is Role.DESTINATION else Action.FORWARDED
    return [_plain(node, role, first, received, None, when),
            _plain(node, role, last, None, sent, when + timedelta(seconds=1))]


def _plain(node, role, action, received, sent, when):
    base = message_record(0, node=node, role=role, action=action, message_id="move-in-42", when=when)
    return replace(base, received_digest=received, sent_digest=sent)


def build_exports(tmp_path: Path, digests: list[tuple[str, str | None]]) -> list[str]:
    texts = []
    for number, ((node, role), (received, sent)) in enumerate(zip(HOPS, digests)):
        with AuditLog.open(tmp_path / f"{node}.sqlite", node=node, signing_key=test_key()) as log:
            log.append([message_record(7, node=node, message_id="other-message")])
            log.append(hop_records(node, role, received, sent, minute=number))
            texts.append(exported(log))
    return texts


def test_trace_rebuilds_the_path_across_three_nodes(tmp_path: Path):
    """Exports of origin, relay and destination, given in any order, give the hops in path order."""
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    texts = build_exports(tmp_path, [(a, b), (b, c), (c, None)])
    verified = [verify_export(t, test_key().public_key()) for t in reversed(texts)]
    trace = trace_message("move-in-42", verified)
    assert [hop.node for hop in trace.hops] == ["node-gemeinde", "node-hub", "node-kanton"]
    assert [hop.role for hop in trace.hops] == [Role.ORIGIN, Role.RELAY, Role.DESTINATION]
    timeline = "\n".join(trace.timeline())
    assert "accepted" in timeline and "delivered" in timeline and "other-message" not in timeline


def test_trace_detects_a_digest_mismatch_between_hops(tmp_path: Path):
    """When the relay received something other than what the origin sent, the trace is broken at hop 1."""
    a, b, c, x = "a" * 64, "b" * 64, "c" * 64, "d" * 64
    texts = build_exports(tmp_path, [(a, b), (x, c), (c, None)])
    verified = [verify_export(t, test_key().public_key()) for t in texts]
    with pytest.raises(BrokenTrace) as caught:
        trace_message("move-in-42", verified)
    assert "hop 1" in str(caught.value)
    assert len(caught.value.trace.hops) == 3


def test_trace_without_the_destination_is_broken(tmp_path: Path):
    """Exports that stop before the destination do not make a complete trace."""
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    texts = build_exports(tmp_path, [(a, b), (b, c), (c, None)])
    verified = [verify_export(t, test_key().public_key()) for t in texts[:2]]
    with pytest.raises(BrokenTrace):
        trace_message("move-in-42", verified)
