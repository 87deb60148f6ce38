"""eCH-0090 envelopes v1.0 and v2.0: parsed from real samples, validated by the official XSD, rebuilt."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.envelope import InvalidEnvelope, parse_envelope, read_message_id
from gateway.ids import ParticipantId

from ..conftest import SAMPLES

ENVELOPES = sorted(SAMPLES.rglob("envl_*.xml"))
VALID = [p for p in ENVELOPES if "94b073dd" not in p.name and "Test_XXE" not in p.name and "95b29548" not in p.name]


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_every_valid_sample_envelope_parses_and_round_trips(path, catalog):
    """Each schema-valid sample envelope parses, and its rebuilt form (v1 and v2) parses to the same values."""
    envelope = parse_envelope(path.read_bytes(), catalog)
    assert parse_envelope(envelope.to_xml(), catalog) == envelope
    as_v2 = replace(envelope, version="2.0")
    assert parse_envelope(as_v2.to_xml(), catalog) == as_v2


def test_multiple_recipients_are_kept_in_order(catalog):
    """recipientId+ is read completely."""
    path = next(p for p in VALID if "Test8" in p.name)
    envelope = parse_envelope(path.read_bytes(), catalog)
    assert envelope.recipients == (ParticipantId("T7-4-2"), ParticipantId("T7-4-3"), ParticipantId("T7-4-4"))


def test_a_recipient_listed_twice_is_refused_with_status_200(catalog):
    """The same recipientId twice is an invalid envelope: one message has one row and one receipt per recipient."""
    path = next(p for p in VALID if "Test8" in p.name)
    data = path.read_bytes().replace(b">T7-4-4<", b">T7-4-3<", 1)
    assert data != path.read_bytes()
    with pytest.raises(InvalidEnvelope, match="more than once") as refused:
        parse_envelope(data, catalog)
    assert refused.value.status == 200


@pytest.mark.parametrize("path", [p for p in ENVELOPES if p not in VALID], ids=lambda p: p.name)
def test_broken_sample_envelopes_are_refused_with_status_200(path, catalog):
    """No namespace, XXE and invalid participant IDs each raise InvalidEnvelope (receipt 200)."""
    with pytest.raises(InvalidEnvelope) as error:
        parse_envelope(path.read_bytes(), catalog)
    assert error.value.status == 200


def test_the_message_id_of_an_unreadable_envelope_is_0():
    """sedex reports unreadable envelopes with messageId 0."""
    assert read_message_id(b"<not-xml") == "0"
    assert read_message_id(VALID[0].read_bytes()) == parse_envelope(VALID[0].read_bytes(), None).message_id
