"""Redaction on real eCH-0020 2.x samples: removed elements go, the rest stays, XSD still holds."""

from __future__ import annotations

import re

import pytest
from lxml import etree

from gateway.policy import RedactionError, redact
from gateway.policy.loader import parse_path
from gateway.safexml import parse_xml

from .conftest import MOVE_IN, OPENECH

NS = {"e20": "http://www.ech.ch/xmlns/eCH-0020/2", "e11": "http://www.ech.ch/xmlns/eCH-0011/4"}
RELIGION = parse_path("//e20:moveInPerson/e20:religion", NS)
CALL_NAME = parse_path("//e20:moveInPerson/e20:callName", NS)
MOVE_IN_SAMPLES = [
    MOVE_IN,
    OPENECH / "naturalizeforeigner-person" / "person.xml",
    OPENECH / "changenationalitytest-7563806343847" / "ChangeNationalityTest_7563806343847.xml",
]


def c14n(data: bytes) -> str:
    return etree.tostring(parse_xml(data), method="c14n").decode()


@pytest.mark.parametrize("sample", MOVE_IN_SAMPLES, ids=lambda p: p.parent.name)
def test_religion_is_removed_and_everything_else_is_unchanged(sample, catalog):
    """Only the moveInPerson religion disappears; the canonical rest is identical and validates."""
    original = sample.read_bytes()
    result = redact(original, [RELIGION], catalog)
    assert result.removed == ((RELIGION.clark, 1),)
    # Independent expectation: the canonical original minus the religion element's text.
    expected = re.sub(r"<e20:religion>[^<]*</e20:religion>", "", c14n(original), count=1)
    assert c14n(result.payload) == expected
    assert b"religion>" not in result.payload
    assert catalog.validate(parse_xml(result.payload)) == NS["e20"]


def test_several_paths_are_removed_and_counted(catalog):
    """Two optional elements are removed together and each is counted."""
    result = redact(MOVE_IN.read_bytes(), [RELIGION, CALL_NAME], catalog)
    assert dict(result.removed) == {RELIGION.clark: 1, CALL_NAME.clark: 1}
    tree = parse_xml(result.payload)
    assert tree.find(".//{%s}callName" % NS["e20"]) is None
    assert tree.find(".//{%s}otherName" % NS["e20"]) is not None


def test_absent_elements_are_counted_as_zero(catalog):
    """A path that matches nothing in this payload removes nothing and says so."""
    sample = OPENECH / "div-movetest" / "moveTest.xml"
    original = sample.read_bytes()
    result = redact(original, [RELIGION], catalog)
    assert result.removed == ((RELIGION.clark, 0),)
    assert c14n(result.payload) == c14n(original)


def test_removing_a_mandatory_element_is_refused_without_values(catalog):
    """A redaction that would make the payload invalid raises, and the message quotes no personal data."""
    nationality = parse_path("//e20:moveInPerson/e20:nationality", NS)
    with pytest.raises(RedactionError) as info:
        redact(MOVE_IN.read_bytes(), [nationality], catalog)
    message = str(info.value)
    assert "not schema-valid" in message
    for personal in ("Meier", "Dirk", "7565706688248", "Schweiz"):
        assert personal not in message


def test_no_redactions_returns_the_payload_untouched(catalog):
    """Without redactions the payload bytes pass through unparsed and unchanged."""
    data = MOVE_IN.read_bytes()
    assert redact(data, [], catalog).payload is data


def test_clark_strings_from_a_decision_are_accepted(catalog):
    """The Clark paths a PolicyDecision carries can be passed to redact directly."""
    result = redact(MOVE_IN.read_bytes(), [RELIGION.clark], catalog)
    assert result.removed == ((RELIGION.clark, 1),)
