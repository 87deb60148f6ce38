"""Keyed person refs from real eCH samples, and that no personal data reaches the log."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from gateway.audit import AuditLog, export_log, person_ref, person_refs
from gateway.audit.persons import InvalidPersonIdentifier
from gateway.safexml import parse_xml

from .conftest import AUDITOR, NODE, SAMPLES, SECRET, T0, message_record

SAMPLE_FILES = sorted((SAMPLES / "openech-ech0020-v2.2").glob("*/*.xml")) + sorted(
    (SAMPLES / "stimmregister-ech0045-v6").glob("*/*.xml")
)
_VN = re.compile(r"<(?:\w+:)?vn(?:\s[^>]*)?>\s*(\d+)\s*<")
_LOCAL = re.compile(
    r"<(?:\w+:)?localPersonId[^>]*>\s*<(?:\w+:)?personIdCategory[^>]*>([^<]*)</[^>]*>\s*"
    r"<(?:\w+:)?personId[^>]*>([^<]*)</"
)
_PERSONAL = re.compile(
    r"<(?:\w+:)?(?:firstName|officialName|originalName|callName)(?:\s[^>]*)?>([^<]+)<"
    r"|<(?:\w+:)?yearMonthDay>([^<]+)<"
)


def identifiers_by_regex(text: str) -> set[str]:
    """An extraction independent of the lxml walk, for comparison."""
    found = {f"vn:{m}" for m in _VN.findall(text)}
    found |= {f"local:{c.strip()}:{p.strip()}" for c, p in _LOCAL.findall(text) if c.strip() and p.strip()}
    return found


def personal_values(text: str) -> set[str]:
    return {value.strip() for pair in _PERSONAL.findall(text) for value in pair if value.strip()} | set(_VN.findall(text))


def test_samples_are_present():
    """The real open-eCH and Stimmregister samples are found next to the repository."""
    assert len(SAMPLE_FILES) >= 10


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.parent.name[:40])
def test_refs_cover_every_vn_and_local_person_id(path: Path):
    """person_refs returns the keyed hash of exactly the AHV numbers and local person IDs in the sample."""
    data = path.read_bytes()
    expected = {person_ref(i.removeprefix("vn:"), SECRET) if i.startswith("vn:") else person_ref(i, SECRET)
                for i in identifiers_by_regex(data.decode("utf-8"))}
    assert set(person_refs(parse_xml(data), SECRET)) == expected


def test_some_samples_yield_both_kinds_of_identifier():
    """The sample set exercises both the vn and the localPersonId path."""
    texts = [p.read_text("utf-8") for p in SAMPLE_FILES]
    assert any(_VN.search(t) for t in texts) and any(
        any(c.strip() for c, _ in _LOCAL.findall(t)) for t in texts
    )


def test_ahv_spellings_give_the_same_ref_and_secrets_differ():
    """Dots and spaces in an AHV number do not change its ref; another secret gives another ref."""
    assert person_ref("756.1829.8713.78", SECRET) == person_ref("7561829871378", SECRET)
    assert person_ref("7561829871378", SECRET) != person_ref("7561829871378", SECRET[::-1])


def test_bad_identifiers_and_short_secrets_are_refused_without_echoing_them():
    """A non-AHV identifier or a short secret is refused, and the error does not repeat the input."""
    with pytest.raises(InvalidPersonIdentifier) as caught:
        person_ref("Werner Hauber", SECRET)
    assert "Werner" not in str(caught.value)
    with pytest.raises(ValueError):
        person_ref("7561829871378", b"short")


def test_no_personal_data_from_the_samples_reaches_the_log_or_an_export(tmp_path: Path, key):
    """Names, AHV numbers and birth dates of the samples appear neither in the SQLite bytes nor in exports."""
    secrets_in_samples: set[str] = set()
    records = []
    for n, path in enumerate(SAMPLE_FILES):
        data = path.read_bytes()
        secrets_in_samples |= personal_values(data.decode("utf-8"))
        records.append(message_record(n, person_refs=person_refs(parse_xml(data), SECRET)))
    assert any(v.startswith("756") for v in secrets_in_samples) and len(secrets_in_samples) > 20
    db = tmp_path / "audit.sqlite"
    with AuditLog.open(db, node=NODE, signing_key=key) as log:
        log.append(records)
        jsonl, csv_out = io.StringIO(), io.StringIO()
        export_log(log, jsonl, actor=AUDITOR, now=T0, fmt="jsonl")
        export_log(log, csv_out, actor=AUDITOR, now=T0, fmt="csv")
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("audit.sqlite*"))
    assert sum(bool(r.person_refs) for r in records) >= 10
    leaked = {v for v in secrets_in_samples if v.encode("utf-8") in raw or v in jsonl.getvalue() or v in csv_out.getvalue()}
    assert leaked == set()


def test_person_refs_match_the_documented_vectors():
    """The keyed refs of one AHV number and one local person ID equal the values in docs/audit.md."""
    assert person_ref("756.1234.5678.97", SECRET) == "73e461d7d31e031f8f0f4e3298c76d760dad030ef32c8afd245d9e144e5b1333"
    assert person_ref("local:MU.1102:6654116545", SECRET) == (
        "886f5e180c959d3d6bb2d214a03106b94c9cff4eb86f7a0a36a821b6f8fa5ce5"
    )
