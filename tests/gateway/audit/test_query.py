"""Auditor queries, person search and the data-subject access report; each read is itself audited."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from gateway.audit import (
    Action, AuditLog, AuditQuery, AuditUnavailable, Outcome, person_ref, person_refs, query, subject_access_report,
)
from gateway.audit.record import PolicyRecord
from gateway.safexml import parse_xml

from .conftest import AUDITOR, SECRET, T0, message_record
from .test_persons import SAMPLE_FILES, identifiers_by_regex

LATER = T0 + timedelta(days=2)


def seeded(log: AuditLog) -> None:
    log.append([
        message_record(0, sender="1-1061-1", recipients=("2-LU-1",)),
        message_record(1, sender="1-1059-1", recipients=("2-LU-1", "3-CH-1"), action=Action.REFUSED),
        message_record(2, sender="2-LU-1", recipients=("1-1061-1",)),
    ])


def ids(results) -> list[str]:
    return [record.message_id for _, record in results]


@pytest.mark.parametrize("q,expected", [
    (AuditQuery(participant="1-1061-1"), ["msg-0", "msg-2"]),
    (AuditQuery(participant="3-CH-1"), ["msg-1"]),
    (AuditQuery(message_type="20201"), ["msg-0", "msg-1", "msg-2"]),
    (AuditQuery(message_type="99"), []),
    (AuditQuery(since=T0 + timedelta(seconds=1), until=T0 + timedelta(seconds=2)), ["msg-1"]),
    (AuditQuery(message_id="msg-2"), ["msg-2"]),
    (AuditQuery(action=Action.REFUSED), ["msg-1"]),
    (AuditQuery(outcome=Outcome.OK, participant="2-LU-1"), ["msg-0", "msg-1", "msg-2"]),
    (AuditQuery(outcome=Outcome.ERROR), []),
])
def test_queries_return_exactly_the_matching_records(log: AuditLog, q: AuditQuery, expected: list[str]):
    """Each filter, alone or combined, selects exactly the records it names."""
    seeded(log)
    assert ids(query(log, q, actor=AUDITOR, now=LATER)) == expected


def test_every_query_is_itself_audited(log: AuditLog):
    """A query appends an audit_read record naming the auditor and the query, before returning."""
    seeded(log)
    query(log, AuditQuery(message_id="msg-2"), actor=AUDITOR, now=LATER)
    last = list(log.iter_records())[-1][2]
    assert (last.action, last.actor, last.time) == (Action.AUDIT_READ, AUDITOR, LATER)
    assert json.loads(last.details["query"]) == {"message_id": "msg-2"}


def test_a_query_fails_closed_when_the_read_cannot_be_audited(log_path):
    """Without a way to record the read, the query returns nothing and raises AuditUnavailable."""
    with AuditLog.open(log_path, node="node-lu-hub", signing_key=None) as log:
        with pytest.raises(AuditUnavailable):
            query(log, AuditQuery(), actor=AUDITOR, now=LATER)


def sample_messages(log: AuditLog) -> dict[str, set[str]]:
    """One message per real sample; returns message id -> identifiers found by regex."""
    truth = {}
    records = []
    for n, path in enumerate(SAMPLE_FILES):
        data = path.read_bytes()
        message_id = f"sample-{n}"
        truth[message_id] = identifiers_by_regex(data.decode("utf-8"))
        policy = PolicyRecord(rule_ids=("r1",), purpose=f"purpose-{n}", legal_basis="StHG Art. 5",
                              redactions=("religion", f"field-{n}"), revision="r1")
        record = message_record(n, message_id=message_id, person_refs=person_refs(parse_xml(data), SECRET))
        records.append(replace(record, policy=policy))
    log.append(records)
    return truth


def test_person_search_finds_exactly_the_messages_about_that_person(log: AuditLog):
    """Searching by a person's AHV number returns every message whose payload named it, and no other."""
    truth = sample_messages(log)
    vns = sorted({i for found in truth.values() for i in found if i.startswith("vn:")})
    assert len(vns) >= 3
    for vn in vns:
        expected = sorted(m for m, found in truth.items() if vn in found)
        q = AuditQuery(person_ref=person_ref(vn.removeprefix("vn:"), SECRET))
        assert sorted(ids(query(log, q, actor=AUDITOR, now=LATER))) == expected


def test_local_person_ids_are_searchable_too(log: AuditLog):
    """A local person ID (category and id) finds the messages that carried it."""
    truth = sample_messages(log)
    local = sorted({i for found in truth.values() for i in found if i.startswith("local:")})
    assert local
    expected = sorted(m for m, found in truth.items() if local[0] in found)
    q = AuditQuery(person_ref=person_ref(local[0], SECRET))
    assert sorted(ids(query(log, q, actor=AUDITOR, now=LATER))) == expected


def test_the_access_report_lists_every_message_about_the_person(log: AuditLog):
    """The report names each message about the person with sender, recipients, purpose, legal basis and removed fields."""
    truth = sample_messages(log)
    vn = "vn:7561829871378"
    expected = sorted(m for m, found in truth.items() if vn in found)
    assert len(expected) >= 2
    report = subject_access_report(log, person_ref(vn[3:], SECRET), actor=AUDITOR, now=LATER)
    assert sorted(m.message_id for m in report.messages) == expected
    first = report.messages[0]
    n = first.message_id.removeprefix("sample-")
    assert (first.sender, first.recipients) == ("1-1061-1", ("2-LU-1",))
    assert first.purposes == (f"purpose-{n}",) and first.legal_bases == ("StHG Art. 5",)
    assert set(first.removed_fields) == {"religion", f"field-{n}"}
    text = report.to_text()
    assert f"{len(expected)} message(s)" in text and "StHG Art. 5" in text and "7561829871378" not in text
    assert json.loads(report.to_json())["messages"][0]["message_id"] == first.message_id
    last = list(log.iter_records())[-1][2]
    assert last.action is Action.AUDIT_READ and last.details["read"] == "subject_access_report"
