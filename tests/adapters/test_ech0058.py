"""eCH-0058 headers: extraction from real payloads and consistency with the envelope."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from lxml import etree

from adapters.ech0058 import (
    HeaderMismatch,
    InvalidHeader,
    MessageHeader,
    check_header_against_envelope,
    extract_header,
)
from gateway.envelope import Envelope
from gateway.ids import ParticipantId, StatusCode
from gateway.safexml import parse_xml

from .conftest import SAMPLES

MOVE_V2 = SAMPLES / "openech-ech0020-v2.2/div-movetest/moveTest.xml"
VOTER_V6 = next(SAMPLES.glob("stimmregister-ech0045-v6/apiexport*/*.xml"))
ORDIPRO_V1 = SAMPLES / "ordipro-ech0020-v1/moveIn/ordipro-moveIn-21/data_ordipro-moveIn-21.xml"
WHEN = datetime(2026, 11, 1, tzinfo=timezone.utc)


def header_doc(version: int, sender: str, recipients: list[str], message_type: str, flag: str | None) -> etree._ElementTree:
    ns = f"http://www.ech.ch/xmlns/eCH-0058/{version}"
    fields = [f"<h:senderId>{sender}</h:senderId>"]
    fields += [f"<h:recipientId>{r}</h:recipientId>" for r in recipients]
    fields += ["<h:messageId>abc-1</h:messageId>", f"<h:messageType>{message_type}</h:messageType>",
               "<h:action>1</h:action>"]
    if flag is not None:
        fields.append(f"<h:testDeliveryFlag>{flag}</h:testDeliveryFlag>")
    xml = (f'<d:delivery xmlns:d="urn:example" xmlns:h="{ns}"><d:header>{"".join(fields)}</d:header>'
           f"<d:body/></d:delivery>")
    return parse_xml(xml.encode())


def envelope(sender: str, recipients: list[str], message_type: int = 20201) -> Envelope:
    return Envelope(message_id="m-1", message_type=message_type, message_class=0,
                    sender=ParticipantId(sender), recipients=tuple(ParticipantId(r) for r in recipients),
                    event_date=WHEN, message_date=WHEN)


def test_the_header_of_a_real_ech0020_v2_delivery_is_read():
    """The eCH-0078/2 header of an open-eCH 2.2 delivery reads as an eCH-0058 v2 header."""
    header = extract_header(parse_xml(MOVE_V2.read_bytes()))
    assert header == MessageHeader(sender=ParticipantId("3-CH-6"), recipients=(), message_type="1",
                                   message_id="1", action="1", test_delivery_flag=True, version=2)


def test_a_v5_header_with_a_non_sedex_sender_has_no_sender():
    """An eCH-0058 v5 header whose senderId is no sedex participant yields sender None, not an error."""
    header = extract_header(parse_xml(VOTER_V6.read_bytes()))
    assert (header.version, header.sender, header.message_type, header.test_delivery_flag) == (5, None, "1710967", True)


@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_sedex_uris_in_headers_are_normalised(version):
    """sedex:// URIs in senderId and recipientId become plain participant IDs, for every header version."""
    header = extract_header(header_doc(version, "sedex://T1-1061-1", ["sedex://T2-LU-1"], "20201", "true"))
    assert (header.version, header.sender, header.recipients) == (version, ParticipantId("T1-1061-1"), (ParticipantId("T2-LU-1"),))


def test_a_version_1_header_is_refused():
    """An eCH-0058 v1 header (ORDIPRO 2009) is not one of the supported versions 2 to 5."""
    with pytest.raises(InvalidHeader):
        extract_header(parse_xml(ORDIPRO_V1.read_bytes()))


def test_a_payload_without_header_is_refused():
    """A payload without deliveryHeader/header raises InvalidHeader with status 200."""
    with pytest.raises(InvalidHeader) as caught:
        extract_header(parse_xml(b"<root xmlns='http://www.ech.ch/xmlns/eCH-0099/1'><x/></root>"))
    assert caught.value.status == StatusCode.INVALID_ENVELOPE


def test_a_consistent_header_passes():
    """Header and envelope that agree on sender, recipients, type and test status raise nothing."""
    header = extract_header(header_doc(5, "sedex://1-1061-1", ["2-LU-1"], "20201", "false"))
    check_header_against_envelope(header, envelope("1-1061-1", ["2-LU-1", "3-CH-1"]))


@pytest.mark.parametrize("doc, env, field", [
    (("sedex://1-1059-1", [], "20201", "false"), ("1-1061-1", ["2-LU-1"]), "senderId"),
    (("1-1061-1", ["3-CH-1"], "20201", "false"), ("1-1061-1", ["2-LU-1"]), "recipientId"),
    (("1-1061-1", [], "20202", "false"), ("1-1061-1", ["2-LU-1"]), "messageType"),
    (("1-1061-1", [], "20201", "true"), ("1-1061-1", ["2-LU-1"]), "testDeliveryFlag is true"),
    (("T1-1061-1", [], "20201", "false"), ("T1-1061-1", ["T2-LU-1"]), "testDeliveryFlag is false"),
    (("1-1061-1", [], "20201", "false"), ("1-1061-1", ["T2-LU-1"]), "testDeliveryFlag is false"),
])
def test_a_contradicting_header_is_refused_with_200(doc, env, field):
    """A header that contradicts the envelope raises HeaderMismatch (200) naming the field."""
    header = extract_header(header_doc(4, *doc))
    with pytest.raises(HeaderMismatch) as caught:
        check_header_against_envelope(header, envelope(*env))
    assert caught.value.status == StatusCode.INVALID_ENVELOPE
    assert field in caught.value.info


def test_test_flag_between_test_participants_passes():
    """testDeliveryFlag true between test participants is consistent."""
    header = extract_header(header_doc(3, "T1-1061-1", [], "20201", "true"))
    check_header_against_envelope(header, envelope("T1-1061-1", ["T2-LU-1"]))


def test_a_real_payload_header_is_checked_without_personal_data_in_the_error():
    """A mismatch on a real delivery names IDs and fields but none of the person's data."""
    header = extract_header(parse_xml(MOVE_V2.read_bytes()))
    with pytest.raises(HeaderMismatch) as caught:
        check_header_against_envelope(header, envelope("1-1061-1", ["2-LU-1"]))
    for personal in ("TestPerson", "7561829871378", "1961-03-24", "Bahnhofstrasse"):
        assert personal not in caught.value.info
